//! The official `socket.io-client` (npm, pinned by tests/e2e/package-lock.json)
//! against the in-process server: `make test` runs `npm ci` first.

use crate::helpers::TestApp;

#[actix_rt::test]
async fn official_client_chats() {
    run_suite("websocket").await;
}

/// With its default options: a long-polling handshake, then the upgrade.
#[actix_rt::test]
async fn official_client_chats_with_default_options() {
    run_suite("default").await;
}

#[actix_rt::test]
async fn official_client_chats_over_long_polling_alone() {
    run_suite("polling").await;
}

/// The whole suite, the client on `transports`.
async fn run_suite(transports: &str) {
    let app = TestApp::spawn().await;
    app.seed(1, 60, 11).await;
    // Member 5 was away while 50 others sent it 2,000 messages.
    let (away, backlog) = (5_i64, 2_000_i64);
    let senders: Vec<i64> = (10..60).collect();
    let missed = crate::replay::insert_backlog(&app, away, &senders, backlog).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "run `npm ci` in tests/e2e first (make test does)"
    );
    let (a, b, no_profile) = (3_i64, 4_i64, 777_777_i64);
    let mut child = tokio::process::Command::new("node")
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg("chat.test.mjs")
        .current_dir(&dir)
        .env("AURUM_WS_URL", &app.ws_base)
        .env("AURUM_TRANSPORTS", transports)
        .env("AURUM_TOKEN_A", app.token(a))
        .env("AURUM_TOKEN_B", app.token(b))
        .env("AURUM_TOKEN_C", app.token(no_profile))
        .env("AURUM_USER_A", a.to_string())
        .env("AURUM_USER_B", b.to_string())
        .env("AURUM_TOKEN_AWAY", app.token(away))
        .env(
            "AURUM_AWAY_MISSED",
            missed.iter().map(i64::to_string).collect::<Vec<_>>().join(","),
        )
        .env("AURUM_JWT_SECRET", crate::helpers::app::TEST_SECRET)
        .kill_on_drop(true)
        .spawn()
        .expect("node is installed");
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait())
        .await
        .expect("the e2e suite finished within a minute")
        .unwrap();
    assert!(status.success(), "the socket.io-client suite failed: {status}");
}
