//! A Redis Cluster of N masters (optionally with replicas) on 127.0.0.1.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::process::{ManagedProcess, TempDir, free_ports};
use super::resp::{Reply, RespConnection};
use super::{CLUSTER_NODE_TIMEOUT_MS, CLUSTER_OK_TIMEOUT, START_ATTEMPTS, common_args, redis_cli};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let info = parse_info("# Cluster\r\ncluster_state:ok\r\ncluster_slots_ok:16384\r\n");
        assert_eq!(info.get("cluster_state").map(String::as_str), Some("ok"));
        assert_eq!(info.len(), 2);
    }
}
