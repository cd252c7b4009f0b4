//! Audit events end to end against the real OpenID Provider: handshake (success and failure),
//! rate-limit trip, CSRF rejection, refresh failure, back-channel logout and operator revocation
//! each emit one line with the expected fields, and no line carries a token, a cookie, a
//! password, an anti-CSRF token or a subject in clear.

mod common;

use common::{COOKIE, Options, Stack, eventually};
use http::Method;
use portcullis::crypto::keyring::KeyRing;
use serde_json::{Value, json};
use testkit::browser::{Browser, Response};

const PASSWORD_FOR_MALLORY: &str = "Mall0ry-audit-pa55word-91c2";

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn events<'a>(all: &'a [Value], name: &str) -> Vec<&'a Value> {
    all.iter().filter(|e| e["event"] == name).collect()
}

async fn handshake(stack: &Stack, b: &Browser, user: &str, password: &str) -> Response {
    let body = serde_json::to_vec(&json!({"username": user, "password": password})).expect("json");
    b.request(
        Method::POST,
        &stack.url("/bff/handshake"),
        &[
            ("content-type", "application/json"),
            ("origin", &stack.base),
            ("sec-fetch-site", "same-origin"),
        ],
        body,
    )
    .await
    .expect("handshake")
}

fn assert_request_fields(e: &Value) {
    assert_eq!(e["client_ip"], "127.0.0.1", "{e}");
    assert!(
        e["request_id"].as_str().is_some_and(|r| r.len() >= 8),
        "{e}"
    );
    assert!(e["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_audited_without_secrets() {
    let admin_token = KeyRing::generate_encoded().expect("rng");
    let token_path = common::running::write_secret("admin-token", &admin_token);
    let audit_path = std::path::PathBuf::from(common::running::write_secret("audit", ""));
    let stack = Stack::start_with(Options {
        // Every proxied request refreshes first (the access token is always "stale").
        access_token_ttl: 20,
        refresh_skew: "30s",
        backchannel_logout: true,
        idp_password_grant: true,
        extra_oidc: "password_grant = true".into(),
        extra_toml: format!(
            "\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"{token_path}\"\n\n[audit]\ntarget = \"file\"\npath = \"{}\"\n\n[rate_limits]\nhandshake_per_username = \"2/min\"\n",
            audit_path.display()
        ),
        ..Options::default()
    })
    .await;
    let mut secrets: Vec<String> = vec![
        stack.idp.password().into(),
        PASSWORD_FOR_MALLORY.into(),
        stack.idp.client_secret().into(),
        admin_token.clone(),
    ];

    // Handshake: success, then a wrong password, then a third attempt for that username
    // trips the per-username limit.
    let h = Browser::new();
    let r = handshake(&stack, &h, stack.idp.username(), stack.idp.password()).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    secrets.push(h.cookie(COOKIE).expect("cookie"));
    let m = Browser::new();
    let r = handshake(&stack, &m, "mallory", PASSWORD_FOR_MALLORY).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text());
    let r = handshake(&stack, &m, "mallory", PASSWORD_FOR_MALLORY).await;
    assert_eq!(r.status.as_u16(), 401, "{}", r.text());
    let r = handshake(&stack, &m, "mallory", PASSWORD_FOR_MALLORY).await;
    assert_eq!(r.status.as_u16(), 429, "{}", r.text());

    // CSRF: a state-changing request without the token.
    let c = Browser::new();
    secrets.push(stack.login(&c).await);
    secrets.push(stack.csrf(&c).await);
    let r = c
        .request(Method::POST, &stack.url("/api/orders/1"), &[], "{}")
        .await
        .expect("post");
    assert_eq!(r.status.as_u16(), 403, "{}", r.text());

    // Refresh failure: the provider revoked the refresh token behind the gateway's back.
    let f = Browser::new();
    let ticket = stack.login(&f).await;
    secrets.push(ticket.clone());
    let record = stack.session_record(&ticket).await.expect("session").record;
    let disco = stack.idp.discovery().await.expect("discovery");
    let revoked = reqwest::Client::new()
        .post(disco["revocation_endpoint"].as_str().expect("endpoint"))
        .basic_auth(stack.idp.client_id(), Some(stack.idp.client_secret()))
        .form(&[
            ("token", record.refresh_token.as_deref().expect("rt")),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .expect("revoke");
    assert!(revoked.status().is_success());
    let r = f.get(&stack.url("/api/orders/1")).await.expect("api");
    assert_eq!(r.status.as_u16(), 401, "{}", r.text());

    // Back-channel logout from the real provider.
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    secrets.push(ticket.clone());
    let sid = stack
        .session_record(&ticket)
        .await
        .expect("session")
        .record
        .sid
        .clone()
        .expect("sid");
    stack
        .idp
        .backchannel_logout(None, Some(&sid))
        .await
        .expect("back-channel logout");
    assert!(
        eventually(|| async {
            !events(&audit_lines(&audit_path), "backchannel_logout").is_empty()
        })
        .await
    );

    // Operator revocation on the admin listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let admin = format!("http://{}", listener.local_addr().expect("addr"));
    let (_stop, rx) = tokio::sync::watch::channel(false);
    portcullis::server::serve_admin(listener, stack.state().clone(), rx);
    let sub = record.sub.clone();
    let r = Browser::new()
        .request(
            Method::POST,
            &format!("{admin}/sessions/revoke"),
            &[
                ("authorization", &format!("Bearer {admin_token}")),
                ("content-type", "application/json"),
            ],
            serde_json::to_vec(&json!({"subject": sub})).expect("json"),
        )
        .await
        .expect("revoke");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());

    let all = audit_lines(&audit_path);
    let text = std::fs::read_to_string(&audit_path).expect("audit file");

    let ok = events(&all, "handshake_success");
    assert_eq!(ok.len(), 1, "{text}");
    assert!(
        ok[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("s:"))
    );
    assert!(ok[0]["session"].as_str().is_some_and(|s| !s.is_empty()));
    assert_request_fields(ok[0]);

    let failed = events(&all, "handshake_failure");
    let outcomes: Vec<&str> = failed
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["failure", "failure", "rate_limited"], "{text}");
    failed.iter().for_each(|e| assert_request_fields(e));

    let limited = events(&all, "rate_limited");
    assert_eq!(limited.len(), 1, "{text}");
    assert_eq!(limited[0]["reason"], "handshake-user");
    assert_request_fields(limited[0]);

    let csrf = events(&all, "csrf_rejected");
    assert_eq!(csrf.len(), 1, "{text}");
    assert_eq!(csrf[0]["reason"], "missing");
    assert!(csrf[0]["session"].as_str().is_some());
    assert_request_fields(csrf[0]);

    let refresh = events(&all, "refresh_failure");
    assert_eq!(refresh.len(), 1, "{text}");
    assert_eq!(refresh[0]["reason"], "session_ended");
    assert!(
        refresh[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("s:"))
    );
    assert!(refresh[0]["session"].as_str().is_some());
    assert_request_fields(refresh[0]);

    let bcl = events(&all, "backchannel_logout");
    assert_eq!(bcl.len(), 1, "{text}");
    assert_eq!(bcl[0]["reason"], "sid");
    assert_eq!(bcl[0]["count"], 1);

    let op = events(&all, "operator_revocation");
    assert_eq!(op.len(), 1, "{text}");
    assert_eq!(op[0]["reason"], "subject");
    assert!(
        op[0]["subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("s:"))
    );
    assert!(op[0]["count"].as_u64().is_some());

    // Nothing secret anywhere: every token the provider issued, every cookie and anti-CSRF
    // token, the passwords, the client secret, the admin token, the subject in clear.
    let issued: Value = reqwest::get(format!("{}/_test/issued-tokens", stack.idp.issuer()))
        .await
        .expect("issued tokens")
        .json()
        .await
        .expect("json");
    let issued: Vec<String> = issued["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    assert!(issued.len() >= 4, "{issued:?}");
    secrets.extend(issued);
    secrets.push(sub);
    for s in secrets.iter().filter(|s| s.len() >= 5) {
        assert!(
            !text.contains(s.as_str()),
            "a secret leaked into the audit log"
        );
    }
    let _ = std::fs::remove_file(&audit_path);
}
