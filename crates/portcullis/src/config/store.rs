//! `[session] store = …`: which session store backs the sessions, and its connection settings.

use std::time::Duration;

use url::Url;

use super::{RedisConfig, RedisTopology, StoreConfig, Validator, raw, secret};

impl Validator {
    pub(super) fn store(&mut self, raw: &raw::RawSession) -> Option<StoreConfig> {
        let kind = raw.store.as_deref().unwrap_or("memory");
        let redis_keys_set = raw.redis_url.is_some()
            || raw.redis_cluster_urls.is_some()
            || raw.redis_username.is_some()
            || raw.redis_password_env.is_some()
            || raw.redis_password_file.is_some()
            || raw.redis_timeout.is_some()
            || raw.redis_key_prefix.is_some()
            || raw.redis_ca_file.is_some();
        if kind != "redis" && redis_keys_set {
            self.problem(
                "session.redis_*",
                "Redis settings are only valid with store = \"redis\"",
            );
        }
        if kind != "file" && raw.file_path.is_some() {
            self.problem("session.file_path", "only valid with store = \"file\"");
        }
        match kind {
            "memory" => Some(StoreConfig::Memory),
            "file" => match &raw.file_path {
                Some(p) => self
                    .file_to_create("session.file_path", p)
                    .map(StoreConfig::File),
                None => {
                    self.problem("session.file_path", "required with store = \"file\"");
                    None
                }
            },
            "redis" => {
                let topology = match (&raw.redis_url, &raw.redis_cluster_urls) {
                    (Some(u), None) => Some(RedisTopology::Standalone(u.clone())),
                    (None, Some(us)) if !us.is_empty() => Some(RedisTopology::Cluster(us.clone())),
                    _ => {
                        self.problem(
                            "session.redis_url",
                            "set exactly one of `redis_url` (standalone) or `redis_cluster_urls` (Cluster seed nodes)",
                        );
                        None
                    }
                };
                let urls: Vec<&String> = match &topology {
                    Some(RedisTopology::Standalone(u)) => vec![u],
                    Some(RedisTopology::Cluster(us)) => us.iter().collect(),
                    None => vec![],
                };
                let urls_key = match &topology {
                    Some(RedisTopology::Cluster(_)) => "session.redis_cluster_urls",
                    _ => "session.redis_url",
                };
                for u in urls {
                    match Url::parse(u) {
                        Ok(p) if matches!(p.scheme(), "redis" | "rediss") => {
                            if p.password().is_some() {
                                self.problem(
                                    urls_key,
                                    "put the password in `redis_password_env` or `redis_password_file`, not in the URL",
                                );
                            }
                        }
                        _ => self.problem(
                            urls_key,
                            format!(
                                "`{}` is not a redis:// or rediss:// URL",
                                without_user_info(u)
                            ),
                        ),
                    }
                }
                let password = match (&raw.redis_password_env, &raw.redis_password_file) {
                    (None, None) => None,
                    (env, file) => self.ok(
                        "session.redis_password",
                        secret::load(
                            "session.redis_password_env",
                            env.as_deref(),
                            "session.redis_password_file",
                            file.as_deref(),
                        ),
                    ),
                };
                let timeout = self.timeout(
                    "session.redis_timeout",
                    raw.redis_timeout.clone(),
                    Duration::from_secs(2),
                );
                let key_prefix = raw
                    .redis_key_prefix
                    .clone()
                    .unwrap_or_else(|| "portcullis:".into());
                if key_prefix.contains(['{', '}']) {
                    self.problem(
                        "session.redis_key_prefix",
                        "must not contain `{` or `}` (hash tags are Portcullis's)",
                    );
                }
                let ca_pem = raw
                    .redis_ca_file
                    .as_ref()
                    .and_then(|p| self.ok("session.redis_ca_file", super::routes::read_ca_pem(p)));
                Some(StoreConfig::Redis(RedisConfig {
                    topology: topology?,
                    username: raw.redis_username.clone(),
                    password,
                    timeout,
                    key_prefix,
                    ca_pem,
                }))
            }
            other => {
                self.problem(
                    "session.store",
                    format!("unknown store `{other}` (use \"memory\", \"file\" or \"redis\")"),
                );
                None
            }
        }
    }
}

/// `u` with everything between the scheme and the last `@` replaced by `…`: a Redis URL is where
/// a password is most often written (`redis://:password@host`, a raw one may even hold `/`), and
/// this text goes to the terminal and, on a reload, to the logs.
fn without_user_info(u: &str) -> String {
    let (scheme, rest) = match u.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), u),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}…{}", &rest[at..]),
        None => u.to_owned(),
    }
}
