//! Real Redis servers on 127.0.0.1: [`RedisServer`] (standalone, optionally
//! with an ACL user and/or TLS) and [`RedisCluster`] (N masters, optionally
//! with replicas), both run from Debian's `redis-server` (7.0) as child
//! processes, plus a tiny RESP2 client ([`RespConnection`]) to talk to them
//! without the `redis` crate.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use testkit::redis::{RedisOptions, RedisServer};
//! let mut redis = RedisServer::start(RedisOptions::default().with_acl_user("portcullis", "s3cret")).await?;
//! println!("{}", redis.url()); // redis://127.0.0.1:PORT (no credentials)
//! assert_eq!(redis.command(&["SET", "k", "v"]).await?.as_str(), Some("OK"));
//! redis.stop().await?; // SIGKILL: clients now get "connection refused"
//! redis.restart().await?; // same port, same options, empty data set
//! # Ok(()) }
//! ```
//!
//! The servers keep nothing on disk (`--save "" --appendonly no`; a temporary
//! directory per fixture holds the TLS files and `nodes.conf`, removed on
//! drop). They are killed (SIGKILL) when the fixture is dropped and, through
//! `setpriv --pdeathsig KILL`, when the test process dies.
//!
//! Set `TESTKIT_REDIS_LOG=1` to see the servers' logs on stderr, prefixed
//! `[redis:PORT]`. `$TESTKIT_REDIS_SERVER` / `$TESTKIT_REDIS_CLI` override
//! the `redis-server` / `redis-cli` binaries (default: from `PATH`).

use std::collections::{BTreeMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How long a `redis-server` may take to log "Ready to accept connections".
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`RedisCluster::start`] waits for `cluster_state:ok` everywhere.
pub const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of one command of [`RespConnection`] (and of connecting).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// `--cluster-node-timeout` of [`RedisCluster`] nodes, in milliseconds.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;

const LOG_TAIL_LINES: usize = 200;
const START_ATTEMPTS: usize = 5;
const READY_LINE: &str = "Ready to accept connections";
const ADDR_IN_USE: &str = "Address already in use";

// ---------------------------------------------------------------------------
// Options and the standalone server
// ---------------------------------------------------------------------------

/// Options for [`RedisServer::start`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisOptions {
    /// `(username, password)`: create this ACL user with every permission
    /// (`on >password ~* &* +@all`) and turn the `default` user off, so that
    /// unauthenticated connections get `NOAUTH`. The username must be
    /// non-empty without whitespace; the password non-empty.
    pub acl_user: Option<(String, String)>,
    /// Serve TLS only (`--port 0 --tls-port N`), with a fresh self-signed CA
    /// and a server certificate for `127.0.0.1` and `localhost`; clients are
    /// not asked for certificates. See [`RedisServer::ca_pem_path`].
    pub tls: bool,
    /// A fixed port; `None` (the default) picks a free one.
    pub port: Option<u16>,
}

impl RedisOptions {
    /// Sets [`RedisOptions::acl_user`].
    pub fn with_acl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.acl_user = Some((user.into(), password.into()));
        self
    }

    /// Sets [`RedisOptions::tls`].
    pub fn with_tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Sets [`RedisOptions::port`].
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
}

/// The PEM files of a TLS [`RedisServer`].
#[derive(Debug, Clone)]
struct TlsFiles {
    ca_pem: String,
    ca_path: PathBuf,
    cert_path: PathBuf,
    key_path: PathBuf,
}

