//! [`Browser`]: an HTTP client with its own cookie jar that behaves, for the
//! purposes of the gateway's tests, like a real browser: it never follows
//! redirects by itself (see [`Browser::follow`]), keeps cookies per host and
//! port with the `Secure`/`__Host-`/`SameSite` rules of a current Chromium
//! (loopback counts as a secure context), and can sign in through the IdP
//! fixture's login form ([`Browser::login_via_form`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde::de::DeserializeOwned;
use url::Url;

use crate::cookies::{self, Cookie, CookieJar, CookieRejected, PortScope, SameSiteContext};
use crate::html;

/// A response as the browser saw it, body read completely.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Response headers (duplicates preserved).
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The URL that was requested.
    pub url: Url,
    /// The method of the request.
    pub method: Method,
}

impl Response {
    /// The first value of header `name` (case-insensitive), if it is valid
    /// visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The raw `Set-Cookie` header values, in order.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The raw `Set-Cookie` value that sets cookie `name`, if any.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|sc| sc.split_once('=').is_some_and(|(n, _)| n.trim() == name))
    }

    /// The body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        self.json_as()
    }

    /// The body deserialised as `T` from JSON.
    pub fn json_as<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{} {} -> {}: body is not the expected JSON: {}",
                self.method,
                self.url,
                self.status,
                snippet(&self.text())
            )
        })
    }

    /// The raw `Location` header.
    pub fn location(&self) -> Option<String> {
        self.header("location").map(str::to_owned)
    }

    /// The `Location` header resolved against the request URL.
    pub fn location_url(&self) -> Option<Url> {
        self.url.join(self.header("location")?).ok()
    }

    /// `true` for 301, 302, 303, 307 and 308 with a `Location`.
    pub fn is_redirect(&self) -> bool {
        matches!(self.status.as_u16(), 301 | 302 | 303 | 307 | 308) && self.location().is_some()
    }
}

/// The result of [`Browser::login_via_form`].
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    /// The callback URL (with `code`, `state`, `iss`) the IdP redirected to.
    pub callback_url: String,
    /// The gateway's answer to the callback request.
    pub callback_response: Response,
    /// The callback response's `Location` (not followed).
    pub final_location: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    jar: CookieJar,
    last_set_cookies: Vec<String>,
    last_rejected: Vec<(String, CookieRejected)>,
}

/// A cookie-keeping HTTP client that never follows redirects by itself.
///
/// Cloning shares the cookie jar (two tabs of one browser); methods take
/// `&self`, so one browser can send concurrent requests.
#[derive(Debug, Clone)]
pub struct Browser {
    client: reqwest::Client,
    state: Arc<Mutex<State>>,
}

impl Default for Browser {
    fn default() -> Self {
        Self::new()
    }
}

const USER_AGENT: &str = "portcullis-testkit-browser/1";
const MAX_LOGIN_STEPS: usize = 25;

impl Browser {
    /// A browser with an empty jar that scopes cookies per host *and port*
    /// ([`PortScope::PerPort`]).
    pub fn new() -> Self {
        Self::with_port_scope(PortScope::PerPort)
    }

