//! Soak: a mixed workload against **two** `portcullis serve` processes (the real binary) that
//! share one real `redis-server`, with the real OpenID Provider issuing 10 s access tokens (so
//! sessions refresh while they are used) and a recording upstream.
//!
//! Each virtual user loops until the deadline: log in through the provider's form on one
//! instance, then on alternating instances read `/bff/session`, GET and POST (with the CSRF token)
//! API calls with pauses long enough for refreshes, and log out (after which the cookie is no
//! longer a session). Every response is checked; anything unexpected is counted.
//!
//! Asserts: zero unexpected outcomes; refreshes happened; each gateway's resident memory (VmRSS)
//! at the end is within a margin of its value after warm-up: growth ≤ max(25 % of the warm-up
//! RSS, 16 MiB) (see docs/soak.md for the rationale and longer runs).
//!
//! Duration: `PORTCULLIS_SOAK_SECS` (default 60). Users: `PORTCULLIS_SOAK_USERS` (default 6).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use http::Method;
use testkit::{
    browser::Browser,
    cookies::PortScope,
    free_port,
    idp::{Idp, IdpOptions},
    redis::{RedisOptions, RedisServer},
    upstream::RecordingUpstream,
};

const COOKIE: &str = "__Host-SessionID";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A `portcullis serve` child process; killed (by its own handle) when dropped.
struct Gateway {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("gateway process status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

fn spawn_gateway(dir: &std::path::Path, n: usize, port: u16, toml: &str) -> Gateway {
    let cfg = dir.join(format!("gateway-{n}.toml"));
    std::fs::write(&cfg, toml).expect("config");
    let log = dir.join(format!("gateway-{n}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .expect("log"),
        ))
        .spawn()
        .expect("start portcullis serve");
    Gateway {
        child,
        base: format!("http://localhost:{port}"),
        log,
    }
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    logins: AtomicU64,
    logouts: AtomicU64,
    unexpected: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn check(&self, ok: bool, what: impl FnOnce() -> String) -> bool {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            let mut e = self.first_errors.lock().expect("lock");
            if e.len() < 20 {
                e.push(what());
            }
        }
        ok
    }
}

async fn user(
    id: usize,
    bases: Arc<Vec<String>>,
    username: String,
    password: String,
    deadline: Instant,
    tally: Arc<Tally>,
) {
    let mut round = 0usize;
    while Instant::now() + Duration::from_secs(8) < deadline {
        round += 1;
        // Cookies ignore the port, as in real browsers: one session cookie for both instances.
        let b = Browser::with_port_scope(PortScope::IgnorePort);
        let home = &bases[(id + round) % 2];
        let login = b
            .login_via_form(
                &format!("{home}/bff/login?returnTo=/home"),
                &username,
                &password,
            )
            .await;
        let ticket = match login {
            Ok(o) if o.callback_response.status.as_u16() == 302 => b.cookie(COOKIE),
            Ok(o) => {
                tally.check(false, || format!("login: {}", o.callback_response.status));
                continue;
            }
            Err(e) => {
                tally.check(false, || format!("login: {e:#}"));
                continue;
            }
        };
        if !tally.check(ticket.is_some(), || "login: no session cookie".into()) {
            continue;
        }
        tally.logins.fetch_add(1, Ordering::Relaxed);
        // ~12 s of use per session: 10 s tokens refreshed 5 s early refresh at least once.
        for step in 0..8 {
            if Instant::now() >= deadline {
                break;
            }
            let base = &bases[(id + round + step) % 2];
            let s = b.get(&format!("{base}/bff/session")).await;
            let csrf = match s {
                Ok(r) if r.status.as_u16() == 200 => r
                    .json()
                    .ok()
                    .and_then(|j| j["csrfToken"].as_str().map(str::to_owned)),
                Ok(r) => {
                    tally.check(false, || format!("session: {} {}", r.status, r.text()));
                    None
                }
                Err(e) => {
                    tally.check(false, || format!("session: {e:#}"));
                    None
                }
            };
            let Some(csrf) = csrf else { break };
            tally.check(true, String::new);
            let r = b.get(&format!("{base}/api/orders/{id}-{step}")).await;
            tally.check(r.as_ref().is_ok_and(|r| r.status.as_u16() == 200), || {
                format!("api get: {:?}", r.as_ref().map(|r| (r.status, r.text())))
            });
            let body = format!("{{\"user\":{id},\"step\":{step}}}");
            let r = b
                .request(
                    Method::POST,
                    &format!("{base}/api/orders/echo-body"),
                    &[
                        ("x-csrf-token", &csrf),
                        ("origin", base),
                        ("content-type", "application/json"),
                    ],
                    body.clone(),
                )
                .await;
            tally.check(
                r.as_ref()
                    .is_ok_and(|r| r.status.as_u16() == 200 && r.text() == body),
                || format!("api post: {:?}", r.as_ref().map(|r| (r.status, r.text()))),
            );
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
        let base = &bases[(id + round + 1) % 2];
        let csrf = match b.get(&format!("{base}/bff/session")).await {
            Ok(r) if r.status.as_u16() == 200 => r
                .json()
                .ok()
                .and_then(|j| j["csrfToken"].as_str().map(str::to_owned)),
            _ => None,
        };
        let Some(csrf) = csrf else {
            tally.check(false, || "session before logout".into());
            continue;
        };
        let r = b
            .request(
                Method::POST,
                &format!("{base}/bff/logout"),
                &[("x-csrf-token", &csrf), ("origin", base)],
                "",
            )
            .await;
        tally.check(r.as_ref().is_ok_and(|r| r.status.as_u16() == 200), || {
            format!("logout: {:?}", r.as_ref().map(|r| r.status))
        });
        // The old cookie is no session on either instance.
        let cookie = format!("{COOKIE}={}", ticket.unwrap_or_default());
        let r = Browser::new()
            .get_with(
                &format!("{}/bff/session", bases[round % 2]),
                &[("cookie", &cookie)],
            )
            .await;
        tally.check(r.as_ref().is_ok_and(|r| r.status.as_u16() == 401), || {
            format!("after logout: {:?}", r.as_ref().map(|r| r.status))
        });
        tally.logouts.fetch_add(1, Ordering::Relaxed);
    }
}

async fn wait_ready(base: &str) {
    let b = Browser::new();
    for _ in 0..300 {
        if b.get(&format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status.as_u16() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} not ready within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_redis_mixed_workload_is_error_free_with_stable_memory() {
    let secs = env_u64("PORTCULLIS_SOAK_SECS", 60).max(20);
    let users = env_u64("PORTCULLIS_SOAK_USERS", 6).max(1) as usize;
    let dir = std::env::temp_dir().join(format!("portcullis-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let upstream = RecordingUpstream::start().await;
    let ports = [free_port(), free_port()];
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://localhost:{p}"))
        .collect();
    let mut idp_opts = IdpOptions::new(format!("{}/bff/callback", bases[0]));
    idp_opts.redirect_uris = bases.iter().map(|b| format!("{b}/bff/callback")).collect();
    idp_opts.post_logout_redirect_uris = bases.iter().map(|b| format!("{b}/")).collect();
    idp_opts.access_token_ttl_secs = 10;
    let idp = Idp::start(idp_opts).await.expect("provider");

    let keys = dir.join("keys");
    std::fs::write(
        &keys,
        portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng"),
    )
    .expect("keys");
    let secret = dir.join("secret");
    std::fs::write(&secret, idp.client_secret()).expect("secret");
    let gateways: Vec<Gateway> = ports
        .iter()
        .zip(&bases)
        .enumerate()
        .map(|(n, (port, base))| {
            let toml = format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"

[session]
keys_file = "{keys}"
store = "redis"
redis_url = "{redis}"

[oidc]
issuer = "{issuer}"
client_id = "{client}"
client_secret_file = "{secret}"
scopes = ["openid", "profile", "email", "offline_access"]
refresh_skew = "5s"

[rate_limits]
login_per_ip = "100000/min"

[[routes]]
prefix = "/api"
upstream = "{up}"
timeout = "10s"
"#,
                keys = keys.display(),
                redis = redis.url(),
                issuer = idp.issuer(),
                client = idp.client_id(),
                secret = secret.display(),
                up = upstream.url(),
            );
            spawn_gateway(&dir, n, *port, &toml)
        })
        .collect();
    for g in &gateways {
        wait_ready(&g.base).await;
    }

    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(secs);
    let bases = Arc::new(bases);
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..users {
        tasks.spawn(user(
            id,
            Arc::clone(&bases),
            idp.username().to_owned(),
            idp.password().to_owned(),
            deadline,
            Arc::clone(&tally),
        ));
    }

    // Warm-up: a third of the run. Then sample RSS every few seconds until the end.
    tokio::time::sleep(Duration::from_secs(secs / 3)).await;
    let warm: Vec<u64> = gateways.iter().map(Gateway::rss_kib).collect();
    let mut samples = vec![(start.elapsed().as_secs(), warm.clone())];
    while Instant::now() + Duration::from_secs(5) < deadline {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push((
            start.elapsed().as_secs(),
            gateways.iter().map(Gateway::rss_kib).collect(),
        ));
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("user task");
    }
    let end: Vec<u64> = gateways.iter().map(Gateway::rss_kib).collect();
    samples.push((start.elapsed().as_secs(), end.clone()));

    let stats = idp.stats().await.expect("provider stats");
    let errors = tally.first_errors.lock().expect("lock").clone();
    eprintln!(
        "soak: {secs} s, {users} users, {} checked responses, {} logins, {} logouts, {} refreshes, {} upstream requests, {} unexpected",
        tally.ops.load(Ordering::Relaxed),
        tally.logins.load(Ordering::Relaxed),
        tally.logouts.load(Ordering::Relaxed),
        stats.refresh_grants(),
        upstream.count(),
        tally.unexpected.load(Ordering::Relaxed),
    );
    for (t, rss) in &samples {
        eprintln!("soak: t={t:>4}s RSS (KiB) {rss:?}");
    }
    if !errors.is_empty() {
        // The gateways' own account (warnings and errors) says which dependency failed.
        let logs: String = gateways
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let log = std::fs::read_to_string(&g.log).unwrap_or_default();
                format!("--- gateway {i} log ---\n{log}")
            })
            .collect();
        panic!("unexpected outcomes: {errors:#?}\n{logs}");
    }
    assert!(tally.logins.load(Ordering::Relaxed) >= users as u64);
    assert!(
        tally.logouts.load(Ordering::Relaxed) >= 1,
        "full cycles completed"
    );
    assert!(
        stats.refresh_grants() >= 1,
        "sessions were refreshed: {stats:?}"
    );
    for (i, g) in gateways.iter().enumerate() {
        let log = std::fs::read_to_string(&g.log).unwrap_or_default();
        assert!(!log.contains("panicked"), "gateway {i} panicked:\n{log}");
        let allowed = (warm[i] / 4).max(16 * 1024);
        assert!(
            end[i] <= warm[i] + allowed,
            "gateway {i}: RSS grew from {} KiB after warm-up to {} KiB (allowed +{allowed} KiB)",
            warm[i],
            end[i]
        );
    }
    drop(gateways);
    let _ = std::fs::remove_dir_all(&dir);
}
