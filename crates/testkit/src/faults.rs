//! [`FaultProxy`]: a TCP proxy on 127.0.0.1 that sits between Portcullis and a real dependency
//! (Redis, an upstream, ...) and misbehaves on demand, switchable at runtime.
//!
//! | [`Fault`] | new connections | bytes on open connections |
//! |---|---|---|
//! | `Pass` | forwarded | forwarded |
//! | `Delay(d)` | forwarded after `d` | each chunk forwarded `d` late |
//! | `Refuse` | accepted and closed at once (FIN, nothing read) | the connection is reset |
//! | `Stall` | accepted, never forwarded, held open | held back until the fault changes |
//! | `Reset` | accepted, then reset (RST via `SO_LINGER` 0) | the connection is reset |
//!
//! [`FaultProxy::cut`] resets every open connection whatever the fault. Everything the proxy
//! holds (listener, connections) is dropped with it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How the proxy treats traffic; see the module table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Delay(Duration),
    Refuse,
    Stall,
    Reset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    fault: Fault,
    /// Bumped by [`FaultProxy::cut`]: every connection older than the current value resets.
    cuts: u64,
}

/// A fault-injecting TCP proxy in front of `target`. Dropping it stops everything it started.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<State>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    cuts: AtomicU64,
    tasks: Mutex<JoinSet<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port, forwarding to `target` (`Fault::Pass` to begin with).
    ///
    /// # Panics
    /// If no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (state, rx) = watch::channel(State {
            fault: Fault::Pass,
            cuts: 0,
        });
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(
            listener,
            target,
            rx,
            Arc::clone(&accepted),
            Arc::clone(&open),
        ));
        FaultProxy {
            addr,
            target,
            state,
            accepted,
            open,
            cuts: AtomicU64::new(0),
            tasks: Mutex::new(tasks),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// What the proxy forwards to.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// Switches the fault; it applies to open connections too (see the module table).
    pub fn set(&self, fault: Fault) {
        self.state.send_modify(|s| s.fault = fault);
    }

    pub fn fault(&self) -> Fault {
        self.state.borrow().fault
    }

    /// Resets (RST) every connection open right now; later ones follow the current fault.
    pub fn cut(&self) {
        let n = self.cuts.fetch_add(1, Ordering::SeqCst) + 1;
        self.state.send_modify(|s| s.cuts = n);
    }

    /// Connections accepted so far, whatever happened to them.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Client connections currently open through (or held by) the proxy.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.abort_all();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: watch::Receiver<State>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
) {
    // Connection tasks live in this set: aborting the accept loop drops (and closes) them all.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            res = listener.accept() => {
                let Ok((client, _)) = res else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let open = Arc::clone(&open);
                open.fetch_add(1, Ordering::SeqCst);
                let state = state.clone();
                conns.spawn(async move {
                    handle(client, target, state).await;
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Closes `s` with a TCP reset instead of an orderly FIN.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

async fn handle(client: TcpStream, target: SocketAddr, mut state: watch::Receiver<State>) {
    let born = *state.borrow_and_update();
    let _ = client.set_nodelay(true);
    match born.fault {
        Fault::Refuse => return drop(client),
        Fault::Reset => {
            // Let the client's first bytes arrive, so it sees the reset mid-exchange.
            let mut buf = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_millis(200), client.peek(&mut buf)).await;
            return reset(client);
        }
        Fault::Stall => {
            // Hold the connection, forward nothing, until the fault changes or a cut.
            let cut = state
                .wait_for(|s| s.cuts != born.cuts || s.fault != Fault::Stall)
                .await
                .map(|s| s.cuts != born.cuts)
                .unwrap_or(true);
            // Released: a cut or a fault that refuses ends it; otherwise it proceeds (forwarded,
            // and from then on treated like any open connection).
            let now = state.borrow().fault;
            if cut || matches!(now, Fault::Refuse | Fault::Reset) {
                return reset(client);
            }
        }
        Fault::Delay(d) => tokio::time::sleep(d).await,
        Fault::Pass => {}
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let mut client = client;
    let faulted = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let (a, b) = tokio::join!(
            pump(cr, sw, state.clone(), born.cuts),
            pump(sr, cw, state, born.cuts)
        );
        a || b
    };
    // A fault (reset, refuse, cut) ends both sides with a reset; a normal end with FIN.
    if faulted {
        reset(client);
        reset(server);
    }
}

/// Copies `from` → `to`, applying the fault to every chunk. True when a fault (reset, refuse,
/// cut) ended the copy rather than the peer.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    mut state: watch::Receiver<State>,
    born_cuts: u64,
) -> bool {
    let fatal =
        move |s: &State| s.cuts != born_cuts || matches!(s.fault, Fault::Reset | Fault::Refuse);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            r = from.read(&mut buf) => Some(r),
            _ = state.wait_for(fatal) => None,
        };
        let n = match read {
            None => return true,
            Some(Ok(0) | Err(_)) => {
                let _ = to.shutdown().await;
                return false;
            }
            Some(Ok(n)) => n,
        };
        loop {
            let now = *state.borrow_and_update();
            if fatal(&now) {
                return true;
            }
            match now.fault {
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Stall => {
                    if state.changed().await.is_err() {
                        return true;
                    }
                }
                _ => break,
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
    }
}
