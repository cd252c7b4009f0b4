//! Operators end sessions without the users' cookies: through the admin listener (its own
//! address, bearer token) or the `portcullis sessions` CLI against the shared store.

mod common;

use std::process::Command;

use common::{Options, Stack};
use http::Method;
use portcullis::crypto::keyring::KeyRing;
use testkit::{
    browser::Browser,
    redis::{RedisOptions, RedisServer},
};

async fn start_admin(stack: &Stack) -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!(
        "http://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let (tx, rx) = tokio::sync::watch::channel(false);
    portcullis::server::serve_admin(listener, stack.state().clone(), rx);
    (base, tx)
}

fn admin_toml(token: &str) -> String {
    let path = common::running::write_secret("admin-token", token);
    format!("\n[admin]\nlisten = \"127.0.0.1:1\"\ntoken_file = \"{path}\"\n")
}

/// A stack whose configuration carries a fresh admin token (fixed before the stack starts,
/// since the config carries it), and its admin listener: (stack, admin base URL, token, the
/// listener's stop handle).
async fn stack_with_admin() -> (Stack, String, String, tokio::sync::watch::Sender<bool>) {
    let token = KeyRing::generate_encoded().expect("rng");
    let stack = Stack::start_with(Options {
        extra_toml: admin_toml(&token),
        ..Options::default()
    })
    .await;
    let (admin, stop) = start_admin(&stack).await;
    (stack, admin, token, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_revokes_by_subject_and_all() {
    let (stack, admin, token, _stop) = stack_with_admin().await;
    let alice = Browser::new();
    stack.login(&alice).await;
    let alice2 = Browser::new();
    stack.login(&alice2).await;
    let http = Browser::new();
    let bearer = format!("Bearer {token}");

    // No token, a wrong token: refused, and nothing happens.
    // (The last: the right token without the `Bearer` scheme.)
    for auth in [None, Some("Bearer wrong".to_owned()), Some(token.clone())] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let r = http
            .request(
                Method::POST,
                &format!("{admin}/sessions/revoke"),
                &[headers.as_slice(), &[("content-type", "application/json")]].concat(),
                r#"{"all":true}"#,
            )
            .await
            .expect("revoke");
        assert_eq!(r.status.as_u16(), 401, "{auth:?}");
    }
    assert_eq!(
        alice
            .get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        200
    );

    let list = http
        .get_with(
            &format!("{admin}/sessions?subject=alice"),
            &[("authorization", &bearer)],
        )
        .await
        .expect("list");
    assert_eq!(list.status.as_u16(), 200, "{}", list.text());
    assert_eq!(list.json().expect("json")["sessions"], 2);
    assert_eq!(
        http.get_with(&format!("{admin}/readyz"), &[("authorization", &bearer)])
            .await
            .expect("ready")
            .status
            .as_u16(),
        200
    );

    // The admin API is not on the public listener.
    let public = alice
        .get(&stack.url("/sessions?subject=alice"))
        .await
        .expect("public");
    assert_eq!(public.status.as_u16(), 404);

    let r = http
        .request(
            Method::POST,
            &format!("{admin}/sessions/revoke"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            r#"{"subject":"alice"}"#,
        )
        .await
        .expect("revoke");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.json().expect("json")["revoked"], 2);
    assert_eq!(
        alice
            .get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        401
    );
    assert_eq!(
        alice2
            .get(&stack.url("/api/orders/1"))
            .await
            .expect("api")
            .status
            .as_u16(),
        401
    );

    // Everyone.
    let bob = Browser::new();
    stack.login(&bob).await;
    let r = http
        .request(
            Method::POST,
            &format!("{admin}/sessions/revoke"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            r#"{"all":true}"#,
        )
        .await
        .expect("revoke all");
    assert_eq!(r.json().expect("json")["revoked"], 1);
    assert_eq!(
        bob.get(&stack.url("/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        401
    );
    // Ambiguous requests are refused.
    let bad = http
        .request(
            Method::POST,
            &format!("{admin}/sessions/revoke"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            r#"{"subject":"a","all":true}"#,
        )
        .await
        .expect("bad");
    assert_eq!(bad.status.as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_revokes_sessions_in_the_shared_store() {
    let redis = RedisServer::start(RedisOptions::default())
        .await
        .expect("redis");
    let stack = Stack::start_with(Options {
        session_extra: format!("store = \"redis\"\nredis_url = \"{}\"", redis.url()),
        instances: 2,
        ..Options::default()
    })
    .await;
    let b = Browser::with_port_scope(testkit::cookies::PortScope::IgnorePort);
    stack.login(&b).await;
    // The CLI writes its own audit events (an operator's revocation is one).
    let audit = std::env::temp_dir().join(format!(
        "portcullis-cli-audit-{}.jsonl",
        portcullis::crypto::random::token::<6>().expect("rng")
    ));
    let cfg = common::running::write_secret(
        "cli.toml",
        &format!(
            "{}\n[audit]\ntarget = \"file\"\npath = \"{}\"\n",
            stack.config_of(0),
            audit.display()
        ),
    );
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(["sessions"])
            .args(args)
            .args(["--config", &cfg])
            .output()
            .expect("run the CLI");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
    };
    assert_eq!(run(&["list", "--subject", "alice"])["sessions"], 1);
    assert_eq!(run(&["revoke", "--subject", "alice"])["revoked"], 1);
    for i in 0..2 {
        let r = b.get(&stack.url_on(i, "/bff/session")).await.expect("s");
        assert_eq!(
            r.status.as_u16(),
            401,
            "instance {i} sees the revocation at once"
        );
    }
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&audit)
        .expect("the CLI's audit log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let _ = std::fs::remove_file(&audit);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["event"], "operator_revocation");
    assert_eq!(events[0]["reason"], "subject");
    assert_eq!(events[0]["count"], 1);
    // With the audit on standard output, the JSON answer stays alone there (scripts parse it).
    let stdout_cfg = common::running::write_secret(
        "cli-stdout.toml",
        &format!("{}\n[audit]\ntarget = \"stdout\"\n", stack.config_of(0)),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "sessions",
            "revoke",
            "--subject",
            "nobody",
            "--config",
            &stdout_cfg,
        ])
        .output()
        .expect("run the CLI");
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).expect("only JSON");
    assert_eq!(answer["revoked"], 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator_revocation"),
        "the audit line went to standard error"
    );
    stack.login(&b).await;
    assert_eq!(run(&["revoke", "--all"])["revoked"], 1);
    assert_eq!(
        b.get(&stack.url_on(1, "/bff/session"))
            .await
            .expect("s")
            .status
            .as_u16(),
        401
    );
}

/// The admin API as an operator's tools meet it: the `Bearer` scheme in any case (RFC 9110
/// §11.1: schemes are case-insensitive; RFC 6750 §2.1), and every error, 404 and 405 included,
/// an RFC 9457 problem like on the public listener (never an empty body or axum's plain text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_any_case_of_bearer_and_answers_problems() {
    let (stack, admin, token, _stop) = stack_with_admin().await;
    let http = Browser::new();
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let auth = format!("{scheme} {token}");
        let r = http
            .get_with(&format!("{admin}/healthz"), &[("authorization", &auth)])
            .await
            .expect("healthz");
        assert_eq!(r.status.as_u16(), 200, "{scheme}: {}", r.text());
    }
    let bearer = format!("Bearer {token}");
    let json = ("content-type", "application/json");
    // (name, method, path, headers, body, status)
    type Case<'a> = (
        &'a str,
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        &'a str,
        u16,
    );
    let cases: Vec<Case> = vec![
        ("unknown path", Method::GET, "/nope", vec![], "", 404),
        (
            "wrong method",
            Method::POST,
            "/healthz",
            vec![json],
            "{}",
            405,
        ),
        (
            "revoke as text",
            Method::POST,
            "/sessions/revoke",
            vec![("content-type", "text/plain")],
            r#"{"all":true}"#,
            415,
        ),
        (
            "revoke, broken JSON",
            Method::POST,
            "/sessions/revoke",
            vec![json],
            "{",
            400,
        ),
        (
            "revoke, unknown field",
            Method::POST,
            "/sessions/revoke",
            vec![json],
            r#"{"everyone":true}"#,
            400,
        ),
        (
            "list without a subject",
            Method::GET,
            "/sessions",
            vec![],
            "",
            400,
        ),
    ];
    for (name, method, path, mut headers, body, want) in cases {
        headers.push(("authorization", &bearer));
        let r = http
            .request(method, &format!("{admin}{path}"), &headers, body)
            .await
            .expect(name);
        assert_eq!(r.status.as_u16(), want, "{name}: {}", r.text());
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{name}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
        let problem = r.json().expect(name);
        assert_eq!(problem["status"], want, "{name}");
        if want == 405 {
            assert_eq!(r.header("allow"), Some("GET,HEAD"), "{name}");
        }
    }
    // Without the token, an unknown path says no more than a known one.
    let r = http.get(&format!("{admin}/nope")).await.expect("nope");
    assert_eq!(r.status.as_u16(), 401);
    // Nothing was revoked by the refused requests.
    let alice = Browser::new();
    stack.login(&alice).await;
    assert_eq!(
        alice
            .get(&stack.url("/bff/session"))
            .await
            .expect("session")
            .status
            .as_u16(),
        200
    );
}
