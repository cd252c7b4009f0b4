//! One Portcullis instance served on a free loopback port, and a capture of everything the
//! gateway logs in this test process. Shared by the real-IdP stack and the fake-IdP tests.

use std::{
    io::Write,
    sync::{Mutex, MutexGuard, OnceLock},
};

use portcullis::{AppState, config::Config};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

fn logs() -> MutexGuard<'static, Vec<u8>> {
    LOGS.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[derive(Clone, Copy)]
struct LogSink;

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the JSON log capture once per test process, with the `EnvFilter` directives given
/// by the first caller.
pub fn init_logs(filter: &str) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .json()
            .with_writer(|| LogSink)
            .try_init();
    });
}

/// Everything logged so far in this test process.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&logs()).into_owned()
}

/// Writes a secret (key ring, client secret) to a fresh temp file; returns its path.
pub fn write_secret(name: &str, value: &str) -> String {
    let dir = std::env::temp_dir().join(format!("portcullis-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let suffix = portcullis::crypto::random::token::<6>().expect("rng");
    let path = dir.join(format!("{name}-{suffix}"));
    std::fs::write(&path, value).expect("write secret");
    path.display().to_string()
}

/// A gateway serving on `127.0.0.1:PORT`, addressed as `http://localhost:PORT` (another site than
/// a provider at 127.0.0.1, as in production). Stopped when dropped.
#[derive(Debug)]
pub struct RunningGateway {
    pub base: String,
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

/// A bound, not yet serving, gateway port: the redirect URI must be registered at the provider
/// before the gateway loads its configuration.
#[derive(Debug)]
pub struct BoundPort {
    listener: TcpListener,
    pub port: u16,
    /// `http://localhost:PORT`.
    pub base: String,
}

impl BoundPort {
    pub async fn bind() -> BoundPort {
        Self::bind_port(0).await
    }

    /// Binds a given port (0: any free one), e.g. to restart an instance where it was.
    pub async fn bind_port(port: u16) -> BoundPort {
        // As the binary binds (its accept queue: tests open hundreds of connections at once).
        let listener =
            portcullis::server::bind(([127, 0, 0, 1], port).into()).expect("bind gateway");
        let port = listener.local_addr().expect("addr").port();
        BoundPort {
            listener,
            port,
            base: format!("http://localhost:{port}"),
        }
    }

    /// Loads `toml`, the provider's metadata (so the first request can log in) and starts serving.
    pub async fn serve(self, toml: &str) -> RunningGateway {
        let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("test config: {e}"));
        self.serve_state(AppState::new(config).expect("state"))
            .await
    }

    /// [`serve`](Self::serve) with the given session store instead of the configured one (a
    /// test double that fails on demand).
    pub async fn serve_with_store(
        self,
        toml: &str,
        store: std::sync::Arc<dyn portcullis::store::SessionStore>,
    ) -> RunningGateway {
        let config = Config::from_toml(toml).unwrap_or_else(|e| panic!("test config: {e}"));
        self.serve_state(AppState::with_store(config, store).expect("state"))
            .await
    }

    async fn serve_state(self, state: AppState) -> RunningGateway {
        state.oidc.discover().await.expect("provider discovery");
        let (tx, rx) = oneshot::channel();
        let server_state = state.clone();
        let listener = self.listener;
        let server = tokio::spawn(async move {
            portcullis::server::run(listener, server_state, async {
                let _ = rx.await;
            })
            .await
            .expect("gateway server");
        });
        RunningGateway {
            base: self.base,
            state,
            shutdown: Some(tx),
            server: Some(server),
        }
    }
}

impl RunningGateway {
    /// Graceful stop: waits until the server and its connections are gone, so everything the
    /// instance held (e.g. an exclusive store file) is released.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in base")
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}
