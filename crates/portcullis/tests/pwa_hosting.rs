//! Hosting the PWA: static files (types, precompressed variants, ETags, caching classes, SPA
//! fallback, traversal and dotfiles) and the per-response CSP nonce, against a real gateway on
//! loopback. No OpenID Provider is needed: nothing here logs in, so the gateway runs without
//! discovery.

mod common;

use std::path::{Path, PathBuf};

use http::Method;
use portcullis::{AppState, config::Config, crypto::keyring::KeyRing};
use testkit::browser::{Browser, Response};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
};

use common::running::write_secret;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pwa");
const HTML: (&str, &str) = ("accept", "text/html,application/xhtml+xml,*/*;q=0.8");

/// A copy of the fixture app in a fresh temp dir (so symlinks can be added), next to a file
/// outside the root that must never be served.
struct Site {
    dir: PathBuf,
    root: PathBuf,
}

impl Site {
    fn new() -> Site {
        let suffix = portcullis::crypto::random::token::<6>().expect("rng");
        let dir =
            std::env::temp_dir().join(format!("portcullis-pwa-{}-{suffix}", std::process::id()));
        let root = dir.join("www");
        copy_dir(Path::new(FIXTURES), &root);
        std::fs::write(dir.join("outside.txt"), "outside-the-root-must-not-leak\n").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::symlink;
            symlink(dir.join("outside.txt"), root.join("leak.txt")).expect("symlink");
            symlink(&dir, root.join("leakdir")).expect("symlink");
            symlink("/etc", root.join("etc")).expect("symlink");
            symlink("assets/app.3f9a1c2e.js", root.join("alias.js")).expect("symlink");
        }
        Site { dir, root }
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixtures") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A gateway serving a [`Site`]; stopped when dropped.
struct Gateway {
    base: String,
    browser: Browser,
    site: Site,
    _stop: oneshot::Sender<()>,
}

#[derive(Default)]
struct Opts {
    /// Extra keys for `[static_files]`.
    static_extra: &'static str,
    /// Keys for `[csp]`.
    csp: &'static str,
    /// Extra keys for `[session]`.
    session: &'static str,
    /// `public_origin` is `https://localhost:PORT` (as behind a TLS-terminating proxy); the
    /// tests still talk plain HTTP to the port.
    https_origin: bool,
}

impl Gateway {
    async fn start() -> Gateway {
        Self::start_with(Opts::default()).await
    }

    async fn start_with(opts: Opts) -> Gateway {
        common::running::init_logs("portcullis=debug");
        let site = Site::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
        let secret = write_secret("secret", "pwa-test-secret");
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
public_origin = "{scheme}://localhost:{port}"

[session]
keys_file = "{keys}"
{session}

[oidc]
issuer = "http://127.0.0.1:9/"
client_id = "pwa-tests"
client_secret_file = "{secret}"

[[routes]]
prefix = "/api/orders"
upstream = "http://127.0.0.1:9/orders"
timeout = "2s"
connect_timeout = "1s"

[static_files]
root = "{root}"
{static_extra}

[csp]
{csp}
"#,
            root = site.root.display(),
            session = opts.session,
            static_extra = opts.static_extra,
            csp = opts.csp,
            scheme = if opts.https_origin { "https" } else { "http" },
        );
        let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("test config: {e}"));
        let state = AppState::new(config).expect("state");
        let (tx, rx) = oneshot::channel();
        tokio::spawn(async move {
            portcullis::server::run(listener, state, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway");
        });
        Gateway {
            base: format!("http://localhost:{port}"),
            browser: Browser::new(),
            site,
            _stop: tx,
        }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.browser
            .get_with(&format!("{}{path}", self.base), headers)
            .await
            .expect("request")
    }

