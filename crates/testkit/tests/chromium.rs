//! The headless Chromium harness, proven against pages from a local axum server: scripts run,
//! values come back, console errors, page errors and dialogs are caught, and blocked requests
//! (by the page's CSP, by the driver) are seen, with the CSP report reaching the server.
//!
//! A missing browser fails these tests (with the install hint); it never skips them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde_json::json;
use testkit::chromium::{Chromium, ChromiumSession, LaunchOptions, run_scenario};

const CSP: &str = "default-src 'self'; script-src 'nonce-harness'; img-src 'self'; \
                   report-uri /csp-report";

/// A loopback server: `/` (an HTML page with a CSP), `/app.js`, `POST /csp-report` (204) and
/// 404 for the rest; every request's method, path and body is recorded.
#[derive(Clone, Default)]
struct Site {
    seen: Arc<Mutex<Vec<(String, String, String)>>>,
    /// Where the page's cross-origin image points.
    other_origin: Arc<Mutex<String>>,
}

impl Site {
    async fn start() -> (Site, String) {
        let site = Site::default();
        let base = serve(site.clone()).await;
        (site, base)
    }

    fn seen(&self) -> Vec<(String, String, String)> {
        self.seen.lock().expect("lock").clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|(_, p, _)| p).collect()
    }
}

async fn serve(site: Site) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let app = Router::new().fallback(handle).with_state(site);
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    base
}

async fn handle(State(site): State<Site>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_owned(), |p| p.to_string());
    let body: Bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    site.seen.lock().expect("lock").push((
        method.clone(),
        path.clone(),
        String::from_utf8_lossy(&body).into_owned(),
    ));
    let other = site.other_origin.lock().expect("lock").clone();
    match (method.as_str(), path.split('?').next().unwrap_or("")) {
        ("GET", "/") => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CONTENT_SECURITY_POLICY, CSP),
            ],
            format!(
                r#"<!doctype html>
<html><head><title>Harness page</title></head>
<body>
<p id="static">static text</p>
<script nonce="harness" src="/app.js"></script>
<script nonce="harness">window.inlineRan = true;</script>
<img id="tracker" src="{other}/tracker.png" alt="">
</body></html>"#
            ),
        )
            .into_response(),
        ("GET", "/app.js") => (
            [(header::CONTENT_TYPE, "text/javascript")],
            r#"document.body.dataset.app = 'ready';
console.error('harness console error');
console.log('harness log line');
fetch('/blocked-by-driver.json').catch(() => { window.driverBlocked = true; });
setTimeout(() => { throw new TypeError('harness page error'); }, 0);
"#,
        )
            .into_response(),
        ("POST", "/csp-report") => StatusCode::NO_CONTENT.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

#[test]
fn chromium_is_available() {
    let a = Chromium::available();
    a.require().expect("headless Chromium");
    assert!(a.available);
    assert!(
        a.version.as_deref().unwrap_or("").contains("Chromium")
            || a.version.as_deref().unwrap_or("").contains("Chrome"),
        "{a}"
    );
}

#[test]
fn a_missing_browser_is_a_clear_error() {
    let a = Chromium::check(std::path::Path::new("/nonexistent/chromium"));
    assert!(!a.available);
    let err = a.require().expect_err("missing").to_string();
    assert!(
        err.contains("/nonexistent/chromium does not exist"),
        "{err}"
    );
    assert!(err.contains("apt-get install chromium"), "{err}");
    assert!(err.contains("scripts/test.sh"), "{err}");
}

