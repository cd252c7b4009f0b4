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
use crate::config::{ClientAuthMethod, OidcConfig};

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
    /// Where claims the ID token lacks are read (OIDC Core §5.3); `None` when the document names
    /// no usable one.
    pub userinfo_endpoint: Option<Url>,
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

/// Discovery (OpenID Connect Discovery 1.0 §4): the document at the issuer's well-known URL,
/// normalised (see [`normalise_discovery`]), parsed, its `issuer` checked to equal ours exactly
/// (§4.3), then its key set. The UserInfo endpoint is read on its own, leniently (see
/// [`userinfo_endpoint`]).
async fn fetch_metadata(
    issuer: &IssuerUrl,
    http: &super::http_client::TracedClient,
) -> Result<(Metadata, Option<Url>), OidcError> {
    let unavailable = |what: String| OidcError::Unavailable(format!("discovery: {what}"));
    let url = issuer
        .join(".well-known/openid-configuration")
        .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
    let mut doc: serde_json::Value = get_json(url.as_str(), "discovery", http).await?;
    let userinfo = userinfo_endpoint(&doc);
    normalise_discovery(&mut doc);
    let meta: Metadata =
        serde_json::from_value(doc).map_err(|e| unavailable(format!("metadata: {e}")))?;
    if meta.issuer() != issuer {
        return Err(unavailable(format!(
            "the document names issuer `{}`, not `{}`",
            meta.issuer().as_str(),
            issuer.as_str()
        )));
    }
    let jwks = fetch_jwks(meta.jwks_uri(), http).await?;
    Ok((meta.set_jwks(jwks), userinfo))
}

/// The document's `userinfo_endpoint` when it is an absolute `http(s)` URL. Only an optional
/// source of display claims hangs on it, so a provider that sends an empty string or a relative
/// path has none, rather than a document that fails to load (and with it every login).
fn userinfo_endpoint(doc: &serde_json::Value) -> Option<Url> {
    let raw = doc.get("userinfo_endpoint")?.as_str()?;
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http"))
}

/// The provider's key set. Its media type is not checked: key sets are often static files,
/// served as `application/octet-stream` or `text/plain`, and what matters is that the body
/// parses as a JWK Set (keys of unknown types are skipped by the parser).
async fn fetch_jwks(
    uri: &openidconnect::JsonWebKeySetUrl,
    http: &super::http_client::TracedClient,
) -> Result<CoreJsonWebKeySet, OidcError> {
    get_json(uri.as_str(), "JWKS", http).await
}

/// GETs `url` from the provider and parses a 200 answer's body as `T`, whatever its media type.
/// Every failure is the provider being unavailable, named `what` in the message.
async fn get_json<T: serde::de::DeserializeOwned>(
    url: &str,
    what: &str,
    http: &super::http_client::TracedClient,
) -> Result<T, OidcError> {
    use openidconnect::AsyncHttpClient as _;
    let unavailable = |detail: String| OidcError::Unavailable(format!("{what}: {detail}"));
    let request = openidconnect::http::Request::get(url)
        .header(openidconnect::http::header::ACCEPT, "application/json")
        .body(Vec::new())
        .map_err(|e| unavailable(e.to_string()))?;
    let response = http
        .call(request)
        .await
        .map_err(|e| unavailable(super::error::with_causes(&e)))?;
    if response.status() != openidconnect::http::StatusCode::OK {
        return Err(unavailable(format!("{url} answered {}", response.status())));
    }
    serde_json::from_slice(response.body())
        .map_err(|e| unavailable(format!("{url} could not be read ({e})")))
}

