//! RFC 7009 token revocation with the client's credentials.

use base64::{Engine, engine::general_purpose::STANDARD};
use url::{Url, form_urlencoded::byte_serialize};

use super::OidcError;
use crate::config::OidcConfig;

pub async fn revoke(
    http: &super::http_client::TracedClient,
    endpoint: &Url,
    cfg: &OidcConfig,
    basic: bool,
    token: &str,
) -> Result<(), OidcError> {
    let mut form = vec![("token", token), ("token_type_hint", "refresh_token")];
    let mut req = http.post(endpoint.clone());
    if basic {
        // RFC 6749 2.3.1: id and secret are form-encoded before the Basic encoding.
        let id: String = byte_serialize(cfg.client_id.as_bytes()).collect();
        let secret: String = byte_serialize(cfg.client_secret.expose().as_bytes()).collect();
        req = req.header(
            http::header::AUTHORIZATION,
            format!("Basic {}", STANDARD.encode(format!("{id}:{secret}"))),
        );
    } else {
        form.push(("client_id", &cfg.client_id));
        form.push(("client_secret", cfg.client_secret.expose()));
    }
    let resp = req
        .form(&form)
        .send()
        .await
        .map_err(|e| OidcError::Unavailable(format!("revocation endpoint: {e}")))?;
    // RFC 7009 2.2: 200 whether or not the token was valid.
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(OidcError::Rejected(format!(
            "revocation endpoint answered {}",
            resp.status()
        )))
    }
}