/// A standalone `redis-server` child process on 127.0.0.1. Killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    // Declared before `dir`: the process dies before its directory goes.
    process: ManagedProcess,
    options: RedisOptions,
    port: u16,
    tls: Option<TlsFiles>,
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` and waits (up to [`READY_TIMEOUT`]) until it
    /// accepts connections. Without a fixed port it picks a free one (and
    /// retries with another if that was taken in the meantime).
    pub async fn start(options: RedisOptions) -> anyhow::Result<RedisServer> {
        if let Some((user, password)) = &options.acl_user {
            if user.is_empty() || user.chars().any(char::is_whitespace) || user == "default" {
                bail!("ACL username {user:?} must be non-empty, without whitespace, not `default`");
            }
            if password.is_empty() {
                bail!("the ACL user's password must not be empty");
            }
        }
        let dir = TempDir::new("redis")?;
        let tls = if options.tls {
            Some(write_tls_files(dir.path())?)
        } else {
            None
        };
        let attempts = if options.port.is_some() {
            1
        } else {
            START_ATTEMPTS
        };
        let mut last_err = None;
        for _ in 0..attempts {
            let port = match options.port {
                Some(p) => p,
                None => free_ports(1)?[0],
            };
            let args = server_args(port, dir.path(), &options, tls.as_ref());
            let process = ManagedProcess::new(port, args);
            match process.start().await {
                Ok(()) => {
                    return Ok(RedisServer {
                        process,
                        options,
                        port,
                        tls,
                        dir,
                    });
                }
                Err(e) if e.addr_in_use => last_err = Some(e.error),
                Err(e) => return Err(e.error),
            }
        }
        Err(last_err
            .unwrap_or_else(|| anyhow::anyhow!("no attempt to start redis-server was made"))
            .context(format!("starting redis-server ({attempts} attempts)")))
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://127.0.0.1:PORT` with TLS;
    /// never with credentials (see [`RedisServer::url_with_credentials`]).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// [`RedisServer::url`] with the ACL user's name and password (percent
    /// encoded) when there is one.
    pub fn url_with_credentials(&self) -> String {
        let base = self.url();
        let Some((user, password)) = &self.options.acl_user else {
            return base;
        };
        match url::Url::parse(&base) {
            Ok(mut u) => {
                // Both only fail for URLs that cannot have a host; ours has one.
                let _ = u.set_username(user);
                let _ = u.set_password(Some(password));
                u.as_str().trim_end_matches('/').to_owned()
            }
            Err(_) => base,
        }
    }

    /// The port (the TLS port with [`RedisOptions::tls`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The options the server was started with.
    pub fn options(&self) -> &RedisOptions {
        &self.options
    }

    /// The ACL user's name and password, when there is one.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options
            .acl_user
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The CA certificate (PEM file) that signed the server certificate, for
    /// clients to trust; `None` without TLS.
    pub fn ca_pem_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.ca_path.as_path())
    }

    /// The CA certificate as PEM text; `None` without TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The server's temporary directory (its `--dir`), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Whether the process is alive (started and not exited or stopped).
    pub fn is_running(&self) -> bool {
        self.process.is_running()
    }

    /// The last lines the server logged (with or without `TESTKIT_REDIS_LOG`).
    pub fn log_tail(&self) -> Vec<String> {
        self.process.log_tail()
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone:
    /// from then on connecting to [`RedisServer::port`] is refused. Does
    /// nothing when it is not running.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop().await
    }

    /// Starts the server again on the same port with the same options (and
    /// the same TLS certificates), stopping it first if it runs, and waits
    /// until it accepts connections. The data set starts empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.process.stop().await?;
        self.process.start_retrying_port().await
    }

    /// A new connection (TLS when the server uses it), authenticated as the
    /// ACL user when there is one.
    pub async fn connect(&self) -> anyhow::Result<RespConnection> {
        let mut conn = self.connect_unauthenticated().await?;
        if let Some((user, password)) = self.credentials() {
            let reply = conn.command(&["AUTH", user, password]).await?;
            if reply.as_str() != Some("OK") {
                bail!("AUTH as {user:?} failed: {reply:?}");
            }
        }
        Ok(conn)
    }

    /// A new connection (TLS when the server uses it), without `AUTH`.
    pub async fn connect_unauthenticated(&self) -> anyhow::Result<RespConnection> {
        match &self.tls {
            Some(t) => RespConnection::connect_tls(self.port, &t.ca_pem).await,
            None => RespConnection::connect(self.port).await,
        }
    }

    /// Runs one command on a new [`RedisServer::connect`] connection. Error
    /// replies are returned as [`Reply::Error`], not as `Err`.
    pub async fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> anyhow::Result<Reply> {
        self.connect().await?.command(args).await
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT [--tls --cacert CA] [--user U
    /// --pass P] ARGS…` and returns its stdout. (`redis-cli` prints error
    /// replies such as `NOAUTH …` on stdout and still exits 0.)
    pub async fn cli<A: AsRef<OsStr>>(&self, args: &[A]) -> anyhow::Result<String> {
        let mut full: Vec<OsString> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string().into(),
        ];
        if let Some(t) = &self.tls {
            full.extend(["--tls".into(), "--cacert".into(), t.ca_path.clone().into()]);
        }
        if let Some((user, password)) = self.credentials() {
            full.extend([
                "--user".into(),
                user.into(),
                "--pass".into(),
                password.into(),
                "--no-auth-warning".into(),
            ]);
        }
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        redis_cli(&full).await
    }
}

