//! The real `portcullis` binary under signals: SIGTERM drains an in-flight request to a real
//! upstream (held open by the test, not by a timer) while readiness fails and new connections are
//! refused, then exits 0; SIGHUP reloads routes and the key ring without logging anyone out, and
//! an invalid file is refused while the old configuration keeps serving.

mod binary;

use std::time::Duration;

use axum::{Router, extract::State};
use binary::{Setup, eventually, login, refused, status};
use portcullis::crypto::keyring::KeyRing;
use testkit::browser::Browser;
use tokio::sync::{mpsc, watch};

/// An upstream whose `/hold` requests wait until the test releases them (`/ok` answers at once),
/// and which reports each `/hold` arrival: a deterministic in-flight request.
struct HoldingUpstream {
    url: String,
    arrived: mpsc::UnboundedReceiver<()>,
    release: watch::Sender<bool>,
}

#[derive(Clone)]
struct Hold {
    arrived: mpsc::UnboundedSender<()>,
    release: watch::Receiver<bool>,
}

async fn hold(State(h): State<Hold>, req: axum::extract::Request) -> &'static str {
    if req.uri().path().ends_with("/hold") {
        let _ = h.arrived.send(());
        let mut release = h.release.clone();
        let _ = release.wait_for(|r| *r).await;
        "released"
    } else {
        "ok"
    }
}

