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

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

/// How long a `redis-server` may take to log "Ready to accept connections".
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`RedisCluster::start`] waits for `cluster_state:ok` everywhere.
pub const CLUSTER_OK_TIMEOUT: Duration = Duration::from_secs(30);
/// The timeout of one command of [`RespConnection`] (and of connecting).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// `--cluster-node-timeout` of [`RedisCluster`] nodes, in milliseconds.
pub const CLUSTER_NODE_TIMEOUT_MS: u64 = 2000;

const START_ATTEMPTS: usize = 5;

mod cluster;
mod process;
mod resp;

pub use cluster::RedisCluster;
use process::{ManagedProcess, TempDir, free_ports};
pub use resp::{Reply, RespConnection};

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

pub(super) fn common_args(dir: &Path) -> Vec<OsString> {
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
