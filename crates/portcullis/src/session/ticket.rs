//! The cookie's ticket: 256 random bits, base64url. The store never sees it: records live under a
//! keyed hash of it, and it is the per-record secret in the sealing key (see `crypto::seal`).

use std::fmt;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use zeroize::Zeroizing;

use crate::{
    crypto::{
        random::{self, RandomError},
        seal::RecordKey,
    },
    store::StoreKey,
};

pub const TICKET_BYTES: usize = 32;
/// Length of the base64url (unpadded) form.
pub const TICKET_CHARS: usize = 43;

/// What a ticket addresses; a ticket for one namespace never finds a record of another.
#[derive(Debug, Clone, Copy)]
pub enum Namespace {
    Session,
    LoginState,
}

impl Namespace {
    /// The store-key prefix of this namespace (every key starts with it).
    pub fn prefix(self) -> &'static str {
        self.label().1
    }

    fn label(self) -> (&'static [u8], &'static str) {
        match self {
            Namespace::Session => (b"portcullis/v1/store-key/session", "s:"),
            Namespace::LoginState => (b"portcullis/v1/store-key/login", "l:"),
        }
    }
}

#[derive(Clone)]
pub struct Ticket(Zeroizing<[u8; TICKET_BYTES]>);

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ticket(<redacted>)")
    }
}

impl Ticket {
    pub fn generate() -> Result<Ticket, RandomError> {
        Ok(Ticket(Zeroizing::new(random::bytes::<TICKET_BYTES>()?)))
    }

    /// Strict parse: exactly 43 base64url characters decoding to 32 bytes; anything else is not a
    /// ticket and costs no store lookup.
    pub fn parse(s: &str) -> Option<Ticket> {
        if s.len() != TICKET_CHARS {
            return None;
        }
        let mut out = Zeroizing::new([0u8; TICKET_BYTES]);
        match URL_SAFE_NO_PAD.decode_slice(s, out.as_mut_slice()) {
            Ok(TICKET_BYTES) => Some(Ticket(out)),
            _ => None,
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0.as_slice())
    }

    pub fn secret(&self) -> &[u8] {
        self.0.as_slice()
    }

    /// `HMAC-SHA256(key = ticket, label)`: a PRF of the ticket, so the store key reveals nothing
    /// about the ticket and cannot be turned back into a cookie. It does not involve the server
    /// key ring, so rotating keys never moves a session.
    pub fn store_key(&self, ns: Namespace) -> StoreKey {
        Self::store_key_keyed(&RecordKey::new(self.secret()), ns)
    }

    /// [`Ticket::store_key`] from the ticket already keyed for HMAC (the same key opens the
    /// record: see [`RecordKey`]).
    pub fn store_key_keyed(key: &RecordKey, ns: Namespace) -> StoreKey {
        let (label, prefix) = ns.label();
        let tag = key.sign(label);
        StoreKey(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(tag.as_ref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_strict_parse() {
        let t = Ticket::generate().expect("rng");
        let s = t.encode();
        assert_eq!(s.len(), TICKET_CHARS);
        let back = Ticket::parse(&s).expect("valid");
        assert_eq!(back.secret(), t.secret());
        assert!(Ticket::parse(&s[..42]).is_none());
        assert!(Ticket::parse(&format!("{s}A")).is_none());
        assert!(Ticket::parse(&s.replace(|c: char| c.is_ascii_alphanumeric(), "+")).is_none());
        assert!(Ticket::parse("").is_none());
    }

    #[test]
    fn store_key_is_not_the_ticket_and_is_namespaced() {
        let t = Ticket::generate().expect("rng");
        let k = t.store_key(Namespace::Session);
        assert!(!k.0.contains(&t.encode()));
        assert_ne!(k, t.store_key(Namespace::LoginState));
        assert_eq!(
            k,
            Ticket::parse(&t.encode())
                .expect("valid")
                .store_key(Namespace::Session)
        );
    }
}
