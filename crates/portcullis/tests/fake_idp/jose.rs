//! Just enough JOSE to forge ID tokens, good and bad: RS256 with fixed test keys, ES256 with keys
//! made for the test process, HS256 with any secret, and unsigned (`alg: none`) tokens. Built on
//! `ring`, which the gateway already uses; nothing here validates anything.

use std::sync::OnceLock;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use ring::{
    hmac,
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair},
};
use serde_json::{Value, json};

/// RSA-2048 keys made for these tests with `openssl genpkey`. They protect nothing.
const PROVIDER_PEM: &str = include_str!("keys/provider.pem");
const SECOND_PEM: &str = include_str!("keys/second.pem");
const ROTATED_PEM: &str = include_str!("keys/rotated.pem");
const ATTACKER_PEM: &str = include_str!("keys/attacker.pem");

#[derive(Debug)]
pub struct RsaKey(RsaKeyPair);

/// The keys of a test run: the provider's current signing key, a second published key, the key
/// the provider rotates to, and one that only an attacker has.
#[derive(Debug)]
pub struct Keys {
    pub provider: RsaKey,
    pub second: RsaKey,
    pub rotated: RsaKey,
    pub attacker: RsaKey,
}

pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        provider: RsaKey::from_pem(PROVIDER_PEM),
        second: RsaKey::from_pem(SECOND_PEM),
        rotated: RsaKey::from_pem(ROTATED_PEM),
        attacker: RsaKey::from_pem(ATTACKER_PEM),
    })
}

/// A P-256 key pair for ES256, generated once per test process (nothing outside it needs to
/// know the key, so no fixed file).
#[derive(Debug)]
pub struct EcKey(EcdsaKeyPair);

/// The provider's ES256 signing key, and one that only an attacker has.
#[derive(Debug)]
pub struct EcKeys {
    pub provider: EcKey,
    pub attacker: EcKey,
}

pub fn ec_keys() -> &'static EcKeys {
    static KEYS: OnceLock<EcKeys> = OnceLock::new();
    KEYS.get_or_init(|| EcKeys {
        provider: EcKey::generate(),
        attacker: EcKey::generate(),
    })
}

impl EcKey {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
        EcKey(EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key"))
    }

    /// The public key as a JWK (`kty` EC, `crv` P-256), as a provider publishes it.
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        // An uncompressed point: 0x04 || x || y, 32 bytes each.
        let point = self.0.public_key().as_ref();
        let mut jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        });
        if let Some(kid) = kid {
            jwk["kid"] = Value::from(kid);
        }
        jwk
    }

    fn sign_es256(&self, input: &[u8]) -> Vec<u8> {
        self.0
            .sign(&SystemRandom::new(), input)
            .expect("ECDSA signing")
            .as_ref()
            .to_vec()
    }
}

impl RsaKey {
    fn from_pem(pem: &str) -> Self {
        RsaKey(RsaKeyPair::from_pkcs8(&pem_body(pem)).expect("test key is PKCS#8 RSA"))
    }

    /// The public key as a JWK, as a provider publishes it in its JWKS.
    pub fn jwk(&self, kid: Option<&str>) -> Value {
        let c: PublicKeyComponents<Vec<u8>> = self.0.public().into();
        let mut jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(&c.n),
            "e": URL_SAFE_NO_PAD.encode(&c.e),
        });
        if let Some(kid) = kid {
            jwk["kid"] = Value::from(kid);
        }
        jwk
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER.
    pub fn pkcs1_der(&self) -> Vec<u8> {
        self.0.public().as_ref().to_vec()
    }

    /// The public key as X.509 `SubjectPublicKeyInfo` DER.
    pub fn spki_der(&self) -> Vec<u8> {
        // AlgorithmIdentifier { rsaEncryption, NULL }
        const RSA_ALG_ID: [u8; 15] = [
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let mut bits = vec![0u8]; // no unused bits
        bits.extend(self.pkcs1_der());
        let mut body = RSA_ALG_ID.to_vec();
        body.extend(der(0x03, &bits));
        der(0x30, &body)
    }

    /// The public key as the usual `-----BEGIN PUBLIC KEY-----` PEM text.
    pub fn spki_pem(&self) -> String {
        let b64 = STANDARD.encode(self.spki_der());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    fn sign_rs256(&self, input: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.0.public().modulus_len()];
        self.0
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input,
                &mut sig,
            )
            .expect("RSA signing");
        sig
    }
}

/// How a token is signed; the header's `alg` follows.
#[derive(Debug, Clone, Copy)]
pub enum Signer<'a> {
    Rs256(&'a RsaKey),
    Es256(&'a EcKey),
    Hs256(&'a [u8]),
    /// ES256 with a key generated on the spot (so in no JWKS).
    Es256Throwaway,
    /// `alg` as given (`none`, `None`, …) and an empty signature.
    Unsigned(&'a str),
}

impl Signer<'_> {
    fn alg(&self) -> &str {
        match self {
            Signer::Rs256(_) => "RS256",
            Signer::Es256(_) => "ES256",
            Signer::Hs256(_) => "HS256",
            Signer::Es256Throwaway => "ES256",
            Signer::Unsigned(alg) => alg,
        }
    }

    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match self {
            Signer::Rs256(key) => key.sign_rs256(input),
            Signer::Es256(key) => key.sign_es256(input),
            Signer::Hs256(secret) => hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input)
                .as_ref()
                .to_vec(),
            Signer::Es256Throwaway => {
                let rng = SystemRandom::new();
                let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
                let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("EC key");
                let pair = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("EC key");
                pair.sign(&rng, input)
                    .expect("ECDSA signing")
                    .as_ref()
                    .to_vec()
            }
            Signer::Unsigned(_) => Vec::new(),
        }
    }
}

/// A compact JWS of `claims`, header `{"alg", "typ": "JWT", "kid"?}`.
pub fn jws(signer: Signer<'_>, kid: Option<&str>, claims: &Value) -> String {
    jws_with_header(signer, &json!({ "kid": kid }), claims)
}

/// A compact JWS of `claims` whose header is `{"alg", "typ": "JWT"}` with `extra` merged in (a
/// `null` removes the member).
pub fn jws_with_header(signer: Signer<'_>, extra: &Value, claims: &Value) -> String {
    let mut header = json!({ "alg": signer.alg(), "typ": "JWT" });
    let map = header.as_object_mut().expect("object");
    for (k, v) in extra.as_object().expect("header members") {
        if v.is_null() {
            map.remove(k);
        } else {
            map.insert(k.clone(), v.clone());
        }
    }
    let input = format!("{}.{}", b64_json(&header), b64_json(claims));
    let sig = URL_SAFE_NO_PAD.encode(signer.sign(input.as_bytes()));
    format!("{input}.{sig}")
}

/// `token` with its payload replaced by `claims`, signature untouched.
pub fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = b64_json(claims);
    parts.join(".")
}

fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"))
}

fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(b64).expect("PEM body is base64")
}

/// A DER TLV with a definite length.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(u8::try_from(len).expect("short length"));
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | u8::try_from(bytes.len()).expect("length of length"));
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}
