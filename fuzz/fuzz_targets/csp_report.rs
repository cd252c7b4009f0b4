//! CSP violation report bodies (`bff::csp_report::reduce_report`), which anyone can post.
//!
//! Invariants for every accepted body: at most `MAX_REPORTS_PER_REQUEST` violations are handled;
//! each is reduced to a fixed directive label, bounded fields without control or bidi-override
//! characters, a blocked resource that is a keyword, a scheme or an origin (never a path or
//! query), a document path without query or fragment, and a sample with no query string left.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use portcullis::bff::csp_report::{
    DIRECTIVES, MAX_REPORTS_PER_REQUEST, OTHER, PATH_CHARS, SAMPLE_CHARS, reduce_report,
};

#[derive(Arbitrary, Debug)]
enum ContentType {
    Legacy,
    ReportingApi,
    Json,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    content_type: ContentType,
    body: &'a [u8],
}

fuzz_target!(|input: Input| {
    let ct = match &input.content_type {
        ContentType::Legacy => "application/csp-report",
        ContentType::ReportingApi => "application/reports+json",
        ContentType::Json => "application/json; charset=utf-8",
        ContentType::Other(s) => s.as_str(),
    };
    let Ok((total, reduced)) = reduce_report(ct, input.body) else {
        return;
    };
    assert!(reduced.len() <= MAX_REPORTS_PER_REQUEST && reduced.len() <= total);
    // Control and bidi characters are logged as `?`: only without them is every `?` a query.
    let plain = serde_json::from_slice::<serde_json::Value>(input.body)
        .is_ok_and(|v| !any_string(&v, &|s| s.chars().any(is_hidden)));
    for (format, v) in reduced {
        assert!(matches!(format, "legacy" | "reporting-api"));
        assert!(v.directive == OTHER || DIRECTIVES.contains(&v.directive));
        assert!(matches!(
            v.disposition,
            "enforce" | "report" | "unknown" | "other"
        ));
        assert!(v.status <= 999);
        for (field, max) in [
            (&v.blocked, PATH_CHARS),
            (&v.document, PATH_CHARS),
            (&v.source, PATH_CHARS),
            (&v.sample, SAMPLE_CHARS),
        ] {
            assert!(field.chars().count() <= max + 1, "{field:?} is not bounded");
            assert!(
                !field.chars().any(is_hidden),
                "{field:?} carries control characters"
            );
        }
        let query = if plain { &['?', '#'][..] } else { &['#'][..] };
        assert!(!v.document.contains(query), "{:?}", v.document);
        assert!(!v.blocked.contains(query), "{:?}", v.blocked);
        if let Some((_, rest)) = v.blocked.split_once("://") {
            assert!(!rest.contains('/'), "blocked keeps a path: {:?}", v.blocked);
        }
        assert!(!v.source.contains(query), "{:?}", v.source);
    }
});

fn is_hidden(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn any_string(v: &serde_json::Value, f: &dyn Fn(&str) -> bool) -> bool {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().any(|x| any_string(x, f)),
        serde_json::Value::Object(o) => o.iter().any(|(k, x)| f(k) || any_string(x, f)),
        _ => false,
    }
}
