//! Attack suite, OIDC: what the ID-token table in `id_token_validation.rs` does not cover.
//! The authorization response at the real provider (oidc-provider advertises RFC 9207): a
//! missing or foreign `iss`, duplicated `state`/`code`/`iss` parameters. And refresh against the
//! scriptable fake provider: a refreshed ID token naming another `sub`/`iss`, or otherwise
//! invalid, ends the session; the upstream never gets a token from such a refresh.

mod common;
mod fake_idp;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{COOKIE, Stack};
use fake_idp::{
    gateway::{Gateway, SESSION_COOKIE},
    jose::{self, Signer, keys},
    provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, IdpOptions, REFRESHED_ACCESS_TOKEN, TokenReply},
};
use http::Method;
use serde_json::{Value, json};
use testkit::{browser::Browser, upstream::RecordingUpstream};
use url::Url;

/// A query as name/value pairs.
type Pairs = Vec<(String, String)>;

/// Rewrites the callback URL's query: `f` gets the provider's pairs and returns the ones to send.
fn with_query(callback: &str, f: &dyn Fn(Pairs) -> Pairs) -> String {
    let mut url = Url::parse(callback).expect("callback URL");
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let new = f(pairs);
    url.query_pairs_mut().clear().extend_pairs(new);
    url.to_string()
}

fn without(name: &'static str) -> impl Fn(Vec<(String, String)>) -> Vec<(String, String)> {
    move |p| p.into_iter().filter(|(k, _)| k != name).collect()
}

fn replaced(
    name: &'static str,
    value: &'static str,
) -> impl Fn(Vec<(String, String)>) -> Vec<(String, String)> {
    move |p| {
        p.into_iter()
            .map(|(k, v)| {
                if k == name {
                    (k, value.to_owned())
                } else {
                    (k, v)
                }
            })
            .collect()
    }
}

