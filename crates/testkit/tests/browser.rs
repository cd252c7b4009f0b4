//! The Browser against real servers: the full form login with a callback
//! that is requested, and SameSite behaviour of cross-site requests.

use http::Method;
use testkit::browser::Browser;
use testkit::idp::{Idp, IdpOptions};
use testkit::upstream::RecordingUpstream;
use url::Url;

#[tokio::test]
async fn login_via_form_requests_the_callback() {
    // The recording upstream stands in for the gateway's callback endpoint.
    let rp = RecordingUpstream::start().await;
    let redirect = format!("{}/bff/callback", rp.url());
    let idp = Idp::start(IdpOptions::new(&redirect))
        .await
        .expect("start IdP");

    // PKCE is required; any S256 challenge will do for reaching the callback.
    let mut auth = Url::parse(&format!("{}/auth", idp.issuer())).expect("URL");
    auth.query_pairs_mut()
        .append_pair("client_id", idp.client_id())
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", &redirect)
        .append_pair("scope", "openid email")
        .append_pair("state", "s-1")
        .append_pair(
            "code_challenge",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        )
        .append_pair("code_challenge_method", "S256");

    let browser = Browser::new();
    let outcome = browser
        .login_via_form(auth.as_str(), "alice", "wonderland")
        .await
        .expect("login");
    assert!(outcome.callback_url.starts_with(&redirect));
    assert_eq!(outcome.callback_response.status, 200);
    assert_eq!(outcome.final_location, None);

    let cb = rp.last().expect("callback requested");
    assert_eq!(cb.method, "GET");
    assert_eq!(cb.path(), "/bff/callback");
    let params: Vec<(String, String)> =
        url::form_urlencoded::parse(cb.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    assert!(params.iter().any(|(k, v)| k == "code" && !v.is_empty()));
    assert!(params.iter().any(|(k, v)| k == "state" && v == "s-1"));
    // The IdP's cookies stay with the IdP (another port).
    assert_eq!(cb.header("cookie"), None);
    assert!(
        browser.cookie("_session").is_some(),
        "IdP session cookie kept"
    );
    assert_eq!(idp.stats().await.expect("stats").logins, 1);
}

#[tokio::test]
async fn cross_site_requests_follow_same_site_rules() {
    let up = RecordingUpstream::start().await;
    let browser = Browser::new();
    browser
        .set_cookie(&up.url(), "strict=1; SameSite=Strict; Path=/")
        .expect("plant strict");
    browser
        .set_cookie(&up.url(), "lax=1; SameSite=Lax; Path=/")
        .expect("plant lax");
    assert!(browser.set_cookie(&up.url(), "__Host-x=1; Path=/").is_err());

    // Same site (the port does not matter for sites): everything, no Origin
    // added to GET.
    let same = "http://127.0.0.1:1/page";
    browser
        .request_from(same, Method::GET, &format!("{}/a", up.url()), &[], "")
        .await
        .expect("GET");
    let r = up.last().expect("recorded");
    assert_eq!(r.header("cookie"), Some("strict=1; lax=1"));
    assert_eq!(r.header("origin"), None);

    // Cross-site top-level GET: Lax (and default, i.e. Lax: the upstream's
    // own cookie from the first answer) only.
    let evil = "http://localhost:1/attack";
    browser
        .request_from(evil, Method::GET, &format!("{}/a", up.url()), &[], "")
        .await
        .expect("GET");
    assert_eq!(
        up.last().expect("recorded").header("cookie"),
        Some("lax=1; upstream=1")
    );

    // Cross-site POST: no cookie at all, Origin of the attacker.
    browser
        .request_from(evil, Method::POST, &format!("{}/a", up.url()), &[], "x=1")
        .await
        .expect("POST");
    let r = up.last().expect("recorded");
    assert_eq!(r.header("cookie"), None);
    assert_eq!(r.header("origin"), Some("http://localhost:1"));

    // The upstream's own cookie was stored along the way.
    assert_eq!(browser.cookie("upstream").as_deref(), Some("1"));
    browser.clear_cookies();
    assert!(browser.cookies().is_empty());
}
