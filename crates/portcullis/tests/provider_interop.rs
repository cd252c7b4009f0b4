//! Providers configured otherwise than the fixture's defaults, played by the real oidc-provider
//! (`testkit::idp::IdpOptions` variants): each must get a browser through the whole journey —
//! login through the provider's form, the session, API calls that refresh the access token first
//! (and verify the refreshed ID token), logout with revocation and the end-session URL when the
//! provider offers them.
//! * Token endpoint authentication: only `client_secret_post`; a client registered for
//!   `client_secret_post` at a provider offering both (`oidc.token_endpoint_auth_method`);
//!   credentials with `:`, `%`, `+`, `&`, `=` and spaces (RFC 6749 §2.3.1 form-encoding).
//! * ID and logout tokens signed with RS384, PS256, ES256 and EdDSA; RFC 9864's `Ed25519` (not
//!   supported: no session); a key set with several keys (one the gateway cannot use) and a
//!   signing key without `alg`; key rotation while sessions live.
//! * An issuer with a path; no revocation or end-session endpoint.
//! * The user cancelling at the provider (`error=access_denied`).
//!
//! Played by the fake provider (answers oidc-provider cannot be made to give): a refresh that
//! narrows the granted scopes (RFC 6749 §6); a provider whose single key has no `kid` rotating it
//! (seen first by an ID token, or by a back-channel logout token).

mod common;
mod fake_idp;

use common::{Options, Stack};
use http::Method;
use serde_json::Value;
use testkit::{browser::Browser, idp::IdpOptions};

/// A change to the provider's options: another provider's behaviour.
type Variant = fn(&mut IdpOptions);

/// Every API call refreshes the access token first: the skew is longer than the tokens live.
fn refreshing(variant: Variant) -> Options {
    Options {
        refresh_skew: "2h",
        idp_variant: variant,
        ..Options::default()
    }
}

/// What the journey saw, for the tests' own assertions.
struct Journey {
    logout_url: Value,
}

/// Login, session, two API calls (each one a refresh with a rotated refresh token and a new ID
/// token), logout. Panics with `label` and the step that failed.
async fn journey(stack: &Stack, label: &str) -> Journey {
    let browser = Browser::new();
    let outcome = browser
        .login_via_form(
            &stack.url("/bff/login?returnTo=/home"),
            stack.idp.username(),
            stack.idp.password(),
        )
        .await
        .unwrap_or_else(|e| panic!("{label}: login: {e:#}"));
    assert_eq!(
        outcome.callback_response.status.as_u16(),
        302,
        "{label}: callback: {}",
        outcome.callback_response.text()
    );
    assert_eq!(outcome.final_location.as_deref(), Some("/home"), "{label}");
    let s = browser
        .get(&stack.url("/bff/session"))
        .await
        .expect("session");
    assert_eq!(s.status.as_u16(), 200, "{label}: session: {}", s.text());
    let body = s.json().expect("json");
    assert_eq!(body["user"]["sub"], "alice", "{label}");
    let csrf = body["csrfToken"].as_str().expect("csrfToken").to_owned();

    stack.idp.reset_stats().await.expect("reset");
    for i in 0..2 {
        stack.upstream.clear();
        let r = browser
            .get(&stack.url(&format!("/api/orders/{i}")))
            .await
            .expect("api");
        assert_eq!(
            r.status.as_u16(),
            200,
            "{label}: API call #{i}: {}",
            r.text()
        );
        let seen = stack.upstream.last().expect("proxied");
        assert!(
            seen.header("authorization")
                .is_some_and(|a| a.starts_with("Bearer ")),
            "{label}"
        );
    }
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.refresh_grants(), 2, "{label}: {stats:?}");
    assert_eq!(stats.refresh_invalid_grant, 0, "{label}: {stats:?}");

    let out = browser
        .request(
            Method::POST,
            &stack.url("/bff/logout"),
            &[("x-csrf-token", &csrf), ("origin", &stack.base)],
            "",
        )
        .await
        .expect("logout");
    assert_eq!(out.status.as_u16(), 200, "{label}: logout: {}", out.text());
    let logout_url = out.json().expect("json")["logoutUrl"].clone();
    assert_eq!(
        stack.session_info(&browser).await.0,
        401,
        "{label}: logged out"
    );
    Journey { logout_url }
}

