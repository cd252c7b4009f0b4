//! The hardened PWA hosting seen by a real browser: headless Chromium (Debian's `chromium`
//! driven by playwright-core, see `testkit::chromium`) loads `tests/fixtures/csp-page` from the
//! real gateway (real IdP, real upstream) and shows that the Content-Security-Policy with a
//! per-response nonce, `'strict-dynamic'` and Trusted Types holds:
//!
//! (a) the page's own scripts (nonce'd by Portcullis) run;
//! (b) markup injected into the document (an inline `<script>`, an inline event handler) does
//!     not run, and the violation reports reach `POST /bff/csp-report`;
//! (c) `innerHTML = "<b>x</b>"` throws under Trusted Types, while the app's own policy works;
//! (d) an injected `<script src>` from another origin is blocked before it is fetched.
//!
//! A missing browser fails these tests; `scripts/test.sh` installs it.

mod common;

use std::time::Duration;

use common::{Options, Stack, eventually};
use serde_json::{Value, json};
use testkit::chromium::ChromiumSession;

const WAIT: Duration = Duration::from_secs(10);

fn fixture_dir() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/csp-page").to_owned()
}

async fn stack() -> Stack {
    Stack::start_with(Options {
        extra_toml: format!("\n[static_files]\nroot = \"{}\"\n", fixture_dir()),
        ..Options::default()
    })
    .await
}

async fn browser() -> ChromiumSession {
    ChromiumSession::launch()
        .await
        .unwrap_or_else(|e| panic!("headless Chromium: {e:#}"))
}

/// The value of `'nonce-…'` in a policy.
fn nonce_of(csp: &str) -> String {
    let start = csp
        .find("'nonce-")
        .unwrap_or_else(|| panic!("no nonce in {csp}"))
        + "'nonce-".len();
    let len = csp[start..].find('\'').expect("closing quote");
    csp[start..start + len].to_owned()
}

/// How many violations of `directive` the gateway has counted.
fn counted(stack: &Stack, directive: &str) -> u64 {
    stack
        .state()
        .csp_reports()
        .into_iter()
        .find(|(d, _)| d == directive)
        .map_or(0, |(_, n)| n)
}

/// Waits (up to 10 s) until the gateway has counted at least `min` violations of `directive`;
/// panics with what the gateway counted, the page's records and a hint otherwise.
async fn assert_gateway_counted(stack: &Stack, b: &mut ChromiumSession, directive: &str, min: u64) {
    if eventually(|| async { counted(stack, directive) >= min }).await {
        return;
    }
    let report = b.report().await.expect("report");
    let csp = report
        .requests
        .iter()
        .find(|r| r.navigation)
        .and_then(|r| r.header("content-security-policy"))
        .unwrap_or_default()
        .to_owned();
    let hint = if csp.contains("report-to") && stack.base.starts_with("http://") {
        "\nhint: the policy has `report-to`, so Chromium ignores `report-uri`, and Chromium \
         ignores `Reporting-Endpoints` on http:// responses (even from localhost): over plain \
         HTTP no report is ever sent. Send `report-to`/`Reporting-Endpoints` only when the \
         public origin is https (or set `[csp] report_to = false`)."
    } else {
        ""
    };
    panic!(
        "expected the gateway to count at least {min} `{directive}` report(s); it counted {:?}\npolicy: {csp}{hint}\n{}",
        stack.state().csp_reports(),
        report.summary()
    );
}

fn injected(stack: &Stack, markup: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(markup.as_bytes()).collect();
    stack.url(&format!("/?inject={q}"))
}

