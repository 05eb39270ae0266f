//! `/metrics`: the Prometheus text a node serves, and a real Prometheus
//! (Debian's `prometheus` package, which `.ci/run` installs) scraping it.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::helpers::redis::TestRedis;
use crate::helpers::ws::RawClient;

/// The value of the first sample line naming `series` and every one of
/// `labels` (`name="value"`).
pub(crate) fn sample(text: &str, series: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.split(['{', ' ']).next() == Some(series))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A node on a private Redis, two members who chat once and scroll once.
async fn busy_node(redis: &TestRedis) -> (TestApp, RawClient, RawClient) {
    let app = TestApp::spawn_on(
        crate::helpers::TestDb::migrated(),
        &[&format!("--redis-url={}", redis.url()), "--node-id=m"],
    )
    .await;
    app.seed(1, 30, 5).await;
    let (mut alice, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(1) })).await;
    let (mut bob, _) = RawClient::connect(&app.ws_base, json!({ "token": app.token(2) })).await;
    let answer = alice
        .emit_ack(
            1,
            "chat_message",
            json!({ "recipient_id": 2, "message": "counted" }),
        )
        .await;
    assert_eq!(answer["ok"], true, "{answer}");
    bob.expect_event("new_message").await;
    let refused = alice
        .emit_ack(
            2,
            "chat_message",
            json!({ "recipient_id": 1, "message": "to myself" }),
        )
        .await;
    assert_eq!(refused["ok"], false, "{refused}");
    let (status, _) = app
        .get("/api/v1/matching/profiles/scroll?limit=5", Some(&app.token(1)))
        .await;
    assert_eq!(status, 200);
    (app, alice, bob)
}

#[actix_rt::test]
async fn metrics_count_sockets_messages_queries_and_requests() {
    let redis = TestRedis::start().await;
    let (app, _alice, _bob) = busy_node(&redis).await;
    let text = app.metrics().await;
    let at_least = |series: &str, labels: &[&str], floor: f64| {
        let value =
            sample(&text, series, labels).unwrap_or_else(|| panic!("no {series} {labels:?} in:\n{text}"));
        assert!(
            value >= floor,
            "{series} {labels:?} = {value}, expected at least {floor}"
        );
    };
    at_least("websocket_connections", &[], 2.0);
    at_least("chat_messages_total", &["outcome=\"ok\""], 1.0);
    at_least("chat_messages_total", &["outcome=\"invalid_recipient\""], 1.0);
    at_least("chat_delivery_seconds_count", &[], 1.0);
    // Explicit buckets, not a summary: they add up across nodes.
    at_least("chat_delivery_seconds_bucket", &["le=\"0.25\""], 1.0);
    at_least("writer_batch_size_count", &[], 1.0);
    at_least("writer_queue_depth", &[], 0.0);
    at_least("db_query_duration_seconds_count", &["query=\"store_batch\""], 1.0);
    at_least(
        "db_query_duration_seconds_count",
        &["query=\"profiles_scroll\""],
        1.0,
    );
    at_least(
        "http_request_duration_seconds_count",
        &["route=\"/api/v1/matching/profiles/scroll\"", "status=\"200\""],
        1.0,
    );
    at_least("pool_connections", &["pool=\"shared\"", "state=\"idle\""], 0.0);
    at_least("pool_connections", &["pool=\"writer\"", "state=\"busy\""], 0.0);
    at_least("bus_subscriptions", &[], 2.0);
    at_least("bus_up", &[], 1.0);
    at_least("bus_messages_total", &["direction=\"published\""], 0.0);
    let memory = sample(&text, "memory_usage_percent", &[]).expect("memory_usage_percent");
    assert!(memory > 0.0 && memory < 100.0, "{memory}");
    assert!(!text.contains("quantile="), "histograms, not summaries:\n{text}");
}

struct TestPrometheus {
    port: u16,
    child: Child,
    dir: std::path::PathBuf,
}

impl TestPrometheus {
    /// A Prometheus scraping `target` (host:port) every 500 ms.
    fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("aurum-prometheus-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 500ms\nscrape_configs:\n  - job_name: aurum\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is needed for this test (.ci/run installs Debian's prometheus)");
        Self { port, child, dir }
    }

    async fn query(&self, expression: &str) -> Value {
        let client = awc::Client::default();
        let Ok(mut response) = client
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .query(&[("query", expression)])
            .unwrap()
            .send()
            .await
        else {
            return Value::Null;
        };
        response.json().await.unwrap_or(Value::Null)
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[actix_rt::test]
async fn a_real_prometheus_scrapes_the_series() {
    let redis = TestRedis::start().await;
    let (app, _alice, _bob) = busy_node(&redis).await;
    let prometheus = TestPrometheus::start(app.base.trim_start_matches("http://"));
    let expressions = [
        "up{job=\"aurum\"}",
        "chat_messages_total{outcome=\"ok\"}",
        "websocket_connections",
        "chat_delivery_seconds_bucket{le=\"0.25\"}",
        "db_query_duration_seconds_count{query=\"store_batch\"}",
        "http_request_duration_seconds_count{route=\"/api/v1/matching/profiles/scroll\"}",
        "bus_subscriptions",
    ];
    let mut last = Value::Null;
    for _ in 0..120 {
        let mut all = true;
        for expression in &expressions[..3] {
            last = prometheus.query(expression).await;
            let value = last["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            all &= value.is_some_and(|value| value >= 1.0);
        }
        if all {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for expression in expressions {
        let answer = prometheus.query(expression).await;
        assert_eq!(
            answer["status"], "success",
            "{expression}: {answer} (last: {last})"
        );
        let result = answer["data"]["result"].as_array().cloned().unwrap_or_default();
        assert!(!result.is_empty(), "{expression}: no series in {answer}");
    }
    let up = prometheus.query("up{job=\"aurum\"}").await;
    assert_eq!(
        up["data"]["result"][0]["value"][1], "1",
        "the scrape succeeds: {up}"
    );
}