/// The refresh token was revoked at the provider by the logout.
async fn assert_revoked(stack: &Stack, label: &str) {
    let stats = stack.idp.stats().await.expect("stats");
    assert_eq!(stats.revocations, 1, "{label}: {stats:?}");
    assert_eq!(stats.revoked_refresh_tokens, 1, "{label}: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_offering_only_client_secret_post() {
    let stack = Stack::start_with(refreshing(|o| {
        o.client_auth_methods = vec!["client_secret_post".into()];
        o.token_endpoint_auth_method = Some("client_secret_post".into());
    }))
    .await;
    let discovery = stack.idp.discovery().await.expect("discovery");
    assert_eq!(
        discovery["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_post"])
    );
    journey(&stack, "client_secret_post only").await;
    assert_revoked(&stack, "client_secret_post only").await;
}

/// oidc-provider, like most providers, offers both methods but holds each client to the one it
/// was registered with: the operator says which (`oidc.token_endpoint_auth_method`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_registered_for_client_secret_post_at_a_provider_offering_both() {
    let stack = Stack::start_with(Options {
        extra_oidc: "token_endpoint_auth_method = \"client_secret_post\"\n".into(),
        ..refreshing(|o| o.token_endpoint_auth_method = Some("client_secret_post".into()))
    })
    .await;
    let discovery = stack.idp.discovery().await.expect("discovery");
    let offered = discovery["token_endpoint_auth_methods_supported"]
        .as_array()
        .expect("methods");
    assert!(offered.contains(&Value::from("client_secret_basic")));
    assert!(offered.contains(&Value::from("client_secret_post")));
    journey(&stack, "registered for client_secret_post").await;
    assert_revoked(&stack, "registered for client_secret_post").await;
}

/// RFC 6749 §2.3.1: with `client_secret_basic`, id and secret are form-encoded before the Basic
/// encoding (oidc-provider decodes them so); in a form body they are form-encoded anyway. Both
/// may be any VSCHAR (RFC 6749 Appendix A.1, A.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_with_reserved_characters() {
    fn odd(o: &mut IdpOptions) {
        o.client_id = "portcullis:web app+1".into();
        o.client_secret = "s:e%2Fc+r et=&%%~!'".into();
    }
    let stack = Stack::start_with(refreshing(odd)).await;
    journey(&stack, "client_secret_basic").await;
    assert_revoked(&stack, "client_secret_basic").await;
    drop(stack);
    let stack = Stack::start_with(refreshing(|o| {
        odd(o);
        o.client_auth_methods = vec!["client_secret_post".into()];
        o.token_endpoint_auth_method = Some("client_secret_post".into());
    }))
    .await;
    journey(&stack, "client_secret_post").await;
    assert_revoked(&stack, "client_secret_post").await;
}

/// Each algorithm signs the login's ID token, the refreshed ones and the back-channel logout
/// token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_signed_with_other_algorithms() {
    let variants: [(&str, Variant); 4] = [
        ("RS384", |o| o.id_token_alg = Some("RS384".into())),
        ("PS256", |o| o.id_token_alg = Some("PS256".into())),
        ("ES256", |o| o.id_token_alg = Some("ES256".into())),
        ("EdDSA (Ed25519 key)", |o| {
            o.id_token_alg = Some("EdDSA".into())
        }),
    ];
    for (label, variant) in variants {
        let stack = Stack::start_with(Options {
            backchannel_logout: true,
            ..refreshing(variant)
        })
        .await;
        journey(&stack, label).await;
        let browser = Browser::new();
        stack.login(&browser).await;
        stack
            .idp
            .backchannel_logout(None, None)
            .await
            .unwrap_or_else(|e| panic!("{label}: logout token refused: {e:#}"));
        assert_eq!(
            stack.session_info(&browser).await.0,
            401,
            "{label}: back-channel logout"
        );
    }
}

/// RFC 9864's fully-specified `Ed25519` algorithm name (oidc-provider offers it beside `EdDSA`)
/// is not one the gateway's JOSE libraries know: such a provider gets no session (fail closed,
/// an uninformative 401), never one on an unverified token. Use `EdDSA` with Ed25519 keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_algorithm_the_gateway_does_not_know_makes_no_session() {
    let stack = Stack::start_with(refreshing(|o| o.id_token_alg = Some("Ed25519".into()))).await;
    let browser = Browser::new();
    let outcome = stack.login_attempt(&browser).await;
    let cb = &outcome.callback_response;
    assert_eq!(cb.status.as_u16(), 401, "{}", cb.text());
    assert_eq!(cb.header("content-type"), Some("application/problem+json"));
    assert!(browser.cookie(common::COOKIE).is_none());
}

