//! Measures the latency of a 3-part aggregate whose parts take 50, 100 and 150 ms: with the
//! parts called concurrently it tracks the slowest part (≈150 ms), not the sum (300 ms).
//!
//! `cargo run --release -p portcullis --example aggregate_latency -- [N]`
//!
//! Everything runs on loopback: the testkit OpenID Provider (Node.js, `crates/testkit/idp`; run
//! `npm ci` there first, as `scripts/test.sh` does), a scripted upstream with the three delays,
//! and the gateway. After a real login and 5 warm-up requests, N (default 50) sequential
//! `GET /api/dashboard` are timed end to end from the client, next to the slowest part alone
//! (direct to the upstream, and proxied), so the gateway's own share is visible.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use portcullis::{AppState, config::Config, crypto::keyring::KeyRing};
use serde_json::json;
use testkit::{
    browser::Browser,
    idp::{Idp, IdpOptions},
    scripted::{Reply, ScriptedUpstream},
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(50);
    let up = ScriptedUpstream::start().await;
    for (path, ms) in [("/a", 50), ("/b", 100), ("/c", 150)] {
        up.on(
            path,
            Reply::ok(json!({"part": path})).delayed(Duration::from_millis(ms)),
        );
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let base = format!("http://localhost:{port}");
    let idp = Idp::start(IdpOptions::new(format!("{base}/bff/callback"))).await?;
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let keys = dir.join("keys");
    let secret = dir.join("secret");
    std::fs::write(&keys, KeyRing::generate_encoded()?)?;
    std::fs::write(&secret, idp.client_secret())?;
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{base}"
[session]
keys_file = "{keys}"
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret_file = "{secret}"
[logging]
format = "text"
[[routes]]
prefix = "/svc"
upstream = "{up}"
[[aggregates]]
path = "/api/dashboard"
[[aggregates.parts]]
name = "a"
path = "/svc/a"
[[aggregates.parts]]
name = "b"
path = "/svc/b"
[[aggregates.parts]]
name = "c"
path = "/svc/c"
"#,
        keys = keys.display(),
        secret = secret.display(),
        issuer = idp.issuer(),
        client_id = idp.client_id(),
        up = up.url(),
    );
    let config = Config::from_toml(&toml).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = AppState::new(config)?;
    state.oidc.discover().await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(portcullis::server::run(listener, state, async {
        let _ = stopped.await;
    }));

    let browser = Browser::new();
    browser
        .login_via_form(
            &format!("{base}/bff/login?returnTo=/"),
            idp.username(),
            idp.password(),
        )
        .await?;
    // The slowest part alone, straight to the upstream with the same client: its own timer
    // overshoot and the loopback round trip are in it, so the difference is the gateway's.
    let direct = sample(&browser, &format!("{}/c", up.url()), n).await?;
    let proxied = sample(&browser, &format!("{base}/svc/c"), n).await?;
    let aggregate = sample(&browser, &format!("{base}/api/dashboard"), n).await?;
    println!("{n} sequential requests each (after 5 warm-up requests), ms:");
    for (what, s) in [
        ("slowest part (150 ms), direct to the upstream", &direct),
        ("slowest part, proxied by Portcullis", &proxied),
        ("3-part aggregate (50/100/150 ms, sum 300)", &aggregate),
    ] {
        println!(
            "  {what:<48} min {:.1}  median {:.1}  p95 {:.1}  max {:.1}",
            ms(s[0]),
            ms(pick(s, 0.5)),
            ms(pick(s, 0.95)),
            ms(s[s.len() - 1]),
        );
    }
    println!(
        "aggregate median - direct slowest part median = {:+.2} ms",
        ms(pick(&aggregate, 0.5)) - ms(pick(&direct, 0.5))
    );
    let _ = stop.send(());
    let _ = server.await;
    idp.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pick(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// `n` sequential GETs of `url` (after 5 unrecorded ones), sorted; every answer must be 200.
async fn sample(browser: &Browser, url: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 5 {
        let started = Instant::now();
        let r = browser.get(url).await?;
        let took = started.elapsed();
        anyhow::ensure!(r.status == 200, "{url} answered {}: {}", r.status, r.text());
        if i >= 5 {
            samples.push(took);
        }
    }
    samples.sort();
    Ok(samples)
}
