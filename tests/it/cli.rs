//! The `aurum` binary itself: what `serve` accepts and lists.

use std::time::Duration;

use crate::helpers::app::TEST_SECRET;

fn aurum() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_aurum"));
    command.kill_on_drop(true);
    command
}

#[actix_rt::test]
async fn serve_with_redis_cluster_and_no_seeds_refuses_to_start() {
    let run = aurum()
        .arg("serve")
        .env_remove("REDIS_URL")
        .env("REDIS_CLUSTER", "true")
        .env("JWT_SECRET", TEST_SECRET)
        .env("BIND", "127.0.0.1:0")
        .env("WS_BIND", "127.0.0.1:0")
        .env("DATABASE_URL", "postgres://127.0.0.1:1/nowhere")
        .env("MIGRATE_ON_START", "false")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("serve exits instead of serving")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("REDIS_CLUSTER=true needs REDIS_URL: the cluster's seed nodes, separated by commas"),
        "{stderr}"
    );
}

#[actix_rt::test]
async fn serve_help_lists_the_limits_and_nothing_that_does_nothing() {
    let output = aurum().args(["serve", "--help"]).output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for variable in [
        "CHAT_RATE",
        "CHAT_BURST",
        "TYPING_RATE",
        "TYPING_BURST",
        "READ_RATE",
        "READ_BURST",
        "MAX_SOCKETS_PER_USER",
        "REDIS_URL",
        "REDIS_PREFIX",
        "NODE_ID",
        "PRESENCE_TTL",
        "ENABLE_RESOURCE_MONITOR",
        "MEMORY_HIGH_WATERMARK",
        "RESOURCE_INTERVAL",
        "DRAIN_DELAY",
        "SHUTDOWN_TIMEOUT",
        "WEB_DIR",
        "PUBLIC_SOCKET_URL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
    ] {
        assert!(
            help.contains(&format!("env: {variable}=")),
            "{variable} missing:\n{help}"
        );
    }
}
