//! Anti-CSRF: any method but GET, HEAD and OPTIONS needs `X-CSRF-Token` equal (in constant time)
//! to the session's token, and a present `Origin` must be the app's own origin. Rejections happen
//! before routing, so no upstream is ever contacted for them.
//!
//! Order of checks: cross-origin (`Origin`, `Sec-Fetch-Site`) → 403; header missing, duplicated
//! or malformed → 403; no session → 401; token mismatch → 403. On `public = true` routes only
//! the cross-origin check applies (see `crate::compose::policy`).

use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::Method;
use subtle::ConstantTimeEq;

use crate::{
    AppState,
    audit::{AuditContext, AuditEvent},
    http::{
        around::{Around, Before},
        problem::ApiError,
    },
    session::layer::CurrentSession,
};

pub const HEADER: &str = "x-csrf-token";

pub fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The CSRF layer: refuses a state-changing request without a valid token (or from a foreign
/// origin) before routing, so no upstream is contacted.
#[derive(Debug, Clone)]
pub struct RequireToken(pub AppState);

impl Around for RequireToken {
    type Carry = ();

    fn before(&self, req: &mut Request) -> Before<()> {
        match refusal(&self.0, req) {
            Some(resp) => Before::Answer(resp),
            None => Before::Continue(()),
        }
    }

    fn after(&self, (): (), _: &mut Response) {}
}

fn refusal(state: &AppState, req: &Request) -> Option<Response> {
    if is_safe(req.method()) || state.csrf_exempt(req.uri().path()) {
        return None;
    }
    // A `public = true` route gets neither the cookie nor a token: there is no ambient authority
    // to protect, so no anti-CSRF token is needed; a foreign Origin is still refused.
    let verdict = if state.proxy.is_public(req.uri().path()) {
        check_origin(state, req).map_err(|e| (e, "cross_origin"))
    } else {
        check(state, req)
    };
    let (e, reason) = verdict.err()?;
    tracing::info!(method = %req.method(), path = req.uri().path(), status = e.status().as_u16(), reason, "state-changing request refused by the CSRF layer");
    state.metrics.csrf_rejection(reason);
    if state.audit.enabled() {
        let session = current_session(req);
        let ctx = AuditContext::of_request(req, &state.config.server.trusted_proxies);
        state.audit.event(AuditEvent {
            event: "csrf_rejected",
            reason: Some(reason),
            subject: session.map(|s| s.record.sub.as_str()),
            session: session.map(|s| &s.key),
            ctx: Some(&ctx),
            ..AuditEvent::default()
        });
    }
    Some(e.into_response())
}

fn current_session(req: &Request) -> Option<&crate::session::Session> {
    req.extensions()
        .get::<CurrentSession>()
        .and_then(|c| c.0.as_deref())
}

/// `Err` carries the answer and the reason (a metric label): `cross_origin`, `missing`,
/// `malformed`, `no_session` or `mismatch`.
fn check(state: &AppState, req: &Request) -> Result<(), (ApiError, &'static str)> {
    check_origin(state, req).map_err(|e| (e, "cross_origin"))?;
    let mut tokens = req.headers().get_all(HEADER).iter();
    let presented = match (tokens.next(), tokens.next()) {
        (Some(v), None) => v.as_bytes(),
        (None, _) => return Err((ApiError::Csrf, "missing")),
        (Some(_), Some(_)) => return Err((ApiError::Csrf, "malformed")),
    };
    if !well_formed(presented) {
        return Err((ApiError::Csrf, "malformed"));
    }
    let session = current_session(req).ok_or((ApiError::Unauthenticated, "no_session"))?;
    if token_matches(presented, &session.record.csrf_token) {
        Ok(())
    } else {
        Err((ApiError::Csrf, "mismatch"))
    }
}

/// The shape of a token we issue: 43 base64url characters. Anything else is refused before any
/// comparison with the session's token.
pub fn well_formed(presented: &[u8]) -> bool {
    presented.len() == crate::session::ticket::TICKET_CHARS
        && presented
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

/// Constant-time comparison with the session's token.
pub fn token_matches(presented: &[u8], expected: &str) -> bool {
    bool::from(presented.ct_eq(expected.as_bytes()))
}

/// A present `Origin` must be exactly ours (a sibling subdomain is same-site, never same-origin);
/// `Sec-Fetch-Site`, when the browser sends it, must say `same-origin`.
pub fn check_origin(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let mut origins = req.headers().get_all(http::header::ORIGIN).iter();
    match (origins.next(), origins.next()) {
        (None, _) => {}
        (Some(o), None) if o.as_bytes() == state.config.server.public_origin.origin.as_bytes() => {}
        _ => return Err(ApiError::CrossOrigin),
    }
    match req.headers().get("sec-fetch-site").map(|v| v.as_bytes()) {
        None | Some(b"same-origin") => Ok(()),
        Some(_) => Err(ApiError::CrossOrigin),
    }
}
