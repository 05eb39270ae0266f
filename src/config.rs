//! Service configuration, read from the environment (and flags) once at
//! start-up. `aurum serve --help` lists every variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use aurum_schema::pool::PoolSettings;
use clap::Args;

/// How long a socket handshake waits for room among WS_MAX_HANDSHAKES
/// before it is refused with 503. The bound orders a storm, it does not
/// slow it: the last of 19,000 sockets arriving at once waits for the
/// 18,000 before it (17 s on a debug build beside other tests), and a
/// shorter wait refused the tail of a storm the node was getting through.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(30);

/// A fixed JWT key for local development only (`--dev`), so `make run` and
/// `aurum token --dev` agree without any set-up.
pub const DEV_JWT_SECRET: &str = "aurum-dev-secret-not-for-production";

#[derive(Clone, Args)]
pub struct Config {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = "postgres://localhost/aurum")]
    pub database_url: String,
    /// Redis URL for the bus between nodes (`redis://host:port/db`; with
    /// REDIS_CLUSTER, seed nodes' URLs separated by commas). Unset: a
    /// single node. Set: nodes sharing this Redis and the same database
    /// behave as one.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// REDIS_URL is a Redis Cluster: sharded pub/sub (SSUBSCRIBE /
    /// SPUBLISH), commands grouped by hash slot.
    #[arg(long, env = "REDIS_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub redis_cluster: bool,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "REDIS_PREFIX", default_value = "aurum:")]
    pub redis_prefix: String,
    /// This node's name on the bus (1 to 64 of A-Z a-z 0-9 . _ - :);
    /// default: host name and process id.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Seconds a node's presence lease on a member lives unless renewed:
    /// a crashed node's members go offline within it.
    #[arg(long, env = "PRESENCE_TTL", default_value_t = 30)]
    pub presence_ttl: u64,
    /// With REDIS_URL: message ids below a client's `since` its replay sends
    /// again (clients dedupe by id), because a message committed on another
    /// node can arrive after a newer one. 100,000 ids is 5 s at 20,000
    /// messages/s.
    #[arg(long, env = "REPLAY_OVERLAP_IDS", default_value_t = 100_000)]
    pub replay_overlap_ids: i64,
    /// Milliseconds between PINGs on the bus's subscriber connection; one
    /// unanswered as long rebuilds the connection (a silent subscriber).
    #[arg(long, env = "BUS_PING_INTERVAL", default_value_t = 5000)]
    pub bus_ping_interval: u64,
    /// The ResourceSupervisor: samples memory and CPU, and acts above
    /// MEMORY_HIGH_WATERMARK (false: it does not run).
    #[arg(long, env = "ENABLE_RESOURCE_MONITOR", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_resource_monitor: bool,
    /// Percent of the container's memory limit (else the host's) above
    /// which the supervisor returns freed memory and sheds new sockets.
    #[arg(long, env = "MEMORY_HIGH_WATERMARK", default_value_t = 80.0)]
    pub memory_high_watermark: f64,
    /// Seconds between the supervisor's samples (fractions allowed: 0.05).
    #[arg(long, env = "RESOURCE_INTERVAL", default_value = "5", value_parser = seconds)]
    pub resource_interval: Duration,
    /// Seconds a node keeps serving after SIGTERM, reporting not ready, so
    /// the load balancer stops sending it traffic before it stops accepting.
    #[arg(long, env = "DRAIN_DELAY", default_value = "5", value_parser = seconds)]
    pub drain_delay: Duration,
    /// Seconds from SIGTERM to exit, whatever is still open: the drain delay,
    /// closing sockets, flushing the writer. Kubernetes' grace period must
    /// be longer.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30", value_parser = seconds)]
    pub shutdown_timeout: Duration,
    /// Address for REST, health and metrics.
    #[arg(long, env = "BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Address for Socket.IO sockets (`/socket.io/`).
    #[arg(long, env = "WS_BIND", default_value = "127.0.0.1:8081")]
    pub ws_bind: SocketAddr,
    /// HS256 key for member tokens; required unless --dev.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Development mode: a fixed JWT key when JWT_SECRET is unset.
    #[arg(long)]
    pub dev: bool,
    /// When set, a token's `iss` must be exactly this.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must be (or include) this.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Database connections this node holds at most, all pools together
    /// (message writer, shared, one per HTTP worker).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50)]
    pub max_connections: u32,
    /// Of MAX_CONNECTIONS, the message writer's own: no reader (replay,
    /// REST) can take them, so persistence never queues behind reads. At
    /// least WRITER_IN_FLIGHT, or batches wait for a connection.
    #[arg(long, env = "WRITER_CONNECTIONS", default_value_t = 2)]
    pub writer_connections: u32,
    /// Milliseconds a database statement may run (or wait on a lock)
    /// before PostgreSQL cancels it, on every pooled connection; 0 = none.
    #[arg(long, env = "STATEMENT_TIMEOUT", default_value_t = 5000)]
    pub statement_timeout: u64,
    /// Seconds before a database connection is replaced.
    #[arg(long, env = "POOL_RECYCLE", default_value_t = 3600)]
    pub pool_recycle: u64,
    /// Seconds a request waits for a database connection (the message
    /// writer waits at most STATEMENT_TIMEOUT: a chat message's sender is
    /// waiting for its ack).
    #[arg(long, env = "POOL_TIMEOUT", default_value_t = 30)]
    pub pool_timeout: u64,
    /// Largest Socket.IO packet, in bytes.
    #[arg(long, env = "WS_MAX_PAYLOAD", default_value_t = 100_000)]
    pub ws_max_payload: usize,
    /// Milliseconds between server pings.
    #[arg(long, env = "WS_PING_INTERVAL", default_value_t = 25_000)]
    pub ws_ping_interval: u64,
    /// Milliseconds to wait for a pong.
    #[arg(long, env = "WS_PING_TIMEOUT", default_value_t = 20_000)]
    pub ws_ping_timeout: u64,
    /// Origins (`https://app.example.com`, comma-separated) whose browser
    /// pages may use long-polling across origins (CORS, credentials
    /// allowed); none by default. Under --dev, BIND's own origins (the web
    /// client served at `/`) are allowed as well.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',', num_args = 0..)]
    pub cors_origins: Vec<String>,
    /// The built web client (`make web` writes `web/dist`), served at `/`
    /// on BIND; a relative path is taken from the working directory. When
    /// the folder has no `index.html`, `/` answers a JSON error and every
    /// other route works as usual.
    #[arg(long, env = "WEB_DIR", default_value = "web/dist")]
    pub web_dir: PathBuf,
    /// The Socket.IO URL the web client connects to (`https://chat.example`
    /// when an ingress routes `/socket.io/` on the page's own host); unset:
    /// the host the page was loaded from, on WS_BIND's port.
    #[arg(long, env = "PUBLIC_SOCKET_URL")]
    pub public_socket_url: Option<String>,
    /// Chat messages a user may send per second, across all their sockets
    /// on this node.
    #[arg(long, env = "CHAT_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_rate: u32,
    /// Chat messages a user may send at once before CHAT_RATE applies.
    #[arg(long, env = "CHAT_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..))]
    pub chat_burst: u32,
    /// `typing` events a user may send per second (a budget apart from chat's).
    #[arg(long, env = "TYPING_RATE", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub typing_rate: u32,
    /// `typing` events a user may send at once before TYPING_RATE applies.
    #[arg(long, env = "TYPING_BURST", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub typing_burst: u32,
    /// `mark_read` events (each a database write) a user may send per second.
    #[arg(long, env = "READ_RATE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub read_rate: u32,
    /// `mark_read` events a user may send at once before READ_RATE applies.
    #[arg(long, env = "READ_BURST", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub read_burst: u32,
    /// Sockets one client address may hold on this node; 0: no cap. Generous
    /// because members behind a carrier-grade NAT or an office share one
    /// address; one host opening thousands is what it stops.
    #[arg(long, env = "WS_MAX_SOCKETS_PER_IP", default_value_t = 500)]
    pub ws_max_sockets_per_ip: u32,
    /// New sockets one client address may open per second; 0: no limit.
    #[arg(long, env = "WS_HANDSHAKE_RATE", default_value_t = 50)]
    pub ws_handshake_rate: u32,
    /// New sockets one client address may open at once before
    /// WS_HANDSHAKE_RATE applies: WS_MAX_SOCKETS_PER_IP's worth, so that
    /// a whole NAT address's members reconnect at once after a node drain.
    #[arg(long, env = "WS_HANDSHAKE_BURST", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub ws_handshake_burst: u32,
    /// Handshakes (request to CONNECT decided) under way at once on this
    /// node; more wait up to 30 s for room, then get 503. 0: no bound.
    #[arg(long, env = "WS_MAX_HANDSHAKES", default_value_t = 1024)]
    pub ws_max_handshakes: u32,
    /// Kernel send buffer of each socket on WS_BIND (SO_SNDBUF), in bytes;
    /// 0: the kernel's autotuning (up to 4 MiB per socket whose client
    /// stops reading). Past it, frames queue in the session, whose bound
    /// drops a client that does not read.
    #[arg(long, env = "WS_SEND_BUFFER", default_value_t = 65_536)]
    pub ws_send_buffer: usize,
    /// Proxies (addresses or CIDR blocks, comma-separated) whose
    /// X-Forwarded-For names the client for the per-address limits; none by
    /// default (the TCP peer is the client).
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',', num_args = 0..)]
    pub trusted_proxies: Vec<aurum_actors::limits::Cidr>,
    /// `/matching/profiles/scroll` requests a user may make per second; 0: no limit.
    #[arg(long, env = "SCROLL_RATE", default_value_t = 10)]
    pub scroll_rate: u32,
    /// Scroll requests a user may make at once before SCROLL_RATE applies.
    #[arg(long, env = "SCROLL_BURST", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub scroll_burst: u32,
    /// `/matching/profiles/batch` requests a user may make per second; 0: no limit.
    #[arg(long, env = "BATCH_RATE", default_value_t = 20)]
    pub batch_rate: u32,
    /// Batch requests a user may make at once before BATCH_RATE applies.
    #[arg(long, env = "BATCH_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_burst: u32,
    /// Sockets one user may hold on this node.
    #[arg(long, env = "MAX_SOCKETS_PER_USER", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sockets_per_user: u32,
    /// HTTP worker threads; defaults to one per core.
    #[arg(long, env = "HTTP_WORKERS")]
    pub http_workers: Option<usize>,
    /// Session registry shards; defaults to twice the cores.
    #[arg(long, env = "REGISTRY_SHARDS")]
    pub registry_shards: Option<usize>,
    /// Message writer: batches in the database at once. One measured best
    /// here: more transactions queue on the ordering lock and cost
    /// PostgreSQL more than the overlap saves (docs/benchmarks.md).
    #[arg(long, env = "WRITER_IN_FLIGHT", default_value_t = 1)]
    pub writer_in_flight: usize,
    /// Message writer: microseconds a message waits for others to batch with
    /// under traffic (the last batch held 8 or more); in light traffic it
    /// goes at once. 0: never wait.
    #[arg(long, env = "WRITER_LINGER_US", default_value_t = 500)]
    pub writer_linger_us: u64,
    /// Replays (missed messages sent on CONNECT with `since`) streaming at
    /// once on this node; the others wait their turn, sockets open.
    #[arg(long, env = "REPLAY_CONCURRENCY", default_value_t = 32)]
    pub replay_concurrency: usize,
    /// Most missed messages replayed on CONNECT; a larger backlog gets
    /// `resync_required` and the client pages the REST history.
    #[arg(long, env = "REPLAY_MAX_BACKLOG", default_value_t = 10_000)]
    pub replay_max_backlog: i64,
    /// Apply pending migrations before serving.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = false, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,
}

