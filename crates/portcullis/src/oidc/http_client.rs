//! The HTTP client for the OpenID Provider: `reqwest` with a W3C `traceparent` on every call
//! (token, refresh, revocation, discovery, JWKS), so the provider's logs join the request's
//! trace. The context is the current request's (task-local, see
//! [`crate::http::trace_context`]); background work starts a trace of its own.
//!
//! Two things are settled here, below the strict parsers of `openidconnect`/`oauth2`:
//! * **A 429 or a 5xx is an outage**, whatever its body says. RFC 6749 §5.2 error responses are
//!   400 (or 401 for `invalid_client`); a provider that is overloaded or failing answers 429/5xx
//!   with bodies like `{"error":"too_many_requests"}` or `{"error":"internal"}`, which must not
//!   read as "the provider refused this refresh token" and end the user's session.
//! * **Known numeric quirks of token responses** are normalised before parsing: `expires_in` as
//!   a string (`"3600"`) or a float (`3600.0`), and `scope` as a JSON array. RFC 6749 §5.1 has a
//!   number and a space-separated string; rejecting a whole login over the shape of an optional
//!   member helps nobody, and nothing of security value is lost (see [`normalise_token_response`]).

use std::{future::Future, pin::Pin};

use openidconnect::{
    AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse, http::StatusCode,
};

use crate::http::trace_context::{self, TRACEPARENT};

#[derive(Debug, Clone)]
pub struct TracedClient(reqwest::Client);

impl TracedClient {
    pub fn new(client: reqwest::Client) -> Self {
        TracedClient(client)
    }

    /// A POST with the trace header (for the calls made without `openidconnect`).
    pub fn post(&self, url: url::Url) -> reqwest::RequestBuilder {
        let req = self.0.post(url);
        match trace_context::outgoing() {
            Some(v) => req.header(TRACEPARENT, v),
            None => req,
        }
    }
}

/// The most of a provider's answer that is read (token, refresh, discovery, key set): 1 MiB, a
/// hundred times the largest key sets in use. Without a bound, a provider that streams an endless
/// body (a fault, or a man in the middle of a misconfigured `http` issuer) would grow the
/// gateway's memory until the `http_timeout`, once per login and refresh in flight.
pub const MAX_RESPONSE_BYTES: usize = 1 << 20;

impl TracedClient {
    /// Sends `request` and reads at most [`MAX_RESPONSE_BYTES`] of the answer; a longer one is an
    /// error (the provider is then unavailable, as for any unreadable answer).
    async fn bounded_call(
        &self,
        request: HttpRequest,
    ) -> Result<HttpResponse, HttpClientError<reqwest::Error>> {
        let too_long = || {
            HttpClientError::Other(format!(
                "the provider's answer is longer than {MAX_RESPONSE_BYTES} bytes"
            ))
        };
        let request = reqwest::Request::try_from(request).map_err(Box::new)?;
        let mut response = self.0.execute(request).await.map_err(Box::new)?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_long());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(Box::new)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_long());
            }
            body.extend_from_slice(&chunk);
        }
        let mut answer = HttpResponse::new(body);
        *answer.status_mut() = response.status();
        *answer.version_mut() = response.version();
        *answer.headers_mut() = std::mem::take(response.headers_mut());
        Ok(answer)
    }
}

impl<'c> AsyncHttpClient<'c> for TracedClient {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, mut request: HttpRequest) -> Self::Future {
        if let Some(v) = trace_context::outgoing() {
            request.headers_mut().insert(TRACEPARENT, v);
        }
        Box::pin(async move {
            let response = self.bounded_call(request).await?;
            let status = response.status();
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                let code = oauth_error_code(response.body())
                    .map(|c| format!(" (error={c})"))
                    .unwrap_or_default();
                return Err(HttpClientError::Other(format!(
                    "the provider answered {status}{code}"
                )));
            }
            Ok(normalise_token_response(response))
        })
    }
}

