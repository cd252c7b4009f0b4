//! The demo PWA (`examples/pwa`, with the `@portcullis/client` SDK) end to end in real headless
//! Chromium against the real stack: the OpenID Provider fixture's own pages, Portcullis serving
//! the app with its strict CSP, and the recording upstream behind `/api/orders`.
//!
//! The served tree is built by `scripts/build-pwa.sh` (the SDK in `clients/web`: `npm ci` when
//! needed, `npm run build`, copied to `examples/pwa/vendor/portcullis-client/`), run once per test
//! process from [`served_tree`]: `cargo test` alone is enough, and the demo (`scripts/demo.sh`
//! runs the same script) and the tests serve the same files.
//!
//! One scenario, in order (one browser, one stack: the whole file runs in well under a minute):
//! sign in through the provider's login form; profile and orders load; the SDK's POST carries the
//! CSRF header and reaches the upstream, the same POST with a raw `fetch` is a 403 the upstream
//! never sees; the session cookie is invisible to `document.cookie`; no token of the provider (the
//! session's access, refresh and ID tokens, read server-side) is in localStorage, sessionStorage,
//! IndexedDB, the DOM, any URL or response header the browser saw, or the body of any same-origin
//! response the page loaded; confidential notes are ciphertext in raw IndexedDB under a key
//! `exportKey` refuses; the service worker's caches hold no `/bff` or `/api` URL and it never
//! fetched one itself; after sign-out the session is dead (401, gone from the store) and the
//! vault is empty but for the `public` class.
//!
//! A second scenario signs in with the handshake form (password grant enabled) and then, with the
//! gateway stopped, reloads the page: the service worker serves the shell and the notes open.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{COOKIE, Options, Stack, eventually};
use serde_json::{Value, json};
use testkit::chromium::{ChromiumSession, LaunchOptions};

const WAIT: Duration = Duration::from_secs(15);
const NOTE: &str = "Drawbridge code word: marmalade-7731";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// `examples/pwa`, after `scripts/build-pwa.sh` ran (once per test process).
fn served_tree() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let out = Command::new("bash")
                .arg(root.join("scripts/build-pwa.sh"))
                .current_dir(&root)
                .output()
                .map_err(|e| format!("running scripts/build-pwa.sh: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/build-pwa.sh failed ({}):\n{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let app = root.join("examples/pwa");
            if !app.join("vendor/portcullis-client/index.js").is_file() {
                return Err("examples/pwa/vendor/portcullis-client/index.js missing".into());
            }
            Ok(app)
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn stack() -> Stack {
    stack_with(Options::default()).await
}

async fn stack_with(opts: Options) -> Stack {
    let root = served_tree();
    Stack::start_with(Options {
        // As in demo/portcullis.toml: sign-out clears the HTTP cache only, and the app wipes its
        // own vault (all but `public`), so the `public` preference survives (the default,
        // `["cache", "storage"]`, would also wipe localStorage and the service worker).
        extra_toml: format!(
            "\n[static_files]\nroot = \"{}\"\n\n[headers]\nclear_site_data_on_logout = [\"cache\"]\n",
            root.display()
        ),
        ..opts
    })
    .await
}

/// Every IndexedDB database, store and record, raw (as the browser holds them, before the SDK
/// decrypts anything): binary values as text (latin-1) and hex, `CryptoKey`s described, and
/// whether `crypto.subtle.exportKey` accepts each key.
const DUMP_STORAGE: &str = r#"async () => {
    const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
    const latin1 = (u8) => Array.from(u8, (b) => String.fromCharCode(b)).join('');
    const keys = [];
    const raw = async (v, depth = 0) => {
        if (depth > 8) return '<deep>';
        if (v instanceof CryptoKey) {
            const out = { cryptoKey: true, type: v.type, extractable: v.extractable,
                          algorithm: v.algorithm && v.algorithm.name, usages: v.usages };
            for (const format of ['raw', 'jwk', 'pkcs8']) {
                try { await crypto.subtle.exportKey(format, v); out['export_' + format] = 'exported'; }
                catch (e) { out['export_' + format] = 'rejected: ' + e.name; }
            }
            keys.push(out);
            return out;
        }
        if (v instanceof ArrayBuffer) v = new Uint8Array(v);
        if (ArrayBuffer.isView(v)) {
            const u8 = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
            return { bytes: u8.length, hex: hex(u8), latin1: latin1(u8) };
        }
        if (v instanceof Blob) {
            const u8 = new Uint8Array(await v.arrayBuffer());
            return { blob: u8.length, latin1: latin1(u8) };
        }
        if (Array.isArray(v)) return Promise.all(v.map((x) => raw(x, depth + 1)));
        if (v && typeof v === 'object') {
            const o = {};
            for (const [k, x] of Object.entries(v)) o[k] = await raw(x, depth + 1);
            return o;
        }
        return v === undefined ? null : v;
    };
    const req = (r) => new Promise((ok, ko) => { r.onsuccess = () => ok(r.result); r.onerror = () => ko(r.error); });
    const dbs = [];
    for (const info of await indexedDB.databases()) {
        const db = await req(indexedDB.open(info.name));
        const stores = [];
        for (const name of Array.from(db.objectStoreNames)) {
            const tx = db.transaction(name, 'readonly');
            const store = tx.objectStore(name);
            const [ks, vs] = await Promise.all([req(store.getAllKeys()), req(store.getAll())]);
            const records = [];
            for (let i = 0; i < vs.length; i++) records.push({ key: await raw(ks[i]), value: await raw(vs[i]) });
            stores.push({ name, records });
        }
        db.close();
        dbs.push({ name: info.name, stores });
    }
    const dump = (s) => Object.fromEntries(Array.from({ length: s.length }, (_, i) => [s.key(i), s.getItem(s.key(i))]));
    return { indexedDB: dbs, keys, localStorage: dump(localStorage), sessionStorage: dump(sessionStorage) };
}"#;

/// The body of every same-origin GET the page made (fetched again, raw, with the same cookie),
/// except the navigation-only BFF endpoints (login, callback, logout redirect to the provider).
const REFETCH_BODIES: &str = r#"async (urls) => {
    const out = [];
    for (const u of urls) {
        const r = await fetch(u, { cache: 'no-store', credentials: 'same-origin' });
        out.push({ url: u, status: r.status, body: await r.text() });
    }
    return out;
}"#;

