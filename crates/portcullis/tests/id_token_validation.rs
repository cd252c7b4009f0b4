//! ID token validation (OIDC Core 3.1.3.7) end to end: the gateway logs in against a scriptable
//! fake OpenID Provider whose token endpoint returns a crafted ID token, one table row per way a
//! token can be wrong. Only what a real provider would issue may create a session; everything
//! else is the same bare "login failed" problem, no session cookie, and the reason only in the
//! log (checked, so each row fails for the reason it is about).

mod common;
mod fake_idp;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use fake_idp::{
    gateway::{AuthorizationRequest, BINDING_COOKIE, Gateway, SESSION_COOKIE, logged_problems},
    jose::{self, Signer, ec_keys, keys},
    provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, Grant, IdpOptions, TokenReply},
};
use http::StatusCode;
use serde_json::{Value, json};
use testkit::browser::{Browser, Response};

const CODE: &str = "c1";
const RETURN_TO: &str = "/x";
const KID: &str = "k1";
const SECOND_KID: &str = "k2";
const ROTATED_KID: &str = "k-new";
const EC_KID: &str = "ec1";

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    i64::try_from(secs).expect("time fits")
}

/// What the token endpoint knows when it mints an ID token.
struct Ctx {
    issuer: String,
    nonce: String,
    now: i64,
}

impl Ctx {
    /// The claims of a valid ID token for this login.
    fn claims(&self) -> Value {
        json!({
            "iss": self.issuer,
            "sub": "alice",
            "aud": CLIENT_ID,
            "exp": self.now + 300,
            "iat": self.now,
            "nonce": self.nonce,
            "name": "Alice",
            "email": "alice@example.test",
        })
    }

    /// The valid claims with `patch` merged in; a `null` removes the claim.
    fn claims_with(&self, patch: Value) -> Value {
        let mut claims = self.claims();
        let map = claims.as_object_mut().expect("object");
        for (k, v) in patch.as_object().expect("patch is an object") {
            if v.is_null() {
                map.remove(k);
            } else {
                map.insert(k.clone(), v.clone());
            }
        }
        claims
    }
}

fn id_token(signer: Signer<'_>, kid: Option<&str>, claims: &Value) -> TokenReply {
    TokenReply::IdToken(jose::jws(signer, kid, claims))
}

/// Signed like the provider does: RS256 with its current key, `kid` set.
fn signed(claims: &Value) -> TokenReply {
    id_token(Signer::Rs256(&keys().provider), Some(KID), claims)
}

fn provider_jwks() -> Vec<Value> {
    vec![keys().provider.jwk(Some(KID))]
}

fn two_key_jwks() -> Vec<Value> {
    vec![
        keys().provider.jwk(Some(KID)),
        keys().second.jwk(Some(SECOND_KID)),
    ]
}

/// The RSA key and an ES256 key, as a provider that signs with ES256 publishes them.
fn ec_jwks() -> Vec<Value> {
    vec![
        keys().provider.jwk(Some(KID)),
        ec_keys().provider.jwk(Some(EC_KID)),
    ]
}

