//! A `redis-server` child process: started until it is ready (retrying on a port race), its
//! log tail kept, killed on drop and when the test process dies.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{READY_TIMEOUT, START_ATTEMPTS, redis_server_bin};

const LOG_TAIL_LINES: usize = 200;
const READY_LINE: &str = "Ready to accept connections";
const ADDR_IN_USE: &str = "Address already in use";

use crate::log_tail::LogTail;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why one start failed.
pub(super) struct StartError {
    pub(super) addr_in_use: bool,
    pub(super) error: anyhow::Error,
}

/// What the log readers saw during one start.
#[derive(Default)]
struct StartSignals {
    ready: AtomicBool,
    addr_in_use: AtomicBool,
    closed_pipes: AtomicUsize,
}

/// One `redis-server` command line, (re)started on demand. The child is a
/// `std::process::Child` so that killing and reaping it needs no runtime
/// (in `Drop`, or from another test's runtime).
#[derive(Debug)]
pub(super) struct ManagedProcess {
    port: u16,
    args: Vec<OsString>,
    child: Mutex<Option<Child>>,
    log: LogTail,
}

impl ManagedProcess {
    pub(super) fn new(port: u16, args: Vec<OsString>) -> Self {
        Self {
            port,
            args,
            child: Mutex::new(None),
            log: LogTail::new(LOG_TAIL_LINES),
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        let mut child = lock(&self.child);
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => child.as_ref().map(Child::id),
            _ => None,
        }
    }

    pub(super) fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    pub(super) fn log_tail(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Starts; on a fixed port that is still (or already) taken, tries again
    /// a few times, 200 ms apart.
    pub(super) async fn start_retrying_port(&self) -> anyhow::Result<()> {
        let mut tries = 0;
        loop {
            match self.start().await {
                Ok(()) => return Ok(()),
                Err(e) if e.addr_in_use && tries + 1 < START_ATTEMPTS => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.error),
            }
        }
    }

    pub(super) async fn start(&self) -> Result<(), StartError> {
        let plain = |error: anyhow::Error| StartError {
            addr_in_use: false,
            error,
        };
        if self.is_running() {
            return Err(plain(anyhow::anyhow!(
                "redis-server on port {} is already running",
                self.port
            )));
        }
        let bin = redis_server_bin();
        let mut cmd = match setpriv() {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn_on_spawner_thread(cmd)
            .await
            .with_context(|| {
                format!(
                    "spawning {} (is redis-server installed? apt-get install redis-server)",
                    bin.to_string_lossy()
                )
            })
            .map_err(plain)?;

        let signals = Arc::new(StartSignals::default());
        let forward = std::env::var("TESTKIT_REDIS_LOG").is_ok_and(|v| v == "1");
        let pipes: [Option<Box<dyn std::io::Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ];
        for pipe in pipes.into_iter().flatten() {
            let signals = Arc::clone(&signals);
            let log = self.log.clone();
            let port = self.port;
            let spawned = std::thread::Builder::new()
                .name(format!("redis-log-{port}"))
                .spawn(move || {
                    for line in BufReader::new(pipe).split(b'\n') {
                        let Ok(line) = line else { break };
                        let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                        if line.contains(READY_LINE) {
                            signals.ready.store(true, Ordering::SeqCst);
                        }
                        if line.contains(ADDR_IN_USE) {
                            signals.addr_in_use.store(true, Ordering::SeqCst);
                        }
                        if forward {
                            eprintln!("[redis:{port}] {line}");
                        }
                        log.push(line);
                    }
                    signals.closed_pipes.fetch_add(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(plain(
                    anyhow::Error::new(e).context("spawning a log reader thread"),
                ));
            }
        }

        let deadline = Instant::now() + READY_TIMEOUT;
        let why = loop {
            if signals.ready.load(Ordering::SeqCst) {
                *lock(&self.child) = Some(child);
                return Ok(());
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    break format!("redis-server exited before it was ready ({status})");
                }
                Ok(None) => {}
                Err(e) => break format!("waiting for redis-server: {e}"),
            }
            if Instant::now() >= deadline {
                break format!("redis-server was not ready within {READY_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let _ = child.kill();
        let _ = child.wait();
        // Let the readers catch the last lines (they end at EOF, right away).
        let until = Instant::now() + Duration::from_secs(2);
        while signals.closed_pipes.load(Ordering::SeqCst) < 2 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(StartError {
            addr_in_use: signals.addr_in_use.load(Ordering::SeqCst),
            error: anyhow::anyhow!(
                "{why} (port {}):\n--- redis log (tail) ---\n{}",
                self.port,
                self.log_tail().join("\n")
            ),
        })
    }

    /// SIGKILL, then polls until the child is reaped (at most 10 s).
    pub(super) async fn stop(&self) -> anyhow::Result<()> {
        let Some(mut child) = lock(&self.child).take() else {
            return Ok(());
        };
        if let Err(e) = child.kill() {
            // Already exited: reap below.
            if e.kind() != std::io::ErrorKind::InvalidInput {
                return Err(anyhow::Error::new(e).context("killing redis-server"));
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if child.try_wait().context("reaping redis-server")?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "redis-server (pid {}) did not exit 10 s after SIGKILL",
                    child.id()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.child).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `setpriv` (util-linux), when installed: it sets the parent-death signal
/// to SIGKILL and execs redis-server, so the server dies with the test
/// process even when that is killed.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
        .as_deref()
}

type SpawnJob = Box<dyn FnOnce() + Send>;

/// Spawns `cmd` from one long-lived thread. The parent-death signal fires
/// when the *thread* that forked the child exits, and libtest runs every test
/// on its own short-lived thread: forking from a thread that lives as long
/// as the process ties the server's life to the process, not to the test
/// thread that happened to start it.
async fn spawn_on_spawner_thread(cmd: Command) -> anyhow::Result<Child> {
    static SPAWNER: OnceLock<std::sync::mpsc::Sender<SpawnJob>> = OnceLock::new();
    let sender = match SPAWNER.get() {
        Some(s) => s,
        None => {
            let (tx, rx) = std::sync::mpsc::channel::<SpawnJob>();
            std::thread::Builder::new()
                .name("testkit-redis-spawner".to_owned())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job();
                    }
                })
                .context("starting the spawner thread")?;
            // If another test won the race, its thread is used and ours exits
            // (its channel closes when `tx` is dropped).
            let _ = SPAWNER.set(tx);
            SPAWNER.get().context("spawner thread not initialised")?
        }
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut cmd = cmd;
    sender
        .send(Box::new(move || {
            let _ = tx.send(cmd.spawn());
        }))
        .map_err(|_| anyhow::anyhow!("the spawner thread is gone"))?;
    Ok(rx.await.context("the spawner thread dropped the job")??)
}

/// `n` distinct ports that were free on 127.0.0.1 a moment ago (all bound
/// at once, so they differ, then released).
pub(super) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("binding 127.0.0.1:0 to find free ports")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// A fresh directory under the system temp dir, removed (recursively) on
/// drop.
#[derive(Debug)]
pub(super) struct TempDir(PathBuf);

impl TempDir {
    pub(super) fn new(prefix: &str) -> anyhow::Result<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "testkit-{prefix}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    pub(super) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
