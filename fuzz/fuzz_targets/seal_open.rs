//! Sealed-record opening (`crypto::seal`) with a fixed two-key ring.
//!
//! Invariants: arbitrary bytes never open under keys that never sealed them (nobody without the
//! keys forges a record); `open(seal(x)) == x`, also under the second key of the ring; a sealed record with any byte
//! changed, truncated, or opened under another store key, purpose or record secret never opens.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portcullis::crypto::{
    keyring::KeyRing,
    seal::{Purpose, open, seal},
};

const KEYS: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=,\
                    ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
/// Keys this target never seals with. The forgery check opens under these: libFuzzer records the
/// operands of byte comparisons (the `assert_ne!` below compares two genuine records), so under
/// `KEYS` it can replay a record sealed in an earlier iteration, which rightly opens.
const UNSEALING_KEYS: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=,\
                              YGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6e3x9fn8=";

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    secret: &'a [u8],
    store_key: &'a [u8],
    plaintext: &'a [u8],
    /// Bytes presented as a sealed record, as read from a (possibly tampered) store.
    forged: &'a [u8],
    flip_at: usize,
    flip_mask: u8,
    login_state: bool,
}

fuzz_target!(|input: Input| {
    let ring = KeyRing::parse(KEYS).expect("fixed keys");
    let never_sealed = KeyRing::parse(UNSEALING_KEYS).expect("fixed keys");
    let old_first =
        KeyRing::parse(&KEYS.split(',').rev().collect::<Vec<_>>().join(",")).expect("fixed keys");
    let purpose = if input.login_state {
        Purpose::LoginState
    } else {
        Purpose::Session
    };
    let other = if input.login_state {
        Purpose::Session
    } else {
        Purpose::LoginState
    };

    assert!(
        open(
            &never_sealed,
            purpose,
            input.secret,
            input.store_key,
            input.forged
        )
        .is_err()
    );

    let sealed = seal(
        &ring,
        purpose,
        input.secret,
        input.store_key,
        input.plaintext,
    )
    .expect("seal");
    assert_eq!(
        open(&ring, purpose, input.secret, input.store_key, &sealed).as_deref(),
        Ok(input.plaintext)
    );
    // Rotation: a ring where the sealing key is now second still opens it.
    assert_eq!(
        open(&old_first, purpose, input.secret, input.store_key, &sealed).as_deref(),
        Ok(input.plaintext)
    );
    let resealed = seal(
        &old_first,
        purpose,
        input.secret,
        input.store_key,
        input.plaintext,
    )
    .expect("seal");
    assert_ne!(
        resealed, sealed,
        "random nonces: identical records seal to different bytes"
    );
    assert_eq!(
        open(&ring, purpose, input.secret, input.store_key, &resealed).as_deref(),
        Ok(input.plaintext)
    );

    assert!(open(&ring, other, input.secret, input.store_key, &sealed).is_err());
    let mut moved = input.store_key.to_vec();
    moved.push(b'x');
    assert!(open(&ring, purpose, input.secret, &moved, &sealed).is_err());
    // Another secret of the same length (HMAC, and so HKDF's salt, zero-pads short keys: `s` and
    // `s ‖ 0x00` are the same salt; Portcullis' record secrets are fixed-length tickets).
    let mut other_secret = input.secret.to_vec();
    match other_secret.first_mut() {
        Some(b) => *b ^= 0x01,
        None => other_secret.push(0x01),
    }
    assert!(open(&ring, purpose, &other_secret, input.store_key, &sealed).is_err());

    let mut tampered = sealed.clone();
    let i = input.flip_at % tampered.len();
    tampered[i] ^= input.flip_mask.max(1);
    assert!(open(&ring, purpose, input.secret, input.store_key, &tampered).is_err());
    let cut = input.flip_at % sealed.len();
    assert!(
        open(
            &ring,
            purpose,
            input.secret,
            input.store_key,
            &sealed[..cut]
        )
        .is_err()
    );
});
