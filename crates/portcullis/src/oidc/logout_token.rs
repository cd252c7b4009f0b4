//! Logout tokens (OpenID Connect Back-Channel Logout 1.0, section 2.6): a signed JWT from the
//! provider, validated as strictly as an ID token plus the rules that keep an ID token or an
//! access token from being replayed as one: the back-channel `events` member, no `nonce`, a
//! `typ` that is not another token type, and a `jti` seen only once (checked by the caller
//! against the store, so replay protection holds across instances).

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Map, Value};

use super::{OidcError, metadata::Discovered, now_unix};
use crate::config::OidcConfig;

pub const BACKCHANNEL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
/// How old a logout token may be (`iat`), and how far in the future (clock skew).
const MAX_AGE: u64 = 300;
const FUTURE_SKEW: u64 = 60;

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What a valid logout token asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    pub iss: String,
    pub sub: Option<String>,
    pub sid: Option<String>,
    pub jti: String,
    /// Unix seconds until which the `jti` must be remembered.
    pub remember_until: u64,
}

/// Validates everything but `jti` uniqueness. `UnknownSigningKey` lets the caller re-fetch the
/// JWKS once and retry, as for ID tokens.
pub(super) fn verify(
    d: &Discovered,
    cfg: &OidcConfig,
    raw: &str,
) -> Result<LogoutRequest, OidcError> {
    let jwks: JwkSet = serde_json::to_value(&d.jwks)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            OidcError::InvalidIdToken(format!("logout token: provider JWKS unusable: {e}"))
        })?;
    verify_with_keys(&jwks, &cfg.issuer, &cfg.client_id, raw)
}

/// `verify` against a given key set, issuer and client id (public for the fuzz targets).
/// Whether an (unverified) token at least claims to be from `issuer` and for `client_id`: only
/// then may its unknown `kid` cost a read of the provider's key set. The endpoint is
/// unauthenticated, and each read blocks the next ones for a while (see `JWKS_REFETCH_MIN_INTERVAL`),
/// so a forged token naming a random `kid` must not use up the read a real key rotation needs.
pub fn claims_our_issuer_and_client(raw: &str, issuer: &str, client_id: &str) -> bool {
    use base64::Engine as _;
    let Some(payload) = raw.split('.').nth(1) else {
        return false;
    };
    let Some(claims) = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
    else {
        return false;
    };
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    claims.get("iss").and_then(Value::as_str) == Some(issuer) && aud_ok
}

/// `typ` is a media type (RFC 7515 §4.1.9): case-insensitive, and `application/` may be left
/// out. The spec's `logout+jwt`, or the generic `JWT` that providers predating it send.
fn is_logout_or_plain_jwt(typ: &str) -> bool {
    let subtype = match typ.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &typ[12..],
        _ => typ,
    };
    subtype.eq_ignore_ascii_case("logout+jwt") || subtype.eq_ignore_ascii_case("jwt")
}

/// A JWT NumericDate: seconds since the epoch, which RFC 7519 §2 allows to be non-integer
/// (providers writing `time.time()` send `1700000000.123`); the fraction is dropped.
pub(crate) fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| {
        v.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f as u64)
    })
}

pub fn verify_with_keys(
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    raw: &str,
) -> Result<LogoutRequest, OidcError> {
    let bad = |why: &str| OidcError::InvalidIdToken(format!("logout token: {why}"));
    let header =
        jsonwebtoken::decode_header(raw).map_err(|e| bad(&format!("malformed header: {e}")))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(bad("algorithm not allowed (only asymmetric signatures)"));
    }
    if let Some(typ) = header.typ.as_deref()
        && !is_logout_or_plain_jwt(typ)
    {
        return Err(bad(&format!("typ `{typ}` is not a logout token")));
    }
    // RFC 7515 §4.1.11: a `crit` extension the recipient does not understand (and it understands
    // none) makes the JWS invalid; the same rule refuses such an ID token.
    if header.crit.is_some() {
        return Err(bad("critical header extension"));
    }
    let jwk = select_key(jwks, header.kid.as_deref(), header.alg)?;
    let key =
        DecodingKey::from_jwk(jwk).map_err(|e| bad(&format!("provider key unusable: {e}")))?;

    let mut v = Validation::new(header.alg);
    v.set_issuer(&[issuer]);
    v.set_audience(&[client_id]);
    // `exp` too: errata set 1 of the spec (§2.6 step 4) validates it "in the same way" as in ID
    // tokens, where it is required. It must not have passed.
    v.set_required_spec_claims(&["iss", "aud", "exp"]);
    v.validate_exp = true;
    v.leeway = FUTURE_SKEW;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(raw, &key, &v)
        .map_err(|e| match e.kind() {
            // Without a `kid`, a provider's rotated single key shows only as a bad signature:
            // the caller re-reads the key set once, as for an unknown `kid` (ID tokens alike).
            jsonwebtoken::errors::ErrorKind::InvalidSignature if header.kid.is_none() => {
                OidcError::UnknownSigningKey
            }
            _ => bad(&format!("rejected: {e}")),
        })?
        .claims;

    let now = now_unix();
    let iat = claims
        .get("iat")
        .and_then(numeric_date)
        .ok_or_else(|| bad("no iat"))?;
    if iat > now + FUTURE_SKEW || iat + MAX_AGE < now {
        return Err(bad("iat is not fresh"));
    }
    if claims.contains_key("nonce") {
        return Err(bad("a nonce is present (an ID token?)"));
    }
    match claims
        .get("events")
        .and_then(Value::as_object)
        .and_then(|e| e.get(BACKCHANNEL_EVENT))
    {
        Some(Value::Object(_)) => {}
        _ => return Err(bad("no back-channel logout event")),
    }
    // "in the same way as ID tokens" (§2.6 step 3): an audience besides this client is one the
    // gateway does not trust (OIDC Core §3.1.3.7 step 3), whatever `azp` says.
    if let Some(Value::Array(aud)) = claims.get("aud")
        && aud.iter().any(|a| a.as_str() != Some(client_id))
    {
        return Err(bad("an audience other than this client"));
    }
    if claims
        .get("azp")
        .is_some_and(|azp| azp.as_str() != Some(client_id))
    {
        return Err(bad("azp is not this client"));
    }
    let text = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_owned);
    let (sub, sid) = (text("sub"), text("sid"));
    if sub.is_none() && sid.is_none() {
        return Err(bad("neither sub nor sid"));
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("no usable jti"))?;
    let exp = claims.get("exp").and_then(numeric_date).unwrap_or(0);
    Ok(LogoutRequest {
        iss: issuer.to_owned(),
        sub,
        sid,
        jti,
        remember_until: exp.max(iat + MAX_AGE) + FUTURE_SKEW,
    })
}