/// Discovery members Portcullis does not parse strictly (`userinfo_endpoint` is read before, on
/// its own, see [`userinfo_endpoint`]). They are dropped before parsing: a provider that sends
/// one of them in an unexpected shape (an empty `op_policy_uri`, a relative
/// `service_documentation`, numbers in `claims_supported`, `"false"` for a boolean) would
/// otherwise fail the whole document, and with it every login. Discovery §3 allows members the
/// client does not understand; these are ones it does not need.
const UNUSED_MEMBERS: [&str; 25] = [
    "registration_endpoint",
    "userinfo_endpoint",
    "scopes_supported",
    "response_modes_supported",
    "grant_types_supported",
    "acr_values_supported",
    "id_token_encryption_alg_values_supported",
    "id_token_encryption_enc_values_supported",
    "userinfo_signing_alg_values_supported",
    "userinfo_encryption_alg_values_supported",
    "userinfo_encryption_enc_values_supported",
    "request_object_signing_alg_values_supported",
    "request_object_encryption_alg_values_supported",
    "request_object_encryption_enc_values_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "display_values_supported",
    "claim_types_supported",
    "claims_supported",
    "service_documentation",
    "claims_locales_supported",
    "ui_locales_supported",
    "claims_parameter_supported",
    "request_parameter_supported",
    "request_uri_parameter_supported",
    "require_request_uri_registration",
];

/// Makes a discovery document parseable without changing anything Portcullis relies on:
/// * members it never reads ([`UNUSED_MEMBERS`], `op_policy_uri`, `op_tos_uri`) are dropped;
/// * `response_types_supported`, `subject_types_supported` and
///   `id_token_signing_alg_values_supported`, required by §3 but not used (the flow is always
///   `code`; the gateway's own list of algorithms decides), are filled in when missing or not a
///   list of strings;
/// * `authorization_response_iss_parameter_supported` as `"true"`/`"false"` becomes a boolean,
///   and `code_challenge_methods_supported` as one string becomes a list of it.
///
/// Everything the gateway uses (`issuer`, the endpoints, `jwks_uri`, the client authentication
/// methods, PKCE and RFC 9207 support) is left for the strict parser and the checks after it.
pub fn normalise_discovery(doc: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(members) = doc.as_object_mut() else {
        return;
    };
    for name in UNUSED_MEMBERS
        .iter()
        .chain(&["op_policy_uri", "op_tos_uri"])
    {
        members.remove(*name);
    }
    let strings = |v: &Value| {
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_string))
    };
    for (name, default) in [
        ("response_types_supported", "code"),
        ("subject_types_supported", "public"),
        // What verifies an ID token is the gateway's own list of asymmetric algorithms
        // (`id_token.rs`), not this one.
        ("id_token_signing_alg_values_supported", "RS256"),
    ] {
        if !members.get(name).is_some_and(strings) {
            members.insert(name.to_owned(), Value::from(vec![default]));
        }
    }

    if let Some(v) = members.get_mut("authorization_response_iss_parameter_supported")
        && let Some(flag) = v.as_str().and_then(|s| match s.trim() {
            t if t.eq_ignore_ascii_case("true") => Some(true),
            t if t.eq_ignore_ascii_case("false") => Some(false),
            _ => None,
        })
    {
        *v = Value::from(flag);
    }
    if let Some(v) = members.get_mut("code_challenge_methods_supported")
        && let Some(one) = v.as_str()
    {
        *v = Value::from(vec![one.to_owned()]);
    }
}

/// The first endpoint that is not `https` when the issuer is: the client secret, codes and
/// tokens go to these, and a plain-HTTP one in the document would send them in the clear. (A
/// plain-HTTP issuer is a loopback or test set-up the configuration already allowed.)
fn plain_http_endpoint<'a, const N: usize>(
    issuer: &Url,
    endpoints: [(&'a str, Option<&Url>); N],
) -> Option<&'a str> {
    if issuer.scheme() != "https" {
        return None;
    }
    endpoints
        .into_iter()
        .find(|(_, u)| u.is_some_and(|u| u.scheme() != "https"))
        .map(|(name, _)| name)
}

