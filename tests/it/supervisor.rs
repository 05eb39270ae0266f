//! The ResourceSupervisor, driven by a high watermark far below what the
//! process uses: it returns freed memory to the OS, then refuses new
//! sockets with 503 and `Retry-After`, and says so in /health and /metrics.

use std::time::Duration;

use crate::helpers::ws::{RawClient, upgrade_answer};
use crate::helpers::{TestApp, TestDb};
use serde_json::json;

#[actix_rt::test]
async fn above_the_watermark_it_collects_then_sheds_new_sockets() {
    let app = TestApp::spawn_on(
        TestDb::migrated(),
        &["--memory-high-watermark=0.001", "--resource-interval=0.05"],
    )
    .await;
    let mut health = serde_json::Value::Null;
    for _ in 0..100 {
        health = app.get("/health", None).await.1;
        if health["supervisor"]["shedding"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(health["supervisor"]["shedding"], true, "{health}");
    // Shedding is the last step of a sample; later samples collect again.
    let action = &health["supervisor"]["last_action"];
    assert!(
        ["shed", "collect", "close_idle_connections"].contains(&action["action"].as_str().unwrap_or("")),
        "{health}"
    );
    assert!(
        action["memory_percent_before"].as_f64().unwrap() > 0.001,
        "{health}"
    );
    let resources = &health["resources"];
    assert!(resources["memory_percent"].as_f64().unwrap() > 0.0, "{health}");
    assert!(resources["memory_available_mb"].as_u64().unwrap() > 0, "{health}");
    assert!(resources["cpu_percent"].as_f64().is_some(), "{health}");

    let answer = upgrade_answer(&app.ws_base).await.expect("the listener accepts");
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: 5\r\n"), "{answer}");
    assert!(answer.contains(r#""code":"unavailable""#), "{answer}");

    // Each request to /health/ready leaves an idle connection for the
    // next sample to close.
    let taken = |metrics: &str, action: &str| {
        crate::metrics::sample(
            metrics,
            "resource_actions_total",
            &[&format!("action=\"{action}\"")],
        )
        .is_some_and(|count| count >= 1.0)
    };
    let mut metrics = String::new();
    for _ in 0..100 {
        let (status, _) = app.get("/health/ready", None).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(60)).await;
        metrics = app.metrics().await;
        if ["collect", "close_idle_connections", "shed"]
            .iter()
            .all(|action| taken(&metrics, action))
        {
            break;
        }
    }
    for action in ["collect", "close_idle_connections", "shed"] {
        assert!(taken(&metrics, action), "{action}: {metrics}");
    }
    // REST goes on: only new sockets are refused.
    let (status, _) = app.get("/health/ready", None).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn below_the_watermark_sockets_are_taken_and_nothing_is_done() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--resource-interval=0.05"]).await;
    app.seed(1, 2, 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, health) = app.get("/health", None).await;
    assert_eq!(health["supervisor"]["shedding"], false, "{health}");
    assert!(health["supervisor"]["last_action"].is_null(), "{health}");
    let (_client, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(1) })).await;
    assert!(answer.starts_with("40{\"sid\":"), "{answer}");
}

#[actix_rt::test]
async fn the_supervisor_can_be_turned_off() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--enable-resource-monitor=false"]).await;
    let (_, health) = app.get("/health", None).await;
    assert_eq!(health["supervisor"]["state"], "off", "{health}");
}

/// The last sample's `active_tasks` and the `sockets` count, after
/// `settle` (the supervisor samples every 50 ms here).
async fn tasks_and_sockets(app: &TestApp, settle: Duration) -> (u64, u64) {
    tokio::time::sleep(settle).await;
    let health = app.get("/health", None).await.1;
    (
        health["resources"]["active_tasks"].as_u64().unwrap(),
        health["sockets"].as_u64().unwrap(),
    )
}

#[actix_rt::test]
async fn active_tasks_follows_the_sockets_and_closed_ones_leave_nothing_behind() {
    let app = TestApp::spawn_on(TestDb::migrated(), &["--resource-interval=0.05"]).await;
    app.seed(1, 30, 4).await;
    let (baseline, sockets) = tasks_and_sockets(&app, Duration::from_millis(200)).await;
    assert_eq!(sockets, 0);

    let mut clients = Vec::new();
    for user in 1..=30 {
        let (client, answer) = RawClient::connect(&app.ws_base, json!({ "token": app.token(user) })).await;
        assert!(answer.starts_with("40{"), "{answer}");
        clients.push(client);
    }
    let (busy, sockets) = tasks_and_sockets(&app, Duration::from_millis(200)).await;
    assert_eq!(sockets, 30);
    // Each connection is a task until its session ends.
    assert!(
        busy >= baseline + 30,
        "{busy} tasks with 30 sockets, {baseline} without"
    );

    drop(clients);
    let mut after = (u64::MAX, u64::MAX);
    for _ in 0..40 {
        after = tasks_and_sockets(&app, Duration::from_millis(100)).await;
        if after.1 == 0 && after.0 <= baseline {
            break;
        }
    }
    assert_eq!(after.1, 0, "every socket left");
    assert!(
        after.0 <= baseline,
        "{} tasks after the sockets closed, {baseline} before: closed sessions left tasks behind",
        after.0
    );
}

/// The `host:port` of a `postgres://user@host:port/db` URL.
fn server_addr(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    host_and_db.split('/').next().unwrap().to_owned()
}

#[actix_rt::test]
async fn a_pool_whose_health_checks_keep_failing_is_rebuilt() {
    let db = TestDb::migrated();
    let relay = crate::helpers::relay::Relay::start(server_addr(&db.url)).await;
    let relayed = db.url.replacen(&server_addr(&db.url), &relay.addr, 1);
    let database = format!("--database-url={relayed}");
    let app = TestApp::spawn_on(db, &[&database, "--resource-interval=0.1"]).await;
    // A request leaves an idle connection in the worker's pool to check.
    let (status, _) = app.get("/health/ready", None).await;
    assert_eq!(status, 200);

    // Connections that hang: every check times out.
    relay.freeze();
    let mut rebuilt = false;
    for _ in 0..150 {
        let metrics = app.metrics().await;
        let count = crate::metrics::sample(&metrics, "resource_actions_total", &["action=\"rebuild_pool\""]);
        if count.is_some_and(|count| count >= 1.0) {
            rebuilt = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rebuilt, "no pool was rebuilt after its checks failed");
    let (_, health) = app.get("/health", None).await;
    assert_eq!(
        health["supervisor"]["last_action"]["action"], "rebuild_pool",
        "{health}"
    );

    // Back: the rebuilt pool connects afresh and serves.
    relay.thaw();
    let mut status = 0;
    for _ in 0..50 {
        status = app.get("/health/ready", None).await.0.as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "the rebuilt pool does not serve");
}