/// How `MAX_CONNECTIONS` is shared out (see `Config::pool_settings`).
#[derive(Debug, Clone)]
pub struct PoolPlan {
    /// The message writer's own pool.
    pub writer: PoolSettings,
    /// The long-lived actors' pool: socket replay, read receipts, health.
    pub shared: PoolSettings,
    /// Each HTTP worker's pool.
    pub per_http_worker: PoolSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("JWT_SECRET is required (or pass --dev for a development key)")]
    MissingJwtSecret,
    #[error("JWT_SECRET must be at least 16 bytes")]
    WeakJwtSecret,
    #[error(
        "MAX_CONNECTIONS={max} is too few: the message writer, the shared pool and each of the \
         {workers} HTTP workers need one connection each (at least {needed})"
    )]
    TooFewConnections { max: u32, workers: u32, needed: u32 },
    #[error("REDIS_CLUSTER=true needs REDIS_URL: the cluster's seed nodes, separated by commas")]
    ClusterWithoutUrl,
    #[error("NODE_ID: {0}")]
    NodeId(#[from] aurum_actors::bridge::InvalidNodeId),
    #[error("{0}")]
    Parse(#[from] clap::Error),
}

impl Config {
    /// Reads the configuration from the environment alone (no flags).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_args(["aurum"])
    }

    /// Flags (the first item is the program name) over the environment.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Standalone {
            #[command(flatten)]
            config: Config,
        }
        let parsed = <Standalone as clap::Parser>::try_parse_from(args)?;
        Ok(parsed.config)
    }

    /// The JWT key in force: JWT_SECRET, or the development key under --dev.
    pub fn jwt_secret(&self) -> Result<&str, ConfigError> {
        match (&self.jwt_secret, self.dev) {
            (Some(secret), _) if secret.len() < 16 => Err(ConfigError::WeakJwtSecret),
            (Some(secret), _) => Ok(secret),
            (None, true) => Ok(DEV_JWT_SECRET),
            (None, false) => Err(ConfigError::MissingJwtSecret),
        }
    }

    /// The origins allowed to long-poll the socket listener: CORS_ORIGINS,
    /// and under --dev the origins the web client is served from on BIND
    /// (the page and the sockets are on different ports, so different
    /// origins, and a browser's default transport is long-polling).
    pub fn socket_cors_origins(&self) -> Vec<String> {
        let mut origins: Vec<String> = self
            .cors_origins
            .iter()
            // A browser's Origin never ends in '/'; a listed one may.
            .map(|origin| origin.trim().trim_end_matches('/').to_owned())
            .filter(|origin| !origin.is_empty())
            .collect();
        if self.dev {
            let port = self.bind.port();
            let ip = self.bind.ip();
            let mut own = Vec::new();
            if ip.is_unspecified() || ip.is_loopback() {
                own.push(format!("http://localhost:{port}"));
                own.push(format!("http://127.0.0.1:{port}"));
            }
            if !ip.is_unspecified() && !ip.is_loopback() {
                own.push(format!("http://{}", self.bind));
            }
            for origin in own {
                if !origins.contains(&origin) {
                    origins.push(origin);
                }
            }
        }
        origins
    }

    /// The socket listener's per-address and in-flight limits.
    pub fn connection_limits(&self) -> aurum_actors::limits::ConnectionLimitSettings {
        aurum_actors::limits::ConnectionLimitSettings {
            max_per_address: self.ws_max_sockets_per_ip,
            handshake_rate: aurum_actors::limits::Rate {
                per_second: self.ws_handshake_rate,
                burst: self.ws_handshake_burst,
            },
            max_in_flight: self.ws_max_handshakes,
            handshake_wait: HANDSHAKE_WAIT,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// HTTP worker threads in force.
    pub fn http_workers(&self) -> usize {
        self.http_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get))
            .max(1)
    }

    /// `MAX_CONNECTIONS` split between the pools, so the node never holds
    /// more connections than configured:
    /// - the message writer takes `WRITER_CONNECTIONS` first (but leaves one
    ///   for the shared pool and one per HTTP worker);
    /// - of the rest, the shared pool (socket replay, read receipts,
    ///   health) gets a quarter, at least 2 where there is room;
    /// - each HTTP worker gets an equal share of what remains.
    ///
    /// Fails when MAX_CONNECTIONS cannot give every pool one connection.
    pub fn pool_settings(&self) -> Result<PoolPlan, ConfigError> {
        let settings = |max_connections: u32| PoolSettings {
            max_connections,
            recycle_after: Duration::from_secs(self.pool_recycle),
            checkout_timeout: Duration::from_secs(self.pool_timeout),
            statement_timeout: Duration::from_millis(self.statement_timeout),
        };
        let max = self.max_connections;
        let workers = u32::try_from(self.http_workers()).unwrap_or(u32::MAX);
        let needed = workers.saturating_add(2);
        if max < needed {
            return Err(ConfigError::TooFewConnections { max, workers, needed });
        }
        let writer = self.writer_connections.clamp(1, max - needed + 1);
        let rest = max - writer;
        let shared = (rest / 4).max(2).min(rest - workers);
        let per_http_worker = (rest - shared) / workers;
        // A sender waits for its ack while the writer waits for a
        // connection: no longer than for a statement (a writer connection
        // is busy only while a batch is out, or one whose answer never came
        // holds it: a cut network), not POOL_TIMEOUT's many seconds.
        let mut writer = settings(writer);
        if !writer.statement_timeout.is_zero() {
            writer.checkout_timeout = writer.checkout_timeout.min(writer.statement_timeout);
        }
        Ok(PoolPlan {
            writer,
            shared: settings(shared),
            per_http_worker: settings(per_http_worker),
        })
    }

    /// Fails on settings this build cannot honour, so that they are not
    /// silently ignored.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        if self.redis_cluster && self.redis_url.is_none() {
            return Err(ConfigError::ClusterWithoutUrl);
        }
        aurum_actors::bridge::check_node_id(&self.node())?;
        Ok(())
    }

    /// `NODE_ID`, or the host name and process id.
    pub fn node(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|name| name.trim().to_owned())
                .filter(|name| aurum_actors::bridge::check_node_id(name).is_ok())
                .unwrap_or_else(|| "node".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

/// Secrets and credentials in URLs are never printed.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("bind", &self.bind)
            .field("ws_bind", &self.ws_bind)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "<redacted>"))
            .field("dev", &self.dev)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("max_connections", &self.max_connections)
            .field("writer_connections", &self.writer_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("pool_recycle", &self.pool_recycle)
            .field("pool_timeout", &self.pool_timeout)
            .field("ws_max_payload", &self.ws_max_payload)
            .field("ws_ping_interval", &self.ws_ping_interval)
            .field("ws_ping_timeout", &self.ws_ping_timeout)
            .field("cors_origins", &self.cors_origins)
            .field("web_dir", &self.web_dir)
            .field("public_socket_url", &self.public_socket_url)
            .field("ws_max_sockets_per_ip", &self.ws_max_sockets_per_ip)
            .field("ws_handshake_rate", &self.ws_handshake_rate)
            .field("ws_handshake_burst", &self.ws_handshake_burst)
            .field("ws_max_handshakes", &self.ws_max_handshakes)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("ws_send_buffer", &self.ws_send_buffer)
            .field("scroll_rate", &self.scroll_rate)
            .field("scroll_burst", &self.scroll_burst)
            .field("batch_rate", &self.batch_rate)
            .field("batch_burst", &self.batch_burst)
            .field("chat_rate", &self.chat_rate)
            .field("chat_burst", &self.chat_burst)
            .field("typing_rate", &self.typing_rate)
            .field("typing_burst", &self.typing_burst)
            .field("read_rate", &self.read_rate)
            .field("read_burst", &self.read_burst)
            .field("max_sockets_per_user", &self.max_sockets_per_user)
            .finish_non_exhaustive()
    }
}

