//! Back-channel logout-token validation (`oidc::logout_token::verify_with_keys`) with a fixed
//! key set.
//!
//! The fuzzer builds a token from structured choices (signer, header, every claim) and signs it;
//! an independent model of OpenID Connect Back-Channel Logout 1.0 §2.6 says whether it must be
//! accepted. Invariant: the validator agrees with the model in both directions, and returns
//! exactly the token's `sub`/`sid`/`jti`. A raw string never validates under keys whose private
//! halves nobody here holds. The unverified pre-check that decides whether an unknown `kid` may
//! cost a key-set read (`claims_our_issuer_and_client`) never panics, and says yes exactly when
//! the claims name our issuer and, among the audiences, our client.
#![no_main]

use arbitrary::Arbitrary;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::JwkSet};
use libfuzzer_sys::fuzz_target;
use portcullis::oidc::logout_token::{
    BACKCHANNEL_EVENT, claims_our_issuer_and_client, verify_with_keys,
};
use serde_json::{Map, Value, json};

const ISSUER: &str = "https://idp.example";
const CLIENT: &str = "portcullis";
/// Throwaway Ed25519 keys made for this target with `openssl genpkey`. They protect nothing.
const PROVIDER_PEM: &str = include_str!("../keys/provider-ed25519.pem");
const ATTACKER_PEM: &str = include_str!("../keys/attacker-ed25519.pem");
const PROVIDER_X: &str = "zIOAmOPqCTaNbljBwphXc2OIcTvkTJxiS0OnhmzN9mw";
/// A second published key (its private half was thrown away).
const SECOND_X: &str = "B72HHGv6Z-0otfHFtsomU4BDNlA8EvSXEobsYx4WV9g";

#[derive(Arbitrary, Debug)]
enum Signer {
    Provider,
    Attacker,
    /// HS256 keyed with the provider's public key (the classic algorithm-confusion attack).
    HmacWithPublicKey,
    Unsigned,
}

