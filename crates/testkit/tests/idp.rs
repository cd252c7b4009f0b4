//! The IdP fixture, driven as a relying party would: discovery, the
//! authorization code flow with PKCE through the real login form, token
//! exchange, refresh rotation, revocation, logout.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use testkit::browser::Browser;
use testkit::free_port;
use testkit::idp::{Idp, IdpOptions};
use testkit::upstream::RecordingUpstream;
use url::Url;

struct Pkce {
    verifier: String,
    challenge: String,
}

fn pkce() -> Pkce {
    let rng = ring::rand::SystemRandom::new();
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&rng, &mut bytes).expect("random bytes");
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    Pkce {
        verifier,
        challenge,
    }
}

fn authorization_url(
    idp: &Idp,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    challenge: Option<&str>,
) -> String {
    let mut url = Url::parse(&format!("{}/auth", idp.issuer())).expect("issuer URL");
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", idp.client_id())
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", "openid profile email")
            .append_pair("state", state)
            .append_pair("nonce", nonce);
        if let Some(c) = challenge {
            q.append_pair("code_challenge", c)
                .append_pair("code_challenge_method", "S256");
        }
    }
    url.to_string()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn jwt_payload(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON payload")
}

async fn token_request(idp: &Idp, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer()))
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .form(form)
        .send()
        .await
        .expect("token request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("token response JSON"))
}

/// Runs the code flow through the login form and exchanges the code.
async fn login_and_exchange(idp: &Idp, redirect_uri: &str) -> Value {
    let browser = Browser::new();
    let p = pkce();
    let auth = authorization_url(idp, redirect_uri, "st-1", "n-1", Some(&p.challenge));
    let callback = browser
        .login_until_callback(&auth, idp.username(), idp.password())
        .await
        .expect("login until callback");
    let code = query_param(&callback, "code").expect("code in callback");
    let (status, body) = token_request(
        idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "token response: {body}");
    body
}

#[tokio::test]
async fn discovery_lists_pkce_revocation_and_end_session() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let issuer = idp.issuer();
    assert!(issuer.starts_with("http://127.0.0.1:"), "{issuer}");
    assert_ne!(idp.port(), 0);

    let d = idp.discovery().await.expect("discovery");
    assert_eq!(d["issuer"], Value::String(issuer.clone()));
    assert_eq!(
        d["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        d["revocation_endpoint"],
        format!("{issuer}/token/revocation")
    );
    assert_eq!(
        d["introspection_endpoint"],
        format!("{issuer}/token/introspection")
    );
    assert_eq!(d["end_session_endpoint"], format!("{issuer}/session/end"));
    assert_eq!(d["token_endpoint"], format!("{issuer}/token"));
    assert_eq!(d["backchannel_logout_supported"], true);
    assert_eq!(d["backchannel_logout_session_supported"], true);
    let scopes = d["scopes_supported"].as_array().expect("scopes");
    for s in ["openid", "offline_access", "profile", "email"] {
        assert!(scopes.contains(&Value::from(s)), "scope {s} in {scopes:?}");
    }

    // The JWKS holds the ephemeral RS256 key with a kid.
    let jwks: Value = reqwest::get(d["jwks_uri"].as_str().expect("jwks_uri"))
        .await
        .expect("GET jwks")
        .json()
        .await
        .expect("jwks JSON");
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(key.get("d").is_none(), "private part must not be published");
}