/// By `kid` when the header names one; otherwise the single signing key of the right type.
fn select_key<'a>(
    jwks: &'a JwkSet,
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<&'a Jwk, OidcError> {
    let usable = |k: &&Jwk| {
        k.common
            .public_key_use
            .as_ref()
            .is_none_or(|u| matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
            && key_family(&k.algorithm) == Some(alg.family())
    };
    let mut candidates = jwks.keys.iter().filter(usable);
    match kid {
        Some(kid) => jwks
            .keys
            .iter()
            .filter(usable)
            .find(|k| k.common.key_id.as_deref() == Some(kid))
            .ok_or(OidcError::UnknownSigningKey),
        None => match (candidates.next(), candidates.next()) {
            (Some(k), None) => Ok(k),
            (None, _) => Err(OidcError::UnknownSigningKey),
            (Some(_), Some(_)) => Err(OidcError::InvalidIdToken(
                "logout token: no kid and several keys".into(),
            )),
        },
    }
}

fn key_family(p: &jsonwebtoken::jwk::AlgorithmParameters) -> Option<jsonwebtoken::AlgorithmFamily> {
    use jsonwebtoken::{AlgorithmFamily, jwk::AlgorithmParameters};
    match p {
        AlgorithmParameters::RSA(_) => Some(AlgorithmFamily::Rsa),
        AlgorithmParameters::EllipticCurve(_) => Some(AlgorithmFamily::Ec),
        AlgorithmParameters::OctetKeyPair(_) => Some(AlgorithmFamily::Ed),
        // Symmetric or unknown keys never verify a logout token.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn unsigned(claims: Value) -> String {
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        format!(
            "{}.{}.sig",
            b64(&serde_json::json!({"alg": "RS256", "kid": "random"})),
            b64(&claims)
        )
    }

    #[test]
    fn only_a_token_naming_our_issuer_and_client_may_cost_a_key_read() {
        let (iss, client) = ("https://idp.example", "portcullis");
        let ok = [
            serde_json::json!({"iss": iss, "aud": client}),
            serde_json::json!({"iss": iss, "aud": ["other", client]}),
        ];
        for c in ok {
            assert!(
                claims_our_issuer_and_client(&unsigned(c.clone()), iss, client),
                "{c}"
            );
        }
        let refused = [
            serde_json::json!({"iss": "https://evil.example", "aud": client}),
            serde_json::json!({"iss": iss, "aud": "other"}),
            serde_json::json!({"iss": iss}),
            serde_json::json!({"aud": client}),
        ];
        for c in refused {
            assert!(
                !claims_our_issuer_and_client(&unsigned(c.clone()), iss, client),
                "{c}"
            );
        }
        assert!(!claims_our_issuer_and_client("garbage", iss, client));
        assert!(!claims_our_issuer_and_client("a.!!!.c", iss, client));
    }

    #[test]
    fn typ_is_compared_as_a_media_type() {
        for typ in [
            "logout+jwt",
            "application/logout+jwt",
            "Logout+JWT",
            "JWT",
            "jwt",
            "APPLICATION/JWT",
        ] {
            assert!(is_logout_or_plain_jwt(typ), "{typ}");
        }
        for typ in [
            "at+jwt",
            "application/at+jwt",
            "",
            "application/",
            "logout+jwt2",
            "text/logout+jwt",
        ] {
            assert!(!is_logout_or_plain_jwt(typ), "{typ}");
        }
    }

    #[test]
    fn numeric_dates_may_have_a_fraction() {
        assert_eq!(
            numeric_date(&serde_json::json!(1_700_000_000)),
            Some(1_700_000_000)
        );
        assert_eq!(
            numeric_date(&serde_json::json!(1_700_000_000.75)),
            Some(1_700_000_000)
        );
        for bad in [
            serde_json::json!(-1),
            serde_json::json!("1700000000"),
            serde_json::json!(null),
        ] {
            assert_eq!(numeric_date(&bad), None, "{bad}");
        }
    }
}