/// Wraps the page's `fetch` (the SDK calls `globalThis.fetch` at each request) to record, for
/// every request the app makes from now on, its method, URL, whether it carried `X-CSRF-Token`
/// (never the value) and the response body. Test instrumentation only.
const RECORD_FETCHES: &str = r#"() => {
    const original = window.fetch;
    window.__recorded = [];
    window.fetch = async (input, init) => {
        const req = input instanceof Request ? input : null;
        const headers = new Headers((init && init.headers) || (req ? req.headers : undefined));
        const entry = {
            url: String(req ? req.url : input),
            method: ((init && init.method) || (req ? req.method : 'GET')).toUpperCase(),
            csrfHeader: headers.has('x-csrf-token'),
        };
        window.__recorded.push(entry);
        const response = await original(input, init);
        entry.status = response.status;
        entry.body = await response.clone().text();
        return response;
    };
    return true;
}"#;

/// Every URL in every Cache Storage cache.
const CACHED_URLS: &str = r#"async () => {
    const out = {};
    for (const name of await caches.keys()) {
        const cache = await caches.open(name);
        out[name] = (await cache.keys()).map((r) => new URL(r.url).pathname);
    }
    return out;
}"#;

fn records_other_than_keys(dump: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for db in dump["indexedDB"].as_array().into_iter().flatten() {
        for store in db["stores"].as_array().into_iter().flatten() {
            for rec in store["records"].as_array().into_iter().flatten() {
                if !rec.to_string().contains("\"cryptoKey\":true") {
                    out.push(json!({ "db": db["name"], "store": store["name"], "record": rec }));
                }
            }
        }
    }
    out
}

async fn state(b: &mut ChromiumSession, wanted: &str) {
    let expr = format!("document.body && document.body.dataset.state === '{wanted}'");
    if let Err(e) = b.wait_for_function(&expr, WAIT).await {
        let report = b.report().await.map(|r| r.summary()).unwrap_or_default();
        let status = b
            .evaluate("document.body && [document.body.dataset.state, document.getElementById('status')?.textContent, document.getElementById('message')?.textContent]")
            .await
            .unwrap_or_default();
        panic!("the app never reached state {wanted}: {e:#}\napp: {status}\n{report}");
    }
}

