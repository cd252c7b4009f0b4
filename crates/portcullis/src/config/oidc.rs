//! `[oidc]`: the OpenID Provider, the client registration and the login options.

use std::time::Duration;

use url::Url;

use super::{ClientAuthMethod, DEFAULT_SCOPES, OidcConfig, PublicOrigin, Validator, raw, secret};

impl Validator {
    pub(super) fn oidc(
        &mut self,
        raw: raw::RawOidc,
        origin: Option<&PublicOrigin>,
    ) -> Option<OidcConfig> {
        let issuer = self.ok("oidc.issuer", parse_issuer(&raw.issuer));
        if raw.client_id.trim().is_empty() {
            self.problem("oidc.client_id", "must not be empty");
        }
        let client_secret = self.ok(
            "oidc.client_secret",
            secret::load(
                "oidc.client_secret_env",
                raw.client_secret_env.as_deref(),
                "oidc.client_secret_file",
                raw.client_secret_file.as_deref(),
            ),
        );
        let scopes = raw
            .scopes
            .unwrap_or_else(|| DEFAULT_SCOPES.iter().map(|s| (*s).to_owned()).collect());
        if !scopes.iter().any(|s| s == "openid") {
            self.problem("oidc.scopes", "must include \"openid\"");
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            self.problem(
                "oidc.scopes",
                format!("`{bad}` is not a single scope token"),
            );
        }
        const RESERVED: [&str; 10] = [
            "response_type",
            "client_id",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "response_mode",
            "client_secret",
        ];
        for k in raw.extra_auth_params.keys() {
            if RESERVED.contains(&k.as_str()) {
                self.problem(
                    &format!("oidc.extra_auth_params.{k}"),
                    "is set by Portcullis itself and cannot be overridden",
                );
            }
        }
        let session_claims = raw
            .session_claims
            .unwrap_or_else(|| vec!["sub".into(), "name".into(), "email".into()]);
        const TOKENISH: [&str; 5] = [
            "access_token",
            "refresh_token",
            "id_token",
            "at_hash",
            "c_hash",
        ];
        for c in &session_claims {
            if TOKENISH.contains(&c.as_str()) {
                self.problem(
                    "oidc.session_claims",
                    format!("`{c}` may not be exposed to the browser"),
                );
            }
        }
        let refresh_skew = self.duration(
            "oidc.refresh_skew",
            raw.refresh_skew,
            Duration::from_secs(30),
        );
        let http_timeout = self.timeout(
            "oidc.http_timeout",
            raw.http_timeout,
            Duration::from_secs(10),
        );
        let login_timeout = self.duration(
            "oidc.login_timeout",
            raw.login_timeout,
            Duration::from_secs(600),
        );
        if login_timeout > Duration::from_secs(600) || login_timeout < Duration::from_secs(30) {
            self.problem("oidc.login_timeout", "must be between 30s and 10m");
        }
        let post_logout_redirect_uri = match (raw.post_logout_redirect_uri, origin) {
            (Some(s), _) => self.ok(
                "oidc.post_logout_redirect_uri",
                Url::parse(&s)
                    .map_err(|e| format!("`{s}` is not an absolute URL ({e})"))
                    .and_then(|u| match u.scheme() {
                        "https" | "http" => Ok(u),
                        _ => Err("must be an http(s) URL".into()),
                    }),
            ),
            (None, Some(o)) => Url::parse(&format!("{}/", o.origin)).ok(),
            (None, None) => None,
        };
        let token_endpoint_auth_method = match raw.token_endpoint_auth_method.as_deref() {
            None => None,
            Some("client_secret_basic") => Some(ClientAuthMethod::ClientSecretBasic),
            Some("client_secret_post") => Some(ClientAuthMethod::ClientSecretPost),
            Some(other) => {
                self.problem(
                    "oidc.token_endpoint_auth_method",
                    format!(
                        "`{other}` is not one of \"client_secret_basic\", \"client_secret_post\""
                    ),
                );
                None
            }
        };
        let id_token_signing_alg = match raw.id_token_signing_alg {
            Some(alg) if !super::ID_TOKEN_SIGNING_ALGS.contains(&alg.as_str()) => {
                self.problem(
                    "oidc.id_token_signing_alg",
                    format!(
                        "`{alg}` is not one of {}",
                        super::ID_TOKEN_SIGNING_ALGS.join(", ")
                    ),
                );
                None
            }
            other => other,
        };
        Some(OidcConfig {
            issuer: issuer?,
            client_id: raw.client_id,
            client_secret: client_secret?,
            scopes,
            extra_auth_params: raw.extra_auth_params.into_iter().collect(),
            prompt_consent_for_offline_access: raw
                .prompt_consent_for_offline_access
                .unwrap_or(true),
            session_claims,
            refresh_skew,
            http_timeout,
            login_timeout,
            post_logout_redirect_uri: post_logout_redirect_uri?,
            dangerous_send_id_token_hint_on_logout: raw.dangerous_send_id_token_hint_on_logout,
            password_grant: raw.password_grant,
            token_endpoint_auth_method,
            id_token_signing_alg,
        })
    }
}

fn parse_issuer(s: &str) -> Result<String, String> {
    let u = Url::parse(s).map_err(|e| format!("`{s}` is not an absolute URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") || u.query().is_some() || u.fragment().is_some() {
        return Err("must be an http(s) URL without query or fragment".into());
    }
    Ok(s.to_owned())
}
