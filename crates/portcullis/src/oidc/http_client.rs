//! The HTTP client for the OpenID Provider: `reqwest` with a W3C `traceparent` on every call
//! (token, refresh, revocation, discovery, JWKS), so the provider's logs join the request's
//! trace. The context is the current request's (task-local, see
//! [`crate::http::trace_context`]); background work starts a trace of its own.

use std::{future::Future, pin::Pin};

use openidconnect::{AsyncHttpClient, HttpClientError, HttpRequest, HttpResponse};

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

impl<'c> AsyncHttpClient<'c> for TracedClient {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, mut request: HttpRequest) -> Self::Future {
        if let Some(v) = trace_context::outgoing() {
            request.headers_mut().insert(TRACEPARENT, v);
        }
        self.0.call(request)
    }
}
