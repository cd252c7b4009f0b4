//! Property tests where a fuzzer is awkward (the properties need several calls, key rotation
//! or a configured gateway): sealing across key rotation, ticket encoding and store-key
//! derivation, segment-aware route matching, and `returnTo`/path hygiene on generated inputs.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use portcullis::{
    bff::return_to,
    config::{Config, path_within},
    crypto::{
        keyring::KeyRing,
        seal::{Purpose, SealError, open, seal},
    },
    http::hygiene::check_path,
    proxy::Proxy,
    session::ticket::{Namespace, Ticket},
};
use proptest::prelude::*;

fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

fn purpose() -> impl Strategy<Value = Purpose> {
    prop_oneof![Just(Purpose::Session), Just(Purpose::LoginState)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Rotation runbook: prepend a new key (old records still open), then drop the old key
    /// (its records no longer open: `UnknownKey`, never garbage); records sealed after the
    /// rotation open under the final ring.
    #[test]
    fn seal_open_round_trip_across_key_rotation(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        secret in proptest::collection::vec(any::<u8>(), 0..64),
        store_key in proptest::collection::vec(any::<u8>(), 0..64),
        purpose in purpose(),
        (old, new) in (any::<u8>(), any::<u8>()).prop_filter("distinct keys", |(a, b)| a != b),
    ) {
        let before = KeyRing::parse(&key(old)).expect("ring");
        let during = KeyRing::parse(&format!("{},{}", key(new), key(old))).expect("ring");
        let after = KeyRing::parse(&key(new)).expect("ring");

        let sealed = seal(&before, purpose, &secret, &store_key, &plaintext).expect("seal");
        prop_assert_eq!(open(&before, purpose, &secret, &store_key, &sealed), Ok(plaintext.clone()));
        prop_assert_eq!(open(&during, purpose, &secret, &store_key, &sealed), Ok(plaintext.clone()));
        prop_assert_eq!(open(&after, purpose, &secret, &store_key, &sealed), Err(SealError::UnknownKey));

        let resealed = seal(&during, purpose, &secret, &store_key, &plaintext).expect("seal");
        prop_assert_ne!(&resealed, &sealed);
        prop_assert_eq!(open(&after, purpose, &secret, &store_key, &resealed), Ok(plaintext.clone()));
        prop_assert_eq!(open(&before, purpose, &secret, &store_key, &resealed), Err(SealError::UnknownKey));
        // Bound to its store key and record secret.
        let mut other = store_key.clone();
        other.push(1);
        prop_assert!(open(&during, purpose, &secret, &other, &resealed).is_err());
        let mut other = secret.clone();
        other.push(1);
        prop_assert!(open(&during, purpose, &other, &store_key, &resealed).is_err());
    }

    /// Every 32-byte ticket has exactly one 43-character spelling, and its store keys are a
    /// deterministic, namespaced function of it that never contains it.
    #[test]
    fn ticket_encoding_and_store_keys(bytes in any::<[u8; 32]>(), other in any::<[u8; 32]>()) {
        let text = URL_SAFE_NO_PAD.encode(bytes);
        let t = Ticket::parse(&text).expect("a 32-byte ticket parses");
        prop_assert_eq!(t.encode(), text.clone());
        prop_assert_eq!(t.secret(), &bytes[..]);
        let again = Ticket::parse(&text).expect("parses");
        let s = t.store_key(Namespace::Session);
        prop_assert_eq!(&s, &again.store_key(Namespace::Session));
        prop_assert!(s.0.starts_with(Namespace::Session.prefix()));
        prop_assert!(!s.0.contains(&text));
        prop_assert_ne!(&s, &t.store_key(Namespace::LoginState));
        if other != bytes {
            let o = Ticket::parse(&URL_SAFE_NO_PAD.encode(other)).expect("parses");
            prop_assert_ne!(&s, &o.store_key(Namespace::Session));
        }
        // The last character carries 4 unused bits: any other spelling of them is refused.
        let last = text.as_bytes()[42];
        for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
            if *c != last {
                let mut alt = text.clone().into_bytes();
                alt[42] = *c;
                let alt = String::from_utf8(alt).expect("ascii");
                if let Some(p) = Ticket::parse(&alt) {
                    prop_assert_eq!(p.encode(), alt);
                }
            }
        }
    }

    /// A path is within a prefix only at a segment boundary: `/api/orders` claims
    /// `/api/orders` and `/api/orders/…`, never `/api/ordersX`.
    #[test]
    fn route_matching_is_segment_aware(
        prefix in "(/[a-z0-9._~-]{1,8}){1,3}",
        rest in "[a-zA-Z0-9._~%-]{0,12}(/[a-zA-Z0-9._~%-]{0,8}){0,3}",
    ) {
        let path = format!("{prefix}{rest}");
        let expected = rest.is_empty() || rest.starts_with('/');
        prop_assert_eq!(path_within(&path, &prefix), expected, "{} within {}", path, prefix);
    }

    /// The gateway's route table picks, for any path, a route whose prefix the path is
    /// segment-wise within, and claims nothing else.
    #[test]
    fn configured_routes_claim_exactly_their_segments(
        prefixes in proptest::collection::btree_set("(/[a-c]{1,2}){1,3}", 1..5),
        path in "(/[a-c]{1,3}){0,4}/?",
    ) {
        let config = config_with_routes(&prefixes);
        let proxy = Proxy::new(&config).expect("proxy");
        let claimed = prefixes.iter().any(|p| path_within(&path, p));
        prop_assert_eq!(proxy.has_route(&path), claimed, "{} among {:?}", path, prefixes);
    }

    /// Generated near-miss `returnTo` values: whatever validates stays on our origin.
    #[test]
    fn return_to_never_leaves_the_origin(
        s in r"[/\\]{0,3}(%2[fF]|%5[cC]|%25|[a-z.:@ \t/\\?#]){0,12}",
    ) {
        if return_to::is_safe(&s) {
            let base = url::Url::parse("https://app.example").expect("base");
            let to = base.join(&return_to::to_location(&s)).expect("resolves");
            prop_assert_eq!(to.origin().ascii_serialization(), "https://app.example");
        }
    }

    /// Dot segments reach no upstream, however they are percent-encoded.
    #[test]
    fn no_dot_segment_survives_hygiene(
        segs in proptest::collection::vec(prop_oneof![
            Just("..".to_owned()), Just(".".to_owned()), Just("%2e%2e".to_owned()),
            Just(".%2E".to_owned()), Just("%252e%252e".to_owned()), Just("%25%32%65%25%32%65".to_owned()),
            "[a-z]{1,4}",
        ], 1..5),
    ) {
        let path = format!("/{}", segs.join("/"));
        let has_dots = segs.iter().any(|s| !s.chars().all(|c| c.is_ascii_lowercase()));
        prop_assert_eq!(check_path(&path).is_err(), has_dots, "{}", path);
    }
}

/// A valid configuration with one route per prefix (secrets in files, as in production).
fn config_with_routes(prefixes: &std::collections::BTreeSet<String>) -> Config {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("portcullis-props-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(d.join("keys"), key(7)).expect("keys");
        std::fs::write(d.join("secret"), "s3cret").expect("secret");
        d
    });
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:8080\"\npublic_origin = \"http://localhost:8080\"\n\
         [session]\nkeys_file = \"{}\"\n\
         [oidc]\nissuer = \"http://127.0.0.1:9000\"\nclient_id = \"c\"\nclient_secret_file = \"{}\"\n",
        dir.join("keys").display(),
        dir.join("secret").display()
    );
    for p in prefixes {
        toml.push_str(&format!(
            "[[routes]]\nprefix = \"{p}\"\nupstream = \"http://127.0.0.1:7001{p}\"\n"
        ));
    }
    Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}