#[derive(Arbitrary, Debug)]
enum Choice {
    Expected,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Kid {
    Absent,
    Provider,
    Second,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Aud {
    One(Choice),
    Many(Vec<Choice>),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Time {
    Missing,
    Now,
    MinutesAgo,
    HourAgo,
    HourAhead,
}

#[derive(Arbitrary, Debug)]
enum Events {
    Proper,
    NotAnObject,
    OtherEvent,
    Missing,
}

#[derive(Arbitrary, Debug)]
struct Token {
    signer: Signer,
    second_key_published: bool,
    kid: Kid,
    typ: Option<Choice>,
    iss: Choice,
    aud: Aud,
    azp: Option<Choice>,
    iat: Time,
    exp: Time,
    nonce: bool,
    events: Events,
    sub: Option<String>,
    sid: Option<String>,
    jti: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw(String),
    Built(Token),
}

fn jwk(kid: &str, x: &str) -> Value {
    json!({"kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid, "x": x})
}

fn text(c: &Choice, expected: &str) -> String {
    match c {
        Choice::Expected => expected.to_owned(),
        Choice::Other(s) => s.clone(),
    }
}

fn unix(t: Time, now: u64) -> Option<u64> {
    match t {
        Time::Missing => None,
        Time::Now => Some(now),
        Time::MinutesAgo => Some(now - 120),
        Time::HourAgo => Some(now - 3600),
        Time::HourAhead => Some(now + 3600),
    }
}

fuzz_target!(|input: Input| {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut keys = vec![jwk("k1", PROVIDER_X)];
    let token = match input {
        Input::Raw(raw) => {
            // Only keys whose private halves this process lacks: libFuzzer records compared
            // bytes, and a token signed by the provider key in an earlier iteration, replayed
            // while still fresh, would rightly validate.
            let keys = [jwk("k1", SECOND_X), jwk("k2", SECOND_X)];
            let jwks: JwkSet = serde_json::from_value(json!({ "keys": keys })).expect("jwks");
            assert!(
                verify_with_keys(&jwks, ISSUER, CLIENT, &raw).is_err(),
                "{raw:?} forged"
            );
            let _ = claims_our_issuer_and_client(&raw, ISSUER, CLIENT);
            return;
        }
        Input::Built(t) => t,
    };
    if token.second_key_published {
        keys.push(jwk("k2", SECOND_X));
    }
    let jwks: JwkSet = serde_json::from_value(json!({ "keys": keys })).expect("jwks");

    let mut claims = Map::new();
    let iss = text(&token.iss, ISSUER);
    claims.insert("iss".into(), iss.clone().into());
    let auds: Vec<String> = match &token.aud {
        Aud::One(c) => vec![text(c, CLIENT)],
        Aud::Many(cs) => cs.iter().map(|c| text(c, CLIENT)).collect(),
    };
    claims.insert(
        "aud".into(),
        match &token.aud {
            Aud::One(_) => auds[0].clone().into(),
            Aud::Many(_) => auds.clone().into(),
        },
    );
    let azp = token.azp.as_ref().map(|c| text(c, CLIENT));
    if let Some(a) = &azp {
        claims.insert("azp".into(), a.clone().into());
    }
    let iat = unix(token.iat, now);
    let exp = unix(token.exp, now);
    if let Some(v) = iat {
        claims.insert("iat".into(), v.into());
    }
    if let Some(v) = exp {
        claims.insert("exp".into(), v.into());
    }
    if token.nonce {
        claims.insert("nonce".into(), "n-0S6_WzA2Mj".into());
    }
    match token.events {
        Events::Proper => claims.insert("events".into(), json!({ BACKCHANNEL_EVENT: {} })),
        Events::NotAnObject => claims.insert("events".into(), json!({ BACKCHANNEL_EVENT: "yes" })),
        Events::OtherEvent => claims.insert("events".into(), json!({ "urn:other": {} })),
        Events::Missing => None,
    };
    for (k, v) in [
        ("sub", &token.sub),
        ("sid", &token.sid),
        ("jti", &token.jti),
    ] {
        if let Some(v) = v {
            claims.insert(k.into(), v.clone().into());
        }
    }

    let kid = match &token.kid {
        Kid::Absent => None,
        Kid::Provider => Some("k1".to_owned()),
        Kid::Second => Some("k2".to_owned()),
        Kid::Other(s) => Some(s.clone()),
    };
    let typ = token.typ.as_ref().map(|c| text(c, "logout+jwt"));
    let raw = sign(
        &token.signer,
        kid.clone(),
        typ.clone(),
        &Value::Object(claims),
    );

    // The model (Back-Channel Logout 1.0 §2.6, and this gateway's stricter rules).
    let key_found = match kid.as_deref() {
        None => !token.second_key_published,
        Some("k1") => true,
        _ => false,
    };
    let fresh = |t: Option<u64>| matches!(t, Some(v) if v + 300 >= now && v <= now + 60);
    let expected = matches!(token.signer, Signer::Provider)
        && key_found
        && typ.as_deref().is_none_or(|t| {
            // A media type (RFC 7515 §4.1.9): case-insensitive, `application/` optional.
            let t = t.to_ascii_lowercase();
            let t = t.strip_prefix("application/").unwrap_or(&t);
            t == "logout+jwt" || t == "jwt"
        })
        && iss == ISSUER
        // As for ID tokens: this client, and no audience it does not trust; `azp`, if present,
        // is this client.
        && auds.iter().any(|a| a == CLIENT)
        && auds.iter().all(|a| a == CLIENT)
        && azp.as_deref().is_none_or(|a| a == CLIENT)
        && fresh(iat)
        // `exp` required (errata set 1: validated as in ID tokens) and not passed.
        && matches!(token.exp, Time::Now | Time::HourAhead)
        && !token.nonce
        && matches!(token.events, Events::Proper)
        && (token.sub.is_some() || token.sid.is_some())
        && token
            .jti
            .as_ref()
            .is_some_and(|j| !j.is_empty() && j.len() <= 256);

    assert_eq!(
        claims_our_issuer_and_client(&raw, ISSUER, CLIENT),
        iss == ISSUER && auds.iter().any(|a| a == CLIENT),
        "the key-read pre-check disagrees: {token:?}"
    );
    match verify_with_keys(&jwks, ISSUER, CLIENT, &raw) {
        Ok(req) => {
            assert!(expected, "accepted a token the model refuses: {token:?}");
            assert_eq!(req.iss, ISSUER);
            assert_eq!(req.sub, token.sub);
            assert_eq!(req.sid, token.sid);
            assert_eq!(Some(req.jti), token.jti);
            assert!(req.remember_until >= iat.expect("fresh iat") + 300);
        }
        Err(e) => assert!(
            !expected,
            "refused a token the model accepts ({e}): {token:?}"
        ),
    }
});

fn sign(signer: &Signer, kid: Option<String>, typ: Option<String>, claims: &Value) -> String {
    let alg = match signer {
        Signer::Provider | Signer::Attacker => Algorithm::EdDSA,
        Signer::HmacWithPublicKey => Algorithm::HS256,
        Signer::Unsigned => {
            let mut h = json!({ "alg": "none" });
            if let Some(k) = kid {
                h["kid"] = k.into();
            }
            if let Some(t) = typ {
                h["typ"] = t.into();
            }
            let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
            return format!("{}.{}.", enc(&h), enc(claims));
        }
    };
    let mut header = Header::new(alg);
    header.kid = kid;
    header.typ = typ;
    let key = match signer {
        Signer::Provider => EncodingKey::from_ed_der(&der(PROVIDER_PEM)),
        Signer::Attacker => EncodingKey::from_ed_der(&der(ATTACKER_PEM)),
        _ => EncodingKey::from_secret(PROVIDER_X.as_bytes()),
    };
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// The PKCS#8 DER inside a PEM file.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("PEM body is base64")
}