/// The key set also holds keys the gateway cannot use (an ES512 key: P-521 is not supported):
/// they are skipped for ID tokens and for back-channel logout tokens alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_with_several_keys_and_a_signing_key_without_alg() {
    let stack = Stack::start_with(Options {
        backchannel_logout: true,
        ..refreshing(|o| {
            o.id_token_alg = Some("PS256".into());
            o.extra_keys = true;
            o.key_without_alg = true;
        })
    })
    .await;
    let jwks: Value = reqwest::get(format!("{}/jwks", stack.idp.issuer()))
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 4, "{jwks}");
    assert!(keys[0].get("alg").is_none(), "{jwks}");
    assert!(keys.iter().any(|k| k["alg"] == "ES512"), "{jwks}");
    journey(&stack, "several keys").await;

    let browser = Browser::new();
    stack.login(&browser).await;
    stack
        .idp
        .backchannel_logout(None, None)
        .await
        .expect("the logout token is accepted");
    assert_eq!(
        stack.session_info(&browser).await.0,
        401,
        "ended by the back-channel logout"
    );
}

/// The provider rotates its signing key and withdraws the old one while a session lives: the
/// refreshed ID token, a new login and a back-channel logout token all name the new `kid`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_rotates_its_signing_key_while_sessions_live() {
    let stack = Stack::start_with(Options {
        backchannel_logout: true,
        ..refreshing(|_| {})
    })
    .await;
    let browser = Browser::new();
    let ticket = stack.login(&browser).await;
    let before = stack.session_record(&ticket).await.expect("session").record;
    stack.idp.rotate_keys(true).await.expect("rotate");

    let r = browser.get(&stack.url("/api/orders/1")).await.expect("api");
    assert_eq!(
        r.status.as_u16(),
        200,
        "refresh after rotation: {}",
        r.text()
    );
    let after = stack.session_record(&ticket).await.expect("session").record;
    assert_ne!(after.id_token, before.id_token, "a refreshed ID token");

    let other = Browser::new();
    stack.login(&other).await;
    assert_eq!(
        stack.session_info(&other).await.0,
        200,
        "a new login after rotation"
    );

    stack
        .idp
        .backchannel_logout(None, None)
        .await
        .expect("logout tokens signed with the new key are accepted");
    for b in [&browser, &other] {
        assert_eq!(
            stack.session_info(b).await.0,
            401,
            "ended by the back-channel logout"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_with_a_path() {
    let stack = Stack::start_with(refreshing(|o| {
        o.issuer_path = Some("/realms/test".into());
    }))
    .await;
    assert!(stack.idp.issuer().ends_with("/realms/test"));
    let journey = journey(&stack, "issuer with a path").await;
    let logout_url = journey.logout_url.as_str().expect("logoutUrl");
    assert!(
        logout_url.starts_with(&format!("{}/session/end?", stack.idp.issuer())),
        "{logout_url}"
    );
    assert_revoked(&stack, "issuer with a path").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_revocation_or_end_session() {
    let stack = Stack::start_with(refreshing(|o| {
        o.revocation = false;
        o.end_session = false;
    }))
    .await;
    let discovery = stack.idp.discovery().await.expect("discovery");
    assert!(discovery.get("revocation_endpoint").is_none());
    assert!(discovery.get("end_session_endpoint").is_none());
    let journey = journey(&stack, "no revocation, no end session").await;
    assert_eq!(journey.logout_url, Value::Null);
    assert_eq!(stack.idp.stats().await.expect("stats").revocations, 0);
}

/// The user cancels at the provider's login page: it redirects back with
/// `error=access_denied` (and `state`, `iss`); the app gets `?error=access_denied`, no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_cancels_at_the_provider() {
    let stack = Stack::start().await;
    let browser = Browser::new();
    let chain = browser
        .follow(&stack.url("/bff/login?returnTo=/inbox"), 10)
        .await
        .expect("to the login page");
    let page = chain.last().expect("page");
    assert_eq!(page.status.as_u16(), 200);
    let text = page.text();
    let href = text
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.ends_with("/abort"))
        .expect("a cancel link");
    let abort = page.url.join(href).expect("url");
    let chain = browser.follow(abort.as_str(), 5).await.expect("abort");
    let callback = chain
        .iter()
        .find(|r| r.url.path() == "/bff/callback")
        .expect("back at the callback");
    let params: Vec<(String, String)> = callback.url.query_pairs().into_owned().collect();
    assert!(params.contains(&("error".into(), "access_denied".into())));
    assert_eq!(callback.status.as_u16(), 302, "{}", callback.text());
    assert_eq!(
        callback.location().as_deref(),
        Some("/inbox?error=access_denied")
    );
    assert!(browser.cookie(common::COOKIE).is_none());
    // The same error without `state` (nothing to tie it to): refused, uninformatively.
    let bare = browser
        .get(&stack.url("/bff/callback?error=access_denied"))
        .await
        .expect("callback");
    assert_eq!(bare.status.as_u16(), 401);
    assert_eq!(
        bare.header("content-type"),
        Some("application/problem+json")
    );
}

/// The fake provider, for answers oidc-provider cannot be made to give.
mod scripted {
    use std::time::{SystemTime, UNIX_EPOCH};

    use serde_json::{Value, json};
    use testkit::{browser::Browser, upstream::RecordingUpstream};

    use crate::fake_idp::{
        gateway::{Gateway, SESSION_COOKIE},
        jose::{self, RsaKey, Signer},
        provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, IdpOptions, TokenReply},
    };

    pub struct Env {
        pub idp: FakeIdp,
        pub upstream: RecordingUpstream,
        pub gw: Gateway,
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs()
    }

    /// An ID token of `idp` for `nonce` (`None`: a refreshed one), signed by `key`, with `kid`
    /// in its header when given.
    pub fn id_token(idp: &FakeIdp, nonce: Option<&str>, key: &RsaKey, kid: Option<&str>) -> String {
        let mut c = json!({
            "iss": idp.issuer(), "sub": "alice", "aud": CLIENT_ID, "exp": now() + 300,
            "iat": now(),
        });
        if let Some(n) = nonce {
            c["nonce"] = Value::from(n);
        }
        match kid {
            Some(kid) => jose::jws(Signer::Rs256(key), Some(kid), &c),
            None => jose::jws_with_header(Signer::Rs256(key), &json!({}), &c),
        }
    }

    impl Env {
        /// Every API call refreshes first (`refresh_skew` of an hour); `routes` is TOML.
        pub async fn start(jwks: Vec<Value>, routes: &str) -> Env {
            let idp = FakeIdp::start(jwks, IdpOptions::default()).await;
            let upstream = RecordingUpstream::start().await;
            let routes = routes.replace("{up}", &upstream.url());
            let gw = Gateway::start_with(
                &idp,
                CLIENT_SECRET,
                &format!("refresh_skew = \"1h\"\n\n{routes}"),
            )
            .await;
            Env { idp, upstream, gw }
        }

        /// A login whose token response has `fields` replaced and whose ID token is signed by
        /// `key` (`kid` in the header when given). Returns the browser and the callback status.
        pub async fn login(
            &self,
            key: &'static RsaKey,
            kid: Option<&'static str>,
            fields: Value,
        ) -> (Browser, u16) {
            let browser = Browser::new();
            let auth = self.gw.start_login(&browser, "/").await;
            self.idp.issue_code("code-1", auth.grant());
            let issuer = self.idp.issuer().to_owned();
            self.idp.script(move |g| {
                let mut f = fields.clone();
                let c = json!({
                    "iss": issuer, "sub": "alice", "aud": CLIENT_ID, "exp": now() + 300,
                    "iat": now(), "nonce": g.nonce,
                });
                f["id_token"] = Value::from(match kid {
                    Some(kid) => jose::jws(Signer::Rs256(key), Some(kid), &c),
                    None => jose::jws_with_header(Signer::Rs256(key), &json!({}), &c),
                });
                TokenReply::Fields(f)
            });
            let r = self
                .gw
                .callback(&browser, &self.idp, "code-1", &auth.state)
                .await;
            let status = r.status.as_u16();
            if status == 302 {
                assert!(browser.cookie(SESSION_COOKIE).is_some());
            }
            (browser, status)
        }

        pub async fn status(&self, browser: &Browser, path: &str) -> u16 {
            browser
                .get(&self.gw.url(path))
                .await
                .expect(path)
                .status
                .as_u16()
        }
    }
}

