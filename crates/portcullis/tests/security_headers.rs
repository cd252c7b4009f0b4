//! Hardening headers on every response class (API, problems from every layer, redirects, probes,
//! proxied upstream errors), configurable through `[headers]`; `Clear-Site-Data` on logout only.

mod common;

use axum::body::Body;
use common::{Options, Stack, running::write_secret};
use http::{Method, Request};
use portcullis::{AppState, config::Config, crypto::keyring::KeyRing};
use testkit::browser::{Browser, Response};
use tower::ServiceExt;

const DEFAULT_PERMISSIONS_POLICY: &str = "accelerometer=(), camera=(), display-capture=(), geolocation=(), gyroscope=(), hid=(), magnetometer=(), microphone=(), midi=(), payment=(), serial=(), usb=()";

/// (name, client, method, path, headers, body, expected status)
type Case<'a> = (
    &'a str,
    &'a Browser,
    Method,
    &'a str,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    u16,
);

/// The defaults for an http public origin (the test stack's): everything but HSTS.
fn assert_default_headers(r: &Response, what: &str) {
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("permissions-policy", DEFAULT_PERMISSIONS_POLICY),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        assert_eq!(r.header_all(name), [value], "{what} ({}): {name}", r.status);
    }
    assert_eq!(
        r.header("strict-transport-security"),
        None,
        "{what}: no HSTS over http"
    );
    assert_eq!(
        r.header("clear-site-data"),
        None,
        "{what}: Clear-Site-Data is for logout only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_class_carries_the_headers() {
    let stack = Stack::start_with(Options {
        max_request_body: "4KiB",
        ..Options::default()
    })
    .await;
    let anonymous = Browser::new();
    let b = Browser::new();
    stack.login(&b).await;
    let csrf = stack.csrf(&b).await;
    let origin = stack.base.clone();
    let unsafe_headers: [(&str, &str); 2] = [("x-csrf-token", &csrf), ("origin", &origin)];

    let cases: Vec<Case> = vec![
        (
            "liveness",
            &anonymous,
            Method::GET,
            "/healthz",
            vec![],
            vec![],
            200,
        ),
        (
            "session",
            &b,
            Method::GET,
            "/bff/session",
            vec![],
            vec![],
            200,
        ),
        ("API", &b, Method::GET, "/api/orders/1", vec![], vec![], 200),
        (
            "login redirect",
            &anonymous,
            Method::GET,
            "/bff/login?returnTo=/x",
            vec![],
            vec![],
            302,
        ),
        (
            "no session",
            &anonymous,
            Method::GET,
            "/bff/session",
            vec![],
            vec![],
            401,
        ),
        (
            "API without session",
            &anonymous,
            Method::GET,
            "/api/orders/1",
            vec![],
            vec![],
            401,
        ),
        (
            "CSRF",
            &b,
            Method::POST,
            "/api/orders/1",
            vec![],
            vec![],
            403,
        ),
        (
            "cross origin",
            &b,
            Method::POST,
            "/api/orders/1",
            vec![("x-csrf-token", &csrf), ("origin", "http://evil.example")],
            vec![],
            403,
        ),
        (
            "bff 404",
            &anonymous,
            Method::GET,
            "/bff/nope",
            vec![],
            vec![],
            404,
        ),
        (
            "no route",
            &b,
            Method::GET,
            "/nothing/here",
            vec![],
            vec![],
            404,
        ),
        (
            "405",
            &anonymous,
            Method::OPTIONS,
            "/bff/session",
            vec![],
            vec![],
            405,
        ),
        (
            "hygiene 400",
            &b,
            Method::GET,
            "/api/orders/1?_method=DELETE",
            vec![],
            vec![],
            400,
        ),
        (
            "TRACE 501",
            &b,
            Method::TRACE,
            "/api/orders/1",
            vec![],
            vec![],
            501,
        ),
        (
            "413",
            &b,
            Method::POST,
            "/api/orders/1",
            unsafe_headers.to_vec(),
            vec![b'x'; 8 * 1024],
            413,
        ),
        ("502", &b, Method::GET, "/dead/x", vec![], vec![], 502),
        (
            "upstream 503",
            &b,
            Method::GET,
            "/api/status/503",
            vec![],
            vec![],
            503,
        ),
        (
            "upstream 404",
            &b,
            Method::GET,
            "/api/status/404",
            vec![],
            vec![],
            404,
        ),
        (
            "csp report 415",
            &anonymous,
            Method::POST,
            "/bff/csp-report",
            vec![("content-type", "text/plain")],
            b"x".to_vec(),
            415,
        ),
    ];
    for (what, browser, method, path, headers, body, status) in cases {
        let r = browser
            .request(method, &stack.url(path), &headers, body)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
        assert_default_headers(&r, what);
    }

    // Logout: the same headers plus Clear-Site-Data (default: cache and storage, never cookies).
    let out = b
        .request(Method::POST, &stack.url("/bff/logout"), &unsafe_headers, "")
        .await
        .expect("logout");
    assert_eq!(out.status.as_u16(), 200, "{}", out.text());
    assert_eq!(
        out.header_all("clear-site-data"),
        ["\"cache\", \"storage\""]
    );
    assert_eq!(out.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(out.header("referrer-policy"), Some("no-referrer"));
    // A logout refused (the session is gone now) clears nothing.
    let again = b
        .request(Method::POST, &stack.url("/bff/logout"), &unsafe_headers, "")
        .await
        .expect("logout again");
    assert_eq!(again.status.as_u16(), 401);
    assert_default_headers(&again, "logout without a session");
}

/// The stack as `serve` builds it, driven in-process (no provider needed for these paths).
async fn get_with_config(
    public_origin: &str,
    headers_toml: &str,
    path: &str,
) -> http::Response<Body> {
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", "s3cret");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_origin = "{public_origin}"

[session]
keys_file = "{keys}"

[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret_file = "{secret}"

[headers]
{headers_toml}
"#
    );
    let config = Config::from_toml(&toml).unwrap_or_else(|e| panic!("config: {e}"));
    let state = AppState::new(config).expect("state");
    portcullis::app(state)
        .oneshot(
            Request::builder()
                .uri(path)
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible")
}

fn header<'a>(r: &'a http::Response<Body>, name: &str) -> Option<&'a str> {
    r.headers().get(name).map(|v| v.to_str().expect("ascii"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_follows_the_config() {
    let https = "https://app.example";
    let http = "http://localhost:8080";
    let two_years = Some("max-age=63072000; includeSubDomains");
    for (origin, toml, expected) in [
        (https, "", two_years),
        (https, "hsts = \"auto\"", two_years),
        (http, "", None),
        (http, "hsts = \"auto\"", None),
        (http, "hsts = \"on\"", two_years),
        (https, "hsts = \"off\"", None),
        (
            https,
            "hsts_max_age = \"365days\"\nhsts_include_subdomains = false",
            Some("max-age=31536000"),
        ),
        (
            https,
            "hsts_preload = true",
            Some("max-age=63072000; includeSubDomains; preload"),
        ),
    ] {
        for path in ["/healthz", "/bff/nope", "/bff/login"] {
            let r = get_with_config(origin, toml, path).await;
            assert_eq!(
                header(&r, "strict-transport-security"),
                expected,
                "{origin} [{toml}] {path} ({})",
                r.status()
            );
            assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_configurable() {
    let r = get_with_config(
        "https://app.example",
        r#"
referrer_policy = "strict-origin-when-cross-origin"
permissions_policy = "camera=(), fullscreen=(self)"
cross_origin_opener_policy = "same-origin-allow-popups"
cross_origin_resource_policy = "same-site"
"#,
        "/bff/nope",
    )
    .await;
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        header(&r, "referrer-policy"),
        Some("strict-origin-when-cross-origin")
    );
    assert_eq!(
        header(&r, "permissions-policy"),
        Some("camera=(), fullscreen=(self)")
    );
    assert_eq!(
        header(&r, "cross-origin-opener-policy"),
        Some("same-origin-allow-popups")
    );
    assert_eq!(
        header(&r, "cross-origin-resource-policy"),
        Some("same-site")
    );
    // Always: nosniff and DENY.
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&r, "x-frame-options"), Some("DENY"));

    // An empty Permissions-Policy is not sent.
    let r = get_with_config(
        "https://app.example",
        "permissions_policy = \"\"",
        "/healthz",
    )
    .await;
    assert_eq!(header(&r, "permissions-policy"), None);
    assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"));
}

#[test]
fn invalid_header_settings_are_config_errors() {
    let keys = write_secret("keys", &KeyRing::generate_encoded().expect("rng"));
    let secret = write_secret("secret", "s3cret");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
public_origin = "https://app.example"

[session]
keys_file = "{keys}"

[oidc]
issuer = "http://127.0.0.1:9"
client_id = "portcullis"
client_secret_file = "{secret}"

[headers]
hsts = "always"
referrer_policy = "none"
permissions_policy = "camera 'none'"
cross_origin_opener_policy = "deny"
clear_site_data_on_logout = ["cache", "everything"]
x_frame_options = "SAMEORIGIN"
"#
    );
    // X-Frame-Options is not configurable: the unknown key alone is a syntax error.
    let err = Config::from_toml(&toml).expect_err("x_frame_options");
    assert!(err.to_string().contains("x_frame_options"), "{err}");
    let err = Config::from_toml(&toml.replace("x_frame_options = \"SAMEORIGIN\"\n", ""))
        .expect_err("invalid");
    let keys: Vec<&str> = err.0.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "headers.hsts",
            "headers.referrer_policy",
            "headers.permissions_policy",
            "headers.cross_origin_opener_policy",
            "headers.clear_site_data_on_logout",
        ],
        "{err}"
    );
}