#[tokio::test]
async fn runs_scripts_reads_values_and_records_console_errors_and_blocked_requests() {
    let (site, base) = Site::start().await;
    let (other, other_base) = Site::start().await;
    *site.other_origin.lock().expect("lock") = other_base.clone();

    let mut b = ChromiumSession::launch_with(LaunchOptions {
        block_urls: vec!["**/blocked-by-driver.json".to_owned()],
        ..LaunchOptions::default()
    })
    .await
    .expect("launch");
    assert!(!b.launched().version.is_empty());
    let profile = std::path::PathBuf::from(&b.launched().user_data_dir);
    assert!(profile.is_dir(), "fresh profile {}", profile.display());

    let nav = b.goto(&format!("{base}/")).await.expect("goto");
    assert_eq!(nav.status, Some(200));
    assert_eq!(nav.header("Content-Security-Policy"), Some(CSP));

    // Read values and run scripts.
    assert_eq!(b.title().await.expect("title"), "Harness page");
    assert_eq!(
        b.evaluate("document.title").await.expect("eval"),
        json!("Harness page")
    );
    b.wait_for_function(
        "document.body.dataset.app === 'ready' && window.inlineRan",
        Duration::from_secs(5),
    )
    .await
    .expect("the page's own scripts ran");
    assert_eq!(
        b.evaluate_with(
            "(a) => a.n * 2 + document.querySelectorAll('p').length",
            json!({"n": 20})
        )
        .await
        .expect("eval with arg"),
        json!(41)
    );
    assert_eq!(
        b.evaluate(
            "(async () => { await new Promise(r => setTimeout(r, 10)); return 'later'; })()"
        )
        .await
        .expect("promise"),
        json!("later")
    );
    assert_eq!(
        b.evaluate("undefined").await.expect("undefined"),
        json!(null)
    );
    let err = b
        .evaluate("notDefinedAnywhere()")
        .await
        .expect_err("throws");
    assert!(
        err.to_string()
            .contains("notDefinedAnywhere is not defined"),
        "{err}"
    );

    // The image from another origin is blocked by the page's CSP, which reports it.
    let violations = b
        .wait_for_violation("img-src", 1, Duration::from_secs(5))
        .await
        .expect("img-src violation");
    assert_eq!(
        violations[0].blocked_uri,
        format!("{other_base}/tracker.png")
    );
    assert_eq!(violations[0].disposition, "enforce");
    let reports = b
        .wait_for_request("/csp-report", 1, Duration::from_secs(5))
        .await
        .expect("report sent");
    assert_eq!(reports[0].method, "POST");
    assert_eq!(reports[0].status, Some(204));
    b.wait_for_function("window.driverBlocked === true", Duration::from_secs(5))
        .await
        .expect("the driver-blocked fetch failed in the page");
    // A dialog (what an XSS payload's alert(1) would open) is recorded and dismissed.
    b.evaluate("alert('hello from the page')")
        .await
        .expect("alert");

    let report = b.report().await.expect("report");
    let s = report.summary();
    assert_eq!(report.title.as_deref(), Some("Harness page"), "{s}");
    assert_eq!(
        report.url.as_deref(),
        Some(format!("{base}/").as_str()),
        "{s}"
    );
    assert!(
        report
            .console_errors()
            .iter()
            .any(|m| m.text == "harness console error"),
        "{s}"
    );
    assert!(
        report
            .console
            .iter()
            .any(|m| m.kind == "log" && m.text == "harness log line"),
        "{s}"
    );
    assert!(
        report
            .console_errors()
            .iter()
            .any(|m| m.text.contains("Content Security Policy") && m.text.contains("tracker.png")),
        "{s}"
    );
    assert!(
        report
            .page_errors
            .iter()
            .any(|e| e.name == "TypeError" && e.message == "harness page error"),
        "{s}"
    );
    let tracker = report.requests_to("/tracker.png");
    assert_eq!(tracker.len(), 1, "{s}");
    assert_eq!(tracker[0].failure.as_deref(), Some("csp"), "{s}");
    let blocked = report.requests_to("/blocked-by-driver.json");
    assert_eq!(blocked.len(), 1, "{s}");
    assert!(
        blocked[0]
            .failure
            .as_deref()
            .is_some_and(|f| f.starts_with("net::ERR_BLOCKED_BY_CLIENT")),
        "{s}"
    );
    let doc = &report.requests_to(&format!("{base}/"))[0];
    assert!(doc.navigation && doc.resource_type == "document", "{s}");
    assert_eq!(doc.header("content-security-policy"), Some(CSP), "{s}");
    assert_eq!(report.dialogs.len(), 1, "{s}");
    assert_eq!(report.dialogs[0].kind, "alert");
    assert_eq!(report.dialogs[0].message, "hello from the page");

    // The servers' view: blocked requests never left the browser; the report arrived.
    assert!(other.seen().is_empty(), "{:?}", other.seen());
    let paths = site.paths();
    assert!(
        !paths.iter().any(|p| p.contains("blocked-by-driver")),
        "{paths:?}"
    );
    let posted: Vec<_> = site
        .seen()
        .into_iter()
        .filter(|(m, p, _)| m == "POST" && p == "/csp-report")
        .collect();
    assert_eq!(posted.len(), 1, "{paths:?}");
    let body: serde_json::Value = serde_json::from_str(&posted[0].2).expect("report json");
    assert_eq!(body["csp-report"]["effective-directive"], "img-src");

    // take_report clears.
    let again = b.take_report().await.expect("take");
    assert!(!again.requests.is_empty());
    assert!(b.report().await.expect("report").requests.is_empty());

    b.close().await.expect("close");
    assert!(!profile.exists(), "profile removed on close");
}

