//! Several instances sharing Redis behave like one: a session made on one is honoured by the
//! other, a logout or revocation on one is seen by the other on its very next request, a token
//! refresh happens once across instances, and a Redis outage fails closed (503) and heals.

mod common;

use common::{Options, Stack};
use http::Method;
use testkit::{
    browser::Browser,
    cookies::PortScope,
    redis::{RedisCluster, RedisOptions, RedisServer},
};

fn standalone(redis: &RedisServer) -> String {
    format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"1s\"",
        redis.url()
    )
}

fn cluster(c: &RedisCluster) -> String {
    let urls: Vec<String> = c.urls().iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "store = \"redis\"\nredis_cluster_urls = [{}]\nredis_timeout = \"2s\"",
        urls.join(", ")
    )
}

fn two_instances(session_extra: String) -> Options {
    Options {
        session_extra,
        instances: 2,
        ..Options::default()
    }
}

/// A real browser: cookies ignore the port, so both instances on localhost see the session.
fn browser() -> Browser {
    Browser::with_port_scope(PortScope::IgnorePort)
}

async fn login_on_a_use_on_b_logout_on_b_rejected_on_a(stack: &Stack) {
    let b = browser();
    let ticket = stack.login(&b).await;
    // API call on instance B with the session made on A.
    let r = b
        .get(&stack.url_on(1, "/api/orders/1"))
        .await
        .expect("api on B");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    let s = b
        .get(&stack.url_on(1, "/bff/session"))
        .await
        .expect("session on B");
    let csrf = s.json().expect("json")["csrfToken"]
        .as_str()
        .expect("csrf")
        .to_owned();
    // The CSRF token is the session's, whichever instance checks it.
    let post = b
        .request(
            Method::POST,
            &stack.url_on(0, "/api/orders/2"),
            &[("x-csrf-token", &csrf)],
            "{}",
        )
        .await
        .expect("post on A");
    assert_eq!(post.status.as_u16(), 200, "{}", post.text());
    // Logout on B → A refuses the very next request.
    let out = b
        .request(
            Method::POST,
            &stack.url_on(1, "/bff/logout"),
            &[("x-csrf-token", &csrf)],
            "",
        )
        .await
        .expect("logout on B");
    assert_eq!(out.status.as_u16(), 200);
    let cookie = format!("{}={ticket}", common::COOKIE);
    let after = b
        .get_with(&stack.url_on(0, "/api/orders/3"), &[("cookie", &cookie)])
        .await
        .expect("api on A");
    assert_eq!(
        after.status.as_u16(),
        401,
        "logout on B is seen by A at once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_redis_two_instances_act_as_one() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let stack = Stack::start_with(two_instances(standalone(&redis))).await;
    login_on_a_use_on_b_logout_on_b_rejected_on_a(&stack).await;

    // Operator revocation through instance A's session manager ends B's view of it too.
    let b = browser();
    let ticket = stack.login(&b).await;
    assert_eq!(
        b.get(&stack.url_on(1, "/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        200
    );
    let ended = stack.instances[0]
        .state
        .sessions
        .end_subject(&stack.idp.issuer(), "alice")
        .await
        .expect("revoke");
    assert!(ended >= 1);
    let cookie = format!("{}={ticket}", common::COOKIE);
    let r = b
        .get_with(&stack.url_on(1, "/bff/session"), &[("cookie", &cookie)])
        .await
        .expect("s");
    assert_eq!(
        r.status.as_u16(),
        401,
        "revocation is immediate on every instance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_two_instances_act_as_one() {
    let c = RedisCluster::start(3).await.expect("cluster");
    let stack = Stack::start_with(two_instances(cluster(&c))).await;
    login_on_a_use_on_b_logout_on_b_rejected_on_a(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refresh_across_two_instances() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let stack = Stack::start_with(Options {
        access_token_ttl: 20,
        refresh_skew: "15s",
        ..two_instances(standalone(&redis))
    })
    .await;
    let b = browser();
    stack.login(&b).await;
    tokio::time::sleep(std::time::Duration::from_millis(5_500)).await;
    stack.idp.reset_stats().await.expect("reset");
    let mut tasks = Vec::new();
    for i in 0..100 {
        let b = b.clone();
        let url = stack.url_on(i % 2, &format!("/api/orders/{i}"));
        tasks.push(tokio::spawn(async move {
            b.get(&url).await.map(|r| r.status.as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("request"),
            200,
            "every request succeeds"
        );
    }
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(
        stats.refresh_grants(),
        1,
        "exactly one refresh across both instances: {stats:?}"
    );
    assert_eq!(stats.refresh_invalid_grant, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_fails_closed_and_heals_without_restart() {
    let mut redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let stack = Stack::start_with(Options {
        session_extra: standalone(&redis),
        ..Options::default()
    })
    .await;
    let b = browser();
    let ticket = stack.login(&b).await;
    let cookie = format!("{}={ticket}", common::COOKIE);
    assert_eq!(
        b.get(&stack.url("/readyz"))
            .await
            .expect("ready")
            .status
            .as_u16(),
        200
    );

    redis.stop().await.expect("stop redis");
    let before = stack.upstream.count();
    for path in ["/bff/session", "/api/orders/1"] {
        let r = b
            .get_with(&stack.url(path), &[("cookie", &cookie)])
            .await
            .expect(path);
        assert_eq!(
            r.status.as_u16(),
            503,
            "{path} with the store down: {}",
            r.text()
        );
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(
            !r.text().to_lowercase().contains("redis"),
            "no internals in the error"
        );
    }
    let login = b.get(&stack.url("/bff/login")).await.expect("login");
    assert_eq!(
        login.status.as_u16(),
        503,
        "no login state can be kept: refuse"
    );
    assert_eq!(
        stack.upstream.count(),
        before,
        "nothing reached the upstream"
    );
    assert_eq!(
        b.get(&stack.url("/readyz"))
            .await
            .expect("ready")
            .status
            .as_u16(),
        503
    );
    assert_eq!(
        b.get(&stack.url("/healthz"))
            .await
            .expect("live")
            .status
            .as_u16(),
        200
    );

    redis.restart().await.expect("restart redis");
    let healed = common::eventually(|| {
        let b = b.clone();
        let url = stack.url("/readyz");
        async move {
            b.get(&url)
                .await
                .map(|r| r.status.as_u16() == 200)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(healed, "ready again once Redis is back, without a restart");
    // The restarted Redis lost its data (no persistence): the old cookie is just not a session.
    let r = b
        .get_with(&stack.url("/bff/session"), &[("cookie", &cookie)])
        .await
        .expect("s");
    assert_eq!(r.status.as_u16(), 401);
    // Each Redis client (sessions, rate limits) reconnects on its first use after the outage:
    // the service is back once a login goes through again.
    let login_back = common::eventually(|| {
        let url = stack.url("/bff/login");
        async move {
            browser()
                .get(&url)
                .await
                .map(|r| r.status.as_u16() == 302)
                .unwrap_or(false)
        }
    })
    .await;
    assert!(login_back, "logins work again without a restart");
    let b2 = browser();
    stack.login(&b2).await;
    assert_eq!(
        b2.get(&stack.url("/api/orders/9"))
            .await
            .expect("api")
            .status
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_cluster_master_fails_closed() {
    let mut c = RedisCluster::start(3).await.expect("cluster");
    let stack = Stack::start_with(Options {
        session_extra: cluster(&c),
        ..Options::default()
    })
    .await;
    // Several sessions spread over the slots of all three masters.
    let mut browsers = Vec::new();
    for _ in 0..6 {
        let b = browser();
        let t = stack.login(&b).await;
        browsers.push((b, t));
    }
    c.kill_node(0).await.expect("kill a master");
    // No replicas, so no failover: requests for the lost master's slots fail at once, and once the
    // cluster notices (node timeout) it refuses every key (CLUSTERDOWN). Either way the gateway
    // answers 503 — never 401-and-anonymous, never let through.
    let before = stack.upstream.count();
    let served = std::sync::atomic::AtomicUsize::new(0);
    let all_refused = common::eventually(|| {
        let browsers = &browsers;
        let stack = &stack;
        let served = &served;
        async move {
            let mut refused = 0;
            for (b, t) in browsers {
                let cookie = format!("{}={t}", common::COOKIE);
                let r = b
                    .get_with(&stack.url("/api/orders/1"), &[("cookie", &cookie)])
                    .await
                    .expect("api");
                match r.status.as_u16() {
                    503 => refused += 1,
                    200 => {
                        served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    other => panic!("a store outage must fail closed, got {other}: {}", r.text()),
                }
            }
            refused == browsers.len()
        }
    })
    .await;
    assert!(
        all_refused,
        "the cluster without one master refuses every session"
    );
    assert_eq!(
        stack.upstream.count() - before,
        served.into_inner(),
        "only requests that got 200 reached the upstream"
    );
    assert_eq!(
        browser()
            .get(&stack.url("/readyz"))
            .await
            .expect("ready")
            .status
            .as_u16(),
        503
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_with_replicas_fails_over_and_keeps_sessions() {
    let mut c = RedisCluster::start_with_replicas(3, 1)
        .await
        .expect("cluster");
    let stack = Stack::start_with(Options {
        session_extra: cluster(&c),
        ..Options::default()
    })
    .await;
    let mut browsers = Vec::new();
    for _ in 0..6 {
        let b = browser();
        let t = stack.login(&b).await;
        browsers.push((b, t));
    }
    // Replication is asynchronous: wait until every replica has what its master has, so the
    // failover below does not race the sessions just written.
    for i in c.master_indexes().await.expect("masters") {
        let _ = c.command(i, &["WAIT", "1", "2000"]).await.expect("WAIT");
    }
    let master = c.master_indexes().await.expect("masters")[0];
    c.kill_node(master).await.expect("kill a master");
    c.wait_cluster_ok(std::time::Duration::from_secs(30))
        .await
        .expect("replica promoted");
    // After the promotion the client follows the new slot owner: every session works again
    // (during the failover window requests got 503, never 401 — see the test without replicas).
    let all_back = common::eventually(|| {
        let browsers = &browsers;
        let stack = &stack;
        async move {
            for (b, t) in browsers {
                let cookie = format!("{}={t}", common::COOKIE);
                let r = b
                    .get_with(&stack.url("/api/orders/1"), &[("cookie", &cookie)])
                    .await
                    .expect("api");
                match r.status.as_u16() {
                    200 => {}
                    503 => return false,
                    other => {
                        panic!("failover must not log anyone out or let anyone through: {other}")
                    }
                }
            }
            true
        }
    })
    .await;
    assert!(all_back, "every session is served again after failover");
    assert_eq!(
        browser()
            .get(&stack.url("/readyz"))
            .await
            .expect("ready")
            .status
            .as_u16(),
        200
    );
}
