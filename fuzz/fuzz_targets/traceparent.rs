//! W3C `traceparent` parsing (`http::trace_context::TraceContext::parse`), which reads a header
//! any client may send.
//!
//! Invariants: a parsed context has non-zero ids; a version-`00` value round-trips exactly (one
//! spelling: lowercase hex, 55 characters); a later version is read as its first four fields;
//! what we send on (`traceparent()`, `header_value()`) parses back to the same context; a child
//! keeps the trace id and gets a fresh non-zero span id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::http::trace_context::TraceContext;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    let Some(ctx) = TraceContext::parse(value) else {
        return;
    };
    assert_ne!(ctx.trace_id, [0; 16]);
    assert_ne!(ctx.span_id, [0; 8]);
    let trimmed = value.trim_matches([' ', '\t']);
    let sent = ctx.traceparent();
    if trimmed.starts_with("00-") {
        assert_eq!(sent, trimmed, "a version-00 value has one spelling");
    } else {
        assert_eq!(&sent[3..], &trimmed[3..55]);
    }
    assert_eq!(ctx.header_value().to_str().ok(), Some(sent.as_str()));
    assert_eq!(TraceContext::parse(&sent), Some(ctx));
    if let Some(child) = ctx.child() {
        assert_eq!(child.trace_id, ctx.trace_id);
        assert_ne!(child.span_id, [0; 8]);
    }
});
