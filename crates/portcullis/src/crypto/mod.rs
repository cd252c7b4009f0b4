//! Cryptographic building blocks, all on `ring` (the same provider rustls uses here).

pub mod keyring;
pub mod random;
pub mod seal;