#[tokio::test]
async fn code_flow_through_login_form_returns_code() {
    // A redirect URI on a loopback port nobody listens on: the flow stops at
    // the IdP's redirect, which is never requested.
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let browser = Browser::new();
    let p = pkce();
    let auth = authorization_url(
        &idp,
        &redirect,
        "state-xyz",
        "nonce-abc",
        Some(&p.challenge),
    );

    // Step by step first: the authorization request leads to the login form.
    let chain = browser.follow(&auth, 5).await.expect("follow to the form");
    let form_page = chain.last().expect("a response");
    assert_eq!(form_page.status, 200, "{}", form_page.text());
    let html = form_page.text();
    assert!(html.contains(r#"name="login""#) && html.contains(r#"name="password""#));
    assert!(form_page.url.path().starts_with("/interaction/"));
    // oidc-provider's interaction cookies are path-scoped and signed.
    assert!(browser.cookie("_interaction").is_some());

    // Then the helper does the whole flow with a fresh browser.
    let browser = Browser::new();
    let callback = browser
        .login_until_callback(&auth, "alice", "wonderland")
        .await
        .expect("login");
    assert!(callback.starts_with(&redirect), "{callback}");
    let code = query_param(&callback, "code").expect("code");
    assert!(!code.is_empty());
    assert_eq!(
        query_param(&callback, "state").as_deref(),
        Some("state-xyz")
    );
    assert_eq!(query_param(&callback, "iss"), Some(idp.issuer()));

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.logins, 1);
    assert_eq!(stats.failed_logins, 0);
    assert_eq!(stats.code_grants(), 0);

    // The code is redeemable once, with the verifier.
    let (status, body) = token_request(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body["access_token"].is_string());
    assert!(
        body["refresh_token"].is_string(),
        "refresh token without offline_access: {body}"
    );

    let claims = jwt_payload(body["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["email"], "alice@example.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["nonce"], "nonce-abc");
    assert_eq!(claims["aud"], idp.client_id());
    assert_eq!(claims["iss"], Value::String(idp.issuer()));
    assert!(
        claims.get("sid").is_none(),
        "no sid without a backchannel_logout_uri: {claims}"
    );

    let (status, body) = token_request(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.code_grants(), 2);
    assert_eq!(stats.token_errors.get("invalid_grant"), Some(&1));

    // A second authorization while the IdP session lives: no form, straight
    // back to the callback.
    let p2 = pkce();
    let auth2 = authorization_url(&idp, &redirect, "s2", "n2", Some(&p2.challenge));
    let again = browser
        .login_until_callback(&auth2, "alice", "wonderland")
        .await
        .expect("silent re-authorization");
    assert!(query_param(&again, "code").is_some());
    assert_eq!(idp.stats().await.expect("stats").logins, 1);
}

#[tokio::test]
async fn pkce_is_required() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let auth = authorization_url(&idp, &redirect, "s", "n", None);
    let resp = Browser::new().get(&auth).await.expect("GET /auth");
    // The error goes back to the (registered) redirect URI.
    let location = resp.location().expect("redirect with the error");
    assert!(location.starts_with(&redirect), "{location}");
    assert_eq!(
        query_param(&location, "error").as_deref(),
        Some("invalid_request")
    );
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let p = pkce();
    let auth = authorization_url(&idp, &redirect, "s", "n", Some(&p.challenge));

    let err = Browser::new()
        .login_until_callback(&auth, "alice", "not-the-password")
        .await
        .expect_err("wrong password must not log in");
    assert!(
        err.to_string().contains("rejected the credentials"),
        "{err:#}"
    );

    // By hand: the form comes back with 401 and an error, no redirect.
    let browser = Browser::new();
    let chain = browser.follow(&auth, 5).await.expect("to the form");
    let page = chain.last().expect("form page");
    let action = page
        .url
        .join(&format!("{}/login", page.url.path()))
        .expect("action URL");
    let resp = browser
        .post_form(action.as_str(), &[("login", "alice"), ("password", "nope")])
        .await
        .expect("POST login");
    assert_eq!(resp.status, 401);
    assert!(resp.location().is_none());
    assert!(resp.text().contains("Invalid username or password"));
    // Unknown user, right password: same answer.
    let resp = browser
        .post_form(
            action.as_str(),
            &[("login", "mallory"), ("password", "wonderland")],
        )
        .await
        .expect("POST login");
    assert_eq!(resp.status, 401);

    // The right password still works in the same interaction.
    let resp = browser
        .post_form(
            action.as_str(),
            &[("login", "alice"), ("password", "wonderland")],
        )
        .await
        .expect("POST login");
    assert_eq!(resp.status, 303, "{}", resp.text());

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.failed_logins, 3);
    assert_eq!(stats.logins, 1);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_is_detected() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions {
        access_token_ttl_secs: 5,
        ..IdpOptions::new(&redirect)
    })
    .await
    .expect("start IdP");
    let tokens = login_and_exchange(&idp, &redirect).await;
    assert_eq!(tokens["expires_in"], 5);
    let rt1 = tokens["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();

    idp.reset_stats().await.expect("reset");
    let (status, refreshed) = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    let rt2 = refreshed["refresh_token"]
        .as_str()
        .expect("rotated")
        .to_owned();
    assert_ne!(rt1, rt2, "rotation issues a new refresh token");
    assert!(refreshed["id_token"].is_string());
    assert_eq!(refreshed["expires_in"], 5);

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.refresh_grants(), 1);
    assert_eq!(stats.code_grants(), 0);
    assert_eq!(stats.refresh_invalid_grant, 0);

    // Reusing the rotated-out token fails, and revokes the whole grant.
    let (status, body) = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt1)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt2)],
    )
    .await;
    assert_eq!(status, 400, "the new token died with the grant: {body}");

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.refresh_grants(), 3);
    assert_eq!(stats.refresh_invalid_grant, 2);
    assert_eq!(stats.grants_revoked, 1);
}

