//! The Redis fixtures against real `redis-server` / `redis-cli` processes.

use std::time::Duration;

use testkit::redis::{
    CLUSTER_OK_TIMEOUT, RedisCluster, RedisOptions, RedisServer, Reply, RespConnection,
};

fn ok() -> Reply {
    Reply::Simple("OK".to_owned())
}

/// Polls until connecting to `port` is refused (the port is closed), up to
/// 5 s.
async fn assert_refused(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            other => assert!(
                std::time::Instant::now() < deadline,
                "port {port} still accepts connections: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn standalone_ping_set_get_over_raw_resp_and_redis_cli() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("start redis");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(redis.url_with_credentials(), redis.url());
    assert!(redis.ca_pem_path().is_none());
    assert!(redis.is_running());

    let mut conn = RespConnection::connect(redis.port())
        .await
        .expect("connect");
    assert_eq!(
        conn.command(&["PING"]).await.expect("PING"),
        Reply::Simple("PONG".into())
    );
    assert_eq!(conn.command(&["SET", "k", "v"]).await.expect("SET"), ok());
    assert_eq!(
        conn.command(&["GET", "k"]).await.expect("GET"),
        Reply::Bulk(b"v".to_vec())
    );
    assert!(conn.command(&["GET", "nope"]).await.expect("GET").is_nil());
    assert_eq!(
        conn.command(&["INCRBY", "n", "41"]).await.expect("INCRBY"),
        Reply::Integer(41)
    );
    let err = conn.command(&["NOSUCHCOMMAND"]).await.expect("reply");
    assert!(err.error().is_some_and(|e| e.starts_with("ERR")), "{err:?}");

    // Binary-safe values and arrays.
    let value: Vec<u8> = (0..=255).collect();
    assert_eq!(
        conn.command(&[b"SET".as_slice(), b"bin", &value])
            .await
            .expect("SET"),
        ok()
    );
    assert_eq!(
        conn.command(&["GET", "bin"]).await.expect("GET"),
        Reply::Bulk(value)
    );
    assert_eq!(
        conn.command(&["MGET", "k", "nope"]).await.expect("MGET"),
        Reply::Array(vec![Reply::Bulk(b"v".to_vec()), Reply::Nil])
    );

    // The same data through redis-cli.
    assert_eq!(redis.cli(&["GET", "k"]).await.expect("cli").trim(), "v");
    assert_eq!(
        redis.cli(&["SET", "c", "x"]).await.expect("cli").trim(),
        "OK"
    );
    assert_eq!(
        redis.command(&["GET", "c"]).await.expect("GET"),
        Reply::Bulk(b"x".to_vec())
    );

    // Nothing is persisted.
    let cfg = redis
        .command(&["CONFIG", "GET", "save"])
        .await
        .expect("cfg");
    assert_eq!(
        cfg,
        Reply::Array(vec![Reply::Bulk(b"save".to_vec()), Reply::Bulk(Vec::new())])
    );
}

#[tokio::test]
async fn acl_user_is_required_and_default_user_is_off() {
    let redis = RedisServer::start(
        RedisOptions::default().with_acl_user("portcullis", "s3cret with spaces"),
    )
    .await
    .expect("start redis");
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
    assert_eq!(
        redis.url_with_credentials(),
        format!(
            "redis://portcullis:s3cret%20with%20spaces@127.0.0.1:{}",
            redis.port()
        )
    );

    // Unauthenticated: refused.
    let mut anon = redis.connect_unauthenticated().await.expect("connect");
    let reply = anon.command(&["GET", "k"]).await.expect("reply");
    assert!(
        reply.error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    // The default user cannot log in (it is off), whatever the password.
    let reply = anon
        .command(&["AUTH", "default", "anything"])
        .await
        .expect("reply");
    assert!(
        reply.error().is_some_and(|e| e.starts_with("WRONGPASS")),
        "{reply:?}"
    );
    // A wrong password for the ACL user is refused too.
    let reply = anon
        .command(&["AUTH", "portcullis", "wrong"])
        .await
        .expect("reply");
    assert!(
        reply.error().is_some_and(|e| e.starts_with("WRONGPASS")),
        "{reply:?}"
    );
    // The ACL user is accepted, with every permission.
    assert_eq!(
        anon.command(&["AUTH", "portcullis", "s3cret with spaces"])
            .await
            .expect("AUTH"),
        ok()
    );
    assert_eq!(anon.command(&["SET", "k", "v"]).await.expect("SET"), ok());
    assert_eq!(
        anon.command(&["EVAL", "return redis.call('GET', KEYS[1])", "1", "k"])
            .await
            .expect("EVAL"),
        Reply::Bulk(b"v".to_vec())
    );
    assert_eq!(
        anon.command(&["ACL", "WHOAMI"]).await.expect("WHOAMI"),
        Reply::Bulk(b"portcullis".to_vec())
    );

    // The fixture's own helpers authenticate.
    assert_eq!(
        redis.command(&["GET", "k"]).await.expect("GET"),
        Reply::Bulk(b"v".to_vec())
    );
    assert_eq!(redis.cli(&["GET", "k"]).await.expect("cli").trim(), "v");
    let plain = testkit::redis::redis_cli(&["-p", &redis.port().to_string(), "GET", "k"])
        .await
        .expect("redis-cli");
    assert!(plain.starts_with("NOAUTH"), "{plain}");
}

#[tokio::test]
async fn tls_server_answers_over_tls_only() {
    let redis = RedisServer::start(RedisOptions::default().with_tls())
        .await
        .expect("start redis");
    assert_eq!(redis.url(), format!("rediss://127.0.0.1:{}", redis.port()));
    let ca = redis.ca_pem_path().expect("a CA file");
    assert!(ca.is_file());
    let ca_pem = redis.ca_pem().expect("CA PEM");
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));

    // redis-cli over TLS, trusting the fixture's CA.
    let pong = testkit::redis::redis_cli(&[
        "-h".as_ref(),
        "127.0.0.1".as_ref(),
        "-p".as_ref(),
        redis.port().to_string().as_ref(),
        "--tls".as_ref(),
        "--cacert".as_ref(),
        ca.as_os_str(),
        "PING".as_ref(),
    ])
    .await
    .expect("redis-cli --tls");
    assert_eq!(pong.trim(), "PONG");
    assert_eq!(
        redis.cli(&["SET", "k", "v"]).await.expect("cli").trim(),
        "OK"
    );

    // The RESP client over rustls, verifying the certificate for 127.0.0.1.
    let mut conn = RespConnection::connect_tls(redis.port(), ca_pem)
        .await
        .expect("TLS connect");
    assert_eq!(
        conn.command(&["GET", "k"]).await.expect("GET"),
        Reply::Bulk(b"v".to_vec())
    );

    // Plain RESP on the TLS port gets no answer.
    let mut plain = RespConnection::connect(redis.port())
        .await
        .expect("TCP connect");
    assert!(plain.command(&["PING"]).await.is_err());

    // A client that does not trust the CA fails the handshake.
    let other = RedisServer::start(RedisOptions::default().with_tls())
        .await
        .expect("second TLS redis");
    let err = RespConnection::connect_tls(redis.port(), other.ca_pem().expect("PEM"))
        .await
        .expect_err("an unknown CA must fail");
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");
}