/// RFC 6749 §6 and §5.1: a refresh may grant fewer scopes than the login did, and then says so in
/// `scope`. A route that needs a scope the current access token no longer has is refused (403),
/// as it would be for a session that never had it; without `scope` the grant is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_narrows_the_scopes_narrows_what_the_session_may_reach() {
    use fake_idp::{jose::keys, provider::TokenReply};
    let env = scripted::Env::start(
        vec![keys().provider.jwk(Some("k1"))],
        "[[routes]]\nprefix = \"/api/mail\"\nupstream = \"{up}/mail\"\nrequire_scopes = [\"email\"]\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\n",
    )
    .await;
    let (browser, status) = env
        .login(
            &keys().provider,
            Some("k1"),
            serde_json::json!({"scope": "openid profile email"}),
        )
        .await;
    assert_eq!(status, 302);
    // A refresh that says nothing about scope keeps them.
    env.idp.script_refresh(|| TokenReply::NoIdToken);
    assert_eq!(env.status(&browser, "/api/other").await, 200);
    assert_eq!(env.status(&browser, "/api/mail/inbox").await, 200);
    // A refresh that narrows them.
    env.idp
        .script_refresh(|| TokenReply::Fields(serde_json::json!({"scope": "openid profile"})));
    assert_eq!(env.status(&browser, "/api/other").await, 200, "refreshed");
    env.upstream.clear();
    assert_eq!(
        env.status(&browser, "/api/mail/inbox").await,
        403,
        "the access token no longer has `email`"
    );
    assert_eq!(env.upstream.count(), 0, "nothing proxied");
    assert_eq!(
        env.status(&browser, "/api/other").await,
        200,
        "the session lives on"
    );
}