#[tokio::test]
async fn a_the_pages_nonced_scripts_run() {
    let stack = stack().await;
    let mut b = browser().await;

    let nav = b.goto(&stack.url("/")).await.expect("load the page");
    assert_eq!(nav.status, Some(200));
    let csp = nav
        .header("content-security-policy")
        .expect("a Content-Security-Policy on the HTML")
        .to_owned();
    assert!(csp.contains("'strict-dynamic'"), "{csp}");
    assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
    let nonce = nonce_of(&csp);
    assert!(nonce.len() >= 22, "128+ bits: {nonce}");

    b.wait_for_function(
        "window.inlineRan === true && window.appRan === true && document.body.dataset.app === 'ready'",
        WAIT,
    )
    .await
    .expect("the inline script and /app.js ran");
    assert_eq!(
        b.evaluate("document.getElementById('status').textContent")
            .await
            .expect("eval"),
        json!("inline ran")
    );
    // Both scripts carry this response's nonce (the browser hides the attribute's value from
    // the DOM once the policy has seen it: only the property has it).
    let scripts = b
        .evaluate(
            "[...document.scripts].map(s => ({ src: s.getAttribute('src'), nonce: s.nonce, attr: s.getAttribute('nonce') }))",
        )
        .await
        .expect("scripts");
    let scripts = scripts.as_array().expect("array");
    assert_eq!(scripts.len(), 2, "{scripts:?}");
    for s in scripts {
        assert_eq!(s["nonce"], json!(nonce), "{scripts:?}");
        assert_eq!(s["attr"], json!(""), "nonce attribute hidden: {scripts:?}");
    }
    assert_eq!(scripts[1]["src"], json!("/app.js"));

    let report = b.take_report().await.expect("report");
    let summary = report.summary();
    assert!(report.csp_violations.is_empty(), "{summary}");
    assert!(report.page_errors.is_empty(), "{summary}");
    assert!(report.console_errors().is_empty(), "{summary}");
    let app = report.requests_to("/app.js");
    assert_eq!(app.len(), 1, "{summary}");
    assert_eq!(app[0].status, Some(200), "{summary}");

    // Every HTML response gets a fresh nonce, and the scripts run again with it.
    let again = b.goto(&stack.url("/")).await.expect("load again");
    let nonce2 = nonce_of(again.header("content-security-policy").expect("CSP"));
    assert_ne!(nonce, nonce2, "a nonce is never reused");
    b.wait_for_function("window.inlineRan === true && window.appRan === true", WAIT)
        .await
        .expect("scripts ran with the new nonce");
    let report = b.report().await.expect("report");
    assert!(report.csp_violations.is_empty(), "{}", report.summary());
    assert!(stack.state().csp_reports().is_empty());
    b.close().await.expect("close");
}

#[tokio::test]
async fn b_injected_inline_script_and_handler_are_blocked_and_reported() {
    let stack = stack().await;
    let mut b = browser().await;
    let payload = r#"<script>window.pwnedInline = true;</script><img id="evil" src="/no-such-image.png" onerror="window.pwnedAttr = true">"#;
    let nav = b.goto(&injected(&stack, payload)).await.expect("load");
    assert_eq!(nav.status, Some(200));

    b.wait_for_violation("script-src-elem", 1, WAIT)
        .await
        .expect("the injected inline <script> was refused");
    b.wait_for_violation("script-src-attr", 1, WAIT)
        .await
        .expect("the injected onerror handler was refused");
    // The injection happened (the markup is in the DOM) and the page's own scripts ran...
    let state = b
        .evaluate(
            "({ inline: window.inlineRan === true, app: window.appRan === true, \
               img: !!document.getElementById('evil'), \
               pwnedInline: window.pwnedInline ?? null, pwnedAttr: window.pwnedAttr ?? null })",
        )
        .await
        .expect("eval");
    assert_eq!(
        state,
        json!({ "inline": true, "app": true, "img": true, "pwnedInline": null, "pwnedAttr": null })
    );

    let report = b.report().await.expect("report");
    let summary = report.summary();
    let inline = report.violations_of("script-src-elem");
    assert_eq!(inline[0].blocked_uri, "inline", "{summary}");
    assert_eq!(inline[0].disposition, "enforce", "{summary}");
    assert!(
        report
            .console_errors()
            .iter()
            .any(|m| m.text.contains("Executing inline script violates")),
        "{summary}"
    );
    assert!(
        report
            .console_errors()
            .iter()
            .any(|m| m.text.contains("Executing inline event handler violates")),
        "{summary}"
    );
    assert!(report.dialogs.is_empty(), "{summary}");

    // ...and the reports reached the gateway's /bff/csp-report (counted per directive).
    assert_gateway_counted(&stack, &mut b, "script-src-elem", 1).await;
    assert_gateway_counted(&stack, &mut b, "script-src-attr", 1).await;
    // Reports the browser sent through the page (`report-uri`) were all accepted; Reporting API
    // (`report-to`) uploads go from the browser's network service and are not in this log.
    for r in report.requests_to("/bff/csp-report") {
        assert_eq!(r.status, Some(204), "{summary}");
    }
    b.close().await.expect("close");
}

