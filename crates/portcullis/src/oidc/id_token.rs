//! ID token validation (OIDC Core 3.1.3.7): signature by a key of the provider's JWKS with an
//! asymmetric algorithm (`none` and HMAC are refused, so "HS256 signed with the public key"
//! cannot work), `iss`, `aud` (no untrusted extra audiences), `azp`, `exp`, `iat`, `nonce`.

use std::str::FromStr;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use openidconnect::{
    ClaimsVerificationError, ClientId, IdTokenVerifier, Nonce, SignatureVerificationError,
    core::{CoreIdToken, CoreJwsSigningAlgorithm},
};
use serde_json::{Map, Value};

use super::{OidcError, metadata::Discovered, now_unix};
use crate::config::OidcConfig;

/// How far in the future `iat` may be (clock skew), and how old an ID token may be at login.
const IAT_FUTURE_SKEW: u64 = 60;
const LOGIN_MAX_AGE: u64 = 600;

/// A validated ID token: the raw JWT (kept server-side only) and its claims.
#[derive(Debug, Clone)]
pub struct VerifiedIdToken {
    pub raw: String,
    /// The token's claims, plus at login those read from the UserInfo endpoint that it lacks
    /// (`OidcProvider::add_userinfo_claims`).
    pub claims: Map<String, Value>,
    pub sub: String,
    pub iss: String,
    pub sid: Option<String>,
}

const ASYMMETRIC: [CoreJwsSigningAlgorithm; 10] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EcdsaP521Sha512,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// `oidc.id_token_signing_alg` alone when it is set (the algorithm the client is registered
/// with), else every asymmetric one.
fn allowed_algs(cfg: &OidcConfig) -> Vec<CoreJwsSigningAlgorithm> {
    match &cfg.id_token_signing_alg {
        // The configuration admits only names these parse (`config::ID_TOKEN_SIGNING_ALGS`);
        // anything else would allow nothing, which fails closed.
        Some(alg) => serde_json::from_value(Value::String(alg.clone()))
            .map(|a| vec![a])
            .unwrap_or_default(),
        None => ASYMMETRIC.to_vec(),
    }
}

pub(super) fn verify(
    d: &Discovered,
    cfg: &OidcConfig,
    raw: &str,
    nonce: Option<&str>,
    expected_sub: Option<&str>,
) -> Result<VerifiedIdToken, OidcError> {
    let token = CoreIdToken::from_str(raw)
        .map_err(|e| OidcError::InvalidIdToken(format!("malformed: {e}")))?;
    let now = now_unix();
    let login = nonce.is_some();
    // A public-client verifier has no shared secret, so HMAC-signed tokens can never verify.
    let verifier = IdTokenVerifier::new_public_client(
        ClientId::new(cfg.client_id.clone()),
        d.issuer.clone(),
        d.jwks.clone(),
    )
    .set_allowed_algs(allowed_algs(cfg))
    .set_issue_time_verifier_fn(move |iat: chrono::DateTime<chrono::Utc>| {
        let iat = u64::try_from(iat.timestamp()).unwrap_or(0);
        if iat > now + IAT_FUTURE_SKEW {
            return Err("issued in the future".into());
        }
        if login && iat + LOGIN_MAX_AGE < now {
            return Err("issued too long ago".into());
        }
        Ok(())
    });
    let expected_nonce = nonce.map(|n| Nonce::new(n.to_owned()));
    let verified = match &expected_nonce {
        Some(n) => token.claims(&verifier, n),
        // Refresh: OIDC Core 12.2 — a nonce, if any, is not checked against a request.
        None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())),
    };
    let claims = verified.map_err(|e| match e {
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::NoMatchingKey,
        ) => OidcError::UnknownSigningKey,
        // Without a `kid` (a provider with one key, OIDC Core §10.1) a rotated key shows only as
        // a signature the known key does not verify: worth the same one re-read of the key set
        // as an unknown `kid` (rate-limited by the caller). `iss` and `aud` are checked before
        // the signature, so only a token naming this provider and client gets this far.
        ClaimsVerificationError::SignatureVerification(
            SignatureVerificationError::CryptoError(_),
        ) if !header_has_kid(raw) => OidcError::UnknownSigningKey,
        other => {
            // The library's message drops the cause (e.g. "alg none" vs a bad signature).
            let cause = std::error::Error::source(&other)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            OidcError::InvalidIdToken(format!("{other}{cause}"))
        }
    })?;
    let sub = claims.subject().as_str().to_owned();
    let iss = claims.issuer().as_str().to_owned();
    // The signature is verified: the payload can now be read for the claims the core type does not
    // model (`sid`, custom claims shown by /bff/session).
    let all = payload(raw)?;
    check_azp(&all, &cfg.client_id)?;
    if let Some(expected) = expected_sub
        && expected != sub
    {
        return Err(OidcError::InvalidIdToken(
            "refreshed ID token names another subject".into(),
        ));
    }
    let sid = all.get("sid").and_then(Value::as_str).map(str::to_owned);
    Ok(VerifiedIdToken {
        raw: raw.to_owned(),
        claims: all,
        sub,
        iss,
        sid,
    })
}

