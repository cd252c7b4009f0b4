//! Randomness from the OS CSPRNG. A failure is an error (fail closed), never a fallback.

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
