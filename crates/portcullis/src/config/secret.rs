//! Secrets read from the environment or a file, never required inline in the config file.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string. `Debug` never prints it, and the memory is wiped on drop.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret itself; call sites are few and easy to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where a secret comes from: `*_env` names an environment variable, `*_file` a file whose
/// content (trailing newline trimmed) is the secret.
pub fn load(
    env_key: &str,
    env_name: Option<&str>,
    file_key: &str,
    file_path: Option<&str>,
) -> Result<Secret, String> {
    match (env_name, file_path) {
        (Some(_), Some(_)) => Err(format!("set only one of `{env_key}` and `{file_key}`")),
        (None, None) => Err(format!("one of `{env_key}` or `{file_key}` is required")),
        (Some(name), None) => match std::env::var(name) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_owned())),
            Ok(_) => Err(format!("`{env_key}`: environment variable {name} is empty")),
            Err(_) => Err(format!(
                "`{env_key}`: environment variable {name} is not set"
            )),
        },
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_owned())),
            Ok(_) => Err(format!("`{file_key}`: file {path} is empty")),
            Err(e) => Err(format!("`{file_key}`: cannot read {path}: {e}")),
        },
    }
}