/// A provider with one key and no `kid` (OIDC Core §10.1 allows that) rotates it: the first
/// token signed with the new key makes the gateway re-read the key set, as an unknown `kid`
/// would, instead of refusing every login until the next periodic read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_kids_rotates_its_only_key() {
    use fake_idp::jose::keys;
    let env = scripted::Env::start(
        vec![keys().provider.jwk(None)],
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\n",
    )
    .await;
    let (browser, status) = env
        .login(&keys().provider, None, serde_json::json!({}))
        .await;
    assert_eq!(status, 302, "one key, no kid");
    env.idp.set_jwks(vec![keys().rotated.jwk(None)]);
    let fetches = env.idp.jwks_fetches();
    let (_, status) = env
        .login(&keys().rotated, None, serde_json::json!({}))
        .await;
    assert_eq!(status, 302, "signed with the provider's new key");
    assert_eq!(env.idp.jwks_fetches(), fetches + 1, "one re-read");
    // The refresh of the older session gets an ID token signed with the new key too.
    let token = scripted::id_token(&env.idp, None, &keys().rotated, None);
    env.idp
        .script_refresh(move || fake_idp::provider::TokenReply::IdToken(token.clone()));
    assert_eq!(env.status(&browser, "/api/x").await, 200);
    // A token signed with a key the provider never published still fails, with no new read
    // (re-reads are rate-limited).
    let fetches = env.idp.jwks_fetches();
    let (_, status) = env
        .login(&keys().attacker, None, serde_json::json!({}))
        .await;
    assert_eq!(status, 401);
    assert_eq!(env.idp.jwks_fetches(), fetches);
}

/// The same rotation seen first by a back-channel logout token (no `kid` either): one re-read of
/// the key set, and the logout goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_without_kids_rotates_its_only_key_before_a_back_channel_logout() {
    use fake_idp::{jose, provider::CLIENT_ID};
    let keys = jose::keys();
    let env = scripted::Env::start(
        vec![keys.provider.jwk(None)],
        "[[routes]]\nprefix = \"/api\"\nupstream = \"{up}\"\n",
    )
    .await;
    let (browser, status) = env.login(&keys.provider, None, serde_json::json!({})).await;
    assert_eq!(status, 302);
    env.idp.set_jwks(vec![keys.rotated.jwk(None)]);
    let fetches = env.idp.jwks_fetches();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jose::jws_with_header(
        jose::Signer::Rs256(&keys.rotated),
        &serde_json::json!({"typ": "logout+jwt"}),
        &serde_json::json!({
            "iss": env.idp.issuer(), "aud": CLIENT_ID, "sub": "alice", "iat": now,
            "exp": now + 120, "jti": "jti-rotated-1",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        }),
    );
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("logout_token", &token)
        .finish();
    let r = Browser::new()
        .request(
            Method::POST,
            &env.gw.url("/bff/backchannel-logout"),
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
        .expect("POST backchannel-logout");
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(env.idp.jwks_fetches(), fetches + 1, "one re-read");
    assert_eq!(
        env.status(&browser, "/bff/session").await,
        401,
        "logged out"
    );
}
