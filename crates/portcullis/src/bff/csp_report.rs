//! `POST /bff/csp-report`: where browsers send Content-Security-Policy and Trusted Types
//! violation reports.
//!
//! Accepted bodies (at most [`MAX_BODY`] bytes):
//! * `application/csp-report`, the legacy `report-uri` format: `{"csp-report": {...}}` with
//!   kebab-case keys (`effective-directive`, `blocked-uri`, `document-uri`, ...);
//! * `application/reports+json`, the Reporting API (`report-to`): an array of
//!   `{"type": "csp-violation", "body": {...}}` with camelCase keys (`effectiveDirective`,
//!   `blockedURL`, `documentURL`, ...); reports of other types are ignored;
//! * `application/json`, either of the above, for older or hand-rolled senders.
//!
//! Anyone can post here, so nothing in a report is trusted or kept verbatim. Each violation
//! becomes one log line of bounded, reduced fields: the directive (one of a fixed set of labels),
//! the blocked resource reduced to its origin or keyword (`inline`, `eval`,
//! `trusted-types-sink`, ...), the document's path without query or fragment, the source file
//! without query, line and column, disposition, status code, and at most 40 characters of the
//! sample with anything that looks like a query string cut out (URLs may carry tokens). Counts
//! per directive ([`ReportCounts`]) are exposed through [`crate::AppState::csp_reports`].
//!
//! Refusals: a present `Origin` (or `Sec-Fetch-Site`) that is not our own → 403 (reports come
//! from our own pages; absent is fine); over `rate_limits.csp_report_per_ip` → 429; another
//! content type → 415; a larger body → 413; not JSON or not a report → 400. Otherwise 204.
//! The endpoint needs no CSRF token: browsers send reports without custom headers, and it changes
//! nothing but a counter.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
};
use http::{StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::{
    AppState,
    http::problem::ApiError,
    ratelimit::{Bucket, LimitKey},
};

/// A single legacy report is well under 4 KiB; the Reporting API batches several.
pub const MAX_BODY: usize = 16 * 1024;
/// Violations handled (logged and counted) per request; the rest of a batch is dropped.
pub const MAX_REPORTS_PER_REQUEST: usize = 32;
/// The longest sample ever logged, in characters (what browsers send at most, too).
pub const SAMPLE_CHARS: usize = 40;
/// The longest path or source file logged, in characters.
pub const PATH_CHARS: usize = 200;

/// Every directive a violation can name (CSP Level 3, Trusted Types, and a few legacy ones
/// older browsers still report). These, plus `other`, are the only counter labels, so a sender
/// cannot grow the label set (or a metrics backend's cardinality).
pub const DIRECTIVES: [&str; 29] = [
    "default-src",
    "script-src",
    "script-src-elem",
    "script-src-attr",
    "style-src",
    "style-src-elem",
    "style-src-attr",
    "img-src",
    "font-src",
    "connect-src",
    "media-src",
    "object-src",
    "frame-src",
    "child-src",
    "worker-src",
    "manifest-src",
    "prefetch-src",
    "fenced-frame-src",
    "base-uri",
    "form-action",
    "frame-ancestors",
    "navigate-to",
    "sandbox",
    "require-trusted-types-for",
    "trusted-types",
    "upgrade-insecure-requests",
    "block-all-mixed-content",
    "webrtc",
    "plugin-types",
];

/// The label for anything not in [`DIRECTIVES`].
pub const OTHER: &str = "other";

/// Violations received, per directive label: lock-free, fixed size.
#[derive(Debug)]
pub struct ReportCounts([AtomicU64; DIRECTIVES.len() + 1]);

impl Default for ReportCounts {
    fn default() -> Self {
        ReportCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl ReportCounts {
    /// Counts one violation of `directive` (a label from [`directive_label`]).
    pub fn record(&self, directive: &str) {
        let i = DIRECTIVES
            .iter()
            .position(|d| *d == directive)
            .unwrap_or(DIRECTIVES.len());
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(directive, count)` for every label seen at least once, in [`DIRECTIVES`] order, `other`
    /// last.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        DIRECTIVES
            .iter()
            .chain(std::iter::once(&OTHER))
            .zip(self.0.iter())
            .map(|(d, c)| ((*d).to_owned(), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Legacy,
    ReportingApi,
    /// `application/json`: decided by the shape.
    Either,
}

pub async fn receive(State(state): State<AppState>, req: Request) -> Response {
    match handle(&state, req).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::info!(status = e.status().as_u16(), "csp report refused");
            e.into_response()
        }
    }
}

async fn handle(state: &AppState, req: Request) -> Result<(), ApiError> {
    crate::csrf::check_origin(state, &req)?;
    let client = LimitKey::of_request(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        req.headers(),
        &state.config.server.trusted_proxies,
    );
    state
        .limiter
        .check(
            Bucket::CspReportPerIp,
            &client,
            state.config.rate_limits.csp_report_per_ip,
        )
        .await?;
    let format = content_format(req.headers()).ok_or(ApiError::UnsupportedMediaType)?;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(ApiError::PayloadTooLarge);
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge);
        }
        Err(_) => return Err(ApiError::BadRequest("could not read the report")),
    };
    let (total, reduced) = reduce_body(format, &body)?;
    for (kind, v) in reduced {
        state.csp_report_counts.record(v.directive);
        v.log(kind);
    }
    if total > MAX_REPORTS_PER_REQUEST {
        tracing::info!(
            dropped = total - MAX_REPORTS_PER_REQUEST,
            "csp report batch truncated"
        );
    }
    Ok(())
}

/// The number of violations in a report, and the first [`MAX_REPORTS_PER_REQUEST`] of them,
/// reduced, each with the format it came in (`legacy` or `reporting-api`).
pub type Reduced = (usize, Vec<(&'static str, Violation)>);

/// Parses a report body of `content_type` and reduces its violations as the endpoint does:
/// the number of violations in it, and the first [`MAX_REPORTS_PER_REQUEST`] of them, reduced,
/// with the format each came in. Public for the fuzz targets (`fuzz/`).
pub fn reduce_report(content_type: &str, body: &[u8]) -> Result<Reduced, ApiError> {
    let mut headers = http::HeaderMap::new();
    let ct =
        http::HeaderValue::from_str(content_type).map_err(|_| ApiError::UnsupportedMediaType)?;
    headers.insert(header::CONTENT_TYPE, ct);
    let format = content_format(&headers).ok_or(ApiError::UnsupportedMediaType)?;
    reduce_body(format, body)
}

fn reduce_body(format: Format, body: &[u8]) -> Result<Reduced, ApiError> {
    let json: Value =
        serde_json::from_slice(body).map_err(|_| ApiError::BadRequest("malformed report"))?;
    let violations = violations(format, &json).ok_or(ApiError::BadRequest("not a CSP report"))?;
    let total = violations.len();
    let reduced = violations
        .into_iter()
        .take(MAX_REPORTS_PER_REQUEST)
        .map(|(kind, body)| (kind, Violation::from_report(body)))
        .collect();
    Ok((total, reduced))
}

/// The media type, case-insensitively, parameters ignored.
fn content_format(headers: &http::HeaderMap) -> Option<Format> {
    let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = ct.split(';').next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "application/csp-report" => Some(Format::Legacy),
        "application/reports+json" => Some(Format::ReportingApi),
        "application/json" => Some(Format::Either),
        _ => None,
    }
}

/// The violation bodies in a report, with the format each came in; `None` when the document is
/// not a report at all.
fn violations(format: Format, json: &Value) -> Option<Vec<(&'static str, &Value)>> {
    let legacy = || {
        json.get("csp-report")
            .filter(|r| r.is_object())
            .map(|r| vec![("legacy", r)])
    };
    let reporting = || {
        json.as_array().map(|reports| {
            reports
                .iter()
                .filter(|r| r.get("type").and_then(Value::as_str) == Some("csp-violation"))
                .filter_map(|r| r.get("body").filter(|b| b.is_object()))
                .map(|b| ("reporting-api", b))
                .collect()
        })
    };
    match format {
        Format::Legacy => legacy(),
        Format::ReportingApi => reporting(),
        Format::Either => legacy().or_else(reporting),
    }
}

/// What is logged of one violation: every field reduced and bounded.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation {
    pub directive: &'static str,
    pub blocked: String,
    pub document: String,
    pub source: String,
    pub line: u64,
    pub column: u64,
    pub disposition: &'static str,
    pub status: u64,
    pub sample: String,
}

/// The first string value among `keys` (legacy kebab-case and Reporting API camelCase names).
fn field<'a>(body: &'a Value, keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .unwrap_or("")
}

fn number(body: &Value, keys: &[&str]) -> u64 {
    keys.iter()
        .find_map(|k| {
            let v = body.get(*k)?;
            v.as_u64().or_else(|| v.as_str()?.trim().parse().ok())
        })
        .unwrap_or(0)
}

impl Violation {
    fn from_report(body: &Value) -> Self {
        let effective = field(body, &["effective-directive", "effectiveDirective"]);
        let directive = if effective.is_empty() {
            field(body, &["violated-directive", "violatedDirective"])
        } else {
            effective
        };
        Violation {
            directive: directive_label(directive),
            blocked: reduce_blocked(field(body, &["blocked-uri", "blockedURL", "blockedURI"])),
            document: document_path(field(body, &["document-uri", "documentURL", "documentURI"])),
            source: reduce_source(field(body, &["source-file", "sourceFile"])),
            line: number(body, &["line-number", "lineNumber"]),
            column: number(body, &["column-number", "columnNumber"]),
            disposition: match field(body, &["disposition"]) {
                "enforce" => "enforce",
                "report" => "report",
                "" => "unknown",
                _ => OTHER,
            },
            status: number(body, &["status-code", "statusCode"]).min(999),
            sample: reduce_sample(field(body, &["script-sample", "sample"])),
        }
    }

    fn log(&self, format: &'static str) {
        tracing::warn!(
            directive = self.directive,
            blocked = self.blocked.as_str(),
            document = self.document.as_str(),
            source = self.source.as_str(),
            line = self.line,
            column = self.column,
            disposition = self.disposition,
            status = self.status,
            sample = self.sample.as_str(),
            format,
            "csp violation"
        );
    }
}

/// One of [`DIRECTIVES`] or [`OTHER`]. Old browsers put the whole directive (`script-src
/// 'self'`) in `violated-directive`: its first word names it.
pub fn directive_label(raw: &str) -> &'static str {
    let name = raw.split_ascii_whitespace().next().unwrap_or("");
    DIRECTIVES
        .iter()
        .find(|d| d.eq_ignore_ascii_case(name))
        .copied()
        .unwrap_or(OTHER)
}

/// `inline`, `eval`, `trusted-types-sink`... as they are; a URL as its origin (`https://cdn.example`)
/// or, without a host, its scheme (`data:`, `blob:`); anything else `other`. Never a path or query.
pub fn reduce_blocked(raw: &str) -> String {
    let raw = raw.trim();
    if raw.is_empty() {
        return String::new();
    }
    if raw.len() <= 32 && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') {
        return raw.to_owned();
    }
    match url::Url::parse(raw) {
        Ok(u) => match origin_of(&u) {
            Some(origin) => bounded(&origin, PATH_CHARS),
            None if u.scheme().len() <= 16 => format!("{}:", u.scheme()),
            None => OTHER.into(),
        },
        Err(_) => OTHER.into(),
    }
}

/// `scheme://host[:port]` for any URL with a host (`Url::origin` is opaque for schemes such as
/// `chrome-extension:`, which are exactly the ones worth seeing).
fn origin_of(u: &url::Url) -> Option<String> {
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// The path of the document's URL: no origin, no query, no fragment, at most [`PATH_CHARS`].
pub fn document_path(raw: &str) -> String {
    let path = match url::Url::parse(raw.trim()) {
        Ok(u) => u.path().to_owned(),
        Err(_) if raw.starts_with('/') => {
            raw.split(['?', '#']).next().unwrap_or_default().to_owned()
        }
        Err(_) => String::new(),
    };
    bounded(&path, PATH_CHARS)
}

/// A script's URL as origin + path (no query or fragment), or a keyword; at most [`PATH_CHARS`].
pub fn reduce_source(raw: &str) -> String {
    let raw = raw.trim();
    match url::Url::parse(raw) {
        Ok(u) if u.host_str().is_some() => bounded(
            &format!("{}{}", origin_of(&u).unwrap_or_default(), u.path()),
            PATH_CHARS,
        ),
        _ => reduce_blocked(raw),
    }
}

/// At most [`SAMPLE_CHARS`] characters of the sample, with every `?` and what follows it up to
/// a space or quote replaced by `?…` (a URL in a script may carry a token in its query).
pub fn reduce_sample(raw: &str) -> String {
    let ends_query = |c: char| c.is_whitespace() || matches!(c, '\'' | '"' | '`' | ')');
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '?' && chars.peek().is_some_and(|n| !ends_query(*n)) {
            out.push('…');
            while chars.next_if(|n| !ends_query(*n)).is_some() {}
        }
    }
    bounded(&out, SAMPLE_CHARS)
}

/// `s` cut to `max` characters (`…` marks a cut), control and bidi-override characters replaced
/// so a log line reads as what it is.
fn bounded(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                '?'
            } else {
                c
            }
        })
        .collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn legacy_report_is_reduced() {
        let body = json!({
            "document-uri": "https://app.example/orders/42?token=SECRET#frag",
            "referrer": "https://idp.example/?code=abc",
            "violated-directive": "script-src-elem",
            "effective-directive": "script-src-elem",
            "original-policy": "script-src 'nonce-x'",
            "disposition": "enforce",
            "blocked-uri": "https://evil.example:8443/x.js?session=SECRET",
            "line-number": 12,
            "column-number": "7",
            "source-file": "https://app.example/assets/app.js?v=SECRET",
            "status-code": 200,
            "script-sample": "",
        });
        assert_eq!(
            Violation::from_report(&body),
            Violation {
                directive: "script-src-elem",
                blocked: "https://evil.example:8443".into(),
                document: "/orders/42".into(),
                source: "https://app.example/assets/app.js".into(),
                line: 12,
                column: 7,
                disposition: "enforce",
                status: 200,
                sample: String::new(),
            }
        );
    }

    #[test]
    fn reporting_api_body_is_reduced() {
        let body = json!({
            "blockedURL": "trusted-types-sink",
            "columnNumber": 3,
            "disposition": "report",
            "documentURL": "https://app.example/?q=1",
            "effectiveDirective": "require-trusted-types-for",
            "lineNumber": 9,
            "sample": "Element innerHTML|<img src=x onerror=alert(1)> and much more text after it",
            "sourceFile": "https://app.example/main.js",
            "statusCode": 0,
        });
        let v = Violation::from_report(&body);
        assert_eq!(v.directive, "require-trusted-types-for");
        assert_eq!(v.blocked, "trusted-types-sink");
        assert_eq!(v.document, "/");
        assert_eq!(v.disposition, "report");
        assert_eq!(v.sample.chars().count(), SAMPLE_CHARS + 1, "{}", v.sample);
        assert!(v.sample.ends_with('…'));
    }

    #[test]
    fn directive_labels_are_bounded() {
        assert_eq!(
            directive_label("script-src 'self' 'unsafe-inline'"),
            "script-src"
        );
        assert_eq!(directive_label("IMG-SRC"), "img-src");
        assert_eq!(directive_label("made-up-directive-1"), OTHER);
        assert_eq!(directive_label(""), OTHER);
        let counts = ReportCounts::default();
        for d in ["script-src", "script-src", "x1", "x2", "trusted-types"] {
            counts.record(directive_label(d));
        }
        assert_eq!(
            counts.snapshot(),
            [
                ("script-src".to_owned(), 2),
                ("trusted-types".to_owned(), 1),
                (OTHER.to_owned(), 2)
            ]
        );
        assert!(DIRECTIVES.len() < 32);
    }

    #[test]
    fn blocked_uris() {
        assert_eq!(reduce_blocked("inline"), "inline");
        assert_eq!(reduce_blocked("eval"), "eval");
        assert_eq!(reduce_blocked("data:text/javascript,alert(1)"), "data:");
        assert_eq!(
            reduce_blocked("blob:https://app.example/1234-5678"),
            "blob:"
        );
        assert_eq!(
            reduce_blocked("https://u:p@cdn.example/a?b=c"),
            "https://cdn.example"
        );
        assert_eq!(reduce_blocked("not a url <script>"), OTHER);
        assert_eq!(
            reduce_blocked("chrome-extension://abcdef/inject.js?x=1"),
            "chrome-extension://abcdef"
        );
        assert_eq!(reduce_blocked("https://[::1]:8443/x"), "https://[::1]:8443");
        assert_eq!(
            reduce_blocked("https://cdn.example:443/x"),
            "https://cdn.example"
        );
        assert_eq!(reduce_blocked(""), "");
    }

    #[test]
    fn samples_lose_queries_and_control_characters() {
        assert_eq!(
            reduce_sample("fetch('/api?token=SECRET&x=1')"),
            "fetch('/api?…')"
        );
        assert_eq!(reduce_sample("a ? b : c"), "a ? b : c");
        assert_eq!(reduce_sample("line1\nline2\u{202e}"), "line1?line2?");
        assert_eq!(document_path("/relative/path?x=1"), "/relative/path");
        assert_eq!(document_path("garbage"), "");
        let long = format!("https://app.example/{}", "a".repeat(500));
        assert_eq!(document_path(&long).chars().count(), PATH_CHARS + 1);
    }

    #[test]
    fn shapes() {
        let legacy = json!({"csp-report": {"effective-directive": "img-src"}});
        let batch = json!([
            {"type": "csp-violation", "body": {"effectiveDirective": "img-src"}},
            {"type": "deprecation", "body": {"id": "x"}},
            {"type": "csp-violation", "body": "not an object"},
        ]);
        assert_eq!(
            violations(Format::Legacy, &legacy).map(|v| v.len()),
            Some(1)
        );
        assert_eq!(
            violations(Format::ReportingApi, &batch).map(|v| v.len()),
            Some(1)
        );
        assert_eq!(
            violations(Format::Either, &legacy).map(|v| v.len()),
            Some(1)
        );
        assert_eq!(violations(Format::Either, &batch).map(|v| v.len()), Some(1));
        assert!(violations(Format::Legacy, &batch).is_none());
        assert!(violations(Format::ReportingApi, &legacy).is_none());
        assert!(violations(Format::Either, &json!({"hello": 1})).is_none());
    }
}
