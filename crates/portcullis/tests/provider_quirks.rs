//! Providers other than the one the gateway was developed against: answers that are legal, or
//! common, but shaped differently. The scriptable fake provider plays them.
//! * ID tokens with claims in other JSON types than OIDC Core §5.1 lists (Auth0's `updated_at`
//!   as a date string, Apple's `email_verified` as `"true"`): claims the gateway never uses must
//!   not fail a login.
//! * Token responses with `expires_in` as a string or a float and `scope` as an array.
//! * A token type other than Bearer (`DPoP`): not usable, so no session.
//! * A token response longer than the 1 MiB the gateway reads: an unreadable answer.
//! * A refresh answered 429 or 5xx with some OAuth-looking body is an outage (503, the session
//!   kept), not a refusal that logs the user out.
//! * A discovery document with members the gateway does not read in odd shapes, flags as
//!   strings, and required-but-unused members missing.
//! * A key set served as a static file (`application/octet-stream`).
//! * A signing key the provider withdraws stops verifying at the next periodic key-set read.

mod common;
mod fake_idp;

use std::time::{SystemTime, UNIX_EPOCH};

use fake_idp::{
    gateway::{Gateway, SESSION_COOKIE},
    jose::{self, Signer, keys},
    provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, IdpOptions, REFRESHED_ACCESS_TOKEN, TokenReply},
};
use http::StatusCode;
use serde_json::{Value, json};
use testkit::{browser::Browser, upstream::RecordingUpstream};

const KID: &str = "k1";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn id_token(issuer: &str, nonce: &str, extra: Value) -> String {
    let mut c = json!({
        "iss": issuer, "sub": "alice", "aud": CLIENT_ID, "exp": now() + 300, "iat": now(),
        "nonce": nonce,
    });
    for (k, v) in extra.as_object().expect("claims") {
        c[k] = v.clone();
    }
    jose::jws(Signer::Rs256(&keys().provider), Some(KID), &c)
}

struct Env {
    idp: FakeIdp,
    upstream: RecordingUpstream,
    gw: Gateway,
}

impl Env {
    /// `refresh_skew` of an hour: every access token is refreshed before use, so each API call
    /// below goes through the provider's refresh answer.
    async fn start() -> Env {
        Self::start_with(IdpOptions::default()).await
    }

    async fn start_with(options: IdpOptions) -> Env {
        let idp = FakeIdp::start(vec![keys().provider.jwk(Some(KID))], options).await;
        let upstream = RecordingUpstream::start().await;
        let gw = Gateway::start_with(
            &idp,
            CLIENT_SECRET,
            &format!(
                "refresh_skew = \"1h\"\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\ntimeout = \"2s\"\n",
                upstream.url()
            ),
        )
        .await;
        Env { idp, upstream, gw }
    }

    /// A login whose ID token carries `claims` and whose token response has `fields` replaced.
    async fn login(&self, claims: Value, fields: Value) -> (Browser, u16) {
        let browser = Browser::new();
        let auth = self.gw.start_login(&browser, "/").await;
        self.idp.issue_code("code-1", auth.grant());
        let issuer = self.idp.issuer().to_owned();
        self.idp.script(move |g| {
            let mut f = fields.clone();
            f["id_token"] = Value::from(id_token(&issuer, &g.nonce, claims.clone()));
            TokenReply::Fields(f)
        });
        let r = self
            .gw
            .callback(&browser, &self.idp, "code-1", &auth.state)
            .await;
        (browser, r.status.as_u16())
    }

