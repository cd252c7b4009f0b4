//! Configuration text → validated `Config` (`Config::from_toml`).
//!
//! Invariants: a config that validates has the secure shapes the rest of the code relies on
//! (a `__Host-` cookie name, slash-led prefixes with no trailing slash, no route overlapping the
//! BFF prefix, http(s) upstreams, an origin-only `public_origin`, header limits and timeouts in
//! range); a config that does not validate names at least one problem, each with its key.
//! Secrets come from files: the seeds name `/tmp/portcullis-fuzz/{keys,secret}`, written here.
#![no_main]

use std::{sync::Once, time::Duration};

use libfuzzer_sys::fuzz_target;
use portcullis::config::{Config, path_within};

const DIR: &str = "/tmp/portcullis-fuzz";

fn write_secrets() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::fs::create_dir_all(DIR).expect("secrets dir");
        // A fixed, public test key: the fuzzer only needs a well-formed one.
        std::fs::write(
            format!("{DIR}/keys"),
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .expect("keys");
        std::fs::write(format!("{DIR}/secret"), "s3cret\n").expect("secret");
    });
}

fuzz_target!(|data: &[u8]| {
    write_secrets();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let c = match Config::from_toml(text) {
        Ok(c) => c,
        Err(problems) => {
            assert!(
                !problems.0.is_empty(),
                "an invalid config names its problems"
            );
            assert!(problems.0.iter().all(|p| !p.key.is_empty()));
            return;
        }
    };
    assert!(c.session.cookie_name.starts_with("__Host-"));
    assert!(c.bff_prefix.starts_with('/') && !c.bff_prefix.ends_with('/'));
    for r in &c.routes {
        assert!(
            r.prefix.starts_with('/') && !r.prefix.ends_with('/'),
            "{}",
            r.prefix
        );
        assert!(!r.prefix.contains("//"));
        assert!(!path_within(&r.prefix, &c.bff_prefix) && !path_within(&c.bff_prefix, &r.prefix));
        assert!(
            matches!(r.upstream.scheme(), "http" | "https"),
            "{}",
            r.upstream
        );
    }
    let origin = url::Url::parse(&c.server.public_origin.origin).expect("origin is a URL");
    assert!(matches!(origin.scheme(), "http" | "https"));
    assert_eq!(origin.path(), "/");
    assert!(origin.query().is_none() && origin.fragment().is_none());
    assert!(origin.username().is_empty() && origin.password().is_none());
    assert!(c.redirect_uri().starts_with(&c.server.public_origin.origin));
    assert!((4096..=1 << 20).contains(&c.server.max_header_bytes));
    assert!(
        (Duration::from_secs(1)..=Duration::from_secs(3600))
            .contains(&c.server.header_read_timeout)
    );
    assert!(!c.session.absolute_lifetime.is_zero() && !c.session.idle_timeout.is_zero());
});