#[tokio::test]
async fn c_trusted_types_refuse_strings_but_the_apps_policy_works() {
    let stack = stack().await;
    let mut b = browser().await;
    b.goto(&stack.url("/")).await.expect("load");
    b.wait_for_function("window.appRan === true", WAIT)
        .await
        .expect("app ran");

    let out = b
        .evaluate(
            r#"(() => {
                const el = document.getElementById('sink');
                const out = {};
                try { el.innerHTML = '<b>x</b>'; out.raw = 'assigned'; }
                catch (e) { out.raw = e.name + ': ' + e.message; }
                out.afterRaw = el.innerHTML;
                try { trustedTypes.createPolicy('attacker', { createHTML: (s) => s }); out.foreign = 'created'; }
                catch (e) { out.foreign = e.name; }
                const policy = trustedTypes.createPolicy('portcullis', { createHTML: (s) => s });
                el.innerHTML = policy.createHTML('<b>x</b>');
                out.viaPolicy = el.innerHTML;
                out.isTrusted = trustedTypes.isHTML(policy.createHTML('<i>y</i>'));
                return out;
            })()"#,
        )
        .await
        .expect("eval");
    let raw = out["raw"].as_str().unwrap_or_default();
    assert!(
        raw.starts_with("TypeError") && raw.contains("TrustedHTML"),
        "a string assigned to innerHTML must throw: {out}"
    );
    assert_eq!(out["afterRaw"], json!(""), "{out}");
    assert_eq!(
        out["foreign"],
        json!("TypeError"),
        "a policy name outside the allow-list is refused: {out}"
    );
    assert_eq!(out["viaPolicy"], json!("<b>x</b>"), "{out}");
    assert_eq!(out["isTrusted"], json!(true), "{out}");

    let report = b.report().await.expect("report");
    let summary = report.summary();
    assert!(
        !report.violations_of("require-trusted-types-for").is_empty(),
        "{summary}"
    );
    assert!(
        !report.violations_of("trusted-types").is_empty(),
        "{summary}"
    );
    assert_gateway_counted(&stack, &mut b, "require-trusted-types-for", 1).await;
    assert_gateway_counted(&stack, &mut b, "trusted-types", 1).await;
    b.close().await.expect("close");
}

#[tokio::test]
async fn d_injected_cross_origin_script_is_blocked_before_it_is_fetched() {
    let stack = stack().await;
    let mut b = browser().await;
    // The upstream (127.0.0.1:PORT) is another origin than the gateway (localhost:PORT).
    let evil = format!("{}/x.js", stack.upstream.url());
    let payload = format!(r#"<script src="{evil}"></script>"#);
    b.goto(&injected(&stack, &payload)).await.expect("load");

    let v = b
        .wait_for_violation("script-src-elem", 1, WAIT)
        .await
        .expect("the injected cross-origin script was refused");
    assert_eq!(v[0].blocked_uri, evil);

    // strict-dynamic trusts scripts that trusted code creates, but Trusted Types still guard
    // the URL: a plain string for script.src throws.
    let src = b
        .evaluate_with(
            r#"(url) => {
                const s = document.createElement('script');
                try { s.src = url; return 'assigned'; } catch (e) { return e.name + ': ' + e.message; }
            }"#,
            Value::String(evil.clone()),
        )
        .await
        .expect("eval");
    let src = src.as_str().unwrap_or_default();
    assert!(
        src.starts_with("TypeError") && src.contains("TrustedScriptURL"),
        "{src}"
    );
    assert_eq!(
        b.evaluate("window.appRan === true").await.expect("eval"),
        json!(true)
    );

    let report = b.report().await.expect("report");
    let summary = report.summary();
    let fetched = report.requests_to("/x.js");
    assert!(
        fetched.iter().all(|r| r.failure.as_deref() == Some("csp")),
        "{summary}"
    );
    assert!(
        stack
            .upstream
            .requests()
            .iter()
            .all(|r| r.path() != "/x.js"),
        "the other origin was contacted: {:?}",
        stack.upstream.requests()
    );
    assert_gateway_counted(&stack, &mut b, "script-src-elem", 1).await;
    b.close().await.expect("close");
}