/// Whether the client authenticates with `client_secret_basic` (else `client_secret_post`).
/// The configured method wins: a provider that offers both still holds each client to the one it
/// was registered with. A configured method the provider does not list is used anyway (lists
/// are not always complete; the token endpoint's answer will tell) and logged. Unconfigured:
/// Basic when offered or when the provider lists nothing (its default, Discovery §3), else Post.
fn client_auth_basic(
    configured: Option<ClientAuthMethod>,
    offered: Option<&Vec<CoreClientAuthMethod>>,
) -> Result<bool, OidcError> {
    let offers = |m: &CoreClientAuthMethod| offered.is_none_or(|list| list.contains(m));
    match configured {
        Some(method) => {
            let (basic, name) = match method {
                ClientAuthMethod::ClientSecretBasic => {
                    (true, CoreClientAuthMethod::ClientSecretBasic)
                }
                ClientAuthMethod::ClientSecretPost => {
                    (false, CoreClientAuthMethod::ClientSecretPost)
                }
            };
            if !offers(&name) {
                tracing::warn!(
                    method = name.as_ref(),
                    "the provider does not list the configured oidc.token_endpoint_auth_method; using it anyway"
                );
            }
            Ok(basic)
        }
        None if offers(&CoreClientAuthMethod::ClientSecretBasic) => Ok(true),
        None if offers(&CoreClientAuthMethod::ClientSecretPost) => Ok(false),
        None => Err(OidcError::Unavailable(
            "provider supports neither client_secret_basic nor client_secret_post".into(),
        )),
    }
}