fn rotated_jwks() -> Vec<Value> {
    vec![
        keys().provider.jwk(Some(KID)),
        keys().rotated.jwk(Some(ROTATED_KID)),
    ]
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// 302 to `returnTo` with a working session.
    Session,
    /// 401 login-failed; the gateway logged a reason containing this.
    LoginFailed(&'static str),
    /// 503 unavailable; the gateway logged an error containing this.
    Unavailable(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Normal,
    /// The provider advertises a token endpoint nobody listens on.
    DeadTokenEndpoint,
    /// The code was issued for another PKCE challenge (an injected code).
    ForeignCodeChallenge,
    /// The gateway is configured with a client secret the provider does not know.
    WrongClientSecret,
    /// The gateway pins `oidc.id_token_signing_alg = "RS256"`.
    PinnedRs256,
}

struct Case {
    name: &'static str,
    reply: fn(&Ctx) -> TokenReply,
    expect: Expect,
    jwks: fn() -> Vec<Value>,
    /// The provider's key set after the gateway loaded the first one.
    rotate_to: Option<fn() -> Vec<Value>>,
    setup: Setup,
}

fn case(name: &'static str, expect: Expect, reply: fn(&Ctx) -> TokenReply) -> Case {
    Case {
        name,
        reply,
        expect,
        jwks: provider_jwks,
        rotate_to: None,
        setup: Setup::Normal,
    }
}

impl Case {
    fn jwks(self, jwks: fn() -> Vec<Value>) -> Self {
        Case { jwks, ..self }
    }
    fn rotate_to(self, jwks: fn() -> Vec<Value>) -> Self {
        Case {
            rotate_to: Some(jwks),
            ..self
        }
    }
    fn setup(self, setup: Setup) -> Self {
        Case { setup, ..self }
    }
}

const SIGNATURE: &str = "Signature verification failed";
const UNKNOWN_KEY: &str = "key not in the provider's JWKS";
/// An ID token that does not even parse (a required claim missing, an unknown `alg`, not three
/// parts) is a bad token like any other: the uniform 401, not a provider outage.
const UNPARSABLE_ID_TOKEN: Expect = Expect::LoginFailed("malformed");

fn cases() -> Vec<Case> {
    use Expect::{LoginFailed, Session, Unavailable};
    vec![
        // Controls: what a real provider issues must work, or the rejections below prove nothing.
        case("valid RS256 token", Session, |c| signed(&c.claims())),
        case("aud as a one-element array", Session, |c| {
            signed(&c.claims_with(json!({ "aud": [CLIENT_ID] })))
        }),
        case("azp equal to the client", Session, |c| {
            signed(&c.claims_with(json!({ "azp": CLIENT_ID })))
        }),
        case("iat 5 min ago", Session, |c| {
            signed(&c.claims_with(json!({ "iat": c.now - 300 })))
        }),
        case("iat 30 s ahead (clock skew)", Session, |c| {
            signed(&c.claims_with(json!({ "iat": c.now + 30 })))
        }),
        case("valid ES256 token", Session, |c| {
            id_token(
                Signer::Es256(&ec_keys().provider),
                Some(EC_KID),
                &c.claims(),
            )
        })
        .jwks(ec_jwks),
        case(
            "ES256 token, RS256 pinned (oidc.id_token_signing_alg)",
            LoginFailed("algorithm `ES256` is not one of: RS256"),
            |c| {
                id_token(
                    Signer::Es256(&ec_keys().provider),
                    Some(EC_KID),
                    &c.claims(),
                )
            },
        )
        .jwks(ec_jwks)
        .setup(Setup::PinnedRs256),
        case("RS256 token, RS256 pinned", Session, |c| {
            signed(&c.claims())
        })
        .setup(Setup::PinnedRs256),
        case("no kid, one published key", Session, |c| {
            id_token(Signer::Rs256(&keys().provider), None, &c.claims())
        }),
        case("kid published only after JWKS rotation", Session, |c| {
            id_token(
                Signer::Rs256(&keys().rotated),
                Some(ROTATED_KID),
                &c.claims(),
            )
        })
        .rotate_to(rotated_jwks),
        // Signature and algorithm.
        case(
            "signed by another key with the same kid",
            LoginFailed(SIGNATURE),
            |c| id_token(Signer::Rs256(&keys().attacker), Some(KID), &c.claims()),
        ),
        case(
            "payload changed after signing",
            LoginFailed(SIGNATURE),
            |c| {
                let TokenReply::IdToken(t) = signed(&c.claims()) else {
                    unreachable!()
                };
                TokenReply::IdToken(jose::with_payload(
                    &t,
                    &c.claims_with(json!({ "sub": "mallory" })),
                ))
            },
        ),
        case("alg none, no signature", LoginFailed(SIGNATURE), |c| {
            id_token(Signer::Unsigned("none"), None, &c.claims())
        }),
        case(
            "alg none with the provider's kid",
            LoginFailed(SIGNATURE),
            |c| id_token(Signer::Unsigned("none"), Some(KID), &c.claims()),
        ),
        case("alg None (unknown alg name)", UNPARSABLE_ID_TOKEN, |c| {
            id_token(Signer::Unsigned("None"), Some(KID), &c.claims())
        }),
        case(
            "HS256 keyed with the public key PEM",
            LoginFailed(SIGNATURE),
            |c| {
                id_token(
                    Signer::Hs256(keys().provider.spki_pem().as_bytes()),
                    Some(KID),
                    &c.claims(),
                )
            },
        ),
        case(
            "HS256 keyed with the public key SPKI DER",
            LoginFailed(SIGNATURE),
            |c| {
                id_token(
                    Signer::Hs256(&keys().provider.spki_der()),
                    Some(KID),
                    &c.claims(),
                )
            },
        ),
        case(
            "HS256 keyed with the public key PKCS#1 DER",
            LoginFailed(SIGNATURE),
            |c| {
                id_token(
                    Signer::Hs256(&keys().provider.pkcs1_der()),
                    Some(KID),
                    &c.claims(),
                )
            },
        ),
        case(
            "HS256 keyed with the client secret",
            LoginFailed(SIGNATURE),
            |c| id_token(Signer::Hs256(CLIENT_SECRET.as_bytes()), None, &c.claims()),
        ),
        case(
            "ES256 by another EC key under the provider's EC kid",
            LoginFailed(SIGNATURE),
            |c| {
                id_token(
                    Signer::Es256(&ec_keys().attacker),
                    Some(EC_KID),
                    &c.claims(),
                )
            },
        )
        .jwks(ec_jwks),
        case(
            "ES256 payload changed after signing",
            LoginFailed(SIGNATURE),
            |c| {
                let t = jose::jws(
                    Signer::Es256(&ec_keys().provider),
                    Some(EC_KID),
                    &c.claims(),
                );
                TokenReply::IdToken(jose::with_payload(
                    &t,
                    &c.claims_with(json!({ "sub": "mallory" })),
                ))
            },
        )
        .jwks(ec_jwks),
        case(
            "ES256 by an unknown key, provider's kid",
            LoginFailed(UNKNOWN_KEY),
            |c| id_token(Signer::Es256Throwaway, Some(KID), &c.claims()),
        ),
        case(
            "unknown kid, not in the JWKS even after re-fetch",
            LoginFailed(UNKNOWN_KEY),
            |c| id_token(Signer::Rs256(&keys().attacker), Some("k-evil"), &c.claims()),
        ),
        case("no kid, two published keys", LoginFailed(SIGNATURE), |c| {
            id_token(Signer::Rs256(&keys().provider), None, &c.claims())
        })
        .jwks(two_key_jwks),
        case(
            "typ at+jwt (an access token)",
            LoginFailed("unsupported JWT type"),
            |c| {
                let header = json!({ "kid": KID, "typ": "at+jwt" });
                TokenReply::IdToken(jose::jws_with_header(
                    Signer::Rs256(&keys().provider),
                    &header,
                    &c.claims(),
                ))
            },
        ),
        case(
            "crit header member",
            LoginFailed("critical JWT header"),
            |c| {
                let header = json!({ "kid": KID, "crit": ["exp"] });
                TokenReply::IdToken(jose::jws_with_header(
                    Signer::Rs256(&keys().provider),
                    &header,
                    &c.claims(),
                ))
            },
        ),
        // Claims.
        case("wrong iss", LoginFailed("Invalid issuer"), |c| {
            signed(&c.claims_with(json!({ "iss": "https://evil.example" })))
        }),
        case(
            "iss with a trailing slash",
            LoginFailed("Invalid issuer"),
            |c| signed(&c.claims_with(json!({ "iss": format!("{}/", c.issuer) }))),
        ),
        case("missing iss", UNPARSABLE_ID_TOKEN, |c| {
            signed(&c.claims_with(json!({ "iss": null })))
        }),
        case("wrong aud", LoginFailed("Invalid audiences"), |c| {
            signed(&c.claims_with(json!({ "aud": "other-client" })))
        }),
        case("missing aud", LoginFailed("Invalid audiences"), |c| {
            signed(&c.claims_with(json!({ "aud": null })))
        }),
        case(
            "aud array with an untrusted extra audience",
            LoginFailed("Invalid audiences"),
            |c| signed(&c.claims_with(json!({ "aud": [CLIENT_ID, "other-client"] }))),
        ),
        case(
            "aud array with client, azp of another client",
            LoginFailed("Invalid audiences"),
            |c| {
                signed(&c.claims_with(
                    json!({ "aud": [CLIENT_ID, "other-client"], "azp": "other-client" }),
                ))
            },
        ),
        case(
            "aud array with client, azp = client, extra aud",
            LoginFailed("Invalid audiences"),
            |c| {
                signed(
                    &c.claims_with(json!({ "aud": [CLIENT_ID, "other-client"], "azp": CLIENT_ID })),
                )
            },
        ),
        case(
            "aud = client but azp of another client",
            LoginFailed("azp is not this client"),
            |c| signed(&c.claims_with(json!({ "azp": "other-client" }))),
        ),
        case("expired exp", LoginFailed("Expired"), |c| {
            signed(&c.claims_with(json!({ "exp": c.now - 120, "iat": c.now - 300 })))
        }),
        case(
            "iat 10 min in the future",
            LoginFailed("issued in the future"),
            |c| signed(&c.claims_with(json!({ "iat": c.now + 600, "exp": c.now + 900 }))),
        ),
        case(
            "iat 11 min ago (login token too old)",
            LoginFailed("issued too long ago"),
            |c| signed(&c.claims_with(json!({ "iat": c.now - 660 }))),
        ),
        case("missing sub", UNPARSABLE_ID_TOKEN, |c| {
            signed(&c.claims_with(json!({ "sub": null })))
        }),
        case("missing iat", UNPARSABLE_ID_TOKEN, |c| {
            signed(&c.claims_with(json!({ "iat": null })))
        }),
        case("missing exp", UNPARSABLE_ID_TOKEN, |c| {
            signed(&c.claims_with(json!({ "exp": null })))
        }),
        case("wrong nonce", LoginFailed("Invalid nonce"), |c| {
            signed(&c.claims_with(json!({ "nonce": "another-login" })))
        }),
        case("missing nonce", LoginFailed("Invalid nonce"), |c| {
            signed(&c.claims_with(json!({ "nonce": null })))
        }),
        case("not a JWT", UNPARSABLE_ID_TOKEN, |_| {
            TokenReply::IdToken("not.a-jwt".into())
        }),
        // The token endpoint itself.
        case(
            "token response without id_token",
            LoginFailed("no id_token"),
            |_| TokenReply::NoIdToken,
        ),
        case(
            "token endpoint: 400 invalid_grant",
            LoginFailed("invalid_grant"),
            |_| TokenReply::OAuthError("invalid_grant"),
        ),
        case(
            "token endpoint: 500 with an HTML page",
            Unavailable("provider unavailable"),
            |_| {
                TokenReply::Raw(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/html",
                    "<h1>oops</h1>",
                )
            },
        ),
        case(
            "token endpoint: 500 with an OAuth error body",
            Unavailable("server_error"),
            |_| {
                TokenReply::Raw(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    r#"{"error":"server_error"}"#,
                )
            },
        ),
        case(
            "token endpoint unreachable",
            Unavailable("provider unavailable"),
            |c| signed(&c.claims()),
        )
        .setup(Setup::DeadTokenEndpoint),
        case(
            "code issued for another PKCE challenge",
            LoginFailed("invalid_grant"),
            |c| signed(&c.claims()),
        )
        .setup(Setup::ForeignCodeChallenge),
        case(
            "gateway sends a wrong client secret",
            LoginFailed("invalid_client"),
            |c| signed(&c.claims()),
        )
        .setup(Setup::WrongClientSecret),
    ]
}

/// A provider and a gateway for one login.
struct Env {
    idp: FakeIdp,
    gw: Gateway,
}

impl Env {
    async fn start(jwks: Vec<Value>, setup: Setup) -> Env {
        let opts = IdpOptions {
            dead_token_endpoint: setup == Setup::DeadTokenEndpoint,
            ..IdpOptions::default()
        };
        let idp = FakeIdp::start(jwks, opts).await;
        let secret = if setup == Setup::WrongClientSecret {
            "not-the-secret"
        } else {
            CLIENT_SECRET
        };
        let pin = if setup == Setup::PinnedRs256 {
            "id_token_signing_alg = \"RS256\""
        } else {
            ""
        };
        let gw = Gateway::start_with(&idp, secret, pin).await;
        Env { idp, gw }
    }

    /// Starts a login in `browser`, has the provider issue [`CODE`] for it (bound to
    /// `code_challenge`, or the request's own) and answer the exchange with `reply`.
    async fn authorize(
        &self,
        browser: &Browser,
        code_challenge: Option<String>,
        reply: fn(&Ctx) -> TokenReply,
    ) -> AuthorizationRequest {
        let auth = self.gw.start_login(browser, RETURN_TO).await;
        self.idp.issue_code(
            CODE,
            Grant {
                code_challenge: code_challenge.unwrap_or_else(|| auth.code_challenge.clone()),
                nonce: auth.nonce.clone(),
                redirect_uri: auth.redirect_uri.clone(),
            },
        );
        let issuer = self.idp.issuer().to_owned();
        self.idp.script(move |grant: &Grant| {
            reply(&Ctx {
                issuer: issuer.clone(),
                nonce: grant.nonce.clone(),
                now: now(),
            })
        });
        auth
    }

    async fn callback(&self, browser: &Browser, state: &str) -> Response {
        self.gw.callback(browser, &self.idp, CODE, state).await
    }

    /// Checks `resp` against `expect`; `Err` says how it differs.
    async fn check(
        &self,
        browser: &Browser,
        resp: &Response,
        expect: Expect,
    ) -> Result<(), String> {
        match expect {
            Expect::Session => self.check_session(browser, resp).await,
            Expect::LoginFailed(why) => check_problem(
                resp,
                StatusCode::UNAUTHORIZED,
                "login-failed",
                "Login failed",
                why,
            ),
            Expect::Unavailable(why) => check_problem(
                resp,
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service temporarily unavailable",
                why,
            ),
        }
    }

    async fn check_session(&self, browser: &Browser, resp: &Response) -> Result<(), String> {
        ensure(resp.status == StatusCode::FOUND, || describe(resp))?;
        ensure(resp.location().as_deref() == Some(RETURN_TO), || {
            format!("Location {:?}", resp.location())
        })?;
        ensure(resp.set_cookie(SESSION_COOKIE).is_some(), || {
            "no session cookie set".into()
        })?;
        let s = browser
            .get(&self.gw.url("/bff/session"))
            .await
            .map_err(|e| e.to_string())?;
        let body = s.json().map_err(|e| e.to_string())?;
        ensure(
            s.status == StatusCode::OK && body["user"]["sub"] == "alice",
            || format!("/bff/session: {} {}", s.status, s.text()),
        )
    }
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(why()) }
}

fn describe(resp: &Response) -> String {
    format!(
        "{} {} (log: {})",
        resp.status,
        resp.text(),
        logged_problems(resp)
    )
}

/// The generic problem and nothing else: same body whatever the reason, no session, the
/// reason (containing `why`) only in the log.
fn check_problem(
    resp: &Response,
    status: StatusCode,
    slug: &str,
    title: &str,
    why: &str,
) -> Result<(), String> {
    ensure(resp.status == status, || describe(resp))?;
    ensure(
        resp.header("content-type") == Some("application/problem+json"),
        || format!("content-type {:?}", resp.header("content-type")),
    )?;
    let expected = json!({
        "type": format!("urn:portcullis:problem:{slug}"),
        "title": title,
        "status": status.as_u16(),
    });
    ensure(resp.json().ok() == Some(expected), || {
        format!("body leaks more than the generic problem: {}", resp.text())
    })?;
    ensure(resp.set_cookie(SESSION_COOKIE).is_none(), || {
        "a session cookie was set".into()
    })?;
    let log = logged_problems(resp);
    ensure(log.contains(why), || {
        format!("logged reason does not mention {why:?}: {log}")
    })
}

async fn run_case(case: &Case) -> (String, Result<(), String>) {
    let env = Env::start((case.jwks)(), case.setup).await;
    let browser = Browser::new();
    let challenge = (case.setup == Setup::ForeignCodeChallenge)
        .then(|| s256("a verifier the gateway never had"));
    let auth = env.authorize(&browser, challenge, case.reply).await;
    if let Some(rotated) = case.rotate_to {
        env.idp.set_jwks(rotated());
    }
    let resp = env.callback(&browser, &auth.state).await;
    let outcome = format!(
        "{} — {}",
        resp.status,
        logged_problems(&resp).replace('\n', " | ")
    );
    (outcome, env.check(&browser, &resp, case.expect).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_valid_id_tokens_create_a_session() {
    let mut failures = Vec::new();
    for case in cases() {
        let (outcome, result) = run_case(&case).await;
        eprintln!("{:<50} {:?} => {outcome}", case.name, case.expect);
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The generic 401 (see [`check_problem`]) with `why` in the log.
fn assert_login_failed(resp: &Response, why: &str) {
    if let Err(e) = check_problem(
        resp,
        StatusCode::UNAUTHORIZED,
        "login-failed",
        "Login failed",
        why,
    ) {
        panic!("expected a failed login ({why}): {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_code_exchange_uses_pkce_s256_and_client_secret_basic() {
    let env = Env::start(provider_jwks(), Setup::Normal).await;
    let browser = Browser::new();
    let auth = env.authorize(&browser, None, |c| signed(&c.claims())).await;
    assert!(
        browser.cookie(BINDING_COOKIE).is_some(),
        "login sets the binding cookie"
    );
    assert_eq!(auth.param("response_type").as_deref(), Some("code"));
    assert_eq!(auth.param("client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(auth.param("code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(auth.redirect_uri, env.gw.url("/bff/callback"));
    assert!(
        auth.param("scope")
            .is_some_and(|s| s.split(' ').any(|s| s == "openid"))
    );
    assert!(
        auth.url
            .as_str()
            .starts_with(&format!("{}/authorize?", env.idp.issuer()))
    );
    for (name, value) in [("state", &auth.state), ("nonce", &auth.nonce)] {
        assert!(
            value.len() >= 32,
            "{name} is too short to be unguessable: {value}"
        );
    }
    assert_ne!(auth.state, auth.nonce);

    let resp = env.callback(&browser, &auth.state).await;
    env.check(&browser, &resp, Expect::Session)
        .await
        .expect("login");

    let requests = env.idp.token_requests();
    assert_eq!(requests.len(), 1, "one code exchange");
    let req = &requests[0];
    assert_eq!(req.status, 200);
    assert_eq!(
        req.basic_auth,
        Some((CLIENT_ID.to_owned(), CLIENT_SECRET.to_owned()))
    );
    assert!(
        !req.form.contains_key("client_secret"),
        "the secret goes only in the Basic header"
    );
    assert_eq!(
        req.form.get("grant_type").map(String::as_str),
        Some("authorization_code")
    );
    assert_eq!(req.form.get("code").map(String::as_str), Some(CODE));
    assert_eq!(req.form.get("redirect_uri"), Some(&auth.redirect_uri));
    let verifier = req
        .form
        .get("code_verifier")
        .expect("PKCE code_verifier sent");
    assert!(
        (43..=128).contains(&verifier.len()),
        "RFC 7636 verifier length: {verifier}"
    );
    assert_eq!(
        s256(verifier),
        auth.code_challenge,
        "the verifier matches the S256 challenge"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_single_use() {
    let env = Env::start(provider_jwks(), Setup::Normal).await;
    let browser = Browser::new();
    let auth = env.authorize(&browser, None, |c| signed(&c.claims())).await;
    let first = env.callback(&browser, &auth.state).await;
    env.check(&browser, &first, Expect::Session)
        .await
        .expect("first callback logs in");

    let replay = env.callback(&browser, &auth.state).await;
    assert_login_failed(&replay, "unknown, used or expired state");
    assert_eq!(
        env.idp.token_requests().len(),
        1,
        "a replay never reaches the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_from_another_browser_fails_and_burns_the_state() {
    let env = Env::start(provider_jwks(), Setup::Normal).await;
    let victim = Browser::new();
    let auth = env.authorize(&victim, None, |c| signed(&c.claims())).await;

    let attacker = Browser::new(); // no binding cookie
    let resp = env.callback(&attacker, &auth.state).await;
    assert_login_failed(&resp, "not started by this browser");
    assert!(
        env.idp.token_requests().is_empty(),
        "the code is never exchanged"
    );

    // That attempt consumed the state: the rightful browser cannot finish this login either.
    let resp = env.callback(&victim, &auth.state).await;
    assert_login_failed(&resp, "unknown, used or expired state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_refetch_is_rate_limited() {
    let env = Env::start(provider_jwks(), Setup::Normal).await;
    assert_eq!(env.idp.jwks_fetches(), 1, "discovery loads the JWKS once");

    // An unknown kid makes the gateway re-read the JWKS once…
    let browser = Browser::new();
    let auth = env
        .authorize(&browser, None, |c| {
            id_token(Signer::Rs256(&keys().attacker), Some("k-evil"), &c.claims())
        })
        .await;
    assert_login_failed(&env.callback(&browser, &auth.state).await, UNKNOWN_KEY);
    assert_eq!(
        env.idp.jwks_fetches(),
        2,
        "one re-fetch for the unknown kid"
    );

    // …and not again within the minimum interval, even for a key the provider just rotated in.
    env.idp.set_jwks(rotated_jwks());
    let auth = env
        .authorize(&browser, None, |c| {
            id_token(
                Signer::Rs256(&keys().rotated),
                Some(ROTATED_KID),
                &c.claims(),
            )
        })
        .await;
    assert_login_failed(&env.callback(&browser, &auth.state).await, UNKNOWN_KEY);
    assert_eq!(env.idp.jwks_fetches(), 2, "no second re-fetch within 10 s");
}