    /// A browser whose jar uses the given port scoping
    /// ([`PortScope::IgnorePort`] is what real browsers do).
    pub fn with_port_scope(scope: PortScope) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .expect("building the reqwest client for Browser");
        Self {
            client,
            state: Arc::new(Mutex::new(State {
                jar: CookieJar::with_port_scope(scope),
                ..State::default()
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the jar half-updated in
        // a way that matters for tests: keep going.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `GET url`.
    pub async fn get(&self, url: &str) -> anyhow::Result<Response> {
        self.request(Method::GET, url, &[], Bytes::new()).await
    }

    /// `GET url` with extra headers.
    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Response> {
        self.request(Method::GET, url, headers, Bytes::new()).await
    }

    /// A same-site request (as if made by the page of the target's own site,
    /// or typed into the address bar): every matching cookie is sent.
    ///
    /// A `Cookie` header in `headers` replaces the jar's cookies for this
    /// request (to send forged cookies); every other header is added as
    /// given.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Response> {
        let url = parse_url(url)?;
        self.send(method, url, headers, body.into(), &[]).await
    }

    /// A request caused by a page at `initiator` (an origin or URL): cookies
    /// are filtered by `SameSite` as a browser would when `initiator` is
    /// cross-site, and an `Origin: <initiator origin>` header is added to
    /// non-GET/HEAD requests unless `headers` has one.
    pub async fn request_from(
        &self,
        initiator: &str,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Response> {
        let initiator = parse_url(initiator)?;
        let url = parse_url(url)?;
        let mut hs: Vec<(&str, &str)> = headers.to_vec();
        let origin = initiator.origin().ascii_serialization();
        if method != Method::GET
            && method != Method::HEAD
            && !hs.iter().any(|(k, _)| k.eq_ignore_ascii_case("origin"))
        {
            hs.push(("origin", &origin));
        }
        self.send(
            method,
            url,
            &hs,
            body.into(),
            std::slice::from_ref(&initiator),
        )
        .await
    }

    /// `POST` an `application/x-www-form-urlencoded` body.
    pub async fn post_form(&self, url: &str, fields: &[(&str, &str)]) -> anyhow::Result<Response> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.request(
            Method::POST,
            url,
            &[("content-type", "application/x-www-form-urlencoded")],
            body,
        )
        .await
    }

    /// `POST` a JSON body with extra headers (e.g. `X-CSRF-Token`).
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
    ) -> anyhow::Result<Response> {
        let mut hs = headers.to_vec();
        hs.push(("content-type", "application/json"));
        self.request(Method::POST, url, &hs, serde_json::to_vec(json)?)
            .await
    }

    /// `GET url` and follow up to `max_hops` redirects through the jar;
    /// returns every response in order (the last one is a redirect only when
    /// the hop limit was reached).
    pub async fn follow(&self, url: &str, max_hops: usize) -> anyhow::Result<Vec<Response>> {
        let first = self.get(url).await?;
        self.follow_response(first, max_hops).await
    }

    /// Follows up to `max_hops` redirects starting from an already received
    /// response (which is the first element of the result). 301/302/303 are
    /// followed with GET; 307/308 only after a GET or HEAD (the body of an
    /// earlier request is not kept).
    pub async fn follow_response(
        &self,
        first: Response,
        max_hops: usize,
    ) -> anyhow::Result<Vec<Response>> {
        let mut chain_urls = vec![first.url.clone()];
        let mut out = vec![first];
        for _ in 0..max_hops {
            let Some(last) = out.last() else { break };
            if !last.is_redirect() {
                break;
            }
            let next = last
                .location_url()
                .with_context(|| format!("bad Location from {}", last.url))?;
            let method = match last.status.as_u16() {
                307 | 308 if last.method == Method::GET || last.method == Method::HEAD => {
                    last.method.clone()
                }
                307 | 308 => bail!(
                    "{} {} answered {}: cannot replay the request body",
                    last.method,
                    last.url,
                    last.status
                ),
                _ => Method::GET,
            };
            let resp = self
                .send(method, next.clone(), &[], Bytes::new(), &chain_urls)
                .await?;
            chain_urls.push(next);
            out.push(resp);
        }
        Ok(out)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Bytes,
        chain: &[Url],
    ) -> anyhow::Result<Response> {
        let context = same_site_context(&url, &method, chain);
        let caller_cookie = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("cookie"));
        let cookie_header = if caller_cookie {
            None
        } else {
            self.state().jar.header_for(&url, context)
        };

        let mut req = self.client.request(method.clone(), url.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(c) = cookie_header {
            req = req.header(header::COOKIE, c);
        }
        if !body.is_empty() {
            req = req.body(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .with_context(|| format!("reading the body of {method} {url}"))?;

        let set_cookies: Vec<String> = headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        {
            let mut st = self.state();
            let mut rejected = Vec::new();
            for sc in &set_cookies {
                if let Err(e) = st.jar.store(&url, sc) {
                    rejected.push((sc.clone(), e));
                }
            }
            st.last_set_cookies = set_cookies;
            st.last_rejected = rejected;
        }
        Ok(Response {
            status,
            headers,
            body,
            url,
            method,
        })
    }

    /// The raw `Set-Cookie` header values of the last response received (by
    /// any clone of this browser).
    pub fn last_set_cookies(&self) -> Vec<String> {
        self.state().last_set_cookies.clone()
    }

    /// The `Set-Cookie` values of the last response that the jar refused,
    /// with the reason.
    pub fn last_rejected_cookies(&self) -> Vec<(String, CookieRejected)> {
        self.state().last_rejected.clone()
    }

    /// The value of the most recently stored cookie called `name` (any host).
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.state().jar.get(name).map(|c| c.value.clone())
    }

    /// The most recently stored cookie called `name`, with its attributes.
    pub fn cookie_details(&self, name: &str) -> Option<Cookie> {
        self.state().jar.get(name).cloned()
    }

    /// Every unexpired cookie in the jar.
    pub fn cookies(&self) -> Vec<Cookie> {
        self.state().jar.all().into_iter().cloned().collect()
    }

    /// The `Cookie` header this browser would send to `url` (same-site), for
    /// requests made with another client (e.g. a streaming one).
    pub fn cookie_header_for(&self, url: &str) -> anyhow::Result<Option<String>> {
        let url = parse_url(url)?;
        Ok(self.state().jar.header_for(&url, SameSiteContext::SameSite))
    }

    /// Plants a cookie as if `url` had answered with `Set-Cookie: <set_cookie>`
    /// (the same rules apply, so an invalid `__Host-` cookie is refused).
    pub fn set_cookie(&self, url: &str, set_cookie: &str) -> anyhow::Result<()> {
        let url = parse_url(url)?;
        self.state()
            .jar
            .store(&url, set_cookie)
            .map(|_| ())
            .map_err(|e| anyhow!("cookie refused: {e}"))
    }

    /// Puts a cookie into the jar without any check.
    pub fn insert_cookie(&self, cookie: Cookie) {
        self.state().jar.insert(cookie);
    }

    /// Removes every cookie called `name`; returns how many there were.
    pub fn remove_cookie(&self, name: &str) -> usize {
        self.state().jar.remove(name)
    }

    /// Empties the jar.
    pub fn clear_cookies(&self) {
        self.state().jar.clear();
    }

    /// Signs in through the IdP fixture's login form and lets the gateway
    /// handle the callback:
    /// `GET start_url` (e.g. `http://127.0.0.1:PORT/bff/login?returnTo=/x`),
    /// redirects to the IdP, the login form, consent, redirects back, then
    /// `GET` of the callback URL. The callback's own redirect (to `returnTo`)
    /// is not followed.
    pub async fn login_via_form(
        &self,
        start_url: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<LoginOutcome> {
        let (callback, from) = self.login_steps(start_url, username, password).await?;
        let callback_response = self
            .send(
                Method::GET,
                callback.clone(),
                &[],
                Bytes::new(),
                std::slice::from_ref(&from),
            )
            .await?;
        let final_location = callback_response.location();
        Ok(LoginOutcome {
            callback_url: callback.to_string(),
            callback_response,
            final_location,
        })
    }

    /// Like [`login_via_form`](Self::login_via_form) but stops at the IdP's
    /// redirect to the callback and returns the callback URL (with `code`,
    /// `state` and `iss`) without requesting it.
    ///
    /// The callback is recognised as the `redirect_uri` of the authorization
    /// request seen on the way (or, failing that, a URL whose path ends with
    /// `/callback`).
    pub async fn login_until_callback(
        &self,
        start_url: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        Ok(self
            .login_steps(start_url, username, password)
            .await?
            .0
            .to_string())
    }

    /// Returns (callback URL, URL of the page that redirected to it).
    async fn login_steps(
        &self,
        start_url: &str,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(Url, Url)> {
        let start = parse_url(start_url)?;
        let mut redirect_uri = authorization_redirect_uri(&start);
        let mut resp = self.get(start.as_str()).await?;
        let mut chain: Vec<Url> = vec![start];
        let mut login_posted = false;

        for _ in 0..MAX_LOGIN_STEPS {
            if resp.is_redirect() {
                let next = resp
                    .location_url()
                    .with_context(|| format!("bad Location from {}", resp.url))?;
                if redirect_uri.is_none() {
                    redirect_uri = authorization_redirect_uri(&next);
                }
                if is_callback(&next, redirect_uri.as_ref()) {
                    return Ok((next, resp.url));
                }
                if matches!(resp.status.as_u16(), 307 | 308) && resp.method != Method::GET {
                    bail!(
                        "{} {} answered {}: cannot replay the request body",
                        resp.method,
                        resp.url,
                        resp.status
                    );
                }
                resp = self
                    .send(Method::GET, next.clone(), &[], Bytes::new(), &chain)
                    .await?;
                chain.push(next);
                continue;
            }

            let text = resp.text();
            let forms = html::forms(&text);
            if resp.status == StatusCode::OK {
                if let Some(form) = forms.iter().find(|f| f.has_input("password")) {
                    let action = form_action(&resp.url, form)?;
                    let body = url::form_urlencoded::Serializer::new(String::new())
                        .append_pair("login", username)
                        .append_pair("password", password)
                        .finish();
                    login_posted = true;
                    let page = resp.url.clone();
                    resp = self.submit(&page, action.clone(), body).await?;
                    // A form submission is a new navigation initiated by the IdP's page.
                    chain = vec![page, action];
                    continue;
                }
                if let Some(form) = forms.iter().find(|f| {
                    f.method == "POST"
                        && f.action.as_deref().is_some_and(|a| a.contains("/confirm"))
                }) {
                    // Consent (or any confirmation) form: submit its hidden
                    // fields as they are.
                    let action = form_action(&resp.url, form)?;
                    let body = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form.hidden_fields())
                        .finish();
                    let page = resp.url.clone();
                    resp = self.submit(&page, action.clone(), body).await?;
                    chain = vec![page, action];
                    continue;
                }
            }
            if login_posted
                && resp.status == StatusCode::UNAUTHORIZED
                && forms.iter().any(|f| f.has_input("password"))
            {
                bail!(
                    "the IdP rejected the credentials for {username:?} ({} at {})",
                    resp.status,
                    resp.url
                );
            }
            bail!(
                "login flow stopped at {} {} -> {}: {}",
                resp.method,
                resp.url,
                resp.status,
                snippet(&text)
            );
        }
        bail!("login flow did not reach the callback within {MAX_LOGIN_STEPS} steps")
    }

    /// Submits a form from `page` to `action` as a browser would (Origin of
    /// the page, same-site context from the page).
    async fn submit(&self, page: &Url, action: Url, body: String) -> anyhow::Result<Response> {
        let origin = page.origin().ascii_serialization();
        // The initiator is the page itself, whatever redirects led to it (as in browsers).
        let ctx_chain = vec![page.clone()];
        self.send(
            Method::POST,
            action,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            Bytes::from(body),
            &ctx_chain,
        )
        .await
    }

    /// Goes through the IdP's RP-initiated logout: `GET end_session_url`
    /// (e.g. the gateway's `logoutUrl`), confirms the sign-out form
    /// (`logout=yes`) and follows the IdP's redirects. Returns the URL the
    /// IdP finally sends the browser to outside itself (the
    /// `post_logout_redirect_uri`, not requested), or `None` when it ends on
    /// its own "signed out" page.
    pub async fn logout_at_idp(&self, end_session_url: &str) -> anyhow::Result<Option<String>> {
        let start = parse_url(end_session_url)?;
        let idp_origin = start.origin();
        let mut resp = self.get(start.as_str()).await?;
        let mut chain = vec![start];
        for _ in 0..MAX_LOGIN_STEPS {
            if resp.is_redirect() {
                let next = resp
                    .location_url()
                    .with_context(|| format!("bad Location from {}", resp.url))?;
                if next.origin() != idp_origin {
                    return Ok(Some(next.to_string()));
                }
                resp = self
                    .send(Method::GET, next.clone(), &[], Bytes::new(), &chain)
                    .await?;
                chain.push(next);
                continue;
            }
            if resp.status != StatusCode::OK {
                bail!(
                    "logout stopped at {} {} -> {}: {}",
                    resp.method,
                    resp.url,
                    resp.status,
                    snippet(&resp.text())
                );
            }
            let forms = html::forms(&resp.text());
            let Some(form) = forms.iter().find(|f| {
                f.method == "POST"
                    && f.action
                        .as_deref()
                        .is_some_and(|a| a.contains("/session/end/confirm"))
            }) else {
                return Ok(None);
            };
            let action = form_action(&resp.url, form)?;
            let mut fields = form.hidden_fields();
            if !fields.iter().any(|(k, _)| k == "logout") {
                fields.push(("logout".to_owned(), "yes".to_owned()));
            }
            let body = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields)
                .finish();
            let page = resp.url.clone();
            resp = self.submit(&page, action.clone(), body).await?;
            chain = vec![page, action];
        }
        bail!("logout did not finish within {MAX_LOGIN_STEPS} steps")
    }
}

fn parse_url(url: &str) -> anyhow::Result<Url> {
    Url::parse(url).with_context(|| format!("invalid URL {url:?}"))
}

fn form_action(page: &Url, form: &html::Form) -> anyhow::Result<Url> {
    let action = form.action.as_deref().unwrap_or("");
    page.join(action)
        .with_context(|| format!("bad form action {action:?} on {page}"))
}

/// The `SameSite` context of a request to `url` whose navigation chain
/// (initiator, then redirects) is `chain`: cross-site as soon as any URL of
/// the chain is cross-site to the target, as Chromium does for redirects.
fn same_site_context(url: &Url, method: &Method, chain: &[Url]) -> SameSiteContext {
    if chain.iter().all(|u| cookies::same_site(u, url)) {
        SameSiteContext::SameSite
    } else if *method == Method::GET || *method == Method::HEAD {
        SameSiteContext::CrossSiteLaxAllowed
    } else {
        SameSiteContext::CrossSite
    }
}

/// The `redirect_uri` parameter of an authorization request URL.
fn authorization_redirect_uri(url: &Url) -> Option<Url> {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let has = |k: &str| pairs.iter().any(|(n, _)| n == k);
    if !(has("client_id") && has("response_type")) {
        return None;
    }
    pairs
        .iter()
        .find(|(k, _)| k == "redirect_uri")
        .and_then(|(_, v)| Url::parse(v).ok())
}

fn is_callback(next: &Url, redirect_uri: Option<&Url>) -> bool {
    match redirect_uri {
        Some(ru) => {
            let mut bare = next.clone();
            bare.set_query(None);
            bare.set_fragment(None);
            let mut ru = ru.clone();
            ru.set_query(None);
            ru.set_fragment(None);
            bare == ru
        }
        None => {
            next.path().ends_with("/callback")
                && next.query_pairs().any(|(k, _)| k == "code" || k == "error")
        }
    }
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(600).collect();
    if t.len() < text.len() {
        format!("{t}…")
    } else {
        t
    }
}