/// The `error` member of an OAuth error body, for the logs: only when it is a short code made of
/// the characters RFC 6749 §5.2 allows (so a provider's body cannot forge log lines).
fn oauth_error_code(body: &[u8]) -> Option<String> {
    let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = doc.get("error")?.as_str()?;
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e');
    (!code.is_empty() && code.len() <= 64 && code.chars().all(allowed)).then(|| code.to_owned())
}

/// `expires_in` as an integer and `scope` as a space-separated string, when a successful JSON
/// answer carries an `access_token` (a token response) with them in another shape. Anything
/// else, and every other member, is passed on untouched for the strict parser to judge.
pub fn normalise_token_response(response: HttpResponse) -> HttpResponse {
    if !response.status().is_success() || !response.body().starts_with(b"{") {
        return response;
    }
    let Ok(serde_json::Value::Object(mut doc)) =
        serde_json::from_slice::<serde_json::Value>(response.body())
    else {
        return response;
    };
    if !doc.contains_key("access_token") {
        return response;
    }
    let mut changed = false;
    if let Some(v) = doc.get_mut("expires_in") {
        let seconds = match &*v {
            serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
            serde_json::Value::Number(n) if !n.is_u64() => n
                .as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64),
            _ => None,
        };
        if let Some(seconds) = seconds {
            *v = serde_json::Value::from(seconds);
            changed = true;
        }
    }
    if let Some(v) = doc.get_mut("scope")
        && let serde_json::Value::Array(items) = &*v
        && let Some(words) = items
            .iter()
            .map(|i| i.as_str())
            .collect::<Option<Vec<&str>>>()
    {
        *v = serde_json::Value::from(words.join(" "));
        changed = true;
    }
    if !changed {
        return response;
    }
    let (parts, _) = response.into_parts();
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    HttpResponse::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> HttpResponse {
        let mut r = HttpResponse::new(body.as_bytes().to_vec());
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        r
    }

    fn json(r: &HttpResponse) -> serde_json::Value {
        serde_json::from_slice(r.body()).expect("json")
    }

    #[test]
    fn expires_in_and_scope_quirks_become_the_rfc_shapes() {
        for (given, seconds) in [
            (r#""3600""#, 3600),
            ("3600.0", 3600),
            ("299.6", 299),
            (r#"" 60 ""#, 60),
        ] {
            let r = normalise_token_response(answer(
                200,
                &format!(
                    r#"{{"access_token":"a","token_type":"Bearer","expires_in":{given},"scope":["openid","profile"]}}"#
                ),
            ));
            let v = json(&r);
            assert_eq!(v["expires_in"], seconds, "{given}");
            assert_eq!(v["scope"], "openid profile");
            assert_eq!(v["access_token"], "a");
        }
    }

    #[test]
    fn only_a_short_oauth_error_code_reaches_the_logs() {
        assert_eq!(
            oauth_error_code(br#"{"error":"server_error"}"#).as_deref(),
            Some("server_error")
        );
        assert_eq!(oauth_error_code(br#"{"error":"a\nforged line"}"#), None);
        assert_eq!(oauth_error_code(br#"{"error":""}"#), None);
        assert_eq!(oauth_error_code(br#"{"error":7}"#), None);
        assert_eq!(oauth_error_code(b"<html>busy</html>"), None);
        let long = format!(r#"{{"error":"{}"}}"#, "x".repeat(65));
        assert_eq!(oauth_error_code(long.as_bytes()), None);
    }

    #[test]
    fn everything_else_is_passed_on_untouched() {
        let untouched = [
            (
                200,
                r#"{"access_token":"a","token_type":"Bearer","expires_in":3600,"scope":"openid"}"#,
            ),
            (200, r#"{"access_token":"a","expires_in":"soon"}"#),
            (200, r#"{"access_token":"a","expires_in":-5.5}"#),
            (200, r#"{"access_token":"a","scope":["openid",7]}"#),
            (200, r#"{"issuer":"x","expires_in":"3600"}"#),
            (400, r#"{"error":"invalid_grant","expires_in":"3600"}"#),
            (200, "not json"),
        ];
        for (status, body) in untouched {
            let r = normalise_token_response(answer(status, body));
            assert_eq!(r.body(), body.as_bytes(), "{body}");
        }
    }
}
