//! Provider metadata (OpenID Connect Discovery 1.0) and the configured client built from it.

use openidconnect::{
    AdditionalProviderMetadata, AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    IssuerUrl, ProviderMetadata, RedirectUrl,
    core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod,
        CoreGrantType, CoreJsonWebKey, CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm, CoreResponseMode, CoreResponseType,
        CoreSubjectIdentifierType,
    },
};
use serde::{Deserialize, Serialize};
use url::Url;

use super::OidcError;
use crate::config::OidcConfig;

/// Metadata fields `openidconnect`'s core type does not model.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraMetadata {
    pub revocation_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
    pub code_challenge_methods_supported: Option<Vec<String>>,
    /// RFC 9207: the provider puts `iss` in every authorization response.
    pub authorization_response_iss_parameter_supported: Option<bool>,
}
impl AdditionalProviderMetadata for ExtraMetadata {}

pub type Metadata = ProviderMetadata<
    ExtraMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client with the authorization and token endpoints set.
pub type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
    EndpointNotSet,
>;

pub struct Discovered {
    pub client: Client,
    pub issuer: IssuerUrl,
    pub jwks: CoreJsonWebKeySet,
    jwks_uri: openidconnect::JsonWebKeySetUrl,
    pub revocation_endpoint: Option<Url>,
    pub end_session_endpoint: Option<Url>,
    /// `client_secret_basic` (the default) or `client_secret_post`.
    pub auth_basic: bool,
    /// The provider advertises RFC 9207, so a callback without `iss` is refused (mix-up defence).
    pub iss_parameter_required: bool,
}

impl std::fmt::Debug for Discovered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovered")
            .field("issuer", &self.issuer.as_str())
            .finish_non_exhaustive()
    }
}

fn endpoint(name: &str, value: Option<&String>) -> Result<Option<Url>, OidcError> {
    value
        .map(|s| Url::parse(s).map_err(|e| OidcError::Unavailable(format!("metadata {name}: {e}"))))
        .transpose()
}

impl Discovered {
    pub async fn load(
        cfg: &OidcConfig,
        redirect: &RedirectUrl,
        http: &super::http_client::TracedClient,
    ) -> Result<Self, OidcError> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        // Validates that the document's `issuer` equals the configured issuer exactly.
        let meta = Metadata::discover_async(issuer.clone(), http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("discovery: {e}")))?;
        let token_endpoint = meta
            .token_endpoint()
            .cloned()
            .ok_or_else(|| OidcError::Unavailable("metadata has no token_endpoint".into()))?;
        let methods = meta.token_endpoint_auth_methods_supported();
        let auth_basic = match methods {
            None => true,
            Some(m) if m.contains(&CoreClientAuthMethod::ClientSecretBasic) => true,
            Some(m) if m.contains(&CoreClientAuthMethod::ClientSecretPost) => false,
            Some(_) => {
                return Err(OidcError::Unavailable(
                    "provider supports neither client_secret_basic nor client_secret_post".into(),
                ));
            }
        };
        if let Some(pkce) = &meta.additional_metadata().code_challenge_methods_supported
            && !pkce.iter().any(|m| m == "S256")
        {
            return Err(OidcError::Unavailable(
                "provider does not support PKCE S256".into(),
            ));
        }
        let extra = meta.additional_metadata();
        let iss_parameter_required =
            extra.authorization_response_iss_parameter_supported == Some(true);
        let revocation_endpoint =
            endpoint("revocation_endpoint", extra.revocation_endpoint.as_ref())?;
        let end_session_endpoint =
            endpoint("end_session_endpoint", extra.end_session_endpoint.as_ref())?;
        let jwks_uri = meta.jwks_uri().clone();
        let jwks = meta.jwks().clone();
        let client = CoreClient::new(
            ClientId::new(cfg.client_id.clone()),
            issuer.clone(),
            jwks.clone(),
        )
        .set_client_secret(ClientSecret::new(cfg.client_secret.expose().to_owned()))
        .set_auth_uri(meta.authorization_endpoint().clone())
        .set_token_uri(token_endpoint)
        .set_redirect_uri(redirect.clone())
        .set_auth_type(if auth_basic {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        });
        Ok(Discovered {
            client,
            issuer,
            jwks,
            jwks_uri,
            revocation_endpoint,
            end_session_endpoint,
            auth_basic,
            iss_parameter_required,
        })
    }

    /// The same provider with a freshly fetched key set (after an unknown `kid`).
    pub async fn with_refetched_jwks(
        &self,
        cfg: &OidcConfig,
        http: &super::http_client::TracedClient,
    ) -> Result<Self, OidcError> {
        let jwks = CoreJsonWebKeySet::fetch_async(&self.jwks_uri, http)
            .await
            .map_err(|e| OidcError::Unavailable(format!("JWKS: {e}")))?;
        let client = self
            .client
            .clone()
            .set_client_secret(ClientSecret::new(cfg.client_secret.expose().to_owned()));
        Ok(Discovered {
            client,
            issuer: self.issuer.clone(),
            jwks,
            jwks_uri: self.jwks_uri.clone(),
            revocation_endpoint: self.revocation_endpoint.clone(),
            end_session_endpoint: self.end_session_endpoint.clone(),
            auth_basic: self.auth_basic,
            iss_parameter_required: self.iss_parameter_required,
        })
    }
}
