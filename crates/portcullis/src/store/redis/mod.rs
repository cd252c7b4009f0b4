//! The shared store for several instances: Redis standalone (TLS, ACL user) or Redis Cluster.
//!
//! Key layout (prefix `portcullis:` by default): a session or login-state record lives at
//! `<prefix>{<store key>}`, its refresh lock at `<prefix>{<store key>}:lock` — the hash tag keeps
//! both in one Cluster slot — and an index at `<prefix>{<index key>}` (a set of store keys).
//! Values are the sealed bytes the layer above hands down; Redis never sees a ticket or a token.
//!
//! Every command has a deadline; a timeout or connection error is `StoreError::Unavailable`, which
//! the gateway answers with 503. Connections are made lazily and re-made after failures, so the
//! gateway starts while Redis is down and recovers without a restart once it is back.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use redis::{
    Cmd, FromRedisValue, Pipeline, Script,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::ClusterClientBuilder,
    cluster_async::ClusterConnection,
};
use tokio::sync::OnceCell;

use super::{Entry, IndexKey, LockToken, SessionStore, StoreError, StoreKey};
use crate::{
    config::{RedisConfig, RedisTopology},
    server::PerWorker,
};

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

pub struct RedisStore {
    cfg: RedisConfig,
    /// One connection per worker thread, made by the worker itself, so its driver task runs
    /// there and a command never waits for another thread to be scheduled (`server::PerWorker`).
    conn: PerWorker<OnceCell<Conn>>,
    unlock: Arc<Script>,
    index_add: Arc<Script>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field(
                "cluster",
                &matches!(self.cfg.topology, RedisTopology::Cluster(_)),
            )
            .field("prefix", &self.cfg.key_prefix)
            .finish_non_exhaustive()
    }
}

/// Compare-and-delete: only the holder of the lock token releases the lock.
const UNLOCK: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// Adds a member to an index set and extends (never shortens) the set's expiry, atomically: the
/// fallback of `index_add`'s transaction when a Cluster slot is being migrated (one key, so the
/// cluster client follows `ASK` for it).
const INDEX_ADD: &str = r#"redis.call("SADD", KEYS[1], ARGV[1])
redis.call("PEXPIRE", KEYS[1], ARGV[2], "GT")
redis.call("PEXPIRE", KEYS[1], ARGV[2], "NX")
return 1"#;

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

