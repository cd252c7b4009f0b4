//! UserInfo (OIDC Core §5.3) at login. A provider that follows §5.4 puts the `profile`/`email`
//! claims only into its UserInfo response when it issues an access token, so the claims a session
//! needs (`oidc.session_claims`, route policies, aggregate placeholders) that the ID token lacks
//! are read there: with the access token as a Bearer header (RFC 6750 §2.1), and only from an
//! answer whose `sub` is exactly the ID token's (§5.3.2; otherwise the login fails). The ID
//! token's own (signed) claims are never replaced, and an endpoint that is down leaves the session
//! with the ID token's claims.
//!
//! Against the scriptable fake provider (the OpenID RP tests `rp-scope-userinfo-claims`,
//! `rp-userinfo-bearer-header`, `rp-userinfo-bad-sub-claim`), and against the real provider.

mod common;
mod fake_idp;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Options, Stack};
use fake_idp::{
    gateway::{Gateway, SESSION_COOKIE, logged_problems},
    jose::{Signer, jws, keys},
    provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, Grant, IdpOptions, TokenReply},
};
use http::StatusCode;
use serde_json::{Value, json};
use testkit::browser::{Browser, Response};

const KID: &str = "k1";
/// The access token the fake provider issues at the code exchange.
const ACCESS_TOKEN: &str = "at-opaque-1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

struct Env {
    idp: FakeIdp,
    gw: Gateway,
}

impl Env {
    async fn start() -> Env {
        let idp = FakeIdp::start(
            vec![keys().provider.jwk(Some(KID))],
            IdpOptions {
                userinfo: true,
                ..IdpOptions::default()
            },
        )
        .await;
        let gw = Gateway::start(&idp, CLIENT_SECRET).await;
        Env { idp, gw }
    }

    /// Logs a fresh browser in; the ID token has the protocol claims, `sub` alice and `extra`.
    /// Returns the browser and the callback's response.
    async fn login(&self, extra: Value) -> (Browser, Response) {
        let browser = Browser::new();
        let auth = self.gw.start_login(&browser, "/").await;
        self.idp.issue_code("code-1", auth.grant());
        let issuer = self.idp.issuer().to_owned();
        self.idp.script(move |g: &Grant| {
            let t = now();
            let mut claims = json!({
                "iss": issuer, "aud": CLIENT_ID, "sub": "alice", "iat": t, "exp": t + 300,
                "nonce": g.nonce,
            });
            for (k, v) in extra.as_object().expect("claims") {
                claims[k] = v.clone();
            }
            TokenReply::IdToken(jws(Signer::Rs256(&keys().provider), Some(KID), &claims))
        });
        let r = self
            .gw
            .callback(&browser, &self.idp, "code-1", &auth.state)
            .await;
        (browser, r)
    }

    fn userinfo(&self, body: Value) {
        self.idp
            .set_userinfo(StatusCode::OK, "application/json", body.to_string());
    }