#[tokio::test]
async fn the_demo_pwa_end_to_end() {
    let started = std::time::Instant::now();
    let stack = stack().await;
    let mut b = ChromiumSession::launch_with(LaunchOptions {
        timeout_ms: Some(15_000),
        ..LaunchOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("headless Chromium: {e:#}"));

    // ---- the app loads signed out, under the strict CSP, and installs its service worker ----
    let nav = b.goto(&stack.url("/")).await.expect("open the app");
    assert_eq!(nav.status, Some(200));
    let csp = nav.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("'strict-dynamic'") && csp.contains("require-trusted-types-for"),
        "{csp}"
    );
    state(&mut b, "signed-out").await;
    b.wait_for_function(
        "navigator.serviceWorker.ready.then((r) => !!r.active)",
        WAIT,
    )
    .await
    .expect("the service worker is active");
    // A `public` preference, which sign-out must keep.
    b.click("#pref-compact").await.expect("toggle compact");
    b.wait_for_function(
        "Object.keys(localStorage).some((k) => localStorage.getItem(k).includes('compact'))",
        WAIT,
    )
    .await
    .expect("the public preference is in localStorage");

    // The handshake form is there, but this gateway has the password grant off: a clear message.
    b.click("#handshake summary")
        .await
        .expect("open the handshake form");
    b.fill("#handshake-username", stack.idp.username())
        .await
        .expect("fill");
    b.fill("#handshake-password", stack.idp.password())
        .await
        .expect("fill");
    b.click("#handshake-submit").await.expect("submit");
    b.wait_for_function(
        "document.getElementById('message').textContent.includes('not enabled')",
        WAIT,
    )
    .await
    .expect("the handshake is refused (404) and the app says so");

    // ---- sign in through the provider's own pages ----
    b.click("#login").await.expect("click sign in");
    b.wait_for_selector("input[name=login]")
        .await
        .expect("the provider's login form");
    let idp_url = b.url().await.expect("url");
    assert!(idp_url.starts_with(&stack.idp.issuer()), "{idp_url}");
    b.fill("input[name=login]", stack.idp.username())
        .await
        .expect("fill login");
    b.fill("input[name=password]", stack.idp.password())
        .await
        .expect("fill password");
    b.click("button[type=submit]").await.expect("submit");
    state(&mut b, "signed-in").await;
    assert!(b.url().await.expect("url").starts_with(&stack.base));
    let status = b
        .evaluate("document.getElementById('status').textContent")
        .await
        .expect("status");
    assert!(
        status
            .as_str()
            .unwrap_or_default()
            .starts_with("Signed in as"),
        "{status}"
    );
    assert_eq!(
        b.evaluate("document.getElementById('profile-sub').textContent.length > 0")
            .await
            .expect("sub"),
        json!(true)
    );
    // The orders list came through the gateway's route with the user's access token.
    b.wait_for_function(
        "document.getElementById('orders').dataset.loaded === '200'",
        WAIT,
    )
    .await
    .expect("orders loaded");
    let gets: Vec<_> = stack
        .upstream
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path() == "/orders")
        .collect();
    assert!(!gets.is_empty(), "{:?}", stack.upstream.requests());
    assert!(
        gets[0]
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer "))
    );

    // ---- the SDK's POST carries the CSRF header and succeeds ----
    b.evaluate(RECORD_FETCHES)
        .await
        .expect("record the app's fetches");
    b.click("#orders-reload").await.expect("reload orders");
    b.wait_for_function(
        "window.__recorded.some((e) => e.url.includes('/api/orders') && e.method === 'GET' && e.body !== undefined)",
        WAIT,
    )
    .await
    .expect("orders reloaded");
    let before = stack.upstream.count();
    b.fill("#order-item", "Winch grease")
        .await
        .expect("fill item");
    b.click("#order-create").await.expect("create order");
    b.wait_for_function(
        "document.getElementById('order-result').dataset.status",
        WAIT,
    )
    .await
    .expect("the POST answered");
    let posted = b
        .evaluate("document.getElementById('order-result').dataset.status")
        .await
        .expect("status");
    assert_eq!(
        posted,
        json!("200"),
        "{}",
        b.report().await.expect("report").summary()
    );
    let post = stack
        .upstream
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path() == "/orders")
        .expect("the upstream received the SDK's POST");
    assert!(
        post.body_text().contains("Winch grease"),
        "{}",
        post.body_text()
    );
    let post_rec = b
        .report()
        .await
        .expect("report")
        .requests
        .into_iter()
        .find(|r| r.method == "POST" && r.path() == "/api/orders")
        .expect("the page's POST is recorded");
    assert_eq!(post_rec.status, Some(200));
    let sdk_posts = b
        .evaluate(
            "window.__recorded.filter((e) => e.method === 'POST').map((e) => ({ url: new URL(e.url, location.href).pathname, csrf: e.csrfHeader, status: e.status }))",
        )
        .await
        .expect("recorded POSTs");
    assert_eq!(
        sdk_posts,
        json!([{ "url": "/api/orders", "csrf": true, "status": 200 }]),
        "the SDK added X-CSRF-Token by itself (the app code sets no such header)"
    );

    // ---- the same POST without the SDK (no X-CSRF-Token): 403, the upstream sees nothing ----
    assert!(
        stack
            .upstream
            .wait_for_count(before + 1, WAIT)
            .await
            .is_ok()
    );
    let _ = stack
        .upstream
        .wait_for_count(before + 2, Duration::from_millis(300))
        .await; // the list reload
    let seen = stack.upstream.count();
    let raw = b
        .evaluate(
            r#"fetch('/api/orders', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                   body: JSON.stringify({ item: 'forged' }) })
               .then(async (r) => ({ status: r.status, type: r.headers.get('content-type'), body: await r.text() }))"#,
        )
        .await
        .expect("raw fetch");
    assert_eq!(raw["status"], json!(403), "{raw}");
    assert!(
        raw["body"].as_str().unwrap_or_default().contains("csrf"),
        "{raw}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stack.upstream.count(), seen, "{:?}", stack.upstream.last());
    assert!(
        stack
            .upstream
            .requests()
            .iter()
            .all(|r| !r.body_text().contains("forged")),
        "the forged POST reached the upstream"
    );

    // ---- the session cookie is HttpOnly: invisible to scripts ----
    let doc_cookie = b
        .evaluate("document.cookie")
        .await
        .expect("document.cookie");
    assert!(
        !doc_cookie.as_str().unwrap_or_default().contains(COOKIE),
        "{doc_cookie}"
    );
    let ticket = b
        .cookies()
        .await
        .expect("cookies")
        .into_iter()
        .find(|c| c["name"] == json!(COOKIE))
        .and_then(|c| c["value"].as_str().map(str::to_owned))
        .expect("the session cookie is in the browser");
    let record = stack
        .session_record(&ticket)
        .await
        .expect("the session exists")
        .record;
    let mut tokens = vec![("access token", record.access_token.clone())];
    if let Some(t) = record.refresh_token.clone() {
        tokens.push(("refresh token", t));
    }
    if let Some(t) = record.id_token.clone() {
        // Also its signature alone (a token split up and stored in pieces).
        if let Some(sig) = t.rsplit('.').next().filter(|s| s.len() > 20) {
            tokens.push(("ID token signature", sig.to_owned()));
        }
        tokens.push(("ID token", t));
    }
    assert!(tokens.len() >= 3, "access, refresh and ID tokens expected");

    // ---- an offline note, class `confidential` ----
    b.fill("#note-text", NOTE).await.expect("fill note");
    b.click("#note-save").await.expect("save note");
    b.wait_for_function(
        "document.getElementById('notes').dataset.count === '1'",
        WAIT,
    )
    .await
    .expect("the note is saved and read back");
    let shown = b
        .evaluate("document.getElementById('notes-list').textContent")
        .await
        .expect("notes");
    assert!(shown.as_str().unwrap_or_default().contains(NOTE), "{shown}");

    let dump = b.evaluate(DUMP_STORAGE).await.expect("dump storage");
    let dump_text = dump.to_string();
    let stored = records_other_than_keys(&dump);
    assert!(!stored.is_empty(), "the note is in IndexedDB: {dump}");
    assert!(
        !dump_text.contains(NOTE) && !dump_text.contains("marmalade"),
        "the confidential note is stored in clear: {dump}"
    );
    // The record is AES-GCM ciphertext with a 96-bit IV.
    let ivs: Vec<u64> = stored
        .iter()
        .filter_map(|r| r["record"]["value"]["iv"]["bytes"].as_u64())
        .collect();
    assert!(
        ivs.contains(&12),
        "an AES-GCM record with a 12-byte IV: {stored:?}"
    );
    let keys = dump["keys"].as_array().cloned().unwrap_or_default();
    assert!(
        !keys.is_empty(),
        "the vault's CryptoKey is in IndexedDB: {dump}"
    );
    for key in &keys {
        assert_eq!(key["extractable"], json!(false), "{key}");
        for format in ["export_raw", "export_jwk", "export_pkcs8"] {
            assert!(
                key[format]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("rejected"),
                "exportKey must reject: {key}"
            );
        }
    }

    // ---- no token of the provider anywhere the page can reach ----
    let dom = b.content().await.expect("DOM");
    let report = b.report().await.expect("report");
    let mut seen_by_browser = String::new();
    for r in &report.requests {
        seen_by_browser.push_str(&r.url);
        seen_by_browser.push('\n');
        if let Some(h) = &r.response_headers {
            seen_by_browser.push_str(&serde_json::to_string(h).expect("json"));
        }
        if let Some(p) = &r.post_data {
            seen_by_browser.push_str(p);
        }
    }
    let same_origin_gets: Vec<String> = {
        let mut urls: Vec<String> = report
            .requests
            .iter()
            .filter(|r| r.method == "GET" && r.url.starts_with(&stack.base))
            .filter(|r| !["/bff/login", "/bff/callback"].contains(&r.path().as_str()))
            .map(|r| r.url.clone())
            .collect();
        urls.sort();
        urls.dedup();
        urls
    };
    assert!(same_origin_gets.iter().any(|u| u.ends_with("/bff/session")));
    assert!(same_origin_gets.iter().any(|u| u.ends_with("/api/orders")));
    let bodies = b
        .evaluate_with(REFETCH_BODIES, json!(same_origin_gets))
        .await
        .expect("refetch bodies");
    let recorded = b
        .evaluate("window.__recorded")
        .await
        .expect("recorded fetches");
    assert!(
        recorded.as_array().is_some_and(|a| a.len() >= 3),
        "orders GET, POST, orders GET: {recorded}"
    );
    let bodies_text = format!("{bodies}{recorded}");
    for (what, token) in &tokens {
        for (place, text) in [
            ("localStorage/sessionStorage/IndexedDB", &dump_text),
            ("the DOM", &dom),
            (
                "a URL, request or response header the browser saw",
                &seen_by_browser,
            ),
            ("a response body the page received", &bodies_text),
        ] {
            assert!(!text.contains(token.as_str()), "the {what} is in {place}");
        }
    }

    // ---- the service worker: app shell only, never /bff or /api ----
    assert_eq!(
        b.evaluate("!!navigator.serviceWorker.controller")
            .await
            .expect("controller"),
        json!(true),
        "the page is controlled by the service worker"
    );
    b.reload().await.expect("reload under the service worker");
    state(&mut b, "signed-in").await;
    b.wait_for_function(
        "document.getElementById('orders').dataset.loaded === '200'",
        WAIT,
    )
    .await
    .expect("orders loaded again (through the worker's pass-through)");
    let cached = b.evaluate(CACHED_URLS).await.expect("caches");
    let all: Vec<String> = cached
        .as_object()
        .expect("object")
        .values()
        .flat_map(|v| v.as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert!(
        all.iter().any(|p| p == "/app.js"),
        "the shell is cached: {cached}"
    );
    assert!(
        all.iter()
            .any(|p| p == "/vendor/portcullis-client/index.js"),
        "{cached}"
    );
    assert!(
        all.iter()
            .all(|p| !p.starts_with("/bff") && !p.starts_with("/api")),
        "a BFF or API response was cached: {cached}"
    );
    let report = b.report().await.expect("report");
    let worker_fetched: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.from_service_worker)
        .filter(|r| r.path().starts_with("/bff") || r.path().starts_with("/api"))
        .collect();
    assert!(worker_fetched.is_empty(), "{}", report.summary());
    assert!(report.csp_violations.is_empty(), "{}", report.summary());
    assert!(report.page_errors.is_empty(), "{}", report.summary());

    // ---- sign out: the provider's end-session page, back to the app, session and vault gone ----
    b.click("#logout").await.expect("sign out");
    b.wait_for_selector("button[name=logout][value=yes]")
        .await
        .expect("the provider's sign-out page");
    b.click("button[name=logout][value=yes]")
        .await
        .expect("confirm");
    state(&mut b, "signed-out").await;
    assert!(b.url().await.expect("url").starts_with(&stack.base));
    let session = b
        .evaluate("fetch('/bff/session').then((r) => r.status)")
        .await
        .expect("session");
    assert_eq!(session, json!(401));
    assert!(
        eventually(|| async { stack.session_record(&ticket).await.is_none() }).await,
        "the server-side session is deleted"
    );
    let dump = b.evaluate(DUMP_STORAGE).await.expect("dump storage");
    assert!(
        records_other_than_keys(&dump).is_empty(),
        "the vault is cleared on sign-out: {dump}"
    );
    let public_kept = dump["localStorage"].as_object().is_some_and(|m| {
        m.values()
            .any(|v| v.as_str().unwrap_or_default().contains("compact"))
    });
    assert!(
        public_kept,
        "the public preference survives sign-out: {dump}"
    );
    assert_eq!(
        b.evaluate("document.getElementById('pref-compact').checked")
            .await
            .expect("pref"),
        json!(true)
    );

    b.close().await.expect("close");
    eprintln!("browser_pwa: {:?}", started.elapsed());
}