/// `ASK` (a key of a migrating slot already moved), or `EXECABORT` after one inside `MULTI`.
fn is_migrating(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        e.kind(),
        ErrorKind::Server(ServerErrorKind::Ask | ServerErrorKind::ExecAbort)
    )
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Validates the connection parameters; connects on first use.
    pub fn new(cfg: RedisConfig) -> Result<Self, StoreError> {
        Self::per_worker(cfg, 1)
    }

    /// [`RedisStore::new`] with a connection for each of `workers` worker threads (and one for
    /// the other threads), each made on first use by its thread.
    pub fn per_worker(cfg: RedisConfig, workers: usize) -> Result<Self, StoreError> {
        // `rediss://` uses rustls with the process-wide provider: ring, as everywhere else.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = RedisStore {
            cfg,
            conn: PerWorker::new(workers, OnceCell::new),
            unlock: Arc::new(Script::new(UNLOCK)),
            index_add: Arc::new(Script::new(INDEX_ADD)),
        };
        store.connection_info()?;
        Ok(store)
    }

    fn connection_info(&self) -> Result<Vec<redis::ConnectionInfo>, StoreError> {
        let urls = match &self.cfg.topology {
            RedisTopology::Standalone(u) => std::slice::from_ref(u),
            RedisTopology::Cluster(us) => us.as_slice(),
        };
        urls.iter()
            .map(|u| {
                let mut info = redis::IntoConnectionInfo::into_connection_info(u.as_str())
                    .map_err(|e| StoreError::Unavailable(format!("redis URL: {e}")))?;
                let mut settings = info.redis_settings().clone();
                if let Some(user) = &self.cfg.username {
                    settings = settings.set_username(user);
                }
                if let Some(pw) = &self.cfg.password {
                    settings = settings.set_password(pw.expose());
                }
                info = info.set_redis_settings(settings);
                Ok(info)
            })
            .collect()
    }

    async fn connect(&self) -> Result<Conn, StoreError> {
        let infos = self.connection_info()?;
        let t = self.cfg.timeout;
        match &self.cfg.topology {
            RedisTopology::Standalone(_) => {
                let info = infos
                    .into_iter()
                    .next()
                    .ok_or_else(|| unavailable("no URL"))?;
                let client = match &self.cfg.ca_pem {
                    Some(pem) => redis::Client::build_with_tls(info, self.tls_roots(pem)),
                    None => redis::Client::open(info),
                }
                .map_err(unavailable)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(t))
                    .set_response_timeout(Some(t))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                let mgr =
                    tokio::time::timeout(t, client.get_connection_manager_with_config(config))
                        .await
                        .map_err(|_| unavailable("connect timed out"))?
                        .map_err(unavailable)?;
                Ok(Conn::Single(mgr))
            }
            RedisTopology::Cluster(_) => {
                let mut builder = ClusterClientBuilder::new(infos)
                    .connection_timeout(t)
                    .response_timeout(t)
                    .retries(2);
                if let Some(user) = &self.cfg.username {
                    builder = builder.username(user);
                }
                if let Some(pem) = &self.cfg.ca_pem {
                    builder = builder.certs(self.tls_roots(pem));
                }
                if let Some(pw) = &self.cfg.password {
                    builder = builder.password(pw.expose());
                }
                let client = builder.build().map_err(unavailable)?;
                let conn = tokio::time::timeout(t, client.get_async_connection())
                    .await
                    .map_err(|_| unavailable("connect timed out"))?
                    .map_err(unavailable)?;
                Ok(Conn::Cluster(conn))
            }
        }
    }

    fn tls_roots(&self, pem: &[u8]) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        }
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        self.conn
            .get()
            .get_or_try_init(|| self.connect())
            .await
            .cloned()
    }

    fn key(&self, k: &StoreKey) -> String {
        format!("{}{{{}}}", self.cfg.key_prefix, k.0)
    }

    fn lock_key(&self, k: &StoreKey) -> String {
        format!("{}{{{}}}:lock", self.cfg.key_prefix, k.0)
    }

    fn index_key(&self, k: &IndexKey) -> String {
        format!("{}{{{}}}", self.cfg.key_prefix, k.0)
    }

    /// Runs one command with the deadline.
    async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let conn = self.conn().await?;
        let fut = async move {
            match conn {
                Conn::Single(mut c) => cmd.query_async(&mut c).await,
                Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
            }
        };
        tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| unavailable("command timed out"))?
            .map_err(unavailable)
    }

    /// Runs a pipeline (all its keys in one slot) with the deadline. `Ok(None)` when a Cluster
    /// node answered `ASK` or aborted the transaction over one (the slot is being migrated): the
    /// cluster client follows `ASK` for single commands, not inside a pipeline, so the caller
    /// then sends the commands one at a time.
    async fn pipeline<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<Option<T>, StoreError> {
        let conn = self.conn().await?;
        let fut = async move {
            match conn {
                Conn::Single(mut c) => pipe.query_async(&mut c).await.map_err(|e| (e, false)),
                Conn::Cluster(mut c) => pipe.query_async(&mut c).await.map_err(|e| (e, true)),
            }
        };
        match tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| unavailable("pipeline timed out"))?
        {
            Ok(v) => Ok(Some(v)),
            Err((e, true)) if is_migrating(&e) => {
                tracing::debug!(error = %e, "slot being migrated: sending the commands singly");
                Ok(None)
            }
            Err((e, _)) => Err(unavailable(e)),
        }
    }

    /// Runs a Lua script on one key (so one Cluster slot) with the deadline. For other modules
    /// that keep shared state next to the sessions (the rate limiter's GCRA).
    pub(crate) async fn invoke_script<T: FromRedisValue>(
        &self,
        script: &Script,
        key: &str,
        args: &[u64],
    ) -> Result<T, StoreError> {
        let mut inv = script.key(key);
        for a in args {
            inv.arg(*a);
        }
        self.run_script(inv).await
    }

    /// Runs a prepared script invocation (its keys in one slot) with the deadline.
    async fn run_script<T: FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let conn = self.conn().await?;
        let fut = async move {
            match conn {
                Conn::Single(mut c) => inv.invoke_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => inv.invoke_async::<T>(&mut c).await,
            }
        };
        tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| unavailable("script timed out"))?
            .map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl SessionStore for RedisStore {
    async fn get(&self, key: &StoreKey) -> Result<Option<Entry>, StoreError> {
        let k = self.key(key);
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&k).cmd("PTTL").arg(&k);
        let (value, ttl): (Option<Vec<u8>>, i64) = match self.pipeline(&pipe).await? {
            Some(both) => both,
            None => (
                self.query(redis::cmd("GET").arg(&k)).await?,
                self.query(redis::cmd("PTTL").arg(&k)).await?,
            ),
        };
        Ok(value.map(|v| Entry {
            value: Bytes::from(v),
            // -1 (no expiry) cannot happen for keys we wrote; treat it as "touch now".
            ttl: Duration::from_millis(u64::try_from(ttl).unwrap_or(0)),
        }))
    }

    async fn set(&self, key: &StoreKey, value: Bytes, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis(ttl));
        self.query::<()>(&cmd).await
    }

    async fn replace(
        &self,
        key: &StoreKey,
        value: Bytes,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        // `XX`: only if the key exists (an expired key does not), in one atomic command.
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis(ttl))
            .arg("XX");
        self.query::<Option<String>>(&cmd)
            .await
            .map(|r| r.is_some())
    }

    async fn touch(&self, key: &StoreKey, ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("PEXPIRE");
        cmd.arg(self.key(key)).arg(millis(ttl));
        self.query::<i64>(&cmd).await.map(|n| n == 1)
    }

    async fn take(&self, key: &StoreKey) -> Result<Option<Bytes>, StoreError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        Ok(self.query::<Option<Vec<u8>>>(&cmd).await?.map(Bytes::from))
    }

    async fn delete(&self, key: &StoreKey) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(key));
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    async fn try_lock(
        &self,
        key: &StoreKey,
        lease: Duration,
    ) -> Result<Option<LockToken>, StoreError> {
        let token = u128::from_be_bytes(
            crate::crypto::random::bytes::<16>()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?,
        );
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.lock_key(key))
            .arg(token.to_string())
            .arg("NX")
            .arg("PX")
            .arg(millis(lease));
        let set: Option<String> = self.query(&cmd).await?;
        Ok(set.map(|_| LockToken(token)))
    }

    async fn unlock(&self, key: &StoreKey, token: &LockToken) -> Result<(), StoreError> {
        let mut inv = self.unlock.key(self.lock_key(key));
        inv.arg(token.0.to_string());
        self.run_script::<i64>(inv).await.map(|_| ())
    }

    async fn index_add(
        &self,
        index: &IndexKey,
        member: &StoreKey,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let k = self.index_key(index);
        let ms = millis(ttl);
        let mut pipe = redis::pipe();
        // The set lives as long as its longest-lived member: extend, never shorten.
        pipe.atomic()
            .cmd("SADD")
            .arg(&k)
            .arg(&member.0)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(ms)
            .arg("GT")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&k)
            .arg(ms)
            .arg("NX")
            .ignore();
        if self.pipeline::<()>(&pipe).await?.is_none() {
            // The same steps as one script: a set left without an expiry would outlive its
            // members for ever.
            let mut inv = self.index_add.key(&k);
            inv.arg(&member.0).arg(ms);
            self.run_script::<i64>(inv).await?;
        }
        Ok(())
    }

    async fn index_members(&self, index: &IndexKey) -> Result<Vec<StoreKey>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(self.index_key(index));
        let members: Vec<String> = self.query(&cmd).await?;
        Ok(members.into_iter().map(StoreKey).collect())
    }

    async fn index_remove(&self, index: &IndexKey, member: &StoreKey) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(self.index_key(index)).arg(&member.0);
        self.query::<i64>(&cmd).await.map(|_| ())
    }

    async fn delete_all(&self, prefix: &str) -> Result<usize, StoreError> {
        let pattern = format!(
            "{}{{{}*",
            glob_escape(&self.cfg.key_prefix),
            glob_escape(prefix)
        );
        let conn = self.conn().await?;
        let mut deleted = 0;
        match conn {
            Conn::Single(mut c) => {
                let mut cursor: u64 = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut c)
                        .await
                        .map_err(unavailable)?;
                    if !keys.is_empty() {
                        let _: usize = redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async(&mut c)
                            .await
                            .map_err(unavailable)?;
                        // Count records, not the refresh locks that live beside them.
                        deleted += keys.iter().filter(|k| k.ends_with('}')).count();
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Conn::Cluster(mut c) => {
                // SCAN is per node: walk every primary; keys of one batch may sit in different
                // slots, so they are unlinked one by one (routed by slot).
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut c)
                    .await
                    .map_err(unavailable)?;
                for (host, port) in primaries(&nodes) {
                    let mut cursor: u64 = 0;
                    loop {
                        let mut scan = redis::cmd("SCAN");
                        scan.arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000);
                        let route = redis::cluster_routing::RoutingInfo::SingleNode(
                            redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                                host: host.clone(),
                                port,
                            },
                        );
                        let reply = c.route_command(scan, route).await.map_err(unavailable)?;
                        let (next, keys): (u64, Vec<String>) =
                            redis::from_redis_value(reply).map_err(unavailable)?;
                        for k in keys {
                            let n: usize = redis::cmd("UNLINK")
                                .arg(&k)
                                .query_async(&mut c)
                                .await
                                .map_err(unavailable)?;
                            if k.ends_with('}') {
                                deleted += n;
                            }
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
            }
        }
        Ok(deleted)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let fut = async move {
            match conn {
                Conn::Single(mut c) => redis::cmd("PING").query_async::<String>(&mut c).await,
                // A PING would reach one live node; the cluster's own view says whether every
                // slot is served.
                Conn::Cluster(mut c) => {
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut c)
                        .await?;
                    if info.lines().any(|l| l.trim() == "cluster_state:ok") {
                        Ok(info)
                    } else {
                        Err(redis::RedisError::from((
                            redis::ErrorKind::Server(redis::ServerErrorKind::ClusterDown),
                            "cluster_state is not ok",
                        )))
                    }
                }
            }
        };
        tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| unavailable("ping timed out"))?
            .map_err(unavailable)
            .map(|_| ())
    }
}

/// Escapes Redis glob metacharacters, so a prefix is matched literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `host:port` of every primary that is not marked failed, from `CLUSTER NODES`.
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
                return None;
            }
            let hostport = addr.split('@').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests;
