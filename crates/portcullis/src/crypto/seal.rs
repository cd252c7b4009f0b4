//! Sealing of records before they reach any store: AES-256-GCM under a key derived from the
//! server key ring *and* a secret that only the browser's cookie carries.
//!
//! ```text
//! key   = HKDF-SHA256(salt = per-record secret, ikm = ring key, info = "portcullis/v1/seal/<purpose>")
//! bytes = 0x01 ‖ key id (4) ‖ nonce (12) ‖ ciphertext ‖ tag (16)
//! AAD   = 0x01 ‖ key id ‖ the record's store key
//! ```
//!
//! So a dump of the store opens nothing without the cookies, the server keys open nothing without
//! the cookies, and a record cannot be moved to another store key. The nonce is random: each
//! derived key seals only the few versions of one record, far below GCM's random-nonce bound.

use ring::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf, hmac,
};

use super::{keyring::KeyRing, random};

const VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const OVERHEAD: usize = HEADER_LEN + NONCE_LEN + 16;

/// What a sealed record is for; part of the key derivation so one purpose's records can never be
/// opened as another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Session,
    LoginState,
}

impl Purpose {
    fn info(self) -> &'static [u8] {
        match self {
            Purpose::Session => b"portcullis/v1/seal/session",
            Purpose::LoginState => b"portcullis/v1/seal/login-state",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("record is malformed or of an unknown version")]
    Malformed,
    #[error("record was sealed with a key that is no longer in the key ring")]
    UnknownKey,
    #[error("record failed authentication")]
    Forged,
    #[error("randomness unavailable")]
    Random,
}

/// The per-record secret set up once as an HMAC-SHA256 key. HKDF-Extract is
/// `HMAC(key = salt, ikm)` (RFC 5869 2.2) and a ticket's store key is `HMAC(key = ticket, label)`:
/// one key set-up (two SHA-256 blocks) serves both on every request (docs/performance.md).
pub struct RecordKey(hmac::Key);

impl RecordKey {
    pub fn new(record_secret: &[u8]) -> Self {
        RecordKey(hmac::Key::new(hmac::HMAC_SHA256, record_secret))
    }

    /// `HMAC-SHA256(key = record secret, msg)`.
    pub fn sign(&self, msg: &[u8]) -> hmac::Tag {
        hmac::sign(&self.0, msg)
    }
}

impl std::fmt::Debug for RecordKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordKey(<redacted>)")
    }
}

fn derive(ring_key: &[u8], purpose: Purpose, record_key: &RecordKey) -> LessSafeKey {
    // HKDF-Extract(salt = record secret, ikm = ring key), computed with the already keyed HMAC.
    let prk = record_key.sign(ring_key);
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk.as_ref());
    let info = [purpose.info()];
    // `expand` fails only when the output length exceeds 255 hash blocks; 32 bytes never does.
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .expect("HKDF output of 32 bytes is always valid");
    LessSafeKey::new(UnboundKey::from(okm))
}

pub fn seal(
    ring: &KeyRing,
    purpose: Purpose,
    record_secret: &[u8],
    store_key: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let key = ring.active();
    let nonce_bytes = random::bytes::<NONCE_LEN>().map_err(|_| SealError::Random)?;
    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    out.push(VERSION);
    out.extend_from_slice(&key.id);
    out.extend_from_slice(&nonce_bytes);
    let mut aad = Vec::with_capacity(HEADER_LEN + store_key.len());
    aad.extend_from_slice(&out[..HEADER_LEN]);
    aad.extend_from_slice(store_key);
    let mut body = plaintext.to_vec();
    derive(
        key.secret.as_slice(),
        purpose,
        &RecordKey::new(record_secret),
    )
    .seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(&aad),
        &mut body,
    )
    .map_err(|_| SealError::Forged)?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn open(
    ring: &KeyRing,
    purpose: Purpose,
    record_secret: &[u8],
    store_key: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    open_keyed(
        ring,
        purpose,
        &RecordKey::new(record_secret),
        store_key,
        sealed,
    )
}

