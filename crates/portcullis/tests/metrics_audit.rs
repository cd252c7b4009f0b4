//! Observability: `/metrics` on the admin listener moves as requests flow (scraped and parsed as
//! exposition text), and the audit log records logins, CSRF rejections and logouts without any
//! token, cookie, ticket or anti-CSRF token.

mod common;

use common::{Options, Stack};
use http::Method;
use portcullis::crypto::keyring::KeyRing;
use testkit::browser::Browser;

/// Sum of the samples of `name` whose labels include every pair of `labels` (0 if none).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|p| p == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

async fn scrape(http: &Browser, admin: &str, bearer: &str) -> String {
    let r = http
        .get_with(&format!("{admin}/metrics"), &[("authorization", bearer)])
        .await
        .expect("scrape");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        r.header("content-type")
    );
    let text = r.text();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_audit_events_carry_no_secrets() {
    let token = KeyRing::generate_encoded().expect("rng");
    let token_path = common::running::write_secret("admin-token", &token);
    let audit_path = std::env::temp_dir().join(format!(
        "portcullis-audit-{}-{}.jsonl",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
    ));
    let stack = Stack::start_with(Options {
        extra_toml: format!(
            "\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"{token_path}\"\n\n[audit]\ntarget = \"file\"\npath = \"{}\"\n",
            audit_path.display()
        ),
        ..Options::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (_stop, rx) = tokio::sync::watch::channel(false);
    portcullis::server::serve_admin(listener, stack.state().clone(), rx);
    let http = Browser::new();
    let bearer = format!("Bearer {token}");

    // Without the token: refused.
    let anon = http.get(&format!("{admin}/metrics")).await.expect("scrape");
    assert_eq!(anon.status.as_u16(), 401);

    let before = scrape(&http, &admin, &bearer).await;

    let alice = Browser::new();
    let cookie = stack.login(&alice).await;
    let csrf = stack.csrf(&alice).await;
    let record = stack.session_record(&cookie).await.expect("record");

    let api = stack.url("/api/orders/1");
    let ok = alice.get(&api).await.expect("api");
    assert_eq!(ok.status.as_u16(), 200, "{}", ok.text());
    // No token, then a well-formed but wrong one: both refused, never proxied.
    let missing = alice
        .request(Method::POST, &api, &[], "{}")
        .await
        .expect("post");
    assert_eq!(missing.status.as_u16(), 403);
    let mut wrong = csrf.clone().into_bytes();
    wrong[0] = if wrong[0] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    let mismatch = alice
        .request(Method::POST, &api, &[("x-csrf-token", &wrong)], "{}")
        .await
        .expect("post");
    assert_eq!(mismatch.status.as_u16(), 403);

    let after = scrape(&http, &admin, &bearer).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta(
            "portcullis_logins_total",
            &[("flow", "callback"), ("outcome", "success")]
        ),
        1.0,
        "{after}"
    );
    assert_eq!(
        delta(
            "portcullis_http_requests_total",
            &[("class", "api"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "portcullis_http_requests_total",
            &[("class", "api"), ("status", "403")]
        ),
        2.0
    );
    assert!(
        delta(
            "portcullis_http_requests_total",
            &[("class", "bff"), ("status", "302")]
        ) >= 2.0,
        "login + callback redirects"
    );
    assert_eq!(
        delta("portcullis_csrf_rejections_total", &[("reason", "missing")]),
        1.0
    );
    assert_eq!(
        delta(
            "portcullis_csrf_rejections_total",
            &[("reason", "mismatch")]
        ),
        1.0
    );
    assert_eq!(
        delta("portcullis_upstream_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        delta(
            "portcullis_http_request_duration_seconds_count",
            &[("class", "api")]
        ),
        3.0
    );
    assert!(sample(&after, "portcullis_store_entries", &[]) >= 1.0);
    // Per route: the configured prefix (a bounded label), never the request's path.
    assert_eq!(
        delta(
            "portcullis_route_requests_total",
            &[("route", "/api/orders"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "portcullis_route_requests_total",
            &[("route", "/api/orders"), ("status", "403")]
        ),
        2.0
    );
    // The gateway's own share, for the one request that reached the upstream.
    assert_eq!(delta("portcullis_gateway_overhead_seconds_count", &[]), 1.0);
    assert!(
        delta(
            "portcullis_store_operation_duration_seconds_count",
            &[("op", "get")]
        ) >= 3.0,
        "a session read per request"
    );
    // Bounded labels: no request path, host or user in any series.
    for bad in ["/api/orders/1", "127.0.0.1", "alice", &record.record.sub] {
        assert!(
            !after
                .lines()
                .filter(|l| !l.starts_with('#'))
                .any(|l| l.contains(bad)),
            "{bad} in metrics"
        );
    }

    let logout = alice
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout");
    assert_eq!(logout.status.as_u16(), 200, "{}", logout.text());

    let text = std::fs::read_to_string(&audit_path).expect("audit file");
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let find = |event: &str| {
        events
            .iter()
            .filter(|e| e["event"] == event)
            .cloned()
            .collect::<Vec<_>>()
    };
    let login = find("login_success");
    assert_eq!(login.len(), 1, "{text}");
    let csrf_events = find("csrf_rejected");
    assert_eq!(csrf_events.len(), 2, "{text}");
    let logouts = find("logout");
    assert_eq!(logouts.len(), 1, "{text}");
    let session_ref = login[0]["session"].as_str().expect("session ref");
    let subject_ref = login[0]["subject"].as_str().expect("subject ref");
    assert!(subject_ref.starts_with("s:"), "{subject_ref}");
    for e in csrf_events.iter().chain(&logouts) {
        assert_eq!(e["session"], session_ref, "{e}");
        assert_eq!(e["subject"], subject_ref, "{e}");
    }
    assert_eq!(csrf_events[0]["reason"], "missing");
    assert_eq!(csrf_events[1]["reason"], "mismatch");
    for e in &events {
        let time = e["time"].as_str().expect("time");
        assert!(
            chrono::DateTime::parse_from_rfc3339(time).is_ok() && time.ends_with('Z'),
            "{time}"
        );
        assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
        assert!(
            e["request_id"].as_str().is_some_and(|r| !r.is_empty()),
            "{e}"
        );
    }

    // No secret of the session anywhere in the stream; the subject only as a pseudonym.
    let r = &record.record;
    let mut secrets = vec![
        cookie.as_str(),
        csrf.as_str(),
        wrong.as_str(),
        r.access_token.as_str(),
        r.sub.as_str(),
        record.key.0.as_str(),
    ];
    secrets.extend(r.refresh_token.as_deref());
    secrets.extend(r.id_token.as_deref());
    for s in secrets.into_iter().filter(|s| s.len() >= 5) {
        assert!(!text.contains(s), "a secret leaked into the audit log");
    }
    let _ = std::fs::remove_file(&audit_path);
}