    async fn req(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Response {
        self.browser
            .request(method, &format!("{}{path}", self.base), headers, "")
            .await
            .expect("request")
    }
}

/// One raw HTTP/1.1 request, bytes exactly as given (no client-side normalisation); the status
/// and the whole response text.
async fn raw(base: &str, target: &str) -> (u16, String) {
    let port = base.rsplit(':').next().expect("port");
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn csp_of(r: &Response) -> String {
    r.header("content-security-policy")
        .unwrap_or_default()
        .to_owned()
}

/// Every `nonce="…"` value in `html`, and the number of `<script` tags.
fn nonces(html: &str) -> (Vec<String>, usize) {
    let found = html
        .split("nonce=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
        .collect();
    (found, html.matches("<script").count())
}

fn assert_problem(r: &Response, status: u16) {
    assert_eq!(r.status.as_u16(), status, "{} {}", r.url, r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        r.url
    );
}

#[tokio::test]
async fn content_types_with_charset_for_text() {
    let gw = Gateway::start().await;
    for (path, ct) in [
        ("/", "text/html; charset=utf-8"),
        ("/index.html", "text/html; charset=utf-8"),
        ("/assets/app.3f9a1c2e.js", "text/javascript; charset=utf-8"),
        ("/styles.css", "text/css; charset=utf-8"),
        (
            "/manifest.webmanifest",
            "application/manifest+json; charset=utf-8",
        ),
        ("/data.json", "application/json; charset=utf-8"),
        ("/img/logo.svg", "image/svg+xml; charset=utf-8"),
        ("/sw.js", "text/javascript; charset=utf-8"),
    ] {
        let r = gw.get(path, &[]).await;
        assert_eq!(r.status.as_u16(), 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some(ct), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn precompressed_variants_follow_accept_encoding() {
    let gw = Gateway::start().await;
    let js = "/assets/app.3f9a1c2e.js";
    let cases: [(&str, Option<&str>, &str); 6] = [
        ("gzip, deflate, br", Some("br"), "BROTLI-VARIANT"),
        ("gzip", Some("gzip"), "GZIP-VARIANT"),
        ("br;q=0, gzip", Some("gzip"), "GZIP-VARIANT"),
        ("br;q=0.5, gzip;q=0.8", Some("gzip"), "GZIP-VARIANT"),
        ("identity", None, "app, identity"),
        ("deflate", None, "app, identity"),
    ];
    for (accept, encoding, body) in cases {
        let r = gw.get(js, &[("accept-encoding", accept)]).await;
        assert_eq!(r.status.as_u16(), 200, "{accept}");
        assert_eq!(r.header("content-encoding"), encoding, "{accept}");
        assert!(r.text().contains(body), "{accept}: {}", r.text());
        assert_eq!(r.header("vary"), Some("accept-encoding"), "{accept}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "the variant keeps the original's type"
        );
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
    }
    // Only a .gz sibling: br is not invented.
    let r = gw
        .get("/assets/index-BHhXPj1a.js", &[("accept-encoding", "br")])
        .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    // No sibling at all: no Vary needed.
    let r = gw
        .get("/styles.css", &[("accept-encoding", "br, gzip")])
        .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), None);
}

#[tokio::test]
async fn strong_etags_and_conditional_requests() {
    let gw = Gateway::start().await;
    let first = gw.get("/styles.css", &[]).await;
    let etag = first.header("etag").expect("etag").to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 10,
        "strong: {etag}"
    );
    assert_eq!(
        gw.get("/styles.css", &[]).await.header("etag"),
        Some(etag.as_str()),
        "stable"
    );
    let r = gw.get("/styles.css", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status.as_u16(), 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let weak = format!("\"nope\", W/{etag}");
    let r = gw.get("/styles.css", &[("if-none-match", &weak)]).await;
    assert_eq!(r.status.as_u16(), 304, "weak comparison for If-None-Match");
    let r = gw
        .get("/styles.css", &[("if-none-match", "\"other\"")])
        .await;
    assert_eq!(r.status.as_u16(), 200);
    // Each representation has its own tag.
    let js = "/assets/app.3f9a1c2e.js";
    let plain = gw.get(js, &[]).await;
    let br = gw.get(js, &[("accept-encoding", "br")]).await;
    let gz = gw.get(js, &[("accept-encoding", "gzip")]).await;
    let tags = [&plain, &br, &gz].map(|r| r.header("etag").expect("etag").to_owned());
    assert!(
        tags[0] != tags[1] && tags[1] != tags[2] && tags[0] != tags[2],
        "{tags:?}"
    );
    let r = gw
        .get(
            js,
            &[("accept-encoding", "br"), ("if-none-match", &tags[1])],
        )
        .await;
    assert_eq!(r.status.as_u16(), 304);
    assert_eq!(r.header("vary"), Some("accept-encoding"));
    // HTML with a nonce has no validator at all: never a 304, never the same nonce.
    let html = gw.get("/", &[]).await;
    assert_eq!(html.header("etag"), None);
    let r = gw.get("/", &[("if-none-match", "*")]).await;
    assert_eq!(r.status.as_u16(), 200);
}

#[tokio::test]
async fn caching_headers_per_class() {
    let gw = Gateway::start().await;
    for (path, cc) in [
        (
            "/assets/app.3f9a1c2e.js",
            "public, max-age=31536000, immutable",
        ),
        (
            "/assets/index-BHhXPj1a.js",
            "public, max-age=31536000, immutable",
        ),
        ("/", "no-cache, private"),
        ("/index.html", "no-cache, private"),
        ("/docs/", "no-cache, private"),
        ("/manifest.webmanifest", "no-cache"),
        ("/sw.js", "no-cache"),
        ("/styles.css", "no-cache"),
        ("/data.json", "no-cache"),
    ] {
        let r = gw.get(path, &[]).await;
        assert_eq!(r.status.as_u16(), 200, "{path}");
        assert_eq!(r.header("cache-control"), Some(cc), "{path}");
    }
    let sw = gw.get("/sw.js", &[]).await;
    assert_eq!(sw.header("service-worker-allowed"), Some("/"));
    assert_eq!(
        gw.get("/styles.css", &[])
            .await
            .header("service-worker-allowed"),
        None
    );
    // Errors are never stored.
    assert_eq!(
        gw.get("/missing.js", &[]).await.header("cache-control"),
        Some("no-store")
    );
}

#[tokio::test]
async fn immutable_pattern_and_service_worker_are_configurable() {
    let gw = Gateway::start_with(Opts {
        static_extra: "immutable_pattern = \"^/img/\"\nservice_worker = \"/assets/app.3f9a1c2e.js\"",
        ..Opts::default()
    })
    .await;
    let r = gw.get("/img/logo.svg", &[]).await;
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    // The pattern replaces the built-in rule.
    let r = gw.get("/assets/index-BHhXPj1a.js", &[]).await;
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    // The service worker is never immutable, whatever its name.
    let r = gw.get("/assets/app.3f9a1c2e.js", &[]).await;
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    assert_eq!(r.header("service-worker-allowed"), Some("/"));
    let r = gw.get("/sw.js", &[]).await;
    assert_eq!(r.header("service-worker-allowed"), None);
}

#[tokio::test]
async fn spa_fallback_only_for_navigations() {
    let gw = Gateway::start().await;
    let index = gw.get("/", &[]).await.text();
    let strip = |s: &str| {
        s.split("nonce=\"")
            .map(|p| p.split_once('"').map_or(p, |(_, rest)| rest))
            .collect::<String>()
    };
    for headers in [
        vec![HTML],
        vec![("sec-fetch-mode", "navigate"), ("accept", "*/*")],
        vec![("sec-fetch-dest", "document")],
    ] {
        for path in ["/settings", "/settings/profile", "/orders/42/", "/a.b/c"] {
            let r = gw.get(path, &headers).await;
            assert_eq!(r.status.as_u16(), 200, "{path} {headers:?}");
            assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
            assert_eq!(strip(&r.text()), strip(&index), "{path}: the app shell");
            assert!(csp_of(&r).contains("'nonce-"), "{path}: a nonce'd policy");
            assert_eq!(r.header("cache-control"), Some("no-cache, private"));
        }
    }
    // Not navigations, or not paths the app owns: 404 problem, never the shell.
    for (path, headers) in [
        ("/settings", vec![("accept", "application/json")]),
        ("/settings", vec![]),
        ("/settings", vec![("sec-fetch-mode", "cors"), HTML]),
        ("/settings", vec![("sec-fetch-dest", "empty"), HTML]),
        ("/x.js", vec![HTML]),
        ("/missing.png", vec![("sec-fetch-mode", "navigate")]),
        ("/assets/nope.3f9a1c2e.css", vec![HTML]),
        ("/bff/nope", vec![HTML]),
        ("/bff", vec![HTML]),
        ("/api/unknown", vec![HTML]),
        ("/api", vec![("sec-fetch-mode", "navigate")]),
        ("/app.js/", vec![HTML]),
        ("/sw.js/", vec![HTML]),
    ] {
        let r = gw.get(path, &headers).await;
        assert_problem(&r, 404);
        assert!(!r.text().contains("<html"), "{path}");
    }
    // A route prefix is the proxy's, shell or not: no session → 401, never HTML.
    let r = gw.get("/api/orders/1", &[HTML]).await;
    assert_problem(&r, 401);
}

/// Routing sees the raw path, the file server the decoded one: a reserved prefix spelt with
/// percent-encoded letters (`/%61pi`, `/b%66f`) is still reserved, for files and for the shell.
#[tokio::test]
async fn reserved_prefixes_hold_when_percent_encoded() {
    let gw = Gateway::start().await;
    for (dir, file) in [
        ("api", "orders.json"),
        ("bff", "x.txt"),
        ("api/orders", "1"),
    ] {
        let at = gw.site.root.join(dir);
        std::fs::create_dir_all(&at).expect("mkdir");
        std::fs::write(at.join(file), "a file under a reserved prefix").expect("write");
    }
    for path in [
        "/api/orders.json",
        "/%61pi/orders.json",
        "/%41pi/../api/orders.json",
        "/bff/x.txt",
        "/%62ff/x.txt",
        "/b%66f/x.txt",
        "/bf%66/x.txt",
        "/%61pi/orders/1",
        "/api/%6frders/1",
    ] {
        let r = gw.get(path, &[]).await;
        assert_ne!(r.status.as_u16(), 200, "{path}");
        assert!(
            !r.text().contains("reserved prefix"),
            "{path}: the file leaked"
        );
    }
    for path in ["/%62ff/session", "/b%66f/nope", "/%61pi/unknown", "/%61pi"] {
        let r = gw.get(path, &[HTML]).await;
        assert_problem(&r, 404);
        assert!(!r.text().contains("<html"), "{path}: never the shell");
    }
    // Control: the same spelling trick outside a reserved prefix still finds the app's files.
    let r = gw.get("/%64ata.json", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
}

#[tokio::test]
async fn directories_redirect_or_serve_their_index_and_are_never_listed() {
    let gw = Gateway::start().await;
    let r = gw.get("/docs?x=1", &[HTML]).await;
    assert_eq!(r.status.as_u16(), 308);
    assert_eq!(r.header("location"), Some("/docs/?x=1"));
    let r = gw.get("/docs/", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(r.text().contains("<title>docs</title>"));
    for path in ["/assets/", "/img/", "/assets"] {
        let r = gw.get(path, &[]).await;
        assert_problem(&r, 404);
        assert!(!r.text().contains("app.3f9a1c2e"), "{path}: no listing");
    }
    // A navigation to a directory without index: the SPA shell, not a listing.
    let r = gw.get("/assets", &[HTML]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(!r.text().contains("app.3f9a1c2e.js.br"));
}

#[tokio::test]
async fn traversal_attempts_never_leave_the_root() {
    let gw = Gateway::start().await;
    for target in [
        "/../outside.txt",
        "/assets/../../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/.%2e/outside.txt",
        "/..%2foutside.txt",
        "/assets/..%2f..%2foutside.txt",
        "/assets%2f..%2f..%2foutside.txt",
        "/..%5coutside.txt",
        "/..\\outside.txt",
        "/assets/%252e%252e/%252e%252e/outside.txt",
        "/index.html%00.js",
        "/%00",
        "//etc/passwd",
        "/etc/passwd",
        "/leak.txt",
        "/leakdir/outside.txt",
        "/.env",
        "/%2eenv",
        "/.hidden/secret.txt",
        "/.hidden/",
        "/assets/.%2e/.env",
    ] {
        let (status, text) = raw(&gw.base, target).await;
        assert!(matches!(status, 400 | 404), "{target}: {status}\n{text}");
        for secret in [
            "outside-the-root-must-not-leak",
            "dotfile-must-not-leak",
            "hidden-dir-must-not-leak",
            "root:x:0:0",
        ] {
            assert!(!text.contains(secret), "{target} leaked {secret}");
        }
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/problem+json"),
            "{target}: a problem, not a file\n{text}"
        );
    }
    // A symlink that stays inside the root is followed.
    let (status, text) = raw(&gw.base, "/alias.js").await;
    assert_eq!(status, 200);
    assert!(text.contains("app, identity"));
}

#[tokio::test]
async fn dotfiles_are_404() {
    let gw = Gateway::start().await;
    for path in ["/.env", "/.hidden/secret.txt", "/.hidden", "/.well-known/x"] {
        let r = gw.get(path, &[HTML]).await;
        assert_problem(&r, 404);
    }
}

#[tokio::test]
async fn every_script_gets_a_fresh_nonce_that_matches_the_policy() {
    let gw = Gateway::start().await;
    let mut seen = Vec::new();
    for path in ["/", "/index.html", "/some/route"] {
        let r = gw.get(path, &[HTML]).await;
        assert_eq!(r.status.as_u16(), 200, "{path}");
        let html = r.text();
        let (found, scripts) = nonces(&html);
        assert_eq!(scripts, 4, "{html}");
        // Four scripts; the attacker's nonce on the <div> is gone, not replaced.
        assert_eq!(found.len(), 4, "{html}");
        let nonce = &found[0];
        assert!(
            found.iter().all(|n| n == nonce),
            "one nonce per response: {found:?}"
        );
        assert!(nonce.len() >= 22, "128+ bits: {nonce}");
        assert!(!html.contains("attacker-chosen-nonce"), "{html}");
        assert!(
            html.contains("if (1 < 2) { window.ok = true; }"),
            "script text untouched"
        );
        // Styles get none by default.
        assert!(html.contains("<style>body { margin: 0 }</style>"), "{html}");
        assert!(
            html.contains(r#"<link rel="stylesheet" href="/styles.css">"#),
            "{html}"
        );
        let policy = csp_of(&r);
        assert!(
            policy.contains(&format!("script-src 'nonce-{nonce}' 'strict-dynamic'")),
            "{policy}"
        );
        assert!(r.header("content-security-policy-report-only").is_none());
        seen.push(nonce.clone());
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "a fresh nonce per response");
}

#[tokio::test]
async fn html_policy_has_the_safe_defaults() {
    let gw = Gateway::start_with(Opts {
        https_origin: true,
        ..Opts::default()
    })
    .await;
    let r = gw.get("/", &[]).await;
    let policy = csp_of(&r);
    for directive in [
        "default-src 'self'",
        "style-src 'self';",
        "worker-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "require-trusted-types-for 'script'",
        "trusted-types portcullis dompurify",
        "report-uri /bff/csp-report",
        "report-to csp-endpoint",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    let origin = gw.base.replace("http://", "https://");
    assert_eq!(
        r.header("reporting-endpoints"),
        Some(format!("csp-endpoint=\"{origin}/bff/csp-report\"").as_str())
    );
    assert!(policy.ends_with("report-to csp-endpoint"), "{policy}");
}

#[tokio::test]
async fn reports_over_plain_http_use_report_uri_only() {
    // Chromium ignores Reporting-Endpoints on http:// responses and, with `report-to` in the
    // policy, ignores `report-uri`: the pair would silence every report.
    let gw = Gateway::start().await;
    let r = gw.get("/", &[]).await;
    let policy = csp_of(&r);
    assert!(policy.ends_with("; report-uri /bff/csp-report"), "{policy}");
    assert!(!policy.contains("report-to"), "{policy}");
    assert_eq!(r.header("reporting-endpoints"), None);
    let gw = Gateway::start_with(Opts {
        https_origin: true,
        csp: "report = false",
        ..Opts::default()
    })
    .await;
    let r = gw.get("/", &[]).await;
    assert!(!csp_of(&r).contains("report-"), "{}", csp_of(&r));
    assert_eq!(r.header("reporting-endpoints"), None);
}

#[tokio::test]
async fn report_only_mode_and_style_nonces() {
    let gw = Gateway::start_with(Opts {
        csp: "report_only = true\nstyle_nonce = true\nconnect_src = [\"https://api.example.com\"]\ntrusted_types = [\"portcullis\"]",
        ..Opts::default()
    })
    .await;
    let r = gw.get("/", &[]).await;
    assert!(r.header("content-security-policy").is_none());
    let policy = r
        .header("content-security-policy-report-only")
        .expect("report-only header")
        .to_owned();
    let html = r.text();
    let (found, _) = nonces(&html);
    // 4 scripts + <style> + <link rel=stylesheet>.
    assert_eq!(found.len(), 6, "{html}");
    let nonce = &found[0];
    assert!(found.iter().all(|n| n == nonce));
    assert!(
        policy.contains(&format!("style-src 'self' 'nonce-{nonce}'")),
        "{policy}"
    );
    assert!(
        policy.contains("connect-src 'self' https://api.example.com"),
        "{policy}"
    );
    assert!(policy.contains("trusted-types portcullis;"), "{policy}");
    // Non-document responses keep their enforced policy: it cannot break the page.
    let r = gw.get("/data.json", &[]).await;
    assert_eq!(
        csp_of(&r),
        "default-src 'none'; frame-ancestors 'none'; sandbox"
    );
}

#[tokio::test]
async fn non_document_responses_get_a_restrictive_policy() {
    let gw = Gateway::start().await;
    let strict = "default-src 'none'; frame-ancestors 'none'; sandbox";
    for path in [
        "/missing.js",
        "/bff/session",
        "/bff/nope",
        "/api/orders/1",
        "/healthz",
        "/data.json",
        "/img/logo.svg",
        "/styles.css",
        "/manifest.webmanifest",
    ] {
        let r = gw.get(path, &[]).await;
        assert_eq!(csp_of(&r), strict, "{path}: {}", r.status);
        assert!(r.header("content-security-policy-report-only").is_none());
    }
    // Hygiene-layer rejections too.
    let (status, text) = raw(&gw.base, "/%2e%2e/x").await;
    assert_eq!(status, 400);
    assert!(
        text.to_ascii_lowercase()
            .contains(&format!("content-security-policy: {strict}")),
        "{text}"
    );
    // Scripts carry none: a service worker's policy is the one its script comes with.
    for path in ["/sw.js", "/assets/app.3f9a1c2e.js"] {
        let r = gw.get(path, &[]).await;
        assert_eq!(r.header("content-security-policy"), None, "{path}");
    }
}

#[tokio::test]
async fn csp_can_be_turned_off() {
    let gw = Gateway::start_with(Opts {
        csp: "enabled = false",
        ..Opts::default()
    })
    .await;
    let r = gw.get("/", &[]).await;
    assert_eq!(r.status.as_u16(), 200);
    assert_eq!(r.header("content-security-policy"), None);
    assert!(
        r.text().contains("nonce=\"attacker-chosen-nonce\""),
        "served as is"
    );
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let etag = r.header("etag").expect("plain HTML has an ETag").to_owned();
    let r = gw.get("/", &[("if-none-match", &etag)]).await;
    assert_eq!(r.status.as_u16(), 304);
    assert_eq!(
        gw.get("/missing", &[])
            .await
            .header("content-security-policy"),
        None
    );
}

#[tokio::test]
async fn head_works_like_get_without_a_body() {
    let gw = Gateway::start().await;
    let get = gw.get("/assets/app.3f9a1c2e.js", &[]).await;
    let head = gw.req(Method::HEAD, "/assets/app.3f9a1c2e.js", &[]).await;
    assert_eq!(head.status.as_u16(), 200);
    assert!(head.body.is_empty());
    for h in ["content-type", "content-length", "etag", "cache-control"] {
        assert_eq!(head.header(h), get.header(h), "{h}");
    }
    let head = gw.req(Method::HEAD, "/", &[]).await;
    assert_eq!(head.status.as_u16(), 200);
    assert!(head.body.is_empty());
    assert!(csp_of(&head).contains("'nonce-"));
    assert_eq!(
        head.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let head = gw.req(Method::HEAD, "/deep/link", &[HTML]).await;
    assert_eq!(head.status.as_u16(), 200, "fallback for HEAD too");
    let head = gw.req(Method::HEAD, "/nope.js", &[]).await;
    assert_eq!(head.status.as_u16(), 404);
}

#[tokio::test]
async fn other_methods_are_refused() {
    let gw = Gateway::start().await;
    let r = gw.req(Method::OPTIONS, "/index.html", &[]).await;
    assert_problem(&r, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // State-changing methods meet the CSRF layer first (no token → 403), whatever the path.
    for m in [Method::POST, Method::PUT, Method::DELETE] {
        let r = gw.req(m.clone(), "/index.html", &[]).await;
        assert_problem(&r, 403);
    }
}

#[tokio::test]
async fn static_requests_do_not_touch_the_session_store() {
    // A store that cannot be reached: any lookup is a 503 (fail closed).
    let gw = Gateway::start_with(Opts {
        session: "store = \"redis\"\nredis_url = \"redis://127.0.0.1:9\"\nredis_timeout = \"500ms\"",
        ..Opts::default()
    })
    .await;
    let cookie = format!("__Host-SessionID={}", "A".repeat(43));
    let with_cookie = [("cookie", cookie.as_str()), HTML];
    let r = gw.get("/bff/session", &with_cookie).await;
    assert_eq!(
        r.status.as_u16(),
        503,
        "the session endpoints do look it up"
    );
    let r = gw.get("/api/orders/1", &with_cookie).await;
    assert_eq!(r.status.as_u16(), 503, "so do routes");
    for path in ["/", "/assets/app.3f9a1c2e.js", "/deep/link", "/missing.js"] {
        let r = gw.get(path, &with_cookie).await;
        assert_ne!(
            r.status.as_u16(),
            503,
            "{path}: no store lookup for static files"
        );
    }
}

#[test]
fn a_missing_root_is_a_configuration_error() {
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", "s");
    let toml = |extra: &str| {
        format!(
            r#"
[server]
listen = "127.0.0.1:8080"
public_origin = "http://localhost:8080"
[session]
keys_file = "{keys}"
[oidc]
issuer = "http://127.0.0.1:9/"
client_id = "c"
client_secret_file = "{secret}"
{extra}
"#
        )
    };
    let e = Config::from_toml(&toml("[static_files]\nroot = \"/definitely/not/here\""))
        .expect_err("missing root");
    assert!(e.to_string().contains("static_files.root"), "{e}");
    let e = Config::from_toml(&toml(&format!(
        "[static_files]\nroot = \"{FIXTURES}/index.html\""
    )))
    .expect_err("a file is no root");
    assert!(e.to_string().contains("static_files.root"), "{e}");
    let e = Config::from_toml(&toml(&format!(
        "[static_files]\nroot = \"{FIXTURES}\"\nimmutable_pattern = \"(\"\nservice_worker = \"sw.js\"\n[csp]\nscript_src = [\"'unsafe-inline'; img-src *\"]\ntrusted_types = [\"a b\"]\nbogus = 1"
    )))
    .expect_err("bad keys");
    assert!(e.to_string().contains("bogus"), "unknown keys refused: {e}");
    let e = Config::from_toml(&toml(&format!(
        "[static_files]\nroot = \"{FIXTURES}\"\nimmutable_pattern = \"(\"\nservice_worker = \"sw.js\"\n[csp]\nscript_src = [\"'unsafe-inline'; img-src *\"]\ntrusted_types = [\"a b\"]"
    )))
    .expect_err("bad values");
    let text = e.to_string();
    for key in [
        "static_files.immutable_pattern",
        "static_files.service_worker",
        "csp.script_src",
        "csp.trusted_types",
    ] {
        assert!(text.contains(key), "{key}: {text}");
    }
    let c = Config::from_toml(&toml(&format!(
        "[static_files]\nroot = \"{FIXTURES}/./assets/..\""
    )))
    .expect("valid");
    let root = c.static_files.expect("static").root;
    assert_eq!(root, std::fs::canonicalize(FIXTURES).expect("canonical"));
}
