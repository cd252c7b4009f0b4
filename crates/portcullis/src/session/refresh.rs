//! Access tokens that are about to expire are refreshed before use, single-flight per session:
//! concurrent requests of one session wait for one refresh and share its result, and a rotated
//! refresh token is stored before anyone else could use the old one.
//!
//! In-process, a per-session mutex orders the waiters; the store's lease lock does the same across
//! instances sharing a store. After getting either, the record is re-read: whoever waited finds the
//! fresh token and does not refresh again.

use std::{sync::Arc, time::Duration};

use dashmap::DashMap;
use tokio::sync::Mutex;

use super::{Session, SessionManager, SessionRecord};
use crate::{
    http::problem::ApiError,
    metrics::Metrics,
    oidc::{OidcError, OidcProvider, now_unix},
    store::StoreKey,
};

const LOCK_LEASE: Duration = Duration::from_secs(30);
const LOCK_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default, Clone)]
pub struct Refresher {
    inflight: Arc<DashMap<StoreKey, Arc<Mutex<()>>>>,
    metrics: Arc<Metrics>,
}

/// `true` when the token expires within `skew`.
pub fn needs_refresh(record: &SessionRecord, skew: Duration, now: u64) -> bool {
    record
        .access_expires_at
        .is_some_and(|exp| exp <= now.saturating_add(skew.as_secs()))
}

