//! `POST /bff/csp-report`: legacy and Reporting API payloads are accepted (204) and counted per
//! directive; content type, size, rate and Origin are enforced; what is logged is bounded and
//! never carries a query string or a long sample.

mod common;

use common::running::{captured_logs, init_logs, write_secret};
use http::Method;
use portcullis::{AppState, config::Config, crypto::keyring::KeyRing};
use serde_json::{Value, json};
use testkit::browser::{Browser, Response};
use tokio::net::TcpListener;

/// A gateway on loopback that never talks to a provider (none is needed for reports).
struct Gateway {
    base: String,
    state: AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn gateway(extra: &str) -> Gateway {
    init_logs("trace,hyper=info,h2=info,reqwest=debug");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let base = format!("http://localhost:{port}");
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", "s3cret");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"
trusted_proxies = ["127.0.0.1"]

[session]
keys_file = "{keys}"

[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret_file = "{secret}"
{extra}
"#
    );
    let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("config: {e}"));
    let state = AppState::new(config).expect("state");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server_state = state.clone();
    tokio::spawn(async move {
        portcullis::server::run(listener, server_state, async {
            let _ = rx.await;
        })
        .await
        .expect("gateway");
    });
    Gateway {
        base,
        state,
        _stop: tx,
    }
}

impl Gateway {
    async fn post(&self, content_type: &str, body: impl Into<bytes::Bytes>) -> Response {
        self.post_with(&[("content-type", content_type)], body)
            .await
    }

    async fn post_with(&self, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> Response {
        Browser::new()
            .request(
                Method::POST,
                &format!("{}/bff/csp-report", self.base),
                headers,
                body.into(),
            )
            .await
            .expect("csp report")
    }

    fn count(&self, directive: &str) -> u64 {
        self.state
            .csp_reports()
            .into_iter()
            .find(|(d, _)| d == directive)
            .map_or(0, |(_, c)| c)
    }
}

fn legacy(directive: &str, document: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"csp-report": {
        "document-uri": document,
        "referrer": "",
        "violated-directive": directive,
        "effective-directive": directive,
        "original-policy": "default-src 'self'; script-src 'nonce-abc' 'strict-dynamic'; report-uri /bff/csp-report",
        "disposition": "enforce",
        "blocked-uri": "inline",
        "line-number": 10,
        "column-number": 5,
        "source-file": document,
        "status-code": 200,
        "script-sample": "alert(1)"
    }}))
    .expect("json")
}