fn server_args(
    port: u16,
    dir: &Path,
    options: &RedisOptions,
    tls: Option<&TlsFiles>,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = common_args(dir);
    match tls {
        Some(t) => args.extend([
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string().into(),
            "--tls-cert-file".into(),
            t.cert_path.clone().into(),
            "--tls-key-file".into(),
            t.key_path.clone().into(),
            "--tls-ca-cert-file".into(),
            t.ca_path.clone().into(),
            "--tls-auth-clients".into(),
            "no".into(),
        ]),
        None => args.extend(["--port".into(), port.to_string().into()]),
    }
    if let Some((user, password)) = &options.acl_user {
        // Each token is a separate argv item: redis-server quotes every
        // argument when it turns the command line into config lines, so a
        // password with spaces stays one token.
        args.extend([
            "--user".into(),
            "default".into(),
            "off".into(),
            "--user".into(),
            user.into(),
            "on".into(),
            format!(">{password}").into(),
            "~*".into(),
            "&*".into(),
            "+@all".into(),
        ]);
    }
    args
}

fn common_args(dir: &Path) -> Vec<OsString> {
    vec![
        "--bind".into(),
        "127.0.0.1".into(),
        "--protected-mode".into(),
        "yes".into(),
        "--save".into(),
        "".into(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.as_os_str().to_owned(),
        "--daemonize".into(),
        "no".into(),
        "--logfile".into(),
        "".into(),
    ]
}

fn write_tls_files(dir: &Path) -> anyhow::Result<TlsFiles> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "testkit Redis test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().context("generating the server key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;

    let files = TlsFiles {
        ca_pem: ca_cert.pem(),
        ca_path: dir.join("ca.pem"),
        cert_path: dir.join("server.crt"),
        key_path: dir.join("server.key"),
    };
    for (path, contents) in [
        (&files.ca_path, files.ca_pem.clone()),
        (&files.cert_path, cert.pem()),
        (&files.key_path, key.serialize_pem()),
    ] {
        std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A Redis Cluster of `redis-server --cluster-enabled yes` nodes on
/// 127.0.0.1, created with `redis-cli --cluster create`. No ACL, no TLS.
/// Every node is killed on drop.
///
/// Node indexes are the order of [`RedisCluster::urls`]; `redis-cli` makes
/// the first `masters` nodes masters and the rest their replicas, but roles
/// change on failover: ask [`RedisCluster::role`].
#[derive(Debug)]
pub struct RedisCluster {
    // Declared before `dir`: the processes die before their directory goes.
    nodes: Vec<ClusterNode>,
    masters: usize,
    replicas_per_master: usize,
    dir: TempDir,
}

#[derive(Debug)]
struct ClusterNode {
    port: u16,
    bus_port: u16,
    process: ManagedProcess,
}

fn cluster_args(port: u16, bus_port: u16, node_dir: &Path) -> Vec<OsString> {
    let mut args = common_args(node_dir);
    args.extend([
        "--port".into(),
        port.to_string().into(),
        "--cluster-enabled".into(),
        "yes".into(),
        "--cluster-port".into(),
        bus_port.to_string().into(),
        "--cluster-config-file".into(),
        node_dir.join(format!("nodes-{port}.conf")).into(),
        "--cluster-node-timeout".into(),
        CLUSTER_NODE_TIMEOUT_MS.to_string().into(),
        // Replicas sync at once, not after the default 5 s batching delay.
        "--repl-diskless-sync-delay".into(),
        "0".into(),
    ]);
    args
}

impl RedisCluster {
    /// Starts `masters` (at least 3) master nodes and no replicas; see
    /// [`RedisCluster::start_with_replicas`].
    pub async fn start(masters: usize) -> anyhow::Result<RedisCluster> {
        Self::start_with_replicas(masters, 0).await
    }

    /// Starts `masters * (1 + replicas_per_master)` nodes on free ports
    /// (each with an explicit cluster bus port, `--cluster-port`), runs
    /// `redis-cli --cluster create … --cluster-replicas R --cluster-yes` and
    /// waits (up to [`CLUSTER_OK_TIMEOUT`]) as [`RedisCluster::wait_cluster_ok`]
    /// does: every node reports `cluster_state:ok`, knows every node, and
    /// every replica's link to its master is up.
    ///
    /// With replicas, killing a master makes one of its replicas take over
    /// after about [`CLUSTER_NODE_TIMEOUT_MS`] (+ up to ~2 s of election).
    pub async fn start_with_replicas(
        masters: usize,
        replicas_per_master: usize,
    ) -> anyhow::Result<RedisCluster> {
        if masters < 3 {
            bail!("a Redis Cluster needs at least 3 masters (asked for {masters})");
        }
        let total = masters * (1 + replicas_per_master);
        let dir = TempDir::new("redis-cluster")?;
        let mut nodes = Vec::with_capacity(total);
        let mut attempt = 0;
        while nodes.len() < total {
            let ports = free_ports(2)?;
            let (port, bus_port) = (ports[0], ports[1]);
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir)
                .with_context(|| format!("creating {}", node_dir.display()))?;
            let process = ManagedProcess::new(port, cluster_args(port, bus_port, &node_dir));
            match process.start().await {
                Ok(()) => nodes.push(ClusterNode {
                    port,
                    bus_port,
                    process,
                }),
                Err(e) if e.addr_in_use && attempt + 1 < START_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e.error.context("starting a cluster node")),
            }
        }
        let cluster = RedisCluster {
            nodes,
            masters,
            replicas_per_master,
            dir,
        };

        let mut args: Vec<OsString> = vec!["--cluster".into(), "create".into()];
        args.extend(
            cluster
                .nodes
                .iter()
                .map(|n| OsString::from(format!("127.0.0.1:{}", n.port))),
        );
        args.extend([
            "--cluster-replicas".into(),
            replicas_per_master.to_string().into(),
            "--cluster-yes".into(),
        ]);
        let out = redis_cli(&args)
            .await
            .context("redis-cli --cluster create")?;
        if !out.contains("All 16384 slots covered") {
            bail!("redis-cli --cluster create did not cover all slots:\n{out}");
        }
        cluster
            .wait_cluster_ok(CLUSTER_OK_TIMEOUT)
            .await
            .context("the new cluster did not become healthy")?;
        Ok(cluster)
    }

    /// `redis://127.0.0.1:PORT` of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The client port of every node, in node order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The cluster bus port (`--cluster-port`) of every node.
    pub fn bus_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.bus_port).collect()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes (never, for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The number of masters asked for at start.
    pub fn masters(&self) -> usize {
        self.masters
    }

    /// The number of replicas per master asked for at start.
    pub fn replicas_per_master(&self) -> usize {
        self.replicas_per_master
    }

    /// The cluster's temporary directory (one subdirectory per node port,
    /// holding `nodes-PORT.conf`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn node(&self, i: usize) -> anyhow::Result<&ClusterNode> {
        self.nodes
            .get(i)
            .with_context(|| format!("no cluster node {i} (there are {})", self.nodes.len()))
    }

    /// Whether node `i` runs.
    pub fn is_node_running(&self, i: usize) -> bool {
        self.nodes.get(i).is_some_and(|n| n.process.is_running())
    }

    /// The last log lines of node `i`.
    pub fn node_log_tail(&self, i: usize) -> Vec<String> {
        self.nodes
            .get(i)
            .map(|n| n.process.log_tail())
            .unwrap_or_default()
    }

    /// Kills node `i` (SIGKILL) and waits until it is gone. The others notice
    /// after [`CLUSTER_NODE_TIMEOUT_MS`]: without replicas the cluster then
    /// reports `cluster_state:fail` (full coverage is required); with
    /// replicas one of them is promoted.
    pub async fn kill_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.node(i)?.process.stop().await
    }

    /// Starts node `i` again on the same ports with the same `nodes.conf`,
    /// so it rejoins with its old identity (and an empty data set; a master
    /// that was replaced meanwhile comes back as a replica). Waits until the
    /// process accepts connections, not for the cluster: call
    /// [`RedisCluster::wait_cluster_ok`] for that.
    pub async fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        let node = self.node(i)?;
        node.process.stop().await?;
        node.process.start_retrying_port().await
    }

    /// A connection to node `i` (no `-c` redirection handling: a key of
    /// another node's slot gets a `MOVED` error reply).
    pub async fn connect(&self, i: usize) -> anyhow::Result<RespConnection> {
        RespConnection::connect(self.node(i)?.port).await
    }

    /// Runs one command on node `i`.
    pub async fn command<A: AsRef<[u8]>>(&self, i: usize, args: &[A]) -> anyhow::Result<Reply> {
        self.connect(i).await?.command(args).await
    }

    /// Runs `redis-cli -c -h 127.0.0.1 -p PORT_OF_NODE_i ARGS…` (following
    /// `MOVED`/`ASK` redirections) and returns its stdout.
    pub async fn cli<A: AsRef<OsStr>>(&self, i: usize, args: &[A]) -> anyhow::Result<String> {
        let mut full: Vec<OsString> = vec![
            "-c".into(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.node(i)?.port.to_string().into(),
        ];
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        redis_cli(&full).await
    }

    /// `CLUSTER INFO` of node `i` as key → value.
    pub async fn cluster_info(&self, i: usize) -> anyhow::Result<BTreeMap<String, String>> {
        let reply = self.command(i, &["CLUSTER", "INFO"]).await?;
        Ok(parse_info(reply_text(&reply, "CLUSTER INFO")?))
    }

    /// The `cluster_state` (`ok` or `fail`) node `i` reports.
    pub async fn cluster_state(&self, i: usize) -> anyhow::Result<String> {
        self.cluster_info(i)
            .await?
            .remove("cluster_state")
            .context("CLUSTER INFO without cluster_state")
    }

    /// `CLUSTER NODES` of node `i`, as Redis prints it.
    pub async fn cluster_nodes(&self, i: usize) -> anyhow::Result<String> {
        let reply = self.command(i, &["CLUSTER", "NODES"]).await?;
        Ok(reply_text(&reply, "CLUSTER NODES")?.to_owned())
    }

    /// The role node `i` reports (`ROLE`): `master` or `slave`.
    pub async fn role(&self, i: usize) -> anyhow::Result<String> {
        match self.command(i, &["ROLE"]).await? {
            Reply::Array(items) => items
                .first()
                .and_then(Reply::as_str)
                .map(str::to_owned)
                .context("empty ROLE reply"),
            other => bail!("unexpected ROLE reply {other:?}"),
        }
    }

    /// For a replica, the index of the node it replicates (`None` for a
    /// master).
    pub async fn master_of(&self, i: usize) -> anyhow::Result<Option<usize>> {
        let reply = self.command(i, &["INFO", "replication"]).await?;
        let info = parse_info(reply_text(&reply, "INFO replication")?);
        if info.get("role").map(String::as_str) != Some("slave") {
            return Ok(None);
        }
        let port: u16 = info
            .get("master_port")
            .context("INFO replication without master_port")?
            .parse()
            .context("master_port")?;
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .map(Some)
            .with_context(|| format!("node {i} replicates an unknown port {port}"))
    }

    /// The indexes of the running nodes that are masters now.
    pub async fn master_indexes(&self) -> anyhow::Result<Vec<usize>> {
        let mut out = Vec::new();
        for i in 0..self.nodes.len() {
            if self.is_node_running(i) && self.role(i).await? == "master" {
                out.push(i);
            }
        }
        Ok(out)
    }

    /// Polls (every 100 ms, up to `timeout`) until every **running** node
    /// reports `cluster_state:ok` with all 16384 slots ok, knows all
    /// [`RedisCluster::len`] nodes, sees every other running node connected
    /// and not flagged `fail`/`fail?`, sees no slot served by a stopped node
    /// (so after [`RedisCluster::kill_node`] of a master this waits for a
    /// replica to be promoted), and, when it is a replica, has its master
    /// link up. Stopped nodes are not asked, and may be flagged failed.
    /// Fails with every node's last status on timeout.
    pub async fn wait_cluster_ok(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut problems = Vec::new();
            let mut views: Vec<(usize, Vec<String>)> = Vec::new();
            for i in 0..self.nodes.len() {
                if !self.is_node_running(i) {
                    continue;
                }
                match self.check_node_healthy(i).await {
                    Ok(view) => views.push((i, view)),
                    Err(e) => {
                        problems.push(format!("node {i} (port {}): {e:#}", self.nodes[i].port));
                    }
                }
            }
            if problems.is_empty() {
                // Every running node must see the same roles and slot owners
                // (e.g. a restarted old master must have learnt that it was
                // replaced before anyone relies on its role).
                if let Some((first, view)) = views.first() {
                    for (i, other) in &views[1..] {
                        if other != view {
                            problems.push(format!(
                                "nodes {first} and {i} disagree:\n    {}\n  vs\n    {}",
                                view.join("\n    "),
                                other.join("\n    ")
                            ));
                        }
                    }
                }
            }
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "the cluster was not ok within {timeout:?}:\n  {}",
                    problems.join("\n  ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls (every 100 ms, up to `timeout`) until node `i` reports
    /// `cluster_state:<state>` (`ok` or `fail`).
    pub async fn wait_node_cluster_state(
        &self,
        i: usize,
        state: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.cluster_state(i).await;
            if matches!(&last, Ok(s) if s == state) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "node {i} did not report cluster_state:{state} within {timeout:?} (last: {last:?})"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks node `i` and returns its view of the running nodes: one
    /// `id role master-id slots…` line each, sorted.
    async fn check_node_healthy(&self, i: usize) -> anyhow::Result<Vec<String>> {
        let info = self.cluster_info(i).await?;
        let get = |k: &str| info.get(k).map(String::as_str).unwrap_or("?");
        if get("cluster_state") != "ok" {
            bail!("cluster_state:{}", get("cluster_state"));
        }
        if get("cluster_slots_ok") != "16384" {
            bail!("cluster_slots_ok:{}", get("cluster_slots_ok"));
        }
        if get("cluster_known_nodes") != self.nodes.len().to_string() {
            bail!(
                "cluster_known_nodes:{} (want {})",
                get("cluster_known_nodes"),
                self.nodes.len()
            );
        }
        let nodes = self.cluster_nodes(i).await?;
        let mut view = Vec::new();
        for line in nodes.lines().filter(|l| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(addr), Some(flags), Some(link)) =
                (fields.get(1), fields.get(2), fields.get(7))
            else {
                bail!("unparsable CLUSTER NODES line {line:?}");
            };
            let port = addr
                .split(['@', ','])
                .next()
                .and_then(|hp| hp.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok());
            let Some(j) = port.and_then(|p| self.nodes.iter().position(|n| n.port == p)) else {
                bail!("CLUSTER NODES names an unknown node: {line:?}");
            };
            if !self.is_node_running(j) {
                // A stopped master may keep its slots only until a replica
                // has taken them over.
                if fields.len() > 8 {
                    bail!("sees slots served by stopped node {j} ({flags})");
                }
                continue;
            }
            if flags.contains("fail") {
                bail!("sees running node {j} as {flags}");
            }
            if !flags.contains("myself") && *link != "connected" {
                bail!("link to node {j} is {link}");
            }
            let role = if flags.split(',').any(|f| f == "master") {
                "master"
            } else {
                "slave"
            };
            let slots: Vec<&str> = fields[8..]
                .iter()
                .copied()
                .filter(|s| !s.starts_with('['))
                .collect();
            view.push(format!(
                "{} {role} {} {}",
                fields[0],
                fields[3],
                slots.join(" ")
            ));
        }
        view.sort();
        let reply = self.command(i, &["INFO", "replication"]).await?;
        let repl = parse_info(reply_text(&reply, "INFO replication")?);
        if repl.get("role").map(String::as_str) == Some("slave")
            && repl.get("master_link_status").map(String::as_str) != Some("up")
        {
            bail!(
                "replica whose master link is {:?}",
                repl.get("master_link_status")
            );
        }
        Ok(view)
    }
}

fn reply_text<'a>(reply: &'a Reply, what: &str) -> anyhow::Result<&'a str> {
    match reply {
        Reply::Error(e) => bail!("{what}: {e}"),
        other => other
            .as_str()
            .with_context(|| format!("{what}: unexpected reply {other:?}")),
    }
}

