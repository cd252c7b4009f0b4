//! Randomness. Secrets (tickets, CSRF tokens, state, nonces, PKCE verifiers, keys) come from the
//! OS CSPRNG, one system call each; a failure is an error (fail closed), never a fallback.
//! Identifiers that protect nothing but must not collide or be predictable (request ids, trace
//! and span ids) come from [`identifier_bytes`], which costs no system call.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| RandomError)?;
    Ok(out)
}

/// `N` random bytes as unpadded base64url (for ids, state, nonce, PKCE verifiers, CSRF tokens).
pub fn token<const N: usize>() -> Result<String, RandomError> {
    Ok(URL_SAFE_NO_PAD.encode(bytes::<N>()?))
}

/// `N` bytes for identifiers that protect nothing but should be unique and unpredictable
/// (request ids, W3C trace and span ids). From the thread's ChaCha12 generator, seeded and
/// periodically reseeded from the OS: two `getrandom` calls per request were a third of the
/// system calls of a proxied request (docs/performance.md). Never use it for a secret.
pub fn identifier_bytes<const N: usize>() -> [u8; N] {
    use rand::RngCore;
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// [`identifier_bytes`] as unpadded base64url.
pub fn identifier<const N: usize>() -> String {
    URL_SAFE_NO_PAD.encode(identifier_bytes::<N>())
}