    async fn status(&self, browser: &Browser, path: &str) -> u16 {
        browser
            .get(&self.gw.url(path))
            .await
            .expect(path)
            .status
            .as_u16()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_and_token_members_in_other_shapes_do_not_fail_a_login() {
    let env = Env::start().await;
    env.idp.script_refresh(|| TokenReply::NoIdToken);
    let cases = [
        (
            "updated_at as a date string (Auth0)",
            json!({"updated_at": "2024-05-01T12:00:00.000Z", "name": "Alice"}),
            json!({}),
        ),
        (
            "email_verified as a string (Apple)",
            json!({"email": "alice@example.com", "email_verified": "true"}),
            json!({}),
        ),
        (
            "expires_in as a string, scope as an array",
            json!({}),
            json!({"expires_in": "3600", "scope": ["openid", "profile"]}),
        ),
        (
            "expires_in as a float",
            json!({}),
            json!({"expires_in": 3599.5}),
        ),
        (
            "token_type in lower case",
            json!({}),
            json!({"token_type": "bearer"}),
        ),
    ];
    for (name, claims, fields) in cases {
        let (browser, status) = env.login(claims, fields).await;
        assert_eq!(status, 302, "{name}: the login must succeed");
        assert!(browser.cookie(SESSION_COOKIE).is_some(), "{name}");
        assert_eq!(env.status(&browser, "/bff/session").await, 200, "{name}");
        env.upstream.clear();
        assert_eq!(env.status(&browser, "/api/data").await, 200, "{name}");
        let seen = env.upstream.last().expect("proxied");
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {REFRESHED_ACCESS_TOKEN}").as_str()),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_token_that_is_not_bearer_makes_no_session() {
    let env = Env::start().await;
    let (browser, status) = env.login(json!({}), json!({"token_type": "DPoP"})).await;
    assert_eq!(status, 401);
    assert!(browser.cookie(SESSION_COOKIE).is_none());
    let (_, status) = env.login(json!({}), json!({"token_type": "Bearer"})).await;
    assert_eq!(status, 302, "control");
}

/// The gateway reads at most 1 MiB of a provider's answer (`oidc::http_client`): a longer token
/// response is an unreadable answer (503, no session), not memory grown until the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_token_response_makes_no_session() {
    let env = Env::start().await;
    let (browser, status) = env
        .login(json!({}), json!({"padding": "x".repeat(2 << 20)}))
        .await;
    assert_eq!(status, 503);
    assert!(browser.cookie(SESSION_COOKIE).is_none());
    let (browser, status) = env
        .login(json!({}), json!({"padding": "x".repeat(256 << 10)}))
        .await;
    assert_eq!(status, 302, "control: a large answer under the bound");
    assert_eq!(env.status(&browser, "/bff/session").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_answered_429_or_5xx_is_an_outage_and_keeps_the_session() {
    let env = Env::start().await;
    let (browser, status) = env.login(json!({}), json!({})).await;
    assert_eq!(status, 302);
    let outages: [(&str, StatusCode, &'static str); 4] = [
        (
            "429 too_many_requests",
            StatusCode::TOO_MANY_REQUESTS,
            r#"{"error":"too_many_requests"}"#,
        ),
        (
            "500 with an unregistered error code",
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"internal"}"#,
        ),
        (
            "502 invalid_grant from a broken proxy",
            StatusCode::BAD_GATEWAY,
            r#"{"error":"invalid_grant"}"#,
        ),
        (
            "503 plain text",
            StatusCode::SERVICE_UNAVAILABLE,
            "down for maintenance",
        ),
    ];
    for (name, status, body) in outages {
        env.idp.script_refresh(move || {
            let content_type = if body.starts_with('{') {
                "application/json"
            } else {
                "text/plain"
            };
            TokenReply::Raw(status, content_type, body)
        });
        env.upstream.clear();
        assert_eq!(env.status(&browser, "/api/data").await, 503, "{name}");
        assert_eq!(env.upstream.count(), 0, "{name}: nothing proxied");
        assert_eq!(
            env.status(&browser, "/bff/session").await,
            200,
            "{name}: the session is kept"
        );
    }
    // The provider is back: the same session refreshes and is served.
    env.idp.script_refresh(|| TokenReply::NoIdToken);
    assert_eq!(env.status(&browser, "/api/data").await, 200);
    // A real refusal (400 invalid_grant) still ends it.
    env.idp
        .script_refresh(|| TokenReply::OAuthError("invalid_grant"));
    assert_eq!(env.status(&browser, "/api/data").await, 401);
    assert_eq!(env.status(&browser, "/bff/session").await, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_signing_key_stops_verifying_at_the_next_key_set_read() {
    let env = Env::start().await;
    let (_, status) = env.login(json!({}), json!({})).await;
    assert_eq!(status, 302, "signed with the published key");
    // The provider withdraws that key (and publishes another); the periodic read picks it up.
    env.idp.set_jwks(vec![keys().second.jwk(Some("k2"))]);
    let (_, status) = env.login(json!({}), json!({})).await;
    assert_eq!(
        status, 302,
        "until the next read the known key still verifies"
    );
    env.gw
        .state
        .oidc
        .refresh_jwks()
        .await
        .expect("key-set read");
    let (browser, status) = env.login(json!({}), json!({})).await;
    assert_ne!(status, 302, "the withdrawn key no longer verifies");
    assert!(browser.cookie(SESSION_COOKIE).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_in_other_shapes_still_loads() {
    let env = Env::start_with(IdpOptions {
        discovery_patch: Some(json!({
            "op_policy_uri": "",
            "service_documentation": "/docs",
            "claims_supported": ["sub", 7],
            "request_parameter_supported": "false",
            "userinfo_endpoint": "",
            "code_challenge_methods_supported": "S256",
            "subject_types_supported": null,
            "response_types_supported": null,
        })),
        ..IdpOptions::default()
    })
    .await;
    let (browser, status) = env.login(json!({}), json!({})).await;
    assert_eq!(status, 302);
    assert_eq!(env.status(&browser, "/bff/session").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_served_as_a_static_file_still_loads() {
    for content_type in ["application/octet-stream", "text/plain"] {
        let env = Env::start_with(IdpOptions {
            jwks_content_type: Some(content_type),
            ..IdpOptions::default()
        })
        .await;
        let (browser, status) = env.login(json!({}), json!({})).await;
        assert_eq!(status, 302, "{content_type}");
        assert_eq!(
            env.status(&browser, "/bff/session").await,
            200,
            "{content_type}"
        );
    }
}

/// A refresh the provider refuses for the client itself (`invalid_client`, `unauthorized_client`,
/// RFC 6749 §5.2: a wrong or rotated secret, the wrong authentication method) says nothing about
/// the user's grant: 503 (nothing proxied) and the session kept, so it works again once the
/// configuration is fixed. `invalid_grant` still ends the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_for_the_client_keeps_the_session() {
    let env = Env::start().await;
    for (code, api, session_after) in [
        ("invalid_client", 503, 200),
        ("unauthorized_client", 503, 200),
        ("invalid_grant", 401, 401),
    ] {
        let (browser, status) = env.login(json!({}), json!({})).await;
        assert_eq!(status, 302, "{code}: login");
        env.idp.script_refresh(move || TokenReply::OAuthError(code));
        env.upstream.clear();
        assert_eq!(env.status(&browser, "/api/x").await, api, "{code}");
        assert_eq!(env.upstream.count(), 0, "{code}: nothing proxied");
        assert_eq!(
            env.status(&browser, "/bff/session").await,
            session_after,
            "{code}: the session afterwards"
        );
        if session_after == 200 {
            env.idp.script_refresh(|| TokenReply::NoIdToken);
            assert_eq!(
                env.status(&browser, "/api/x").await,
                200,
                "{code}: works again once the provider accepts the client"
            );
        }
    }
}