#[tokio::test]
async fn tls_with_acl_user() {
    let redis = RedisServer::start(
        RedisOptions::default()
            .with_tls()
            .with_acl_user("app", "pw"),
    )
    .await
    .expect("start redis");
    let mut anon = redis.connect_unauthenticated().await.expect("connect");
    let reply = anon.command(&["PING"]).await.expect("reply");
    assert!(
        reply.error().is_some_and(|e| e.starts_with("NOAUTH")),
        "{reply:?}"
    );
    assert_eq!(
        redis.command(&["PING"]).await.expect("PING"),
        Reply::Simple("PONG".into())
    );
    assert_eq!(redis.cli(&["PING"]).await.expect("cli").trim(), "PONG");
    assert_eq!(
        redis.url_with_credentials(),
        format!("rediss://app:pw@127.0.0.1:{}", redis.port())
    );
}

#[tokio::test]
async fn stop_refuses_connections_and_restart_reuses_the_port() {
    let mut redis = RedisServer::start(RedisOptions::default().with_acl_user("u", "p"))
        .await
        .expect("start redis");
    let port = redis.port();
    let url = redis.url();
    assert_eq!(redis.command(&["SET", "k", "v"]).await.expect("SET"), ok());
    let mut held = redis.connect().await.expect("connect");

    redis.stop().await.expect("stop");
    assert!(!redis.is_running());
    assert!(redis.pid().is_none());
    assert_refused(port).await;
    assert!(redis.command(&["PING"]).await.is_err());
    // A connection opened before the stop is dead.
    assert!(held.command(&["PING"]).await.is_err());
    // Stopping twice is fine.
    redis.stop().await.expect("second stop");

    redis.restart().await.expect("restart");
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_eq!(redis.url(), url);
    // Same options (the ACL user is still required); the data set is new.
    assert!(redis.command(&["GET", "k"]).await.expect("GET").is_nil());
    let mut anon = redis.connect_unauthenticated().await.expect("connect");
    assert!(
        anon.command(&["PING"])
            .await
            .expect("reply")
            .error()
            .is_some_and(|e| e.starts_with("NOAUTH"))
    );

    // restart() of a running server stops it first.
    let pid = redis.pid();
    redis.restart().await.expect("restart while running");
    assert_ne!(redis.pid(), pid);
    assert_eq!(
        redis.command(&["PING"]).await.expect("PING"),
        Reply::Simple("PONG".into())
    );
}