impl HoldingUpstream {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (arrived_tx, arrived) = mpsc::unbounded_channel();
        let (release, release_rx) = watch::channel(false);
        let app = Router::new().fallback(hold).with_state(Hold {
            arrived: arrived_tx,
            release: release_rx,
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HoldingUpstream {
            url,
            arrived,
            release,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let setup = Setup::new().await;
    let mut upstream = HoldingUpstream::start().await;
    let key = KeyRing::generate_encoded().expect("rng");
    let keys = setup.keys("keys", &[&key]);
    let routes = format!(
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\ntimeout = \"120s\"\n",
        upstream.url
    );
    let mut gw = setup
        .start(&setup.toml(
            &keys,
            "shutdown_delay = \"5s\"\ndrain_timeout = \"120s\"",
            &routes,
        ))
        .await;
    let browser = login(&gw, &setup.idp).await;
    assert_eq!(gw.admin_readyz().await, Some(200));

    let in_flight = {
        let browser = browser.clone();
        let url = gw.url("/api/hold");
        tokio::spawn(async move { browser.get(&url).await })
    };
    upstream
        .arrived
        .recv()
        .await
        .expect("request reached the upstream");

    gw.signal("-TERM");
    // During the shutdown delay the listener still answers, but not ready.
    let probe = Browser::new();
    let mut first = None;
    for _ in 0..300 {
        match probe.get(&gw.url("/readyz")).await {
            Ok(r) if r.status.as_u16() == 200 => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(r) => {
                first = Some(r.status.as_u16());
                break;
            }
            Err(e) => panic!("refused before readiness failed: {e}"),
        }
    }
    assert_eq!(first, Some(503), "{}", gw.logs());
    // Then the listener closes while the request is still held at the upstream.
    assert!(
        eventually(|| async { refused(gw.port) }).await,
        "new connections still accepted: {}",
        gw.logs()
    );
    assert_eq!(gw.admin_readyz().await, Some(503), "draining: not ready");
    assert!(!in_flight.is_finished());

    upstream.release.send(true).expect("release");
    let resp = in_flight.await.expect("task").expect("in-flight request");
    assert_eq!(resp.status.as_u16(), 200, "{}", resp.text());
    assert_eq!(resp.text(), "released");

    let exited = eventually(|| {
        let done = matches!(gw.child.try_wait(), Ok(Some(_)));
        async move { done }
    })
    .await;
    assert!(exited, "process did not exit: {}", gw.logs());
    let code = gw.child.wait().expect("wait").code();
    assert_eq!(code, Some(0), "{}", gw.logs());
    let logs = gw.logs();
    assert!(logs.contains("all connections drained"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_routes_and_keys_without_logouts_and_refuses_invalid_files() {
    let setup = Setup::new().await;
    let upstream = HoldingUpstream::start().await;
    let (key1, key2) = (
        KeyRing::generate_encoded().expect("rng"),
        KeyRing::generate_encoded().expect("rng"),
    );
    let route = |prefix: &str| {
        format!(
            "\n[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{}\"\ntimeout = \"10s\"\n",
            upstream.url
        )
    };
    let gw = setup
        .start(&setup.toml(&setup.keys("keys-a", &[&key1]), "", &route("/api")))
        .await;
    let alice = login(&gw, &setup.idp).await;
    let carol = login(&gw, &setup.idp).await;
    assert_eq!(status(&alice, &gw.url("/api/ok")).await, 200);
    assert_eq!(status(&carol, &gw.url("/api/ok")).await, 200);
    assert_eq!(status(&alice, &gw.url("/extra/ok")).await, 404);

    // Reload 1: a new route, and a new active key with the old one kept for opening.
    let both = setup.keys("keys-b", &[&key2, &key1]);
    gw.rewrite(&setup.toml(&both, "", &format!("{}{}", route("/api"), route("/extra"))));
    gw.signal("-HUP");
    assert!(
        eventually(|| async { status(&alice, &gw.url("/extra/ok")).await == 200 }).await,
        "the new route never worked (or alice was logged out): {}",
        gw.logs()
    );
    assert_eq!(status(&alice, &gw.url("/api/ok")).await, 200);
    // A login now is sealed with the new active key.
    let bob = login(&gw, &setup.idp).await;
    assert_eq!(status(&bob, &gw.url("/api/ok")).await, 200);

    // An invalid file (through the admin listener, which answers when done): refused, logged
    // with every problem, and the running configuration keeps serving.
    gw.rewrite(&format!(
        "{}\n[rate_limits]\nlogin_per_ip = \"often\"\n",
        setup
            .toml(&both, "max_request_body = \"lots\"", &route("/api"))
            .replace("[session]", "[session]\ncookie_name = \"SessionID\"")
    ));
    let admin = Browser::new();
    let bearer = format!("Bearer {}", gw.admin_token);
    let r = admin
        .request(
            http::Method::POST,
            &gw.admin("/reload"),
            &[("authorization", &bearer)],
            "",
        )
        .await
        .expect("POST /reload");
    assert_eq!(r.status.as_u16(), 422, "{}", r.text());
    let logs = gw.logs();
    for key in [
        "configuration reload refused",
        "server.max_request_body",
        "session.cookie_name",
        "rate_limits.login_per_ip",
    ] {
        assert!(logs.contains(key), "{key} missing from the log:\n{logs}");
    }
    assert_eq!(status(&bob, &gw.url("/extra/ok")).await, 200, "old config");
    // A syntax error over SIGHUP: refused too.
    gw.rewrite("[server\nlisten = ");
    gw.signal("-HUP");
    assert!(
        eventually(|| async { gw.logs().matches("configuration reload refused").count() >= 2 })
            .await,
        "{}",
        gw.logs()
    );
    assert_eq!(status(&bob, &gw.url("/extra/ok")).await, 200, "old config");
    // A setting that needs a restart: refused, named in the log.
    gw.rewrite(
        &setup
            .toml(&both, "", &format!("{}{}", route("/api"), route("/extra")))
            .replace(
                &format!("127.0.0.1:{}\"\ntoken_file", gw.admin_port),
                "127.0.0.1:1\"\ntoken_file",
            ),
    );
    let r = admin
        .request(
            http::Method::POST,
            &gw.admin("/reload"),
            &[("authorization", &bearer)],
            "",
        )
        .await
        .expect("POST /reload");
    assert_eq!(r.status.as_u16(), 422, "{}", r.text());
    assert!(gw.logs().contains("admin.listen"), "{}", gw.logs());

    // Reload 2: the old key is removed. Bob's session (sealed with the new key) survives;
    // carol's, sealed with the removed key and not used since, no longer opens.
    gw.rewrite(&setup.toml(&setup.keys("keys-c", &[&key2]), "", &route("/api")));
    gw.signal("-HUP");
    assert!(
        eventually(|| async { status(&bob, &gw.url("/extra/ok")).await == 404 }).await,
        "the second reload never applied: {}",
        gw.logs()
    );
    assert_eq!(
        status(&bob, &gw.url("/api/ok")).await,
        200,
        "bob logged out"
    );
    assert_eq!(
        status(&carol, &gw.url("/api/ok")).await,
        401,
        "old key still opens"
    );

    let metrics = admin
        .get_with(&gw.admin("/metrics"), &[("authorization", &bearer)])
        .await
        .expect("scrape")
        .text();
    for (outcome, n) in [("success", 2), ("invalid", 2), ("refused", 1)] {
        let line = format!("portcullis_config_reloads_total{{outcome=\"{outcome}\"}} {n}");
        assert!(metrics.contains(&line), "{line} missing:\n{metrics}");
    }
}