    async fn user(&self, browser: &Browser) -> Value {
        let r = browser
            .get(&self.gw.url("/bff/session"))
            .await
            .expect("session");
        assert_eq!(r.status.as_u16(), 200, "{}", r.text());
        r.json().expect("json")["user"].clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_the_id_token_lacks_come_from_userinfo_with_a_bearer_header() {
    let env = Env::start().await;
    env.userinfo(json!({
        "sub": "alice", "name": "Alice", "email": "alice@example.test",
        "phone_number": "+1 555 0100",
    }));
    let (browser, r) = env.login(json!({})).await;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(
        env.user(&browser).await,
        json!({"sub": "alice", "name": "Alice", "email": "alice@example.test"}),
        "the session's claims: from UserInfo, and only those configured"
    );
    let seen = env.idp.userinfo_requests();
    assert_eq!(seen.len(), 1, "one UserInfo request per login: {seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str()),
        "the access token as a Bearer header"
    );
    assert_eq!(seen[0].query, None, "never a token in the URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_userinfo_answer_about_another_user_fails_the_login() {
    let env = Env::start().await;
    for (name, body) in [
        ("another sub", json!({"sub": "mallory", "name": "Mallory"})),
        (
            "sub differing in case",
            json!({"sub": "Alice", "name": "A"}),
        ),
        ("sub as a number", json!({"sub": 7, "name": "A"})),
        ("no sub", json!({"name": "Alice"})),
    ] {
        env.userinfo(body);
        let (browser, r) = env.login(json!({})).await;
        assert_eq!(r.status.as_u16(), 401, "{name}: {}", r.text());
        assert_eq!(
            r.json().expect("json"),
            json!({"type": "urn:portcullis:problem:login-failed", "title": "Login failed", "status": 401}),
            "{name}: the uniform problem"
        );
        assert!(r.set_cookie(SESSION_COOKIE).is_none(), "{name}: no session");
        assert!(browser.cookie(SESSION_COOKIE).is_none(), "{name}");
        let log = logged_problems(&r);
        assert!(log.contains("userinfo"), "{name}: logged reason: {log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_id_tokens_own_claims_are_kept_and_userinfo_is_read_only_when_needed() {
    let env = Env::start().await;
    env.userinfo(json!({"sub": "alice", "name": "Eve", "email": "eve@example.test"}));

    // Everything configured is in the ID token: no UserInfo request.
    let (browser, r) = env
        .login(json!({"name": "Alice", "email": "alice@example.test"}))
        .await;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(env.user(&browser).await["name"], "Alice");
    assert!(env.idp.userinfo_requests().is_empty());

    // Only `email` is missing: it comes from UserInfo, the signed `name` stays.
    let (browser, r) = env.login(json!({"name": "Alice"})).await;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(
        env.user(&browser).await,
        json!({"sub": "alice", "name": "Alice", "email": "eve@example.test"})
    );
    assert_eq!(env.idp.userinfo_requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_userinfo_answer_leaves_the_id_tokens_claims() {
    let env = Env::start().await;
    for (name, status, content_type, body) in [
        (
            "500",
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            "oops",
        ),
        ("404", StatusCode::NOT_FOUND, "text/plain", "not here"),
        (
            "a signed answer",
            StatusCode::OK,
            "application/jwt",
            "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
        ),
        ("a JSON array", StatusCode::OK, "application/json", "[]"),
    ] {
        env.idp.set_userinfo(status, content_type, body.to_owned());
        let (browser, r) = env.login(json!({"name": "Alice"})).await;
        assert_eq!(r.status.as_u16(), 302, "{name}: {}", r.text());
        assert_eq!(
            env.user(&browser).await,
            json!({"sub": "alice", "name": "Alice"}),
            "{name}"
        );
    }
}

/// A UserInfo endpoint that never answers holds a login for `oidc.http_timeout` at most (3 s
/// here); the login then completes with the ID token's claims, and the reason is logged. An
/// optional source of claims cannot make logins hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_userinfo_endpoint_does_not_hold_the_login() {
    let env = Env::start().await;
    env.idp.hang_userinfo();
    let (browser, r) = env.login(json!({"name": "Alice"})).await;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(env.idp.userinfo_requests().len(), 1, "UserInfo was asked");
    assert_eq!(
        env.user(&browser).await,
        json!({"sub": "alice", "name": "Alice"})
    );
    let log = logged_problems(&r);
    assert!(log.contains("userinfo"), "logged reason: {log}");
}

/// UserInfo describes the End-User, not the login: claims about the authentication event or the
/// token (`acr`, `amr`, `auth_time`, `sid`, ...; OIDC Core §2) are only ever the signed ID
/// token's. Otherwise a route requiring `acr = "mfa"` would admit a login whose ID token says
/// nothing of MFA, on the word of an unsigned answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_claims_never_come_from_userinfo() {
    let idp = FakeIdp::start(
        vec![keys().provider.jwk(Some(KID))],
        IdpOptions {
            userinfo: true,
            ..IdpOptions::default()
        },
    )
    .await;
    let routes = "\n[[routes]]\nprefix = \"/api/mfa\"\nupstream = \"http://127.0.0.1:9\"\nrequire_claims = { acr = \"mfa\" }\n";
    let gw = Gateway::start_with(&idp, CLIENT_SECRET, routes).await;
    let env = Env { idp, gw };
    env.userinfo(json!({
        "sub": "alice", "name": "Alice", "acr": "mfa", "amr": ["mfa"], "auth_time": now(),
    }));
    let (browser, r) = env.login(json!({})).await;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(env.idp.userinfo_requests().len(), 1, "UserInfo was read");
    assert_eq!(
        env.user(&browser).await["name"],
        "Alice",
        "End-User claims still come"
    );
    let r = browser
        .get(&env.gw.url("/api/mfa/x"))
        .await
        .expect("request");
    assert_eq!(
        r.status.as_u16(),
        403,
        "the ID token has no acr: {}",
        r.text()
    );
}

/// The real provider (oidc-provider) accepts the gateway's UserInfo request: a route policy needs
/// a claim the ID token does not carry, so every login reads `/me` with the access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_provider_answers_the_gateways_userinfo_request() {
    let stack = Stack::start_with(Options {
        extra_toml: "\n[[routes]]\nprefix = \"/api/fr\"\nupstream = \"http://127.0.0.1:9\"\nrequire_claims = { locale = \"fr\" }\n".into(),
        ..Options::default()
    })
    .await;
    let outcome = stack.login_attempt(&Browser::new()).await;
    let r = &outcome.callback_response;
    assert_eq!(r.status.as_u16(), 302, "{}", r.text());
    assert_eq!(
        logged_problems(r),
        "",
        "the UserInfo request succeeded (nothing logged)"
    );
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.userinfo_requests, 1);
    common::leak::assert_logs_clean(&stack.idp).await;
}

/// The real provider with its own default (`conformIdTokenClaims: true`, OIDC Core §5.4): `name`
/// and `email` are only in its UserInfo answer. The session still shows them, read there with
/// the access token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_provider_that_keeps_profile_claims_in_userinfo_still_names_the_user() {
    let stack = Stack::start_with(Options {
        idp_variant: |o: &mut testkit::idp::IdpOptions| o.claims_only_in_userinfo = true,
        ..Options::default()
    })
    .await;
    let browser = Browser::new();
    stack.login(&browser).await;
    let (status, body) = stack.session_info(&browser).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["sub"], json!(stack.idp.username()));
    assert!(
        body["user"]["name"].is_string() && body["user"]["email"].is_string(),
        "the profile claims come from UserInfo: {body}"
    );
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.userinfo_requests, 1);
    common::leak::assert_logs_clean(&stack.idp).await;
}