#[tokio::test]
async fn tls_server_restarts_with_the_same_certificates() {
    let mut redis = RedisServer::start(RedisOptions::default().with_tls())
        .await
        .expect("start redis");
    let ca = redis.ca_pem().expect("PEM").to_owned();
    redis.stop().await.expect("stop");
    assert_refused(redis.port()).await;
    redis.restart().await.expect("restart");
    let mut conn = RespConnection::connect_tls(redis.port(), &ca)
        .await
        .expect("TLS connect with the old CA");
    assert_eq!(
        conn.command(&["PING"]).await.expect("PING"),
        Reply::Simple("PONG".into())
    );
}

#[tokio::test]
async fn dropping_the_server_kills_it() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("start redis");
    let port = redis.port();
    let dir = redis.dir().to_owned();
    assert!(dir.is_dir());
    drop(redis);
    assert_refused(port).await;
    assert!(!dir.exists(), "{} must be removed", dir.display());
}

#[tokio::test]
async fn invalid_acl_user_is_rejected() {
    for (user, password) in [("", "p"), ("a b", "p"), ("default", "p"), ("u", "")] {
        let err = RedisServer::start(RedisOptions::default().with_acl_user(user, password))
            .await
            .expect_err("must be rejected");
        assert!(format!("{err:#}").contains("ACL") || format!("{err:#}").contains("password"));
    }
}

/// Keys whose slots fall on different masters of a 3-master cluster
/// (`{a}`, `{b}`, `{c}` hash to 15495, 3300, 7365).
const KEYS: [&str; 6] = ["{a}1", "{b}1", "{c}1", "{a}2", "{b}2", "{c}2"];

async fn set_get_everywhere(cluster: &RedisCluster, via: usize, tag: &str) {
    for key in KEYS {
        let value = format!("{tag}-{key}");
        let set = cluster
            .cli(via, &["SET", key, &value])
            .await
            .expect("redis-cli -c SET");
        assert_eq!(set.trim(), "OK", "SET {key} via node {via}");
        let got = cluster
            .cli(via, &["GET", key])
            .await
            .expect("redis-cli -c GET");
        assert_eq!(got.trim(), value, "GET {key} via node {via}");
    }
}