/// `postgres://user:pass@host/db` -> `postgres://user:***@host/db`.
/// Parses a duration given in seconds, fractions allowed ("0.25").
fn seconds(text: &str) -> Result<Duration, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("{text:?} is not a duration in seconds (0 to 10^9)"))
}

fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = userinfo.split(':').next().unwrap_or_default();
    format!("{scheme}://{user}:***@{host}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["aurum"];
        all.extend_from_slice(args);
        Config::from_args(all).unwrap()
    }

    fn sizes(plan: &PoolPlan) -> (u32, u32, u32) {
        (
            plan.writer.max_connections,
            plan.shared.max_connections,
            plan.per_http_worker.max_connections,
        )
    }

    #[test]
    fn pools_never_hold_more_than_max_connections() {
        for max in 0..=60 {
            for workers in 1..=8_u32 {
                for writer in 0..=6 {
                    let c = config(&[
                        &format!("--max-connections={max}"),
                        &format!("--http-workers={workers}"),
                        &format!("--writer-connections={writer}"),
                    ]);
                    let Ok(plan) = c.pool_settings() else {
                        assert!(max < workers + 2, "refused {max} for {workers} workers");
                        continue;
                    };
                    let (w, s, p) = sizes(&plan);
                    assert!(w >= 1 && s >= 1 && p >= 1, "an empty pool: {w} {s} {p}");
                    assert!(w + s + p * workers <= max, "{w} + {s} + {p} x {workers} > {max}");
                    if max >= workers + 1 + writer.max(1) {
                        assert_eq!(w, writer.max(1), "the writer gets what it asked for");
                    }
                }
            }
        }
    }

    #[test]
    fn default_split() {
        let c = config(&["--http-workers=2"]);
        let plan = c.pool_settings().unwrap();
        // 2 for the writer; of the 48 left, 12 shared, 18 per worker.
        assert_eq!(sizes(&plan), (2, 12, 18));
        assert_eq!(plan.writer.statement_timeout, Duration::from_millis(5000));
        let c = config(&["--http-workers=2", "--statement-timeout=300"]);
        assert_eq!(
            c.pool_settings().unwrap().shared.statement_timeout,
            Duration::from_millis(300)
        );
    }

    #[test]
    fn the_writer_waits_for_a_connection_no_longer_than_for_a_statement() {
        let plan = config(&["--http-workers=2"]).pool_settings().unwrap();
        assert_eq!(plan.writer.checkout_timeout, Duration::from_secs(5));
        assert_eq!(plan.shared.checkout_timeout, Duration::from_secs(30));
        let plan = config(&["--http-workers=2", "--pool-timeout=2"])
            .pool_settings()
            .unwrap();
        assert_eq!(plan.writer.checkout_timeout, Duration::from_secs(2));
        // Without a statement timeout, POOL_TIMEOUT it is.
        let plan = config(&["--http-workers=2", "--statement-timeout=0"])
            .pool_settings()
            .unwrap();
        assert_eq!(plan.writer.checkout_timeout, Duration::from_secs(30));
    }

    #[test]
    fn cors_origins_are_a_comma_separated_list() {
        assert!(config(&[]).cors_origins.is_empty());
        let c = config(&["--cors-origins=https://a.example,http://localhost:3000"]);
        assert_eq!(c.cors_origins, vec!["https://a.example", "http://localhost:3000"]);
    }

    #[test]
    fn dev_allows_the_web_clients_own_origins_for_long_polling() {
        let c = config(&["--cors-origins=https://a.example/"]);
        assert_eq!(c.socket_cors_origins(), vec!["https://a.example"]);
        let c = config(&[
            "--dev",
            "--bind=127.0.0.1:9000",
            "--cors-origins=https://a.example",
        ]);
        assert_eq!(
            c.socket_cors_origins(),
            vec![
                "https://a.example",
                "http://localhost:9000",
                "http://127.0.0.1:9000"
            ]
        );
        let c = config(&["--dev", "--bind=10.1.2.3:8080"]);
        assert_eq!(c.socket_cors_origins(), vec!["http://10.1.2.3:8080"]);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            redact_url("postgres://localhost/aurum"),
            "postgres://localhost/aurum"
        );
    }
}
