//! UserInfo (OIDC Core §5.3): the claims a login needs that the ID token lacks. A provider that
//! follows §5.4 returns the `profile` and `email` claims only from its UserInfo endpoint when the
//! response also issues an access token (which the code flow always does), so without this
//! read a session would know the user by `sub` alone.
//!
//! The access token goes in an `Authorization: Bearer` header (RFC 6750 §2.1; never in the URL,
//! where it would reach logs and history), and the answer is used only when its `sub` is exactly
//! the ID token's (§5.3.2): another `sub` is another user's claims, or a substituted token.

use openidconnect::http::{self, StatusCode, header};
use serde_json::{Map, Value};
use url::Url;

use super::OidcError;

/// Claims about the token or the authentication event, not the End-User (OIDC Core §2 and
/// §3.1.3.6, RFC 7519 §4.1, RFC 7800): only the signed ID token speaks for them. Taken from an
/// unsigned UserInfo answer, an `acr` or `amr` would pass a step-up route policy for a login
/// whose ID token claims no such authentication.
const ID_TOKEN_ONLY: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "nbf",
    "jti",
    "nonce",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "at_hash",
    "c_hash",
    "s_hash",
    "sid",
    "cnf",
];

/// Whether a UserInfo answer may supply `claim` (see [`ID_TOKEN_ONLY`]).
pub(super) fn may_supply(claim: &str) -> bool {
    !ID_TOKEN_ONLY.contains(&claim)
}

/// GETs `endpoint` with `access_token`. `Unavailable` when there is no usable answer (the caller
/// may go on without it); `Rejected` when the answer is about someone else than `expected_sub`.
pub(super) async fn fetch(
    client: &super::http_client::TracedClient,
    endpoint: &Url,
    access_token: &str,
    expected_sub: &str,
) -> Result<Map<String, Value>, OidcError> {
    use openidconnect::AsyncHttpClient as _;
    let unavailable = |why: String| OidcError::Unavailable(format!("userinfo endpoint: {why}"));
    let request = http::Request::get(endpoint.as_str())
        .header(header::ACCEPT, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {access_token}"))
        .body(Vec::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let response = client
        .call(request)
        .await
        .map_err(|e| unavailable(super::error::with_causes(&e)))?;
    if response.status() != StatusCode::OK {
        return Err(unavailable(format!("answered {}", response.status())));
    }
    // A signed or encrypted answer (`application/jwt`) is only sent to clients registered for
    // one; this client is not, and does not parse it.
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(response.body()) else {
        return Err(unavailable("the answer is not a JSON object".into()));
    };
    check_sub(claims, expected_sub)
}

/// §5.3.2: "The sub Claim in the UserInfo Response MUST be verified to exactly match the sub
/// Claim in the ID Token; if they do not match, the UserInfo Response values MUST NOT be used."
/// A missing `sub` cannot be verified, so it counts as a mismatch.
fn check_sub(
    claims: Map<String, Value>,
    expected_sub: &str,
) -> Result<Map<String, Value>, OidcError> {
    match claims.get("sub").and_then(Value::as_str) {
        Some(sub) if sub == expected_sub => Ok(claims),
        Some(_) => Err(OidcError::Rejected(
            "userinfo response names another sub than the ID token".into(),
        )),
        None => Err(OidcError::Rejected("userinfo response has no sub".into())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn only_the_id_tokens_subject_is_accepted() {
        assert!(check_sub(map(json!({"sub": "alice", "name": "A"})), "alice").is_ok());
        for bad in [
            json!({"sub": "mallory"}),
            json!({"sub": "Alice"}),
            json!({"sub": "alice "}),
            json!({"sub": 7}),
            json!({"name": "A"}),
        ] {
            assert!(
                matches!(
                    check_sub(map(bad.clone()), "alice"),
                    Err(OidcError::Rejected(_))
                ),
                "{bad}"
            );
        }
    }
}