/// Whether the (already parsed) JWS header names a `kid`.
fn header_has_kid(raw: &str) -> bool {
    raw.split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_some_and(|h| h.contains_key("kid"))
}

/// The `alg` of a compact JWS's header (read without verifying anything).
pub(super) fn header_alg(raw: &str) -> Option<String> {
    let header = URL_SAFE_NO_PAD.decode(raw.split('.').next()?).ok()?;
    let header: Map<String, Value> = serde_json::from_slice(&header).ok()?;
    header.get("alg")?.as_str().map(str::to_owned)
}

fn payload(raw: &str) -> Result<Map<String, Value>, OidcError> {
    let part = raw
        .split('.')
        .nth(1)
        .ok_or_else(|| OidcError::InvalidIdToken("not a JWS".into()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| OidcError::InvalidIdToken("payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| OidcError::InvalidIdToken("payload is not a JSON object".into()))
}

/// OIDC Core 3.1.3.7 (4, 5): several audiences need an `azp`; an `azp` must be this client.
fn check_azp(claims: &Map<String, Value>, client_id: &str) -> Result<(), OidcError> {
    let multiple_aud = matches!(claims.get("aud"), Some(Value::Array(a)) if a.len() > 1);
    match claims.get("azp") {
        Some(Value::String(azp)) if azp == client_id => Ok(()),
        Some(_) => Err(OidcError::InvalidIdToken("azp is not this client".into())),
        None if multiple_aud => Err(OidcError::InvalidIdToken(
            "several audiences but no azp".into(),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_configurable_algorithm_is_one_the_verifier_knows() {
        for alg in crate::config::ID_TOKEN_SIGNING_ALGS {
            let parsed: CoreJwsSigningAlgorithm =
                serde_json::from_value(Value::String(alg.into())).expect(alg);
            assert!(ASYMMETRIC.contains(&parsed), "{alg}");
        }
    }

    #[test]
    fn a_kid_in_the_header_is_seen() {
        let token = |header: &str| format!("{}.e30.sig", URL_SAFE_NO_PAD.encode(header));
        assert!(header_has_kid(&token(r#"{"alg":"RS256","kid":"k1"}"#)));
        assert!(!header_has_kid(&token(r#"{"alg":"RS256"}"#)));
        assert!(!header_has_kid("not base64!.e30.sig"));
    }

    #[test]
    fn azp_rules() {
        let m = |v: Value| v.as_object().cloned().expect("object");
        assert!(check_azp(&m(serde_json::json!({"aud": "c"})), "c").is_ok());
        assert!(check_azp(&m(serde_json::json!({"aud": ["c", "d"]})), "c").is_err());
        assert!(check_azp(&m(serde_json::json!({"aud": ["c", "d"], "azp": "c"})), "c").is_ok());
        assert!(check_azp(&m(serde_json::json!({"aud": "c", "azp": "d"})), "c").is_err());
    }
}
