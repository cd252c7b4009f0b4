//! Micro-benchmarks of the pieces every proxied request goes through (see docs/performance.md).
//!
//! `cargo bench -p portcullis --bench hot_path` (add `-- --quick` for a short run). Compare
//! figures of one run with each other; absolute times on a shared machine are noise.
#![allow(clippy::unwrap_used, missing_debug_implementations)]

use std::{hint::black_box, net::IpAddr, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue};
use portcullis::{
    config::Config,
    crypto::{keyring::KeyRing, random},
    csrf,
    oidc::now_unix,
    proxy::{Proxy, headers},
    pwa::rewrite,
    session::{SessionManager, SessionRecord, ticket::Ticket},
    store::MemoryStore,
};

fn jwt(payload_bytes: usize) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT","kid":"k1"}"#);
    let payload = URL_SAFE_NO_PAD.encode(vec![b'x'; payload_bytes]);
    let sig = URL_SAFE_NO_PAD.encode([7u8; 256]);
    format!("{header}.{payload}.{sig}")
}

/// A realistic record: ~1 KB access and ID tokens, a refresh token, a few claims.
fn record() -> SessionRecord {
    let now = now_unix();
    let mut user = serde_json::Map::new();
    user.insert("sub".into(), "248289761001".into());
    user.insert("name".into(), "Jane Doe".into());
    SessionRecord {
        sub: "248289761001".into(),
        iss: "https://idp.example.com".into(),
        sid: Some(random::token::<16>().unwrap()),
        user,
        claims: serde_json::Map::new(),
        scopes: vec!["openid".into(), "profile".into(), "email".into()],
        csrf_token: random::token::<32>().unwrap(),
        access_token: jwt(600),
        access_expires_at: Some(now + 3600),
        refresh_token: Some(random::token::<48>().unwrap()),
        id_token: Some(jwt(500)),
        created_at: now,
        absolute_expires_at: now + 8 * 3600,
    }
}

fn session_load(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let keys = KeyRing::parse(&KeyRing::generate_encoded().unwrap()).unwrap();
    let sessions = rt.block_on(async {
        let store = Arc::new(MemoryStore::new());
        SessionManager::new(
            store,
            keys,
            Duration::from_secs(8 * 3600),
            Duration::from_secs(2 * 3600),
        )
    });
    // The same store and keys without the memo of opened records: every load decrypts.
    let uncached = sessions.clone().with_open_cache(0);
    let cookie = rt
        .block_on(sessions.create(record()))
        .unwrap()
        .ticket
        .encode();
    let forged = URL_SAFE_NO_PAD.encode([9u8; 32]);
    let mut g = c.benchmark_group("session");
    g.bench_function("ticket_parse", |b| {
        b.iter(|| Ticket::parse(black_box(&cookie)))
    });
    g.bench_function("parse_lookup_unseal", |b| {
        b.to_async(&rt).iter(|| async {
            let t = Ticket::parse(black_box(&cookie)).unwrap();
            uncached.load(t).await.unwrap().unwrap()
        })
    });
    g.bench_function("parse_lookup_memo_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let t = Ticket::parse(black_box(&cookie)).unwrap();
            sessions.load(t).await.unwrap().unwrap()
        })
    });
    g.bench_function("unknown_ticket", |b| {
        b.to_async(&rt).iter(|| async {
            let t = Ticket::parse(black_box(&forged)).unwrap();
            sessions.load(t).await.unwrap()
        })
    });
    g.finish();
}

fn csrf_compare(c: &mut Criterion) {
    let expected = random::token::<32>().unwrap();
    let wrong = random::token::<32>().unwrap();
    let mut g = c.benchmark_group("csrf");
    g.bench_function("match", |b| {
        b.iter(|| {
            let p = black_box(expected.as_bytes());
            csrf::well_formed(p) && csrf::token_matches(p, black_box(&expected))
        })
    });
    g.bench_function("mismatch", |b| {
        b.iter(|| {
            let p = black_box(wrong.as_bytes());
            csrf::well_formed(p) && csrf::token_matches(p, black_box(&expected))
        })
    });
    g.finish();
}

/// A browser's request to `/api/…`: cookies, CSRF token, the usual fetch headers.
fn browser_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("host", "app.example.com"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
        ),
        ("accept", "application/json"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        (
            "cookie",
            "__Host-SessionID=VGhpcyBpcyBub3QgYSByZWFsIHRpY2tldCBhdCBhbGwh; theme=dark",
        ),
        (
            "x-csrf-token",
            "VGhpcyBpcyBub3QgYSByZWFsIHRva2VuIGF0IGFsbCEh",
        ),
        ("content-type", "application/json"),
        ("origin", "https://app.example.com"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("connection", "keep-alive"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    h
}

fn config(routes: usize) -> Config {
    let dir = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys"), KeyRing::generate_encoded().unwrap()).unwrap();
    std::fs::write(dir.join("secret"), "bench-secret").unwrap();
    let mut toml = format!(
        r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "https://app.example.com"
[session]
keys_file = "{d}/keys"
[oidc]
issuer = "https://idp.example.com"
client_id = "bench"
client_secret_file = "{d}/secret"
"#,
        d = dir.display()
    );
    for i in 0..routes {
        toml.push_str(&format!(
            "[[routes]]\nprefix = \"/api/service{i}\"\nupstream = \"http://127.0.0.1:{}\"\n",
            7000 + i
        ));
    }
    Config::from_toml(&toml).unwrap()
}

fn header_rewriting(c: &mut Criterion) {
    let cfg = config(1);
    let token = jwt(600);
    let ip: IpAddr = "10.1.2.3".parse().unwrap();
    let incoming = browser_headers();
    let mut g = c.benchmark_group("headers");
    g.bench_function("upstream_request", |b| {
        b.iter_batched_ref(
            || incoming.clone(),
            |h| {
                headers::upstream_request(h, &token, Some(ip), None, &cfg.server.public_origin)
                    .unwrap()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    response.insert("content-type", HeaderValue::from_static("application/json"));
    response.insert("content-length", HeaderValue::from_static("11"));
    response.insert(
        "date",
        HeaderValue::from_static("Thu, 26 Nov 2026 23:00:00 GMT"),
    );
    response.insert("set-cookie", HeaderValue::from_static("upstream=1"));
    g.bench_function("downstream_response", |b| {
        b.iter_batched_ref(
            || response.clone(),
            headers::downstream_response,
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn route_matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("routes");
    for n in [1, 10] {
        let proxy = Proxy::new(&config(n)).unwrap();
        let last = format!("/api/service{}/orders/42", n - 1);
        g.bench_function(format!("{n}_routes_hit_last"), |b| {
            b.iter(|| proxy.has_route(black_box(&last)))
        });
        g.bench_function(format!("{n}_routes_miss"), |b| {
            b.iter(|| proxy.has_route(black_box("/assets/app.3f9a1c.js")))
        });
    }
    g.finish();
}

fn nonce_injection(c: &mut Criterion) {
    let html = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pwa/index.html"
    ))
    .unwrap();
    let nonce = random::token::<16>().unwrap();
    let mut g = c.benchmark_group("pwa");
    g.bench_function("nonce_index_html", |b| {
        b.iter(|| rewrite::add_nonce(black_box(&html), &nonce, true).unwrap())
    });
    g.finish();
}

criterion_group!(
    benches,
    session_load,
    csrf_compare,
    header_rewriting,
    route_matching,
    nonce_injection
);
criterion_main!(benches);