/// Parses `INFO`-style text (`key:value` lines, `#` comments).
fn parse_info(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim().split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// redis-cli
// ---------------------------------------------------------------------------

/// The `redis-server` binary: `$TESTKIT_REDIS_SERVER` or `redis-server`.
pub fn redis_server_bin() -> OsString {
    std::env::var_os("TESTKIT_REDIS_SERVER").unwrap_or_else(|| "redis-server".into())
}

/// The `redis-cli` binary: `$TESTKIT_REDIS_CLI` or `redis-cli`.
pub fn redis_cli_bin() -> OsString {
    std::env::var_os("TESTKIT_REDIS_CLI").unwrap_or_else(|| "redis-cli".into())
}

/// Runs `redis-cli ARGS…` (stdin closed, 60 s timeout) and returns its
/// stdout; fails when it exits non-zero (e.g. cannot connect).
pub async fn redis_cli<A: AsRef<OsStr>>(args: &[A]) -> anyhow::Result<String> {
    let bin = redis_cli_bin();
    let mut cmd = tokio::process::Command::new(&bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let shown = || {
        std::iter::once(bin.to_string_lossy().into_owned())
            .chain(
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned()),
            )
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .with_context(|| format!("`{}` timed out", shown()))?
        .with_context(|| {
            format!(
                "running `{}` (is redis-cli installed? apt-get install redis-tools)",
                shown()
            )
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "`{}` failed ({}):\n{stdout}\n{}",
            shown(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

// ---------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------

type LogTail = Arc<Mutex<VecDeque<String>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why one start failed.
struct StartError {
    addr_in_use: bool,
    error: anyhow::Error,
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
struct ManagedProcess {
    port: u16,
    args: Vec<OsString>,
    child: Mutex<Option<Child>>,
    log: LogTail,
}

impl ManagedProcess {
    fn new(port: u16, args: Vec<OsString>) -> Self {
        Self {
            port,
            args,
            child: Mutex::new(None),
            log: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    fn pid(&self) -> Option<u32> {
        let mut child = lock(&self.child);
        match child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => child.as_ref().map(Child::id),
            _ => None,
        }
    }

    fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    fn log_tail(&self) -> Vec<String> {
        lock(&self.log).iter().cloned().collect()
    }

    /// Starts; on a fixed port that is still (or already) taken, tries again
    /// a few times, 200 ms apart.
    async fn start_retrying_port(&self) -> anyhow::Result<()> {
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

    async fn start(&self) -> Result<(), StartError> {
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
            let log = Arc::clone(&self.log);
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
                        let mut tail = lock(&log);
                        if tail.len() == LOG_TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
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
    async fn stop(&self) -> anyhow::Result<()> {
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
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
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
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<TempDir> {
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

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------
// RESP2 client
// ---------------------------------------------------------------------------

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …` (the text after `-`).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n…`
    Array(Vec<Reply>),
}

impl Reply {
    /// The text of a simple string or of a UTF-8 bulk string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Reply::Simple(s) => Some(s),
            Reply::Bulk(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// The integer of an integer reply.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }

    /// The message of an error reply (`NOAUTH Authentication required.`).
    pub fn error(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    /// Whether this is a nil reply.
    pub fn is_nil(&self) -> bool {
        matches!(self, Reply::Nil)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A RESP2 connection to a Redis server on 127.0.0.1 (plain TCP or TLS).
/// Every operation times out after [`COMMAND_TIMEOUT`].
pub struct RespConnection {
    stream: Box<dyn Io>,
    buf: Vec<u8>,
    port: u16,
    tls: bool,
}

impl std::fmt::Debug for RespConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RespConnection")
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl RespConnection {
    /// Connects over plain TCP to `127.0.0.1:port`.
    pub async fn connect(port: u16) -> anyhow::Result<RespConnection> {
        let tcp = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        Ok(RespConnection {
            stream: Box::new(tcp),
            buf: Vec::new(),
            port,
            tls: false,
        })
    }

    /// Connects over TLS to `127.0.0.1:port`, trusting only the
    /// certificates in `ca_pem` and checking the server name `127.0.0.1`.
    pub async fn connect_tls(port: u16, ca_pem: &str) -> anyhow::Result<RespConnection> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots
                .add(cert.context("parsing the CA PEM")?)
                .context("adding the CA certificate")?;
        }
        if roots.is_empty() {
            bail!("no certificate in the CA PEM");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("127.0.0.1").context("server name")?;
        let tls = tokio::time::timeout(
            COMMAND_TIMEOUT,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port} timed out"))?
        .with_context(|| format!("TLS handshake with 127.0.0.1:{port}"))?;
        Ok(RespConnection {
            stream: Box::new(tls),
            buf: Vec::new(),
            port,
            tls: true,
        })
    }

    /// Sends one command (each argument a bulk string) and reads its reply.
    /// Error replies are `Ok(Reply::Error(_))`; `Err` is for I/O, protocol
    /// errors and timeouts.
    pub async fn command<A: AsRef<[u8]>>(&mut self, args: &[A]) -> anyhow::Result<Reply> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        let port = self.port;
        tokio::time::timeout(COMMAND_TIMEOUT, async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await?;
            loop {
                if let Some((reply, used)) = parse_reply(&self.buf, 0)? {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                let mut chunk = [0u8; 16 * 1024];
                let n = self.stream.read(&mut chunk).await?;
                if n == 0 {
                    bail!("127.0.0.1:{port} closed the connection");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .with_context(|| format!("command on 127.0.0.1:{port} timed out"))?
    }
}

/// Parses one reply at `buf[pos..]`: `Ok(None)` when incomplete, else the
/// reply and the position after it.
fn parse_reply(buf: &[u8], pos: usize) -> anyhow::Result<Option<(Reply, usize)>> {
    let Some(rel) = buf
        .get(pos..)
        .and_then(|rest| rest.windows(2).position(|w| w == b"\r\n"))
    else {
        return Ok(None);
    };
    let line_end = pos + rel;
    let next = line_end + 2;
    let kind = buf[pos];
    let text = std::str::from_utf8(&buf[pos + 1..line_end]).context("non-UTF-8 RESP header")?;
    let reply = match kind {
        b'+' => (Reply::Simple(text.to_owned()), next),
        b'-' => (Reply::Error(text.to_owned()), next),
        b':' => (Reply::Integer(text.parse().context("RESP integer")?), next),
        b'$' => {
            let len: i64 = text.parse().context("RESP bulk length")?;
            if len < 0 {
                (Reply::Nil, next)
            } else {
                let len = usize::try_from(len).context("RESP bulk length")?;
                let end = next + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    bail!("RESP bulk string not followed by CRLF");
                }
                (Reply::Bulk(buf[next..end].to_vec()), end + 2)
            }
        }
        b'*' => {
            let n: i64 = text.parse().context("RESP array length")?;
            if n < 0 {
                (Reply::Nil, next)
            } else {
                let mut items = Vec::new();
                let mut at = next;
                for _ in 0..n {
                    match parse_reply(buf, at)? {
                        Some((item, after)) => {
                            items.push(item);
                            at = after;
                        }
                        None => return Ok(None),
                    }
                }
                (Reply::Array(items), at)
            }
        }
        other => bail!("unsupported RESP type byte {:?}", char::from(other)),
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp2() {
        let buf = b"*3\r\n+OK\r\n$3\r\nfoo\r\n*2\r\n:-5\r\n$-1\r\n-ERR x\r\n";
        let (reply, used) = parse_reply(buf, 0).expect("parse").expect("complete");
        assert_eq!(
            reply,
            Reply::Array(vec![
                Reply::Simple("OK".into()),
                Reply::Bulk(b"foo".to_vec()),
                Reply::Array(vec![Reply::Integer(-5), Reply::Nil]),
            ])
        );
        let (err, end) = parse_reply(buf, used).expect("parse").expect("complete");
        assert_eq!(err.error(), Some("ERR x"));
        assert_eq!(end, buf.len());
        for cut in 0..used {
            assert!(
                parse_reply(&buf[..cut], 0).expect("parse").is_none(),
                "prefix of {cut} bytes must be incomplete"
            );
        }
    }

    #[test]
    fn parses_info() {
        let info = parse_info("# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n");
        assert_eq!(info.get("cluster_state").map(String::as_str), Some("ok"));
        assert_eq!(info.len(), 2);
    }
}