/// The handshake form (`client.handshake`) when the gateway enables the password grant: signed in
/// without leaving the page, and the API works the same way. Then the gateway goes away: the
/// service worker serves the app shell, and the confidential notes still open (offline).
#[tokio::test]
async fn the_handshake_form_signs_in_when_enabled_and_notes_open_offline() {
    let mut stack = stack_with(Options {
        idp_password_grant: true,
        extra_oidc: "password_grant = true".to_owned(),
        ..Options::default()
    })
    .await;
    let mut b = ChromiumSession::launch_with(LaunchOptions {
        timeout_ms: Some(15_000),
        ..LaunchOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("headless Chromium: {e:#}"));
    b.goto(&stack.url("/")).await.expect("open the app");
    state(&mut b, "signed-out").await;
    b.click("#handshake summary")
        .await
        .expect("open the handshake form");
    b.fill("#handshake-username", stack.idp.username())
        .await
        .expect("fill");
    b.fill("#handshake-password", "not-the-password")
        .await
        .expect("fill");
    b.click("#handshake-submit").await.expect("submit");
    b.wait_for_function(
        "document.getElementById('message').textContent.includes('Wrong username or password')",
        WAIT,
    )
    .await
    .expect("bad credentials are refused");
    b.fill("#handshake-password", stack.idp.password())
        .await
        .expect("fill");
    b.click("#handshake-submit").await.expect("submit");
    state(&mut b, "signed-in").await;
    b.wait_for_function(
        "document.getElementById('orders').dataset.loaded === '200'",
        WAIT,
    )
    .await
    .expect("orders loaded");
    b.click("#order-create").await.expect("create order");
    b.wait_for_function(
        "document.getElementById('order-result').dataset.status === '200'",
        WAIT,
    )
    .await
    .expect("the SDK's POST succeeded after the handshake");
    let doc_cookie = b
        .evaluate("document.cookie")
        .await
        .expect("document.cookie");
    assert!(
        !doc_cookie.as_str().unwrap_or_default().contains(COOKIE),
        "{doc_cookie}"
    );
    let report = b.report().await.expect("report");
    let hs: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.path() == "/bff/handshake")
        .map(|r| r.status)
        .collect();
    assert_eq!(hs, vec![Some(401), Some(200)], "{}", report.summary());
    assert!(report.csp_violations.is_empty(), "{}", report.summary());

    // A note, then offline: the gateway stops, the page reloads from the worker's cache.
    b.fill("#note-text", NOTE).await.expect("fill note");
    b.click("#note-save").await.expect("save note");
    b.wait_for_function(
        "document.getElementById('notes').dataset.count === '1'",
        WAIT,
    )
    .await
    .expect("the note is saved");
    b.wait_for_function("!!navigator.serviceWorker.controller", WAIT)
        .await
        .expect("the service worker controls the page");
    stack.instances.remove(0).stop().await;
    b.reload().await.expect("reload offline");
    state(&mut b, "offline").await;
    let notes = b
        .evaluate("document.getElementById('notes-list').textContent")
        .await
        .expect("notes");
    assert!(notes.as_str().unwrap_or_default().contains(NOTE), "{notes}");
    b.close().await.expect("close");
}