/// Posts `body` as a legacy report with `Transfer-Encoding: chunked` (no Content-Length, so
/// only reading can find the size); returns the status code.
async fn chunked_post(base: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base.trim_start_matches("http://");
    let port = authority.rsplit(':').next().expect("port");
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let mut req = format!(
        "POST /bff/csp-report HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/csp-report\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(1024) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    // The gateway may answer (and close) before reading everything: ignore write errors.
    let _ = s.write_all(&req).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn assert_problem(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_and_reporting_api_reports_are_accepted_and_counted() {
    let gw = gateway("").await;
    let doc = format!("{}/orders", gw.base);

    // Legacy `report-uri` format, as Chromium sends it (with our own Origin).
    let r = gw
        .post_with(
            &[
                ("content-type", "application/csp-report"),
                ("origin", &gw.base),
                ("sec-fetch-site", "same-origin"),
            ],
            legacy("script-src-elem", &doc),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    assert!(r.body.is_empty());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(gw.count("script-src-elem"), 1);

    // The same over plain application/json (older senders), and without an Origin.
    let r = gw.post("application/json", legacy("img-src", &doc)).await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    assert_eq!(gw.count("img-src"), 1);

    // Reporting API batch: two CSP violations (one Trusted Types), one report of another type.
    let batch = json!([
        {"type": "csp-violation", "age": 10, "url": doc, "user_agent": "Chromium",
         "body": {"blockedURL": "trusted-types-sink", "disposition": "enforce",
                  "documentURL": doc, "effectiveDirective": "require-trusted-types-for",
                  "lineNumber": 3, "columnNumber": 9, "originalPolicy": "require-trusted-types-for 'script'",
                  "sample": "Element innerHTML|<b>x</b>", "sourceFile": doc, "statusCode": 200}},
        {"type": "csp-violation", "age": 10, "url": doc, "user_agent": "Chromium",
         "body": {"blockedURL": "https://evil.example/x.js", "disposition": "report",
                  "documentURL": doc, "effectiveDirective": "script-src-elem"}},
        {"type": "deprecation", "age": 1, "url": doc, "body": {"id": "Something"}}
    ]);
    let r = gw
        .post_with(
            &[
                ("content-type", "application/reports+json"),
                ("origin", &gw.base),
            ],
            serde_json::to_vec(&batch).expect("json"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());
    assert_eq!(gw.count("require-trusted-types-for"), 1);
    assert_eq!(gw.count("script-src-elem"), 2);

    // Unknown directives share one label, however many distinct names are sent.
    for i in 0..40 {
        let r = gw
            .post(
                "application/csp-report",
                legacy(&format!("made-up-{i}"), &doc),
            )
            .await;
        assert_eq!(r.status.as_u16(), 204);
    }
    assert_eq!(gw.count("other"), 40);
    assert!(
        gw.state.csp_reports().len() <= 32,
        "{:?}",
        gw.state.csp_reports()
    );

    // Media type parameters and case do not matter.
    let r = gw
        .post(
            "Application/CSP-Report; charset=utf-8",
            legacy("font-src", &doc),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204);
    assert_eq!(gw.count("font-src"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals() {
    let gw = gateway("").await;
    let doc = format!("{}/", gw.base);
    let before = gw.state.csp_reports();

    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        assert_problem(&gw.post(ct, legacy("img-src", &doc)).await, 415, ct);
    }
    assert_problem(
        &gw.post_with(&[], legacy("img-src", &doc)).await,
        415,
        "no content type",
    );

    // 16 KiB at most: by Content-Length, and for a body without one (chunked).
    let mut big = legacy("img-src", &doc);
    big.truncate(big.len() - 2);
    big.extend_from_slice(format!(r#", "padding": "{}"}}}}"#, "x".repeat(17 * 1024)).as_bytes());
    assert_problem(
        &gw.post("application/csp-report", big.clone()).await,
        413,
        "oversize",
    );
    assert_eq!(chunked_post(&gw.base, &big).await, 413, "chunked oversize");

    // Not JSON, or JSON that is no report.
    for (ct, body) in [
        ("application/csp-report", "{not json"),
        ("application/csp-report", "[]"),
        ("application/csp-report", r#"{"csp-report": "x"}"#),
        ("application/reports+json", r#"{"csp-report": {}}"#),
        ("application/json", r#"{"hello": "world"}"#),
        ("application/json", ""),
    ] {
        assert_problem(&gw.post(ct, body).await, 400, body);
    }

    // Reports come from our own pages: a foreign (even same-site) Origin or fetch site is refused.
    for headers in [
        vec![("origin", "http://evil.example")],
        vec![("origin", "http://sub.localhost:1")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
    ] {
        let mut h = headers.clone();
        h.push(("content-type", "application/csp-report"));
        assert_problem(
            &gw.post_with(&h, legacy("img-src", &doc)).await,
            403,
            &format!("{headers:?}"),
        );
    }

    // Other methods.
    let get = Browser::new()
        .get(&format!("{}/bff/csp-report", gw.base))
        .await
        .expect("get");
    assert_problem(&get, 405, "GET");

    assert_eq!(
        gw.state.csp_reports(),
        before,
        "no refused report is counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_rate_limited_per_client_ip() {
    let gw = gateway("[rate_limits]\ncsp_report_per_ip = \"3/min\"").await;
    let doc = format!("{}/", gw.base);
    let send = |ip: &'static str| {
        let body = legacy("img-src", &doc);
        let gw = &gw;
        async move {
            gw.post_with(
                &[
                    ("content-type", "application/csp-report"),
                    ("x-forwarded-for", ip),
                ],
                body,
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(send("198.51.100.1").await.status.as_u16(), 204);
    }
    let limited = send("198.51.100.1").await;
    assert_problem(&limited, 429, "4th report");
    assert!(limited.header("retry-after").is_some());
    // Another client has its own budget.
    assert_eq!(send("198.51.100.2").await.status.as_u16(), 204);
    assert_eq!(gw.count("img-src"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_are_bounded_and_carry_no_query_or_long_sample() {
    let gw = gateway("").await;
    let marker = format!(
        "logcheck{}",
        portcullis::crypto::random::token::<6>().expect("rng")
    );
    let long_sample = format!("SAMPLESTART{}SAMPLEEND", "y".repeat(300));
    let report = json!({"csp-report": {
        "document-uri": format!("{}/{marker}/page?access_token=QUERYSECRET1#frag", gw.base),
        "referrer": "https://idp.example/cb?code=QUERYSECRET2",
        "effective-directive": "script-src-elem",
        "blocked-uri": "https://cdn.example/x.js?sig=QUERYSECRET3",
        "source-file": format!("{}/app.js?v=QUERYSECRET4", gw.base),
        "line-number": 7,
        "column-number": 21,
        "disposition": "enforce",
        "status-code": 200,
        "original-policy": "script-src 'nonce-QUERYSECRET5'",
        "script-sample": format!("fetch('/x?t=QUERYSECRET6') {long_sample}")
    }});
    let r = gw
        .post(
            "application/csp-report",
            serde_json::to_vec(&report).expect("json"),
        )
        .await;
    assert_eq!(r.status.as_u16(), 204, "{}", r.text());

    let logs = captured_logs();
    assert!(!logs.contains("QUERYSECRET"), "a query string was logged");
    assert!(!logs.contains("SAMPLEEND"), "a long sample was logged");
    let lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.contains(&marker))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 1, "one line per violation: {lines:?}");
    let f = &lines[0]["fields"];
    assert_eq!(f["message"], "csp violation");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(f["directive"], "script-src-elem");
    assert_eq!(f["document"], format!("/{marker}/page"));
    assert_eq!(f["blocked"], "https://cdn.example");
    assert_eq!(f["source"], format!("{}/app.js", gw.base));
    assert_eq!(f["line"], 7);
    assert_eq!(f["column"], 21);
    assert_eq!(f["disposition"], "enforce");
    assert_eq!(f["status"], 200);
    let sample = f["sample"].as_str().expect("sample");
    assert!(sample.chars().count() <= 41, "{sample}");
    assert!(sample.starts_with("fetch('/x?…')"), "{sample}");
    // Nothing of the policy or referrer is logged at all.
    assert!(f.get("original_policy").is_none() && f.get("referrer").is_none());
}
