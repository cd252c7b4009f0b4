//! OpenID Connect Back-Channel Logout 1.0 at `POST /bff/backchannel-logout`.
//!
//! Against the real provider: a logout at the provider ends the gateway session it names. Against
//! a scriptable fake provider: every forged, unsigned, stale, replayed or misdirected logout token
//! is refused with 400 and ends nothing.

mod common;
mod fake_idp;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;

use fake_idp::{
    gateway::{Gateway, SESSION_COOKIE},
    jose::{Signer, ec_keys, jws, jws_with_header, keys},
    provider::{CLIENT_ID, CLIENT_SECRET, FakeIdp, Grant, IdpOptions, TokenReply},
};
use http::Method;
use portcullis::store::{
    Entry, IndexKey, LockToken, MemoryStore, SessionStore, StoreError, StoreKey,
};
use serde_json::{Value, json};
use testkit::browser::Browser;

const KID: &str = "k1";
const EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

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
        let idp = FakeIdp::start(vec![keys().provider.jwk(Some(KID))], IdpOptions::default()).await;
        let gw = Gateway::start(&idp, CLIENT_SECRET).await;
        Env { idp, gw }
    }

    async fn start_with_store(store: Arc<dyn SessionStore>) -> Env {
        let idp = FakeIdp::start(vec![keys().provider.jwk(Some(KID))], IdpOptions::default()).await;
        let gw = Gateway::start_with_store(&idp, CLIENT_SECRET, store).await;
        Env { idp, gw }
    }

    /// Logs a fresh browser in as `sub` with provider session `sid`; returns it with its cookie.
    async fn login(&self, sub: &'static str, sid: &'static str) -> (Browser, String) {
        let browser = Browser::new();
        let auth = self.gw.start_login(&browser, "/").await;
        self.idp.issue_code("code-1", auth.grant());
        let issuer = self.idp.issuer().to_owned();
        self.idp.script(move |g: &Grant| {
            let t = now();
            TokenReply::IdToken(jws(
                Signer::Rs256(&keys().provider),
                Some(KID),
                &json!({"iss": issuer, "aud": CLIENT_ID, "sub": sub, "sid": sid, "iat": t, "exp": t + 300, "nonce": g.nonce}),
            ))
        });
        let r = self
            .gw
            .callback(&browser, &self.idp, "code-1", &auth.state)
            .await;
        assert_eq!(r.status.as_u16(), 302, "login: {}", r.text());
        let cookie = browser.cookie(SESSION_COOKIE).expect("session cookie");
        (browser, cookie)
    }

    async fn alive(&self, browser: &Browser) -> bool {
        browser
            .get(&self.gw.url("/bff/session"))
            .await
            .expect("session")
            .status
            .as_u16()
            == 200
    }

    fn claims(&self, patch: Value) -> Value {
        let t = now();
        let mut c = json!({
            "iss": self.idp.issuer(), "aud": CLIENT_ID, "iat": t, "exp": t + 120,
            "jti": format!("jti-{}", portcullis::crypto::random::token::<8>().expect("rng")),
            "sid": "sid-alice", "events": {EVENT: {}},
        });
        for (k, v) in patch.as_object().expect("patch") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    fn token(&self, patch: Value) -> String {
        jws_with_header(
            Signer::Rs256(&keys().provider),
            &json!({"kid": KID, "typ": "logout+jwt"}),
            &self.claims(patch),
        )
    }

    async fn post(&self, body: &str, content_type: &str) -> testkit::browser::Response {
        // The provider's server-to-server call: no cookies, no Origin.
        Browser::new()
            .request(
                Method::POST,
                &self.gw.url("/bff/backchannel-logout"),
                &[("content-type", content_type)],
                body.to_owned(),
            )
            .await
            .expect("POST backchannel-logout")
    }

    async fn send(&self, token: &str) -> testkit::browser::Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("logout_token", token)
            .finish();
        self.post(&body, "application/x-www-form-urlencoded").await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_misdirected_logout_tokens_end_nothing() {
    let env = Env::start().await;
    let (alice, _) = env.login("alice", "sid-alice").await;
    let issuer = env.idp.issuer().to_owned();
    let p = &keys().provider;
    let pem = p.spki_pem();
    let t = now();
    let cases: Vec<(&str, String)> = vec![
        (
            "alg none",
            jws(Signer::Unsigned("none"), Some(KID), &env.claims(json!({}))),
        ),
        (
            "signed by an attacker's key under the provider's kid",
            jws(
                Signer::Rs256(&keys().attacker),
                Some(KID),
                &env.claims(json!({})),
            ),
        ),
        (
            "HS256 keyed with the provider's public key",
            jws(
                Signer::Hs256(pem.as_bytes()),
                Some(KID),
                &env.claims(json!({})),
            ),
        ),
        (
            "HS256 keyed with the client secret",
            jws(
                Signer::Hs256(CLIENT_SECRET.as_bytes()),
                Some(KID),
                &env.claims(json!({})),
            ),
        ),
        (
            "unknown kid",
            jws(Signer::Rs256(p), Some("nope"), &env.claims(json!({}))),
        ),
        (
            "wrong issuer",
            env.token(json!({"iss": "https://evil.example"})),
        ),
        (
            "issuer with a trailing slash",
            env.token(json!({"iss": format!("{issuer}/")})),
        ),
        (
            "for another client",
            env.token(json!({"aud": "another-client"})),
        ),
        (
            "extra audience, azp another client",
            env.token(json!({"aud": [CLIENT_ID, "other"], "azp": "other"})),
        ),
        (
            "azp of another client (as for ID tokens)",
            env.token(json!({"azp": "other"})),
        ),
        (
            "extra audience, azp this client (untrusted audience, as for ID tokens)",
            env.token(json!({"aud": [CLIENT_ID, "other"], "azp": CLIENT_ID})),
        ),
        ("no aud", env.token(json!({"aud": null}))),
        (
            "expired",
            env.token(json!({"exp": t - 600, "iat": t - 700})),
        ),
        (
            "iat too old",
            env.token(json!({"iat": t - 3600, "exp": t + 120})),
        ),
        // Errata set 1, §2.6 step 4: `exp` is validated as in ID tokens, where it is required.
        ("no exp", env.token(json!({"exp": null}))),
        ("exp not a number", env.token(json!({"exp": "soon"}))),
        ("iat in the future", env.token(json!({"iat": t + 600}))),
        ("no iat", env.token(json!({"iat": null}))),
        (
            "nonce present (an ID token)",
            env.token(json!({"nonce": "n"})),
        ),
        ("no events", env.token(json!({"events": null}))),
        (
            "events of another kind",
            env.token(json!({"events": {"http://schemas.openid.net/event/other": {}}})),
        ),
        (
            "event as a string, not an object",
            env.token(json!({"events": {EVENT: "yes"}})),
        ),
        ("neither sub nor sid", env.token(json!({"sid": null}))),
        ("no jti", env.token(json!({"jti": null}))),
        (
            "typ of an access token",
            jws_with_header(
                Signer::Rs256(p),
                &json!({"kid": KID, "typ": "at+jwt"}),
                &env.claims(json!({})),
            ),
        ),
        (
            "a crit header member (RFC 7515 §4.1.11: an extension not understood)",
            jws_with_header(
                Signer::Rs256(p),
                &json!({"kid": KID, "typ": "logout+jwt", "crit": ["exp"]}),
                &env.claims(json!({})),
            ),
        ),
        ("not a JWT", "not.a.jwt".to_owned()),
    ];
    for (name, token) in &cases {
        let r = env.send(token).await;
        assert_eq!(r.status.as_u16(), 400, "{name}: {}", r.text());
        assert_eq!(
            r.json().expect("json")["error"],
            "invalid_request",
            "{name}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{name}");
        assert!(env.alive(&alice).await, "{name} ended a session");
    }
    // Wrong transport: JSON body, two tokens, no token.
    let valid = env.token(json!({}));
    for (name, body, ct) in [
        (
            "JSON body",
            format!(r#"{{"logout_token":"{valid}"}}"#),
            "application/json",
        ),
        (
            "two tokens",
            format!("logout_token={valid}&logout_token={valid}"),
            "application/x-www-form-urlencoded",
        ),
        (
            "no token",
            "foo=bar".to_owned(),
            "application/x-www-form-urlencoded",
        ),
    ] {
        let r = env.post(&body, ct).await;
        assert_eq!(r.status.as_u16(), 400, "{name}");
        assert!(env.alive(&alice).await, "{name} ended a session");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_ends_exactly_the_named_sessions_once() {
    let env = Env::start().await;
    let (alice1, _) = env.login("alice", "sid-alice").await;
    let (alice2, _) = env.login("alice", "sid-alice-2").await;
    let (bob, _) = env.login("bob", "sid-bob").await;

    // By sid: only that provider session.
    let token = env.token(json!({"sid": "sid-alice", "sub": "alice"}));
    let r = env.send(&token).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(!env.alive(&alice1).await, "the named session ended");
    assert!(
        env.alive(&alice2).await,
        "another provider session of the same user is kept"
    );
    assert!(env.alive(&bob).await);

    // Replay of the same token: refused.
    let replay = env.send(&token).await;
    assert_eq!(replay.status.as_u16(), 400, "jti seen before");

    // By sub only: every session of that subject.
    let r = env
        .send(&env.token(json!({"sid": null, "sub": "alice"})))
        .await;
    assert_eq!(r.status.as_u16(), 200);
    assert!(!env.alive(&alice2).await);
    assert!(env.alive(&bob).await, "other users untouched");

    // A token without kid is accepted when the provider has a single key.
    let no_kid = jws_with_header(
        Signer::Rs256(&keys().provider),
        &json!({"kid": null, "typ": "logout+jwt"}),
        &env.claims(json!({"sid": "sid-bob"})),
    );
    assert_eq!(env.send(&no_kid).await.status.as_u16(), 200);
    assert!(!env.alive(&bob).await);
}

/// The memory store, whose session index can be made to fail: the store failing half-way
/// through a logout (a Cluster node holding the index down, say).
#[derive(Debug, Default)]
struct IndexOutage {
    inner: MemoryStore,
    down: AtomicBool,
}

#[async_trait::async_trait]
impl SessionStore for IndexOutage {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        self.inner.set(key, value, ttl).await
    }
    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.replace(key, value, ttl).await
    }
    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        self.inner.touch(key, ttl).await
    }
    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        self.inner.take(key).await
    }
    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    async fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        self.inner.try_lock(key, lease).await
    }
    async fn unlock(&self, key: &StoreKey, token: &LockToken) -> Result<(), StoreError> {
        self.inner.unlock(key, token).await
    }
    async fn index_add(
        &self,
        index: &IndexKey,
        member: &StoreKey,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.index_add(index, member, ttl).await
    }
    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("index node down (test)".into()));
        }
        self.inner.index_members(index).await
    }
    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError> {
        self.inner.index_remove(index, member).await
    }
    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError> {
        self.inner.delete_all(prefix).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// A logout the store could not carry out is a 503, and the provider's retry of the very same
/// token must then work: the jti is remembered only once the sessions are ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_that_failed_in_the_store_succeeds_when_retried() {
    let store = Arc::new(IndexOutage::default());
    let env = Env::start_with_store(Arc::clone(&store) as Arc<dyn SessionStore>).await;
    let (alice, _) = env.login("alice", "sid-alice").await;
    let token = env.token(json!({"sid": "sid-alice", "sub": "alice"}));

    store.down.store(true, Ordering::SeqCst);
    let r = env.send(&token).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.text());
    store.down.store(false, Ordering::SeqCst);
    assert!(env.alive(&alice).await, "nothing ended yet");

    let retry = env.send(&token).await;
    assert_eq!(retry.status.as_u16(), 200, "the retry: {}", retry.text());
    assert!(!env.alive(&alice).await, "ended by the retry");
    let replay = env.send(&token).await;
    assert_eq!(replay.status.as_u16(), 400, "now the jti is remembered");
}

