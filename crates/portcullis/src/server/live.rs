//! The state being served, swappable by a config reload: every request (on either listener)
//! runs on the routers current when it arrives, so a reload needs no new connections and drops
//! none; requests already running finish on the state they started with.

use std::sync::{Arc, OnceLock, Weak};

use arc_swap::ArcSwap;
use axum::{Extension, Router};

use crate::{
    AppState, Public, public_service,
    reload::{Reloader, Swap},
};

struct Serving {
    state: AppState,
    public: Public,
    admin: Router,
}

/// The live state and its routers (see the module docs).
pub struct Live {
    /// Read on every request: a lock-free load, no shared lock word bouncing between cores.
    serving: ArcSwap<Serving>,
    /// Set by `serve` (tests that run only the listener have none); weak, as the reloader
    /// holds the `Live`.
    reloader: OnceLock<Weak<Reloader>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn build(state: AppState, reloader: Option<&Weak<Reloader>>) -> Arc<Serving> {
    let mut admin = crate::admin::router(state.clone());
    if let Some(r) = reloader {
        admin = admin.layer(Extension(Weak::clone(r)));
    }
    Arc::new(Serving {
        public: public_service(state.clone()),
        admin,
        state,
    })
}

impl Live {
    pub fn new(state: AppState) -> Arc<Self> {
        Arc::new(Live {
            serving: ArcSwap::new(build(state, None)),
            reloader: OnceLock::new(),
        })
    }

    /// Enables `POST /reload` on the admin listener.
    pub fn set_reloader(&self, reloader: &Arc<Reloader>) {
        let weak = Arc::downgrade(reloader);
        // Called once by `serve`, before the first reload can run.
        self.serving
            .store(build(self.serving.load().state.clone(), Some(&weak)));
        let _ = self.reloader.set(weak);
    }

    pub fn state(&self) -> AppState {
        self.serving.load().state.clone()
    }

    pub fn public(&self) -> Public {
        self.serving.load().public.clone()
    }

    pub fn admin(&self) -> Router {
        self.serving.load().admin.clone()
    }

    fn put(&self, state: AppState) {
        let next = build(state, self.reloader.get());
        // Reloads carry the stream registry over (see `reload::Carried`), so the current state's
        // registry holds every live stream.
        self.serving.store(next);
    }

    /// Tells every WebSocket/SSE stream to close ("going away"); returns how many.
    pub fn close_streams(&self) -> usize {
        self.serving.load().state.streams.close_all()
    }
}

impl Swap for Live {
    fn current(&self) -> AppState {
        self.state()
    }

    fn install(&self, state: AppState) {
        self.put(state);
    }
}
