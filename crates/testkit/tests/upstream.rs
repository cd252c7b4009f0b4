//! The recording upstream, driven over real HTTP.

use std::time::{Duration, Instant};

use http::Method;
use testkit::browser::Browser;
use testkit::upstream::{BIG_BODY_LEN, RecordingUpstream};

#[tokio::test]
async fn records_requests_and_answers_by_path() {
    let up = RecordingUpstream::start().await;
    assert!(up.url().starts_with("http://127.0.0.1:"));
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    // Duplicated headers and the raw query survive.
    let resp = client
        .get(format!("{}/api/items?b=2&a=%2F1", up.url()))
        .header("x-dup", "one")
        .header("x-dup", "two")
        .header("authorization", "Bearer abc")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    assert_eq!(resp.headers()["set-cookie"], "upstream=1");
    let json: serde_json::Value = resp.json().await.expect("JSON");
    assert_eq!(
        json,
        serde_json::json!({"ok": true, "path": "/api/items", "method": "GET"})
    );

    assert_eq!(up.count(), 1);
    let r = up.last().expect("recorded");
    assert_eq!(r.method, "GET");
    assert_eq!(r.path_and_query, "/api/items?b=2&a=%2F1");
    assert_eq!(r.path(), "/api/items");
    assert_eq!(r.query(), Some("b=2&a=%2F1"));
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.header_all("X-Dup"), vec!["one", "two"]);
    assert_eq!(r.header("authorization"), Some("Bearer abc"));
    assert!(r.body.is_empty());

    // Echo.
    let resp = client
        .post(format!("{}/api/things/echo-body", up.url()))
        .header("content-type", "text/plain")
        .body("hello upstream")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(resp.text().await.expect("text"), "hello upstream");
    assert_eq!(up.last().expect("recorded").body_text(), "hello upstream");

    // Status.
    let resp = client
        .delete(format!("{}/api/x/status/418", up.url()))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(resp.status(), 418);
    assert_eq!(resp.headers()["x-upstream"], "yes");
    let resp = client
        .get(format!("{}/status/204", up.url()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 204);

    // Big.
    let resp = client
        .get(format!("{}/api/big", up.url()))
        .send()
        .await
        .expect("GET big");
    assert_eq!(resp.bytes().await.expect("body").len(), BIG_BODY_LEN);

    assert_eq!(up.count(), 5);
    up.clear();
    assert_eq!(up.count(), 0);
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn slow_path_is_recorded_before_it_answers() {
    let up = RecordingUpstream::start().await;
    up.set_slow_delay(Duration::from_millis(300));
    let url = format!("{}/api/slow", up.url());
    let started = Instant::now();
    let task = tokio::spawn(async move { reqwest::get(url).await.map(|r| r.status()) });
    up.wait_for_count(1, Duration::from_secs(2))
        .await
        .expect("recorded while sleeping");
    let status = task.await.expect("join").expect("GET slow");
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn browser_keeps_the_upstream_cookie() {
    let up = RecordingUpstream::start().await;
    let browser = Browser::new();
    let first = browser
        .get(&format!("{}/a/b", up.url()))
        .await
        .expect("GET");
    assert_eq!(first.status, 200);
    assert_eq!(first.set_cookies(), vec!["upstream=1".to_owned()]);
    assert_eq!(browser.last_set_cookies(), vec!["upstream=1".to_owned()]);
    assert_eq!(browser.cookie("upstream").as_deref(), Some("1"));
    let json = first.json().expect("JSON");
    assert_eq!(json["path"], "/a/b");

    // Default path of a cookie set by /a/b is /a: sent to /a/c, not to /x.
    browser
        .request(
            Method::PUT,
            &format!("{}/a/c", up.url()),
            &[("x-test", "1")],
            "body",
        )
        .await
        .expect("PUT");
    let r = up.last().expect("recorded");
    assert_eq!(r.method, "PUT");
    assert_eq!(r.header("cookie"), Some("upstream=1"));
    assert_eq!(r.body_text(), "body");
    browser.get(&format!("{}/x", up.url())).await.expect("GET");
    assert_eq!(up.last().expect("recorded").header("cookie"), None);

    // A caller-supplied Cookie header replaces the jar's.
    browser
        .get_with(&format!("{}/a/d", up.url()), &[("cookie", "forged=1")])
        .await
        .expect("GET");
    assert_eq!(
        up.last().expect("recorded").header_all("cookie"),
        vec!["forged=1"]
    );
}

#[tokio::test]
async fn stops_when_dropped() {
    let up = RecordingUpstream::start().await;
    let addr = up.addr();
    drop(up);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "upstream still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