/// The endpoint is unauthenticated, and a key-set read after an unknown `kid` blocks the next
/// reads for a while: a forged token naming a random `kid` gets that read only if it at least
/// claims our issuer and client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tokens_naming_our_issuer_and_client_may_cost_a_key_set_read() {
    let env = Env::start().await;
    let (alice, _) = env.login("alice", "sid-alice").await;
    let forged = |patch: Value| {
        jws_with_header(
            Signer::Rs256(&keys().attacker),
            &json!({"kid": "k-random", "typ": "logout+jwt"}),
            &env.claims(patch),
        )
    };
    let before = env.idp.jwks_fetches();
    for patch in [
        json!({"iss": "https://evil.example"}),
        json!({"aud": "another-client"}),
        json!({"iss": null}),
    ] {
        let r = env.send(&forged(patch.clone())).await;
        assert_eq!(r.status.as_u16(), 400, "{patch}");
        assert_eq!(env.idp.jwks_fetches(), before, "{patch}: no key-set read");
    }
    // Naming our issuer and client, the unknown kid may be a rotation: one read, then refused.
    let r = env.send(&forged(json!({}))).await;
    assert_eq!(r.status.as_u16(), 400);
    assert_eq!(env.idp.jwks_fetches(), before + 1);
    assert!(env.alive(&alice).await, "no forged token ended a session");
}