#[tokio::test]
async fn only_loopback_and_mapped_hosts_resolve() {
    let (_site, base) = Site::start().await;
    let port = base.rsplit(':').next().expect("port").to_owned();
    let mut opts = LaunchOptions::default();
    opts.hosts.insert("evil.test".into(), "127.0.0.1".into());
    let mut b = ChromiumSession::launch_with(opts).await.expect("launch");
    b.goto(&format!("http://evil.test:{port}/"))
        .await
        .expect("mapped host");
    assert_eq!(b.title().await.expect("title"), "Harness page");
    b.goto(&format!("http://localhost:{port}/"))
        .await
        .expect("localhost");
    b.new_page().await.expect("fresh page");
    let err = b
        .goto("http://portcullis.invalid/")
        .await
        .expect_err("no DNS beyond loopback");
    assert!(err.to_string().contains("ERR_NAME_NOT_RESOLVED"), "{err}");
    b.close().await.expect("close");
}

#[tokio::test]
async fn scenarios_run_steps_and_report_failures() {
    let (site, base) = Site::start().await;
    let (_other, other_base) = Site::start().await;
    *site.other_origin.lock().expect("lock") = other_base;
    let ok = run_scenario(
        "harness",
        json!({
            "launch": { "timeoutMs": 5000 },
            "url": format!("{base}/"),
            "steps": [
                { "op": "waitForFunction", "expression": "document.body.dataset.app === 'ready'" },
                { "op": "evaluate", "name": "title", "expression": "document.title" },
                { "op": "evaluate", "name": "text", "expression": "document.getElementById('static').textContent" },
                { "op": "evaluate", "name": "thrown", "expectError": true,
                  "expression": "(() => { throw new RangeError('on purpose'); })()" },
                { "op": "waitForRecord", "name": "violations", "kind": "cspViolations",
                  "match": { "effectiveDirective": "img-src" } },
            ]
        }),
    )
    .await
    .expect("scenario ran");
    ok.expect_ok().expect("ok");
    assert_eq!(ok.value("title"), &json!("Harness page"));
    assert_eq!(ok.value("text"), &json!("static text"));
    let thrown = ok.value("thrown")["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(thrown.contains("RangeError: on purpose"), "{thrown}");
    assert_eq!(ok.value("violations")[0]["effectiveDirective"], "img-src");
    assert_eq!(ok.report.title.as_deref(), Some("Harness page"));
    assert_eq!(ok.steps.len(), 6);

    let failed = run_scenario(
        "harness-failing",
        json!({
            "url": format!("{base}/"),
            "steps": [
                { "op": "evaluate", "name": "before", "expression": "1 + 1" },
                { "op": "waitForSelector", "selector": "#never-there", "timeoutMs": 300 },
                { "op": "evaluate", "name": "after", "expression": "2" },
            ]
        }),
    )
    .await
    .expect("scenario ran");
    assert!(!failed.ok);
    let why = failed.error.clone().unwrap_or_default();
    assert!(why.contains("step 2 (waitForSelector)"), "{why}");
    assert_eq!(failed.value("before"), &json!(2));
    assert_eq!(
        failed.value("after"),
        &json!(null),
        "stopped at the failure"
    );
    let err = failed.expect_ok().expect_err("not ok").to_string();
    assert!(
        err.contains("Harness page"),
        "the error carries the report: {err}"
    );

    let unexpected = run_scenario(
        "harness-expect-error",
        json!({ "steps": [ { "op": "evaluate", "expression": "1", "expectError": true } ] }),
    )
    .await
    .expect("scenario ran");
    assert!(!unexpected.ok);
    assert!(
        unexpected
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("expected to throw"),
        "{unexpected:?}"
    );
}