impl Discovered {
    pub async fn load(
        cfg: &OidcConfig,
        redirect: &RedirectUrl,
        http: &super::http_client::TracedClient,
    ) -> Result<Self, OidcError> {
        let issuer = IssuerUrl::new(cfg.issuer.clone())
            .map_err(|e| OidcError::Config(format!("issuer: {e}")))?;
        let (meta, userinfo_endpoint) = fetch_metadata(&issuer, http).await?;
        let token_endpoint = meta
            .token_endpoint()
            .cloned()
            .ok_or_else(|| OidcError::Unavailable("metadata has no token_endpoint".into()))?;
        let auth_basic = client_auth_basic(
            cfg.token_endpoint_auth_method,
            meta.token_endpoint_auth_methods_supported(),
        )?;
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
        if let Some(name) = plain_http_endpoint(
            issuer.url(),
            [
                (
                    "authorization_endpoint",
                    Some(meta.authorization_endpoint().url()),
                ),
                ("token_endpoint", Some(token_endpoint.url())),
                ("jwks_uri", Some(meta.jwks_uri().url())),
                ("revocation_endpoint", revocation_endpoint.as_ref()),
                ("end_session_endpoint", end_session_endpoint.as_ref()),
                ("userinfo_endpoint", userinfo_endpoint.as_ref()),
            ],
        ) {
            return Err(OidcError::Unavailable(format!(
                "metadata {name}: not https, while the issuer is"
            )));
        }
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
            userinfo_endpoint,
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
        let jwks = fetch_jwks(&self.jwks_uri, http).await?;
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
            userinfo_endpoint: self.userinfo_endpoint.clone(),
            auth_basic: self.auth_basic,
            iss_parameter_required: self.iss_parameter_required,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn minimal() -> serde_json::Value {
        json!({
            "issuer": "https://idp.example",
            "authorization_endpoint": "https://idp.example/authorize",
            "token_endpoint": "https://idp.example/token",
            "jwks_uri": "https://idp.example/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
    }

    fn parse(mut doc: serde_json::Value) -> Result<Metadata, serde_json::Error> {
        normalise_discovery(&mut doc);
        serde_json::from_value(doc)
    }

    #[test]
    fn members_the_gateway_does_not_read_cannot_fail_the_document() {
        let quirks = [
            ("op_policy_uri", json!("")),
            ("op_tos_uri", json!("terms.html")),
            ("service_documentation", json!("/docs")),
            ("registration_endpoint", json!("register")),
            ("request_parameter_supported", json!("false")),
            ("claims_supported", json!(["sub", 7])),
            ("scopes_supported", json!("openid profile")),
            ("ui_locales_supported", json!([null])),
            ("userinfo_endpoint", json!("")),
            ("id_token_signing_alg_values_supported", json!("RS256")),
            ("response_types_supported", json!(null)),
            ("subject_types_supported", json!("public")),
        ];
        for (name, value) in quirks {
            let mut doc = minimal();
            doc[name] = value.clone();
            assert!(
                serde_json::from_value::<Metadata>(doc.clone()).is_err(),
                "{name}: {value} must be a quirk the strict parser refuses"
            );
            parse(doc).unwrap_or_else(|e| panic!("{name}: {value}: {e}"));
        }
        let mut doc = minimal();
        doc.as_object_mut()
            .expect("object")
            .remove("subject_types_supported");
        doc.as_object_mut()
            .expect("object")
            .remove("response_types_supported");
        parse(doc).expect("required-but-unused members may be missing");
    }

    #[test]
    fn provider_flags_as_strings_are_read_as_meant() {
        let mut doc = minimal();
        doc["authorization_response_iss_parameter_supported"] = json!("true");
        doc["code_challenge_methods_supported"] = json!("S256");
        let meta = parse(doc).expect("parse");
        let extra = meta.additional_metadata();
        assert_eq!(
            extra.authorization_response_iss_parameter_supported,
            Some(true)
        );
        assert_eq!(
            extra.code_challenge_methods_supported.as_deref(),
            Some(&["S256".to_owned()][..])
        );
        let mut doc = minimal();
        doc["authorization_response_iss_parameter_supported"] = json!("FALSE");
        let meta = parse(doc).expect("parse");
        assert_eq!(
            meta.additional_metadata()
                .authorization_response_iss_parameter_supported,
            Some(false)
        );
    }

    #[test]
    fn an_https_issuer_has_only_https_endpoints() {
        let u = |s: &str| Url::parse(s).expect("url");
        let (issuer, token, plain) = (
            u("https://idp.example"),
            u("https://idp.example/token"),
            u("http://idp.example/me"),
        );
        assert_eq!(
            plain_http_endpoint(
                &issuer,
                [
                    ("token_endpoint", Some(&token)),
                    ("userinfo_endpoint", None)
                ]
            ),
            None
        );
        assert_eq!(
            plain_http_endpoint(
                &issuer,
                [
                    ("token_endpoint", Some(&token)),
                    ("userinfo_endpoint", Some(&plain))
                ]
            ),
            Some("userinfo_endpoint")
        );
        // A plain-HTTP issuer (loopback, tests) is not held to it.
        assert_eq!(
            plain_http_endpoint(
                &u("http://127.0.0.1:9000"),
                [("userinfo_endpoint", Some(&plain))]
            ),
            None
        );
    }

    #[test]
    fn only_an_absolute_http_userinfo_endpoint_is_used() {
        let mut doc = minimal();
        doc["userinfo_endpoint"] = json!("https://idp.example/me");
        assert_eq!(
            userinfo_endpoint(&doc).map(String::from).as_deref(),
            Some("https://idp.example/me")
        );
        for odd in [json!(""), json!("/me"), json!(7), json!("javascript:x")] {
            doc["userinfo_endpoint"] = odd.clone();
            assert_eq!(userinfo_endpoint(&doc), None, "{odd}");
        }
        assert_eq!(userinfo_endpoint(&minimal()), None);
    }

    #[test]
    fn the_configured_client_authentication_wins_over_the_providers_list() {
        use ClientAuthMethod::{ClientSecretBasic, ClientSecretPost};
        use CoreClientAuthMethod as M;
        let both = vec![M::ClientSecretBasic, M::ClientSecretPost];
        let post = vec![M::ClientSecretPost];
        let jwt_only = vec![M::PrivateKeyJwt];
        assert!(client_auth_basic(None, None).expect("default"));
        assert!(client_auth_basic(None, Some(&both)).expect("both"));
        assert!(!client_auth_basic(None, Some(&post)).expect("post only"));
        assert!(client_auth_basic(None, Some(&jwt_only)).is_err());
        assert!(!client_auth_basic(Some(ClientSecretPost), Some(&both)).expect("configured"));
        assert!(!client_auth_basic(Some(ClientSecretPost), None).expect("configured"));
        assert!(client_auth_basic(Some(ClientSecretBasic), Some(&post)).expect("configured"));
        assert!(!client_auth_basic(Some(ClientSecretPost), Some(&jwt_only)).expect("configured"));
    }

    #[test]
    fn what_the_gateway_uses_is_still_parsed_strictly() {
        for (name, value) in [
            ("token_endpoint", json!("not a url")),
            ("jwks_uri", json!(7)),
            ("issuer", json!(null)),
            (
                "authorization_response_iss_parameter_supported",
                json!("maybe"),
            ),
        ] {
            let mut doc = minimal();
            doc[name] = value.clone();
            assert!(parse(doc).is_err(), "{name}: {value}");
        }
    }
}