/// §2.6 step 3: a logout token's `alg` is validated as an ID token's, whose algorithm is the one
/// the client registered (OIDC Core §3.1.3.7 step 7). A provider that publishes keys for several
/// algorithms (for other clients) and signs this client's ID tokens with RS256 cannot end its
/// sessions with an ES256 logout token: the OpenID RP test `rp-backchannel-rpinitlogout-lt-wrong-alg`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_token_signed_with_another_algorithm_than_the_id_tokens_ends_nothing() {
    let idp = FakeIdp::start(
        vec![
            keys().provider.jwk(Some(KID)),
            ec_keys().provider.jwk(Some("ec1")),
        ],
        IdpOptions::default(),
    )
    .await;
    let gw = Gateway::start(&idp, CLIENT_SECRET).await;
    let env = Env { idp, gw };
    let (alice, _) = env.login("alice", "sid-alice").await;
    let es256 = jws_with_header(
        Signer::Es256(&ec_keys().provider),
        &json!({"kid": "ec1", "typ": "logout+jwt"}),
        &env.claims(json!({})),
    );
    let r = env.send(&es256).await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.text());
    assert!(env.alive(&alice).await, "the session is kept");
    // The algorithm of the ID tokens works.
    let r = env.send(&env.token(json!({}))).await;
    assert_eq!(r.status.as_u16(), 200, "{}", r.text());
    assert!(!env.alive(&alice).await);
}

