//! What a session holds. Serialized, then sealed; only ever in plaintext inside this process.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub sub: String,
    pub iss: String,
    /// The provider's session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
    /// The ID token claims `/bff/session` may show (already filtered by `oidc.session_claims`).
    pub user: Map<String, Value>,
    /// ID token claims route policies and aggregate placeholders need beyond `user` (only
    /// those, see `crate::compose`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub claims: Map<String, Value>,
    /// Scopes granted to the access token at login: the token response's `scope`, else the
    /// requested ones (RFC 6749 §5.1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    pub csrf_token: String,
    pub access_token: String,
    pub access_expires_at: Option<u64>,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    pub created_at: u64,
    pub absolute_expires_at: u64,
}

/// Tokens are wiped when a record is dropped, so freed heap does not keep them readable until
/// the allocator reuses it (a record may also sit in the memo of opened records, see
/// `super::open_cache`, which drops it when it goes idle).
impl Drop for SessionRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        self.csrf_token.zeroize();
        if let Some(t) = self.refresh_token.as_mut() {
            t.zeroize();
        }
        if let Some(t) = self.id_token.as_mut() {
            t.zeroize();
        }
    }
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("sub", &self.sub)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .finish_non_exhaustive()
    }
}