#[tokio::test]
async fn revocation_and_introspection() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let tokens = login_and_exchange(&idp, &redirect).await;
    let at = tokens["access_token"].as_str().expect("access_token");
    let rt = tokens["refresh_token"].as_str().expect("refresh_token");
    let client = reqwest::Client::new();

    let introspect = |token: String| {
        let client = client.clone();
        let url = format!("{}/token/introspection", idp.issuer());
        let (id, secret) = (idp.client_id().to_owned(), idp.client_secret().to_owned());
        async move {
            let v: Value = client
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .expect("introspection")
                .json()
                .await
                .expect("JSON");
            v
        }
    };
    let info = introspect(at.to_owned()).await;
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice");

    let resp = client
        .post(format!("{}/token/revocation", idp.issuer()))
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .form(&[("token", rt), ("token_type_hint", "refresh_token")])
        .send()
        .await
        .expect("revocation");
    assert_eq!(resp.status(), 200);

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.revocations, 1);
    assert_eq!(stats.revoked_refresh_tokens, 1);
    assert_eq!(stats.grants_revoked, 1);
    assert_eq!(stats.introspections, 1);

    // Revoking the refresh token revoked the grant: the access token too.
    assert_eq!(introspect(at.to_owned()).await["active"], false);
    let (status, _) = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(idp.stats().await.expect("stats").refresh_invalid_grant, 1);
}

