//! A private redis-server per test, on a loopback port of its own, that a
//! test may stop and start again (on the same port).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestRedis {
    pub port: u16,
    child: Option<Child>,
}

impl TestRedis {
    pub async fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let mut redis = Self { port, child: None };
        redis.resume().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would: no goodbye to its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open, nothing
    /// comes through them, as with a half-dead network path.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// Starts the server again on the same port, empty, and waits until it
    /// answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for these tests (make test installs it)");
        self.child = Some(child);
        for _ in 0..200 {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
    }

    /// A plain connection, for ground truth.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private Redis Cluster on loopback: three masters, each with a
/// replica, started and joined by `redis-cli --cluster create`, with a
/// short node timeout so a killed master's replica takes over in about
/// a second.
pub struct TestRedisCluster {
    dir: std::path::PathBuf,
    nodes: Vec<(u16, Child)>,
}

impl TestRedisCluster {
    pub async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("aurum-cluster-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nodes = Vec::new();
        for port in cluster_ports(6) {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    "1000",
                    // A replica fails over however long ago it last heard
                    // its master, and its first sync starts at once (7.0
                    // waits 5 s for more replicas to share a diskless one).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--repl-diskless-sync-delay",
                    "0",
                    "--dir",
                    dir.to_str().unwrap(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server is needed for these tests (make test installs it)");
            nodes.push((port, child));
        }
        let cluster = Self { dir, nodes };
        for (port, _) in &cluster.nodes {
            wait_for_ping(*port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            output.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_until_ok().await;
        cluster
    }

    /// Every node's URL, comma-separated (what `REDIS_URL` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}/"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master serving `key`'s slot now.
    pub async fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = self
            .query(self.any_live(), &["CLUSTER", "KEYSLOT", key])
            .await
            .unwrap();
        let ranges: redis::Value = self.query(self.any_live(), &["CLUSTER", "SLOTS"]).await.unwrap();
        let redis::Value::Array(ranges) = ranges else {
            panic!("CLUSTER SLOTS: {ranges:?}")
        };
        for range in ranges {
            let redis::Value::Array(fields) = range else {
                continue;
            };
            let (
                Some(redis::Value::Int(from)),
                Some(redis::Value::Int(to)),
                Some(redis::Value::Array(master)),
            ) = (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            if (*from..=*to).contains(&i64::from(slot))
                && let Some(redis::Value::Int(port)) = master.get(1)
            {
                return u16::try_from(*port).unwrap();
            }
        }
        panic!("no master serves slot {slot}")
    }

    /// The port of a replica of the master on `port`.
    pub async fn replica_of(&self, master: u16) -> u16 {
        for (port, _) in &self.nodes {
            let info: String = self
                .query(*port, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            if info.contains("role:slave") && info.contains(&format!("master_port:{master}")) {
                return *port;
            }
        }
        panic!("no replica of {master}")
    }

    /// Kills the node on `port` (as a crash would).
    pub fn kill(&mut self, port: u16) {
        let index = self
            .nodes
            .iter()
            .position(|(p, _)| *p == port)
            .expect("a node of this cluster");
        let (_, mut child) = self.nodes.remove(index);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `CLUSTER FAILOVER` on the replica on `port`: a graceful hand-over,
    /// the old master's connections staying open as it becomes a replica.
    pub async fn fail_over_to(&self, replica: u16) {
        let answer: String = self.query(replica, &["CLUSTER", "FAILOVER"]).await.unwrap();
        assert_eq!(answer, "OK");
        for _ in 0..400 {
            let info: String = self
                .query(replica, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            if info.contains("role:master") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the replica on {replica} did not take over");
    }

    /// Waits until every live node reports `cluster_state:ok` and every
    /// replica is in sync with its master (a replica that is not cannot
    /// take over gracefully).
    pub async fn wait_until_ok(&self) {
        for _ in 0..400 {
            let mut ok = true;
            for (port, _) in &self.nodes {
                let info: String = self.query(*port, &["CLUSTER", "INFO"]).await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
                let replication: String = self
                    .query(*port, &["INFO", "replication"])
                    .await
                    .unwrap_or_default();
                ok &= !replication.contains("role:slave") || replication.contains("master_link_status:up");
            }
            if ok {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "the cluster in {} did not reach cluster_state:ok",
            self.dir.display()
        );
    }

    /// `CLUSTER NODES` as a live node sees it, for failure messages.
    pub async fn describe(&self) -> String {
        self.query(self.any_live(), &["CLUSTER", "NODES"])
            .await
            .unwrap_or_default()
    }

    fn any_live(&self) -> u16 {
        self.nodes[0].0
    }

    async fn query<T: redis::FromRedisValue>(&self, port: u16, args: &[&str]) -> redis::RedisResult<T> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query_async(&mut conn).await
    }

    /// Each node's port, role and sharded channels, for failure messages.
    pub async fn shard_channels_by_node(&self) -> String {
        let mut out = String::new();
        for (port, _) in &self.nodes {
            let channels: Vec<String> = self
                .query(*port, &["PUBSUB", "SHARDCHANNELS"])
                .await
                .unwrap_or_default();
            let info: String = self
                .query(*port, &["INFO", "replication"])
                .await
                .unwrap_or_default();
            let role = info
                .lines()
                .find(|l| l.starts_with("role:"))
                .unwrap_or("?")
                .to_owned();
            out.push_str(&format!("{port} {role} {channels:?}\n"));
        }
        out
    }

    /// Sharded channels with subscribers, over the whole cluster.
    pub async fn shard_channels(&self) -> Vec<String> {
        let mut all = Vec::new();
        for (port, _) in &self.nodes {
            let channels: Vec<String> = self
                .query(*port, &["PUBSUB", "SHARDCHANNELS"])
                .await
                .unwrap_or_default();
            all.extend(channels);
        }
        all
    }
}

impl Drop for TestRedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` free loopback ports whose cluster bus ports (+10,000) are free
/// too.
fn cluster_ports(count: usize) -> Vec<u16> {
    let mut ports = Vec::new();
    while ports.len() < count {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        if port > 55_000 || ports.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            ports.push(port);
        }
    }
    ports
}

async fn wait_for_ping(port: u16) {
    for _ in 0..200 {
        if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            && let Ok(mut conn) = client.get_multiplexed_async_connection().await
            && redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("redis-server on port {port} did not answer");
}