/// `oidc.id_token_signing_alg` pins the one algorithm of ID and logout tokens from the start: a
/// logout token signed otherwise is refused before any login has shown the process the ID
/// tokens' algorithm (unpinned, any asymmetric algorithm is accepted then). An ID token signed
/// otherwise makes no session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_algorithm_refuses_other_tokens_from_the_start() {
    for (pin, es256_logout) in [("", 200), ("id_token_signing_alg = \"RS256\"", 400)] {
        let idp = FakeIdp::start(
            vec![
                keys().provider.jwk(Some(KID)),
                ec_keys().provider.jwk(Some("ec1")),
            ],
            IdpOptions::default(),
        )
        .await;
        let gw = Gateway::start_with(&idp, CLIENT_SECRET, pin).await;
        let env = Env { idp, gw };
        let es256 = jws_with_header(
            Signer::Es256(&ec_keys().provider),
            &json!({"kid": "ec1", "typ": "logout+jwt"}),
            &env.claims(json!({})),
        );
        let r = env.send(&es256).await;
        assert_eq!(r.status.as_u16(), es256_logout, "[{pin}] {}", r.text());
        let r = env.send(&env.token(json!({}))).await;
        assert_eq!(r.status.as_u16(), 200, "[{pin}] RS256: {}", r.text());
    }
}

/// `typ` is a media type (RFC 7515 §4.1.9: case-insensitive, `application/` optional) and `iat`
/// a NumericDate, which may have a fraction (RFC 7519 §2): providers differ on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_tokens_in_every_legal_spelling_are_accepted() {
    let env = Env::start().await;
    let t = now();
    for (sid, typ) in [
        ("sid-media-type", json!("application/logout+jwt")),
        ("sid-upper-case", json!("Logout+JWT")),
        ("sid-generic", json!("jwt")),
        ("sid-no-typ", json!(null)),
    ] {
        let (browser, _) = env.login("alice", sid).await;
        let token = jws_with_header(
            Signer::Rs256(&keys().provider),
            &json!({"kid": KID, "typ": typ}),
            &env.claims(json!({"sid": sid, "iat": t as f64 + 0.25})),
        );
        let r = env.send(&token).await;
        assert_eq!(r.status.as_u16(), 200, "typ {typ}: {}", r.text());
        assert!(!env.alive(&browser).await, "typ {typ}: the session ended");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_provider_logs_the_gateway_session_out() {
    let stack = common::Stack::start_with(common::Options {
        backchannel_logout: true,
        ..common::Options::default()
    })
    .await;
    let b = Browser::new();
    let ticket = stack.login(&b).await;
    let record = stack.session_record(&ticket).await.expect("session").record;
    let sid = record
        .sid
        .clone()
        .expect("the provider put a sid in the ID token");
    let other = Browser::new();
    stack.login(&other).await;

    let out = stack
        .idp
        .backchannel_logout(None, Some(&sid))
        .await
        .expect("provider back-channel logout");
    assert!(
        common::eventually(|| {
            let b = b.clone();
            let url = stack.url("/bff/session");
            async move {
                b.get(&url)
                    .await
                    .map(|r| r.status.as_u16() == 401)
                    .unwrap_or(false)
            }
        })
        .await,
        "the provider's logout ended the session: {out}"
    );
    assert!(stack.session_record(&ticket).await.is_none());
    assert_eq!(
        stack
            .idp
            .stats()
            .await
            .expect("stats")
            .backchannel_logout_errors,
        0
    );
}
