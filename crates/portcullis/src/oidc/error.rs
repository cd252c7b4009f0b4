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
        RequestTokenError::ServerResponse(r) => OidcError::Rejected(r.error().as_ref().to_owned()),
        RequestTokenError::Request(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
        RequestTokenError::Parse(e, _) => {
            OidcError::Unavailable(format!("token endpoint response: {e}"))
        }
        RequestTokenError::Other(e) => OidcError::Unavailable(format!("token endpoint: {e}")),
    }
}
