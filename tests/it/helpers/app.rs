//! The real server, started in-process on a real port for one test.

use actix_web::http::{Method, StatusCode};
use aurum::{AppState, Config};
use serde_json::Value;

use super::db::TestDb;

pub const TEST_SECRET: &str = "test-secret-0123456789abcdef";

pub struct TestApp {
    pub base: String,
    /// `ws://host:port` of the Socket.IO listener.
    pub ws_base: String,
    pub db: std::sync::Arc<TestDb>,
    registry: aurum_actors::registry::RegistryHandle,
    writer: aurum_actors::writer::WriterHandle,
    bus: Option<aurum_actors::bridge::BridgeHandle>,
    replayer: std::sync::Arc<aurum::realtime::replay::Replayer>,
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    client: awc::Client,
}

impl TestApp {
    /// Starts the server on a migrated, empty database of its own.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDb::migrated(), &[]).await
    }

    /// Starts the server on `db` with extra flags (`--pool-timeout=1`, ...).
    pub async fn spawn_on(db: TestDb, extra_args: &[&str]) -> Self {
        Self::spawn_sharing(std::sync::Arc::new(db), extra_args).await
    }

    /// Starts a node on `db`, which other nodes of the test may share.
    pub async fn spawn_sharing(db: std::sync::Arc<TestDb>, extra_args: &[&str]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::spawn_listening(db, extra_args, listener).await
    }

    /// Starts the server serving the built web client (web/dist), with the
    /// page's own origin allowed to long-poll the sockets (another port,
    /// so another origin), as `aurum serve --dev` does for its BIND.
    pub async fn spawn_web() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let web_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist");
        // The REST limits at their defaults: the page must never hit them.
        let args = [
            format!("--cors-origins={origin}"),
            format!("--web-dir={web_dir}"),
            "--scroll-rate=10".to_owned(),
            "--batch-rate=20".to_owned(),
        ];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn_listening(std::sync::Arc::new(TestDb::migrated()), &args, listener).await
    }

    /// Starts a node on `db` serving HTTP on `listener`.
    pub async fn spawn_listening(
        db: std::sync::Arc<TestDb>,
        extra_args: &[&str],
        listener: std::net::TcpListener,
    ) -> Self {
        // The nodes' logs, as RUST_LOG asks (errors only without it), in
        // the failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let mut args = vec![
            "aurum".to_owned(),
            format!("--database-url={}", db.url),
            format!("--jwt-secret={TEST_SECRET}"),
            "--http-workers=1".to_owned(),
            // 2 for the writer, 2 shared, 3 for the HTTP worker.
            "--max-connections=7".to_owned(),
            // A node a test drops stops at once (the drain has tests of its own).
            "--drain-delay=0".to_owned(),
            // Tests call scroll and batch far faster than a member could;
            // tests/it/abuse.rs and the browser test (spawn_web) run with limits.
            "--scroll-rate=0".to_owned(),
            "--batch-rate=0".to_owned(),
            // Every test's clients come from 127.0.0.1, some hundreds at
            // once; tests/it/abuse.rs sets the per-address limits it tries,
            // and tests/it/storm.rs runs a node at the defaults.
            "--ws-max-sockets-per-ip=0".to_owned(),
            "--ws-handshake-rate=0".to_owned(),
        ];
        let sockets = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The addresses really listened on, as `aurum serve` has them: the
        // page's client-config names WS_BIND's port.
        args.push(format!("--bind={}", listener.local_addr().unwrap()));
        args.push(format!("--ws-bind={}", sockets.local_addr().unwrap()));
        // An extra flag replaces the default of the same name.
        let flag = |arg: &str| arg.split('=').next().unwrap_or_default().to_owned();
        args.retain(|a| !extra_args.iter().any(|e| flag(e) == flag(a)));
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let config = Config::from_args(args).unwrap();
        let state = AppState::new(config).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let ws_base = format!("ws://{}", sockets.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let realtime = aurum::realtime::Realtime::start(&state).unwrap();
        let registry = realtime.registry.clone();
        let writer = realtime.writer.clone();
        let bus = realtime.bridge.clone();
        let replayer = std::sync::Arc::clone(&realtime.replayer);
        let server = aurum::run(state.clone(), realtime, listener, sockets, async move {
            let _ = stopped.await;
        });
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                eprintln!("server failed: {e}");
            }
        });
        let client = awc::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .finish();
        Self {
            base,
            ws_base,
            registry,
            writer,
            bus,
            replayer,
            db,
            state,
            stop: Some(stop),
            client,
        }
    }

    pub fn registry(&self) -> &aurum_actors::registry::RegistryHandle {
        &self.registry
    }

    pub fn bus(&self) -> &aurum_actors::bridge::BridgeHandle {
        self.bus.as_ref().expect("started with --redis-url")
    }

    pub fn replayer(&self) -> &aurum::realtime::replay::Replayer {
        &self.replayer
    }

    pub fn writer(&self) -> &aurum_actors::writer::WriterHandle {
        &self.writer
    }

    pub fn token(&self, user: i64) -> String {
        self.state
            .jwt
            .issue(aurum_schema::ids::UserId(user), false, 3600)
            .unwrap()
    }

    pub fn admin_token(&self, user: i64) -> String {
        self.state
            .jwt
            .issue(aurum_schema::ids::UserId(user), true, 3600)
            .unwrap()
    }

    /// `GET path` with an optional bearer token; the status and JSON body.
    /// `GET /metrics`, checked to be Prometheus text.
    pub async fn metrics(&self) -> String {
        let mut response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(Method::GET, path, token, None).await
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let mut res = match body {
            Some(body) => req.send_json(body).await,
            None => req.send().await,
        }
        .unwrap();
        let status = res.status();
        let bytes = res.body().limit(16 * 1024 * 1024).await.unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status} body is not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    /// `PUT`/`POST` a raw body with a content type, for malformed input.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        content_type: &str,
        body: &'static str,
    ) -> (StatusCode, Value) {
        let mut res = self
            .client
            .request(method, format!("{}{path}", self.base))
            .insert_header(("Authorization", format!("Bearer {token}")))
            .insert_header(("Content-Type", content_type))
            .send_body(body)
            .await
            .unwrap();
        let status = res.status();
        let bytes = res.body().await.unwrap();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status} body is not JSON: {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    /// Inserts `count` generated profiles with ids from `first_id`.
    pub async fn seed(&self, first_id: i64, count: usize, seed: u64) {
        use diesel_async::AsyncConnection;
        let mut conn = diesel_async::AsyncPgConnection::establish(&self.db.url)
            .await
            .unwrap();
        aurum::cli::seed::insert_generated(&mut conn, first_id, count, seed, chrono::Utc::now())
            .await
            .unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The error code of an error body.
pub fn error_code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {body}"))
}
