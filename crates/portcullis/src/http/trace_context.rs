//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` header.
//!
//! Every request gets a context: the incoming one continued (a fresh span id under the caller's
//! trace id) when the peer is one of `server.trusted_proxies`, else a new trace. A browser can
//! send anything, so an untrusted `traceparent`/`tracestate` is dropped, never forwarded. The
//! gateway's own context is then what upstreams (the request's `traceparent` header is replaced)
//! and the OpenID Provider (see [`outgoing`]) see as their parent.

use http::HeaderValue;

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// One span's context: 16-byte trace id, 8-byte span (parent) id, trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// The `sampled` trace flag.
pub const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A new trace (random ids, see [`crate::crypto::random::identifier_bytes`]; `None` only for
    /// the all-zero ids the spec forbids). Marked sampled: the request is logged with its trace
    /// id, so downstream may record it too.
    pub fn new_root() -> Option<Self> {
        let ids = crate::crypto::random::identifier_bytes::<24>();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&ids[..16]);
        span_id.copy_from_slice(&ids[16..]);
        Self::valid(trace_id, span_id).then_some(TraceContext {
            trace_id,
            span_id,
            flags: SAMPLED,
        })
    }

    /// A child span of `self`: same trace and flags, new span id.
    pub fn child(&self) -> Option<Self> {
        let span_id = crate::crypto::random::identifier_bytes::<8>();
        (span_id != [0; 8]).then_some(TraceContext { span_id, ..*self })
    }

    fn valid(trace_id: [u8; 16], span_id: [u8; 8]) -> bool {
        trace_id != [0; 16] && span_id != [0; 8]
    }

    /// Parses a `traceparent` value strictly: lowercase hex, exact field lengths, no all-zero
    /// ids, version `ff` refused. Version `00` must be exactly 55 characters; a later version
    /// may append `-`-separated fields, which are ignored (spec section 4.3).
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.trim_matches([' ', '\t']).as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = hex_byte(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, out) in span_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&b[53..55])?;
        Self::valid(trace_id, span_id).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// `00-<trace id>-<span id>-<flags>`: this span as the parent of the next hop.
    pub fn traceparent(&self) -> String {
        // Built by hand: this runs on every proxied request, and `format!` costs several times more.
        let mut s = String::with_capacity(55);
        s.push_str("00-");
        push_hex(&mut s, &self.trace_id);
        s.push('-');
        push_hex(&mut s, &self.span_id);
        s.push('-');
        push_hex(&mut s, &[self.flags]);
        s
    }

    pub fn header_value(&self) -> HeaderValue {
        HeaderValue::from_str(&self.traceparent()).unwrap_or(HeaderValue::from_static(""))
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    Some(nibble(two[0])? << 4 | nibble(two[1])?)
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

/// Runs `f` with `ctx` as the current request's trace context (see [`outgoing`]).
pub async fn scope<F: Future>(ctx: TraceContext, f: F) -> F::Output {
    CURRENT.scope(ctx, f).await
}

/// The context of the request being served by this task, if any.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

/// The `traceparent` for an outgoing call (to the OpenID Provider): the current request's span as
/// parent, or a new trace for background work (discovery, JWKS refresh at startup).
pub fn outgoing() -> Option<HeaderValue> {
    current()
        .or_else(TraceContext::new_root)
        .map(|c| c.header_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_prints_the_spec_example() {
        let c = TraceContext::parse(EXAMPLE).expect("valid");
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(c.flags, 1);
        assert_eq!(c.traceparent(), EXAMPLE);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-011",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_later_version_with_extra_fields_is_read() {
        let c = TraceContext::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .expect("future version");
        assert_eq!(c.span_id_hex(), "00f067aa0ba902b7");
        assert!(
            TraceContext::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x")
                .is_none()
        );
    }

    #[test]
    fn child_keeps_the_trace_and_changes_the_span() {
        let root = TraceContext::new_root().expect("rng");
        let child = root.child().expect("rng");
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_eq!(TraceContext::parse(&child.traceparent()), Some(child));
    }

    #[tokio::test]
    async fn outgoing_uses_the_scoped_context() {
        let ctx = TraceContext::new_root().expect("rng");
        let inside = scope(ctx, async { outgoing() }).await.expect("header");
        assert_eq!(inside.to_str().ok(), Some(ctx.traceparent().as_str()));
        let outside = outgoing().expect("header");
        assert_ne!(outside.to_str().ok(), Some(ctx.traceparent().as_str()));
    }
}