fn doubled(
    name: &'static str,
    second: Option<&'static str>,
) -> impl Fn(Vec<(String, String)>) -> Vec<(String, String)> {
    move |mut p| {
        let v = p.iter().find(|(k, _)| k == name).expect("param").1.clone();
        p.push((name.to_owned(), second.map_or(v, str::to_owned)));
        p
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_response_iss_and_duplicated_parameters_are_refused() {
    let stack = Stack::start().await;
    let discovery = stack.idp.discovery().await.expect("discovery");
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        Value::Bool(true),
        "the provider advertises RFC 9207, so iss is required"
    );
    type Edit = Box<dyn Fn(Vec<(String, String)>) -> Vec<(String, String)>>;
    // (name, edit of the provider's callback query, expected status)
    let cases: Vec<(&str, Edit, u16)> = vec![
        ("iss missing", Box::new(without("iss")), 401),
        (
            "iss of another provider",
            Box::new(replaced("iss", "https://evil.example")),
            401,
        ),
        ("iss empty", Box::new(replaced("iss", "")), 401),
        (
            "iss with a trailing slash",
            Box::new(move |p: Vec<(String, String)>| {
                p.into_iter()
                    .map(|(k, v)| {
                        if k == "iss" {
                            (k, format!("{v}/"))
                        } else {
                            (k, v)
                        }
                    })
                    .collect()
            }),
            401,
        ),
        (
            "iss in upper case",
            Box::new(move |p: Vec<(String, String)>| {
                p.into_iter()
                    .map(|(k, v)| {
                        if k == "iss" {
                            (k, v.to_uppercase())
                        } else {
                            (k, v)
                        }
                    })
                    .collect()
            }),
            401,
        ),
        ("iss duplicated", Box::new(doubled("iss", None)), 400),
        (
            "iss duplicated, second foreign",
            Box::new(doubled("iss", Some("https://evil.example"))),
            400,
        ),
        ("state duplicated", Box::new(doubled("state", None)), 400),
        (
            "state duplicated, second foreign",
            Box::new(doubled("state", Some("x"))),
            400,
        ),
        ("code duplicated", Box::new(doubled("code", None)), 400),
        (
            "code duplicated, second foreign",
            Box::new(doubled("code", Some("injected"))),
            400,
        ),
        (
            "code duplicated, second empty",
            Box::new(doubled("code", Some(""))),
            400,
        ),
        (
            "error next to a code",
            Box::new(|mut p: Vec<(String, String)>| {
                p.push(("error".into(), "access_denied".into()));
                p
            }),
            0,
        ),
    ];
    for (name, edit, expected) in cases {
        let browser = Browser::new();
        let callback = browser
            .login_until_callback(
                &stack.url("/bff/login?returnTo=/home"),
                stack.idp.username(),
                stack.idp.password(),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let grants_before = stack.idp.stats().await.expect("stats").code_grants();
        // "error next to a code": the state is good, so the gateway follows the error and never
        // redeems the code.
        let target = with_query(&callback, &*edit);
        let r = browser
            .request_from(&stack.idp.issuer(), Method::GET, &target, &[], "")
            .await
            .expect(name);
        if expected == 0 {
            assert_eq!(r.status.as_u16(), 302, "{name}: {}", r.text());
            let loc = r.location().expect("location");
            assert!(
                loc.starts_with("/home") && loc.contains("error"),
                "{name}: {loc}"
            );
        } else {
            assert_eq!(r.status.as_u16(), expected, "{name}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("application/problem+json"));
        }
        assert!(
            r.set_cookie(COOKIE).is_none(),
            "{name}: a session was created"
        );
        assert_eq!(
            stack.idp.stats().await.expect("stats").code_grants(),
            grants_before,
            "{name}: the code was redeemed"
        );
        // Control for this very login: the untouched callback still works when the state was
        // not consumed (duplicates are refused before it is looked at), else it is burnt.
        let retry = browser
            .request_from(&stack.idp.issuer(), Method::GET, &callback, &[], "")
            .await
            .expect(name);
        let expect_retry = if expected == 400 { 302 } else { 401 };
        assert_eq!(
            retry.status.as_u16(),
            expect_retry,
            "{name}: retry {}",
            retry.text()
        );
    }
    // Control: an untouched callback logs in.
    let browser = Browser::new();
    stack.login(&browser).await;
    assert_eq!(stack.upstream.count(), 0);
    common::leak::assert_logs_clean(&stack.idp).await;
}

fn now() -> i64 {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(s).expect("time")
}

const KID: &str = "k1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The refresh is accepted and its access token used.
    Kept,
    /// 401 and the session is deleted.
    Ended,
    /// 503, nothing proxied.
    Refused,
}

use Outcome::{Ended, Kept, Refused};

fn claims(issuer: &str, patch: Value) -> Value {
    let mut c = json!({
        "iss": issuer,
        "sub": "alice",
        "aud": CLIENT_ID,
        "exp": now() + 300,
        "iat": now(),
    });
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn rs256(c: &Value) -> String {
    jose::jws(Signer::Rs256(&keys().provider), Some(KID), c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_naming_another_user_or_issuer_ends_the_session() {
    let idp = FakeIdp::start(vec![keys().provider.jwk(Some(KID))], IdpOptions::default()).await;
    let upstream = RecordingUpstream::start().await;
    let gw = Gateway::start_with(
        &idp,
        CLIENT_SECRET,
        &format!(
            "refresh_skew = \"60s\"\n\n[[routes]]\nprefix = \"/api\"\nupstream = \"{}\"\ntimeout = \"2s\"\n",
            upstream.url()
        ),
    )
    .await;
    let iss = idp.issuer().to_owned();
    // (name, the refreshed ID token (None: no ID token in the refresh response), outcome)
    let cases: Vec<(&str, Option<String>, Outcome)> = vec![
        ("no ID token (control)", None, Kept),
        (
            "same sub and iss (control)",
            Some(rs256(&claims(&iss, json!({})))),
            Kept,
        ),
        (
            "another sub",
            Some(rs256(&claims(&iss, json!({ "sub": "mallory" })))),
            Ended,
        ),
        (
            "sub differing only in case",
            Some(rs256(&claims(&iss, json!({ "sub": "Alice" })))),
            Ended,
        ),
        (
            "sub missing",
            Some(rs256(&claims(&iss, json!({ "sub": null })))),
            Ended,
        ),
        (
            "another iss",
            Some(rs256(&claims("https://evil.example", json!({})))),
            Ended,
        ),
        (
            "iss with a trailing slash",
            Some(rs256(&claims(&format!("{iss}/"), json!({})))),
            Ended,
        ),
        (
            "another aud",
            Some(rs256(&claims(&iss, json!({ "aud": "someone-else" })))),
            Ended,
        ),
        (
            "expired",
            Some(rs256(&claims(
                &iss,
                json!({ "exp": now() - 600, "iat": now() - 900 }),
            ))),
            Ended,
        ),
        (
            "alg none",
            Some(jose::jws(
                Signer::Unsigned("none"),
                None,
                &claims(&iss, json!({})),
            )),
            Ended,
        ),
        (
            "HS256 keyed with the public key",
            Some(jose::jws(
                Signer::Hs256(keys().provider.spki_pem().as_bytes()),
                Some(KID),
                &claims(&iss, json!({})),
            )),
            Ended,
        ),
        // An unknown key may be a rotation the JWKS does not show yet: refused as an outage (503),
        // the session kept for a retry, nothing proxied.
        (
            "signed by an unknown key",
            Some(jose::jws(
                Signer::Rs256(&keys().attacker),
                Some("k-unknown"),
                &claims(&iss, json!({})),
            )),
            Refused,
        ),
    ];
    for (name, id_token, outcome) in cases {
        // Log in with an access token that already needs refreshing.
        idp.set_expires_in(5);
        let browser = Browser::new();
        let auth = gw.start_login(&browser, "/x").await;
        idp.issue_code("c1", auth.grant());
        let issuer = iss.clone();
        idp.script(move |g| {
            TokenReply::IdToken(rs256(&claims(&issuer, json!({ "nonce": g.nonce }))))
        });
        let cb = gw.callback(&browser, &idp, "c1", &auth.state).await;
        assert_eq!(cb.status.as_u16(), 302, "{name}: login {}", cb.text());
        assert!(browser.cookie(SESSION_COOKIE).is_some(), "{name}");
        let reply = id_token.clone();
        idp.script_refresh(move || match &reply {
            Some(t) => TokenReply::IdToken(t.clone()),
            None => TokenReply::NoIdToken,
        });
        upstream.clear();
        let r = browser.get(&gw.url("/api/data")).await.expect(name);
        let session = browser.get(&gw.url("/bff/session")).await.expect(name);
        if outcome == Kept {
            assert_eq!(r.status.as_u16(), 200, "{name}: {}", r.text());
            let seen = upstream.last().expect("proxied");
            assert_eq!(
                seen.header("authorization"),
                Some(format!("Bearer {REFRESHED_ACCESS_TOKEN}").as_str()),
                "{name}"
            );
            assert_eq!(session.status.as_u16(), 200, "{name}");
        } else if outcome == Refused {
            assert_eq!(r.status.as_u16(), 503, "{name}: {}", r.text());
            assert_eq!(
                upstream.count(),
                0,
                "{name}: proxied with a refused refresh"
            );
        } else {
            assert_eq!(r.status.as_u16(), 401, "{name}: {}", r.text());
            assert_eq!(
                upstream.count(),
                0,
                "{name}: proxied with a refused refresh"
            );
            assert_eq!(
                session.status.as_u16(),
                401,
                "{name}: the session must be over"
            );
        }
    }
}

/// Discovery §4.3 (the OpenID RP test `rp-discovery-issuer-not-matching-config`): a document
/// whose `issuer` is not exactly the configured one is another provider's (or a mix-up), so the
/// gateway never loads it: no keys, no endpoints, logins refused with 503 until it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovery_document_naming_another_issuer_is_never_loaded() {
    // (case, the document's `issuer` patched, the configured issuer with a trailing slash)
    for (name, patched, slash) in [
        ("the document names another issuer", true, false),
        (
            "configured with a trailing slash the document lacks",
            false,
            true,
        ),
    ] {
        let idp = FakeIdp::start(
            vec![keys().provider.jwk(Some(KID))],
            IdpOptions {
                discovery_patch: patched.then(|| json!({ "issuer": "https://evil.example" })),
                ..IdpOptions::default()
            },
        )
        .await;
        let issuer = format!("{}{}", idp.issuer(), if slash { "/" } else { "" });
        let keys_file = common::running::write_secret(
            "keys",
            &portcullis::crypto::keyring::KeyRing::generate_encoded().expect("rng"),
        );
        let secret_file = common::running::write_secret("secret", CLIENT_SECRET);
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_origin = \"http://localhost:1\"\n\n\
             [session]\nkeys_file = \"{keys_file}\"\n\n\
             [oidc]\nissuer = \"{issuer}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{secret_file}\"\n",
        );
        let config = portcullis::config::Config::from_toml(&toml).expect("config");
        let state = portcullis::AppState::new(config).expect("state");
        let err = state
            .oidc
            .discover()
            .await
            .expect_err(&format!("{name}: a document for another issuer was loaded"));
        assert!(err.to_string().contains("names issuer"), "{name}: {err}");
        assert!(!state.oidc.is_ready(), "{name}");
        assert_eq!(idp.jwks_fetches(), 0, "{name}: not even its keys are read");
    }
}