#[tokio::test]
async fn cluster_reaches_ok_serves_all_slots_and_fails_without_a_master() {
    let mut cluster = RedisCluster::start(3).await.expect("start cluster");
    assert_eq!(cluster.len(), 3);
    let urls = cluster.urls();
    assert_eq!(urls.len(), 3);
    for (url, port) in urls.iter().zip(cluster.ports()) {
        assert_eq!(url, &format!("redis://127.0.0.1:{port}"));
    }
    for i in 0..3 {
        let info = cluster.cluster_info(i).await.expect("CLUSTER INFO");
        assert_eq!(info.get("cluster_state").map(String::as_str), Some("ok"));
        assert_eq!(info.get("cluster_size").map(String::as_str), Some("3"));
        assert_eq!(cluster.role(i).await.expect("ROLE"), "master");
    }
    // The keys really live on different nodes: a plain connection gets MOVED.
    let moved = {
        let mut moved = 0;
        for key in ["{a}1", "{b}1", "{c}1"] {
            let reply = cluster.command(0, &["GET", key]).await.expect("GET");
            if reply.error().is_some_and(|e| e.starts_with("MOVED")) {
                moved += 1;
            }
        }
        moved
    };
    assert_eq!(moved, 2, "node 0 must own exactly one of the three slots");
    for via in 0..3 {
        set_get_everywhere(&cluster, via, "one").await;
    }

    // Without replicas, losing a master fails the cluster (full coverage).
    cluster.kill_node(0).await.expect("kill node 0");
    assert!(!cluster.is_node_running(0));
    assert_refused(cluster.ports()[0]).await;
    for i in 1..3 {
        cluster
            .wait_node_cluster_state(i, "fail", Duration::from_secs(20))
            .await
            .expect("cluster_state:fail");
    }
    assert!(
        cluster
            .wait_cluster_ok(Duration::from_millis(300))
            .await
            .is_err()
    );

    // Back with the same nodes.conf: it rejoins and reclaims its slots.
    cluster.restart_node(0).await.expect("restart node 0");
    assert!(cluster.is_node_running(0));
    cluster
        .wait_cluster_ok(CLUSTER_OK_TIMEOUT)
        .await
        .expect("ok again");
    assert_eq!(cluster.role(0).await.expect("ROLE"), "master");
    set_get_everywhere(&cluster, 1, "two").await;
}

#[tokio::test]
async fn cluster_with_replicas_fails_over_when_a_master_dies() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1)
        .await
        .expect("start cluster");
    assert_eq!(cluster.len(), 6);
    let masters = cluster.master_indexes().await.expect("masters");
    assert_eq!(masters.len(), 3, "{masters:?}");
    // Each master has exactly one replica.
    let mut replica_of = std::collections::BTreeMap::new();
    for i in 0..cluster.len() {
        if let Some(m) = cluster.master_of(i).await.expect("master_of") {
            assert!(replica_of.insert(m, i).is_none(), "two replicas of {m}");
        }
    }
    assert_eq!(replica_of.keys().copied().collect::<Vec<_>>(), masters);
    set_get_everywhere(&cluster, 0, "before").await;

    // Kill a master: its replica takes over and the cluster is ok again.
    let victim = masters[0];
    let heir = replica_of[&victim];
    cluster.kill_node(victim).await.expect("kill master");
    cluster
        .wait_cluster_ok(CLUSTER_OK_TIMEOUT)
        .await
        .expect("failover");
    assert_eq!(cluster.role(heir).await.expect("ROLE"), "master");
    let via = masters[1];
    set_get_everywhere(&cluster, via, "after").await;

    // The old master comes back as a replica of its heir.
    cluster.restart_node(victim).await.expect("restart");
    cluster
        .wait_cluster_ok(CLUSTER_OK_TIMEOUT)
        .await
        .expect("rejoined");
    assert_eq!(cluster.role(victim).await.expect("ROLE"), "slave");
    assert_eq!(
        cluster.master_of(victim).await.expect("master_of"),
        Some(heir)
    );
    set_get_everywhere(&cluster, victim, "rejoined").await;
}

#[tokio::test]
async fn a_taken_fixed_port_fails_with_the_server_log() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let err = RedisServer::start(RedisOptions::default().with_port(port))
        .await
        .expect_err("the port is taken");
    let msg = format!("{err:#}");
    assert!(msg.contains("Address already in use"), "{msg}");
    assert!(msg.contains(&port.to_string()), "{msg}");
}
