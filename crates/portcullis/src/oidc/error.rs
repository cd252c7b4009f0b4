//! What can go wrong talking to the provider. Details go to logs; the browser sees only a status.

use openidconnect::{
    HttpClientError, RequestTokenError, StandardErrorResponse, core::CoreErrorResponseType,
};

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("OpenID Provider metadata not loaded yet")]
    NotReady,
    #[error("OpenID Provider unavailable: {0}")]
    Unavailable(String),
    /// The provider answered with an OAuth error (e.g. `invalid_grant`).
    #[error("OpenID Provider rejected the request: {0}")]
    Rejected(String),
    #[error("ID token rejected: {0}")]
    InvalidIdToken(String),
    #[error("ID token signed with a key not in the provider's JWKS")]
    UnknownSigningKey,
    #[error("OIDC client configuration: {0}")]
    Config(String),
}

pub(super) fn from_token_request(
    e: RequestTokenError<
        HttpClientError<reqwest::Error>,
        StandardErrorResponse<CoreErrorResponseType>,
    >,
) -> OidcError {
    match e {
        // RFC 6749 5.2 has no "try later" code, but providers use these two for outages.
        RequestTokenError::ServerResponse(r)
            if matches!(
                r.error().as_ref(),
                "server_error" | "temporarily_unavailable"
            ) =>
        {
            OidcError::Unavailable(format!("token endpoint: {}", r.error().as_ref()))
        }
        RequestTokenError::ServerResponse(r) => OidcError::Rejected(r.error().as_ref().to_owned()),
        RequestTokenError::Request(e) => {
            OidcError::Unavailable(format!("token endpoint: {}", with_causes(&e)))
        }
        // `openidconnect` parses the ID token along with the response: a token response that is
        // well-formed JSON but carries an unparsable ID token is a bad token, not an outage.
        RequestTokenError::Parse(e, body) if is_token_response_json(&body) => {
            OidcError::InvalidIdToken(format!("malformed: {e}"))
        }
        RequestTokenError::Parse(e, _) => {
            OidcError::Unavailable(format!("token endpoint response: {e}"))
        }
        RequestTokenError::Other(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
    }
}

/// An error with its causes, `a: b: c`: the HTTP client's own message ("client error") does not
/// tell a refused connection from a name that does not resolve or a certificate problem.
pub(super) fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn is_token_response_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .is_some_and(|v| v.get("access_token").is_some() && v.get("id_token").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("client error")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_kept() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            with_causes(&e),
            "client error: Connection refused (os error 111)"
        );
    }
}
