//! Cookie headers → the session cookie's value → a ticket.
//!
//! Invariants: `cookie::single` finds a value only when exactly one pair has the exact name (a
//! reference split agrees, over every header value, non-ASCII bytes included); a ticket that parses is exactly 43 base64url characters and
//! re-encodes to the same string (no second spelling of one ticket); its store keys are
//! namespaced, differ between namespaces and never contain the ticket.
#![no_main]

use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use portcullis::session::{
    cookie,
    ticket::{Namespace, TICKET_CHARS, Ticket},
};

const NAME: &str = "__Host-SessionID";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Each line is one `Cookie` header (HTTP/2 splits cookies over several).
    let mut headers = HeaderMap::new();
    let mut lines = Vec::new();
    for line in text.split('\n') {
        // Every header value is read, non-ASCII (obs-text) bytes included: another cookie's
        // raw UTF-8 must not hide ours.
        if let Ok(v) = HeaderValue::from_str(line) {
            lines.push(line);
            headers.append(header::COOKIE, v);
        }
    }
    let reference: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.split(';'))
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| k.trim_ascii() == NAME)
        .map(|(_, v)| v.trim_ascii())
        .collect();
    let single = cookie::single(&headers, NAME);
    match reference.as_slice() {
        [only] => assert_eq!(single, Some(*only)),
        _ => assert_eq!(
            single, None,
            "zero or several session cookies must read as none"
        ),
    }
    for candidate in [single.unwrap_or(""), text.trim()] {
        check_ticket(candidate);
    }
});

fn check_ticket(s: &str) {
    let Some(t) = Ticket::parse(s) else {
        return;
    };
    assert_eq!(s.len(), TICKET_CHARS);
    assert!(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(t.encode(), s, "a ticket has exactly one spelling");
    let session = t.store_key(Namespace::Session);
    let login = t.store_key(Namespace::LoginState);
    assert!(session.0.starts_with(Namespace::Session.prefix()));
    assert!(login.0.starts_with(Namespace::LoginState.prefix()));
    assert_ne!(session, login);
    assert!(!session.0.contains(s) && !login.0.contains(s));
}
