//! `returnTo` validation (`bff::return_to`).
//!
//! Invariants for every value that validates: it is a relative path (one leading `/`, no `//`,
//! no `\`, no control or whitespace characters, at most 2 KiB), and so is what one or two rounds
//! of percent-decoding make of it; the `Location` built from it is ASCII and, resolved by a URL
//! parser against our origin (as a browser does), stays on our origin. Anything else sanitizes
//! to `/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::bff::return_to;
use url::Url;

const ORIGIN: &str = "https://app.example";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let sanitized = return_to::sanitize(Some(s));
    if !return_to::is_safe(s) {
        assert_eq!(sanitized, "/");
        return;
    }
    assert_eq!(sanitized, s);
    assert!(s.len() <= 2048);
    for form in [s.to_owned(), decode(s), decode(&decode(s))] {
        plain_relative_path(&form, s);
    }
    let location = return_to::to_location(s);
    assert!(
        location.is_ascii() && !location.contains(' '),
        "{location:?}"
    );
    let base = Url::parse(ORIGIN).expect("base");
    let resolved = base.join(&location).expect("a safe returnTo resolves");
    assert_eq!(
        resolved.origin().ascii_serialization(),
        ORIGIN,
        "{s:?} leaves the origin as {resolved}"
    );
    assert!(resolved.username().is_empty() && resolved.password().is_none());
});

fn plain_relative_path(form: &str, input: &str) {
    let b = form.as_bytes();
    assert_eq!(b.first(), Some(&b'/'), "{input:?}");
    assert!(!matches!(b.get(1), Some(b'/' | b'\\')), "{input:?}");
    assert!(!form.contains('\\'), "{input:?}");
    assert!(!form.chars().any(char::is_control), "{input:?}");
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