/// [`open`] with the record secret already keyed (see [`RecordKey`]).
pub fn open_keyed(
    ring: &KeyRing,
    purpose: Purpose,
    record_key: &RecordKey,
    store_key: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, SealError> {
    if sealed.len() < OVERHEAD || sealed[0] != VERSION {
        return Err(SealError::Malformed);
    }
    let key = ring
        .find(&sealed[1..HEADER_LEN])
        .ok_or(SealError::UnknownKey)?;
    let nonce = Nonce::try_assume_unique_for_key(&sealed[HEADER_LEN..HEADER_LEN + NONCE_LEN])
        .map_err(|_| SealError::Malformed)?;
    let mut aad = Vec::with_capacity(HEADER_LEN + store_key.len());
    aad.extend_from_slice(&sealed[..HEADER_LEN]);
    aad.extend_from_slice(store_key);
    let mut body = sealed[HEADER_LEN + NONCE_LEN..].to_vec();
    let plain = derive(key.secret.as_slice(), purpose, record_key)
        .open_in_place(nonce, Aad::from(&aad), &mut body)
        .map_err(|_| SealError::Forged)?;
    let len = plain.len();
    body.truncate(len);
    Ok(body)
}

/// Serializes `value` to JSON and seals it; the plaintext is wiped afterwards.
pub fn seal_json<T: serde::Serialize>(
    ring: &KeyRing,
    purpose: Purpose,
    record_secret: &[u8],
    store_key: &[u8],
    value: &T,
) -> Result<Vec<u8>, SealError> {
    let plain =
        zeroize::Zeroizing::new(serde_json::to_vec(value).map_err(|_| SealError::Malformed)?);
    seal(ring, purpose, record_secret, store_key, &plain)
}

/// Opens a record sealed by [`seal_json`]; the plaintext is wiped after decoding.
pub fn open_json<T: serde::de::DeserializeOwned>(
    ring: &KeyRing,
    purpose: Purpose,
    record_secret: &[u8],
    store_key: &[u8],
    sealed: &[u8],
) -> Result<T, SealError> {
    open_json_keyed(
        ring,
        purpose,
        &RecordKey::new(record_secret),
        store_key,
        sealed,
    )
}

/// [`open_json`] with the record secret already keyed (see [`RecordKey`]).
pub fn open_json_keyed<T: serde::de::DeserializeOwned>(
    ring: &KeyRing,
    purpose: Purpose,
    record_key: &RecordKey,
    store_key: &[u8],
    sealed: &[u8],
) -> Result<T, SealError> {
    let plain = zeroize::Zeroizing::new(open_keyed(ring, purpose, record_key, store_key, sealed)?);
    serde_json::from_slice(&plain).map_err(|_| SealError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(n: usize) -> KeyRing {
        let keys: Vec<String> = (0..n)
            .map(|_| KeyRing::generate_encoded().expect("rng"))
            .collect();
        KeyRing::parse(&keys.join(",")).expect("valid")
    }

    /// The keyed HMAC extract is RFC 5869 HKDF-Extract: a record sealed under ring's own
    /// `hkdf::Salt` derivation (the one every stored record was sealed with before) opens.
    #[test]
    fn keyed_extract_is_hkdf_extract() {
        let r = ring(1);
        let secret = b"per-record secret from the cookie";
        let reference = {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, secret).extract(&r.active().secret[..]);
            let info = [Purpose::Session.info()];
            let okm = prk.expand(&info, &AES_256_GCM).expect("32 bytes");
            LessSafeKey::new(UnboundKey::from(okm))
        };
        let nonce = [7u8; NONCE_LEN];
        let mut sealed = vec![VERSION];
        sealed.extend_from_slice(&r.active().id);
        sealed.extend_from_slice(&nonce);
        let mut aad = sealed[..HEADER_LEN].to_vec();
        aad.extend_from_slice(b"key-1");
        let mut body = b"hello".to_vec();
        reference
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut body,
            )
            .expect("seal");
        sealed.extend_from_slice(&body);
        assert_eq!(
            open(&r, Purpose::Session, secret, b"key-1", &sealed).expect("open"),
            b"hello"
        );
        assert_eq!(
            open_keyed(
                &r,
                Purpose::Session,
                &RecordKey::new(secret),
                b"key-1",
                &sealed
            )
            .expect("open"),
            b"hello"
        );
    }

    #[test]
    fn roundtrip() {
        let r = ring(1);
        let sealed = seal(&r, Purpose::Session, b"secret-a", b"key-1", b"hello").expect("seal");
        assert_ne!(&sealed[OVERHEAD - 16..OVERHEAD - 11], b"hello");
        assert_eq!(
            open(&r, Purpose::Session, b"secret-a", b"key-1", &sealed).expect("open"),
            b"hello"
        );
    }

    #[test]
    fn every_binding_matters() {
        let r = ring(1);
        let sealed = seal(&r, Purpose::Session, b"secret-a", b"key-1", b"hello").expect("seal");
        assert_eq!(
            open(&r, Purpose::Session, b"secret-b", b"key-1", &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&r, Purpose::Session, b"secret-a", b"key-2", &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&r, Purpose::LoginState, b"secret-a", b"key-1", &sealed),
            Err(SealError::Forged)
        );
        assert_eq!(
            open(&ring(1), Purpose::Session, b"secret-a", b"key-1", &sealed),
            Err(SealError::UnknownKey)
        );
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 0x01;
            assert!(
                open(&r, Purpose::Session, b"secret-a", b"key-1", &flipped).is_err(),
                "bit flip at {i}"
            );
        }
        assert_eq!(
            open(&r, Purpose::Session, b"secret-a", b"key-1", &sealed[..10]),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn rotation_keeps_old_records_readable() {
        let old = KeyRing::generate_encoded().expect("rng");
        let new = KeyRing::generate_encoded().expect("rng");
        let before = KeyRing::parse(&old).expect("valid");
        let after = KeyRing::parse(&format!("{new},{old}")).expect("valid");
        let sealed = seal(&before, Purpose::Session, b"s", b"k", b"data").expect("seal");
        assert_eq!(
            open(&after, Purpose::Session, b"s", b"k", &sealed).expect("open"),
            b"data"
        );
        let resealed = seal(&after, Purpose::Session, b"s", b"k", b"data").expect("seal");
        assert_eq!(&resealed[1..5], &after.active().id);
        assert_eq!(
            open(&before, Purpose::Session, b"s", b"k", &resealed),
            Err(SealError::UnknownKey)
        );
    }
}
