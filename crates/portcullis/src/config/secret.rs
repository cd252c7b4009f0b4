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
        (Some(name), None) => {
            let shown = shown_if(name, looks_like_env_name);
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_owned())),
                Ok(_) => Err(format!(
                    "`{env_key}`: environment variable {shown} is empty"
                )),
                Err(_) => Err(format!(
                    "`{env_key}`: environment variable {shown} is not set"
                )),
            }
        }
        (None, Some(path)) => {
            let shown = shown_if(path, looks_like_path);
            match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret::new(v.trim().to_owned())),
                Ok(_) => Err(format!("`{file_key}`: file {shown} is empty")),
                Err(e) => Err(format!("`{file_key}`: cannot read {shown}: {e}")),
            }
        }
    }
}

/// The value of a `*_env` or `*_file` key for an error message, unless it looks like something
/// else: the likeliest mistake is the secret itself pasted where its name or path belongs, and
/// the message goes to the terminal and the logs.
fn shown_if(value: &str, plausible: fn(&str) -> bool) -> String {
    if plausible(value) {
        value.to_owned()
    } else {
        "(not shown: it does not look like one)".to_owned()
    }
}

fn looks_like_env_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn looks_like_path(s: &str) -> bool {
    (s.starts_with('/') || s.starts_with("./") || s.starts_with("../"))
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
