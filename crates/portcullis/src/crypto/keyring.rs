//! The server's session key ring: the first key seals, every key opens.
//!
//! Rotation: prepend a new key (it starts sealing), keep the old ones until every session sealed
//! under them has expired (the absolute lifetime), then drop them. Nobody is logged out, because a
//! record names the key it was sealed with.

use std::{fmt, sync::Arc};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use zeroize::Zeroizing;

pub const KEY_LEN: usize = 32;

/// One 256-bit key with a short public id (the first 4 bytes of its SHA-256).
pub struct RingKey {
    pub id: [u8; 4],
    pub secret: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for RingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingKey({:02x?}, <redacted>)", self.id)
    }
}

#[derive(Clone)]
pub struct KeyRing {
    keys: Arc<Vec<RingKey>>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRing({} key(s), redacted)", self.keys.len())
    }
}

impl KeyRing {
    /// Parses comma-separated base64 (standard or URL-safe, padded or not) 32-byte keys.
    pub fn parse(s: &str) -> Result<KeyRing, String> {
        let mut keys: Vec<RingKey> = Vec::new();
        for (i, part) in s.split(',').map(str::trim).enumerate() {
            if part.is_empty() {
                return Err(format!("key #{} is empty", i + 1));
            }
            let raw = Zeroizing::new(
                STANDARD
                    .decode(part)
                    .or_else(|_| URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')))
                    .map_err(|_| {
                        format!(
                            "key #{} is not base64 (generate one with `portcullis gen-key`)",
                            i + 1
                        )
                    })?,
            );
            let secret: [u8; KEY_LEN] = raw.as_slice().try_into().map_err(|_| {
                format!(
                    "key #{} is {} bytes; session keys are exactly {KEY_LEN} bytes",
                    i + 1,
                    raw.len()
                )
            })?;
            let digest = ring::digest::digest(&ring::digest::SHA256, &secret);
            let mut id = [0u8; 4];
            id.copy_from_slice(&digest.as_ref()[..4]);
            if keys.iter().any(|k| k.id == id) {
                return Err(format!("key #{} is listed twice", i + 1));
            }
            keys.push(RingKey {
                id,
                secret: Zeroizing::new(secret),
            });
        }
        Ok(KeyRing {
            keys: Arc::new(keys),
        })
    }

    /// The key that seals new records.
    pub fn active(&self) -> &RingKey {
        &self.keys[0]
    }

    pub fn find(&self, id: &[u8]) -> Option<&RingKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn generate_encoded() -> Result<String, super::random::RandomError> {
        Ok(STANDARD.encode(super::random::bytes::<KEY_LEN>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rotation_list() {
        let a = KeyRing::generate_encoded().expect("rng");
        let b = KeyRing::generate_encoded().expect("rng");
        let ring = KeyRing::parse(&format!("{a}, {b}")).expect("valid");
        assert_eq!(ring.keys.len(), 2);
        let single = KeyRing::parse(&a).expect("valid");
        assert_eq!(ring.active().id, single.active().id);
    }

    #[test]
    fn rejects_bad_keys() {
        assert!(KeyRing::parse("").is_err());
        assert!(KeyRing::parse("not base64!").is_err());
        assert!(KeyRing::parse(&STANDARD.encode([1u8; 16])).is_err());
        let a = KeyRing::generate_encoded().expect("rng");
        assert!(KeyRing::parse(&format!("{a},{a}")).is_err());
        assert!(format!("{:?}", KeyRing::parse(&a).expect("valid")).contains("redacted"));
    }
}