#[tokio::test]
async fn logout_with_backchannel_and_sid() {
    let rp = RecordingUpstream::start().await;
    let redirect = format!("{}/bff/callback", rp.url());
    let post_logout = format!("{}/logged-out", rp.url());
    let idp = Idp::start(IdpOptions {
        post_logout_redirect_uris: vec![post_logout.clone()],
        backchannel_logout_uri: Some(format!("{}/bff/backchannel-logout", rp.url())),
        ..IdpOptions::new(&redirect)
    })
    .await
    .expect("start IdP");

    let browser = Browser::new();
    let p = pkce();
    let auth = authorization_url(&idp, &redirect, "s", "n", Some(&p.challenge));
    let callback = browser
        .login_until_callback(&auth, "alice", "wonderland")
        .await
        .expect("login");
    let code = query_param(&callback, "code").expect("code");
    let (status, tokens) = token_request(
        &idp,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect),
            ("code_verifier", &p.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
    let sid = claims["sid"]
        .as_str()
        .unwrap_or_else(|| panic!("sid in the ID token: {claims}"))
        .to_owned();

    // Test-only trigger: the IdP posts a logout token for alice's session.
    let report = idp
        .backchannel_logout(None, None)
        .await
        .expect("backchannel logout");
    assert_eq!(report["results"][0]["sid"], Value::String(sid.clone()));
    let req = rp.last().expect("logout token delivered");
    assert_eq!(req.method, "POST");
    assert_eq!(req.path(), "/bff/backchannel-logout");
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let token = url::form_urlencoded::parse(&req.body)
        .find(|(k, _)| k == "logout_token")
        .map(|(_, v)| v.into_owned())
        .expect("logout_token");
    let lt = jwt_payload(&token);
    assert_eq!(lt["sid"], Value::String(sid.clone()));
    assert_eq!(lt["sub"], "alice");
    assert_eq!(lt["aud"], idp.client_id());
    assert!(lt["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(lt.get("nonce").is_none());

    // RP-initiated logout with client_id + post_logout_redirect_uri (no
    // id_token_hint): the IdP asks for confirmation, then notifies the RP on
    // the back channel and redirects to the post-logout URI.
    rp.clear();
    let mut end = Url::parse(&format!("{}/session/end", idp.issuer())).expect("URL");
    end.query_pairs_mut()
        .append_pair("client_id", idp.client_id())
        .append_pair("post_logout_redirect_uri", &post_logout)
        .append_pair("state", "bye");
    let target = browser
        .logout_at_idp(end.as_str())
        .await
        .expect("logout at the IdP");
    let target = target.expect("redirect to the post-logout URI");
    assert!(target.starts_with(&post_logout), "{target}");
    assert_eq!(query_param(&target, "state").as_deref(), Some("bye"));
    rp.wait_for_count(1, Duration::from_secs(5))
        .await
        .expect("back-channel logout during end_session");
    assert_eq!(
        rp.last().expect("request").path(),
        "/bff/backchannel-logout"
    );

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.end_sessions, 1);
    assert_eq!(stats.backchannel_logouts, 2);
    assert_eq!(stats.backchannel_logout_errors, 0);

    // The IdP session is gone: the next authorization shows the form again.
    let p2 = pkce();
    let auth2 = authorization_url(&idp, &redirect, "s2", "n2", Some(&p2.challenge));
    let chain = browser.follow(&auth2, 5).await.expect("follow");
    assert!(
        chain
            .last()
            .expect("page")
            .text()
            .contains(r#"name="password""#)
    );
}

#[tokio::test]
async fn idp_process_dies_with_its_handle() {
    let redirect = format!("http://127.0.0.1:{}/cb", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let port = idp.port();
    let pid = idp.pid().expect("pid");
    drop(idp);
    let gone = async {
        loop {
            let alive = std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
                && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| !s.contains(") Z "))
                    .unwrap_or(false);
            if !alive
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), gone)
        .await
        .expect("the IdP process exits when its handle is dropped");
}

#[tokio::test]
async fn start_fails_cleanly_without_redirect_uris() {
    let err = Idp::start(IdpOptions::default())
        .await
        .expect_err("redirect URIs are required");
    assert!(err.to_string().contains("redirect URI"), "{err:#}");
}

#[tokio::test]
async fn password_grant_issues_the_code_flow_tokens_when_enabled() {
    let rp = RecordingUpstream::start().await;
    let redirect = format!("{}/bff/callback", rp.url());
    let idp = Idp::start(IdpOptions {
        password_grant: true,
        backchannel_logout_uri: Some(format!("{}/bff/backchannel-logout", rp.url())),
        ..IdpOptions::new(&redirect)
    })
    .await
    .expect("start IdP");
    let d = idp.discovery().await.expect("discovery");
    assert!(
        d["grant_types_supported"]
            .as_array()
            .expect("grant_types_supported")
            .contains(&Value::from("password")),
        "{d}"
    );

    let (status, tokens) = token_request(
        &idp,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
            ("scope", "openid profile email"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "openid profile email");
    let at = tokens["access_token"].as_str().expect("access_token");
    let rt = tokens["refresh_token"].as_str().expect("refresh_token");
    let claims = jwt_payload(tokens["id_token"].as_str().expect("id_token"));
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["iss"], Value::String(idp.issuer()));
    assert_eq!(claims["aud"], idp.client_id());
    assert_eq!(claims["name"], "Alice Liddell");
    assert_eq!(claims["email"], "alice@example.test");
    assert!(claims.get("nonce").is_none(), "{claims}");
    let sid = claims["sid"]
        .as_str()
        .expect("sid for a back-channel client");

    // The access token is a real one (introspection), the refresh token rotates.
    let info: Value = reqwest::Client::new()
        .post(format!("{}/token/introspection", idp.issuer()))
        .basic_auth(idp.client_id(), Some(idp.client_secret()))
        .form(&[("token", at)])
        .send()
        .await
        .expect("introspection")
        .json()
        .await
        .expect("JSON");
    assert_eq!(info["active"], true, "{info}");
    assert_eq!(info["sub"], "alice");
    let (status, refreshed) = token_request(
        &idp,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["refresh_token"].as_str(), Some(rt));
    assert_eq!(
        jwt_payload(refreshed["id_token"].as_str().expect("id_token"))["sub"],
        "alice"
    );

    // Unknown user and wrong password: the same error, byte for byte.
    let (s1, wrong_password) = token_request(
        &idp,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "not-wonderland"),
        ],
    )
    .await;
    let (s2, unknown_user) = token_request(
        &idp,
        &[
            ("grant_type", "password"),
            ("username", "mallory"),
            ("password", "wonderland"),
        ],
    )
    .await;
    assert_eq!((s1, s2), (400, 400));
    assert_eq!(wrong_password["error"], "invalid_grant");
    assert_eq!(wrong_password, unknown_user);
    let (status, body) =
        token_request(&idp, &[("grant_type", "password"), ("username", "alice")]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");

    // The password-grant "session" is reachable by back-channel logout.
    let report = idp
        .backchannel_logout(None, None)
        .await
        .expect("backchannel logout");
    assert_eq!(report["results"][0]["sid"], Value::String(sid.to_owned()));

    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.password_grant_requests(), 4);
    assert_eq!(stats.password_grants, 1);
    assert_eq!(stats.failed_password_grants, 2);
    assert_eq!(stats.token_errors.get("invalid_grant"), Some(&2));
    assert_eq!(stats.token_errors.get("invalid_request"), Some(&1));
    assert_eq!(stats.refresh_grants(), 1);
    assert_eq!(stats.all_token_requests(), 5);
}

#[tokio::test]
async fn password_grant_is_unsupported_by_default() {
    let redirect = format!("http://127.0.0.1:{}/bff/callback", free_port());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");
    let d = idp.discovery().await.expect("discovery");
    assert!(
        !d["grant_types_supported"]
            .as_array()
            .expect("grant_types_supported")
            .contains(&Value::from("password")),
        "{d}"
    );
    let (status, body) = token_request(
        &idp,
        &[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "wonderland"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "unsupported_grant_type");
    let stats = idp.stats().await.expect("stats");
    assert_eq!(stats.password_grants, 0);
}