impl Refresher {
    /// Counts refresh outcomes in `metrics` (`portcullis_token_refreshes_total`).
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Refresher {
            inflight: Arc::default(),
            metrics,
        }
    }

    /// Returns a usable access token for the session, refreshing it first if needed. A refresh the
    /// provider refuses ends the session (401); a provider outage, or a refusal of the client
    /// itself (its configuration), is 503 and keeps the session.
    pub async fn access_token(
        &self,
        sessions: &SessionManager,
        oidc: &OidcProvider,
        session: &Session,
    ) -> Result<String, ApiError> {
        let skew = oidc.config().refresh_skew;
        if !needs_refresh(&session.record, skew, now_unix()) {
            return Ok(session.record.access_token.clone());
        }
        // Boxed: the provider exchange's state is large, and would otherwise be carried (and
        // copied) by every proxied request's future, not only by the few that refresh.
        Box::pin(self.refresh(sessions, oidc, session, skew)).await
    }

    /// One refresh per session at a time in this process (see `refresh_locked` for the others).
    async fn refresh(
        &self,
        sessions: &SessionManager,
        oidc: &OidcProvider,
        session: &Session,
        skew: Duration,
    ) -> Result<String, ApiError> {
        let mutex = Arc::clone(
            self.inflight
                .entry(session.key.clone())
                .or_default()
                .value(),
        );
        let result = {
            let _local = mutex.lock().await;
            self.refresh_locked(sessions, oidc, session, skew).await
        };
        drop(mutex);
        self.inflight
            .remove_if(&session.key, |_, m| Arc::strong_count(m) == 1);
        result
    }

    async fn refresh_locked(
        &self,
        sessions: &SessionManager,
        oidc: &OidcProvider,
        session: &Session,
        skew: Duration,
    ) -> Result<String, ApiError> {
        let store = sessions.store();
        let deadline = tokio::time::Instant::now() + LOCK_LEASE;
        loop {
            let current = reload(sessions, session).await?;
            if !needs_refresh(&current.record, skew, now_unix()) {
                return Ok(current.record.access_token.clone());
            }
            match store
                .try_lock(&session.key, LOCK_LEASE)
                .await
                .map_err(unavailable)?
            {
                Some(token) => {
                    let result = self.refresh_now(sessions, oidc, current).await;
                    if let Err(e) = store.unlock(&session.key, &token).await {
                        tracing::warn!(error = %e, "could not release the refresh lock; it expires with its lease");
                    }
                    return result;
                }
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(LOCK_POLL).await
                }
                None => return Err(ApiError::Unavailable),
            }
        }
    }

    async fn refresh_now(
        &self,
        sessions: &SessionManager,
        oidc: &OidcProvider,
        mut current: Session,
    ) -> Result<String, ApiError> {
        // Re-check under the lock: another instance may have refreshed just before we got it.
        let current_fresh = reload(sessions, &current).await?;
        if !needs_refresh(
            &current_fresh.record,
            oidc.config().refresh_skew,
            now_unix(),
        ) {
            return Ok(current_fresh.record.access_token.clone());
        }
        current = current_fresh;
        let Some(rt) = current.record.refresh_token.clone() else {
            tracing::info!(sub = %current.record.sub, "access token expired and no refresh token: ending the session");
            self.metrics.refresh("refused");
            end(sessions, &current).await;
            return Err(ApiError::Unauthenticated);
        };
        match oidc.refresh(&rt, &current.record.sub).await {
            Ok(tokens) => {
                let rotated = tokens.refresh_token.clone();
                let record = Arc::make_mut(&mut current.record);
                record.access_token = tokens.access_token;
                record.access_expires_at = tokens.access_expires_at;
                // RFC 6749 §5.1: `scope` is sent when the grant differs from the one asked for
                // (a refresh may narrow it, §6); absent, the scopes are unchanged. Route
                // policies (`require_scopes`) must judge the token that is now attached.
                if let Some(scopes) = tokens.scopes {
                    record.scopes = scopes;
                }
                if let Some(new_rt) = tokens.refresh_token {
                    record.refresh_token = Some(new_rt);
                }
                if let Some(id) = tokens.id_token {
                    record.id_token = Some(id.raw);
                }
                let still_there = sessions.update(&current).await.map_err(|e| {
                    tracing::error!(error = %e, "refreshed tokens could not be stored");
                    self.metrics.refresh("unavailable");
                    ApiError::Unavailable
                })?;
                if !still_there {
                    // Ended (logout, revocation, back-channel logout) while the provider was
                    // answering: the end wins, and the fresh tokens are dropped.
                    tracing::info!(sub = %current.record.sub, "session ended during its refresh: the new tokens are discarded");
                    self.metrics.refresh("ended");
                    if let Some(rt) = rotated
                        && let Err(e) = oidc.revoke_refresh_token(&rt).await
                    {
                        tracing::debug!(error = %e, "could not revoke the discarded refresh token");
                    }
                    return Err(ApiError::Unauthenticated);
                }
                self.metrics.refresh("success");
                tracing::debug!(sub = %current.record.sub, "access token refreshed");
                Ok(current.record.access_token.clone())
            }
            Err(OidcError::Rejected(code)) if refused_the_client(&code) => {
                // RFC 6749 §5.2: the client's own authentication or registration, not the
                // user's grant (a wrong or rotated secret, the wrong auth method). Ending the
                // session would log every user out for a configuration error; kept, it works
                // again once the configuration is fixed. Refused (503) meanwhile, never proxied.
                tracing::error!(reason = %code, "refresh refused for the client itself: check oidc.client_id, the client secret and oidc.token_endpoint_auth_method; the session is kept");
                self.metrics.refresh("unavailable");
                Err(ApiError::Unavailable)
            }
            Err(OidcError::Rejected(code)) | Err(OidcError::InvalidIdToken(code)) => {
                tracing::info!(sub = %current.record.sub, reason = %code, "refresh refused: ending the session");
                self.metrics.refresh("refused");
                end(sessions, &current).await;
                Err(ApiError::Unauthenticated)
            }
            Err(e) => {
                tracing::warn!(error = %e, "refresh failed: provider unavailable");
                self.metrics.refresh("unavailable");
                Err(ApiError::Unavailable)
            }
        }
    }
}

/// Token endpoint errors about the client rather than the refresh token (RFC 6749 §5.2).
fn refused_the_client(code: &str) -> bool {
    matches!(code, "invalid_client" | "unauthorized_client")
}

async fn reload(sessions: &SessionManager, session: &Session) -> Result<Session, ApiError> {
    sessions
        .reload(session)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "session store failure during refresh");
            ApiError::Unavailable
        })?
        .ok_or(ApiError::Unauthenticated)
}

async fn end(sessions: &SessionManager, session: &Session) {
    if let Err(e) = sessions.destroy(&session.key).await {
        tracing::error!(error = %e, "could not delete an ended session");
    }
}

fn unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::error!(error = %e, "session store failure during refresh");
    ApiError::Unavailable
}
