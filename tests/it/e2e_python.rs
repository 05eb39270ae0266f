//! python-socketio (pinned by tests/e2e/requirements-python.txt, in the venv
//! `scripts/pyclient.sh` makes) against the in-process server: a client
//! that shares nothing with ours nor with the official JS one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::helpers::TestApp;

/// With its default transports: the polling handshake, then the upgrade.
#[actix_rt::test]
async fn python_client_chats_with_default_options() {
    run_script("default").await;
}

#[actix_rt::test]
async fn python_client_chats_over_long_polling_alone() {
    run_script("polling").await;
}

/// The venv's python, or a panic that says how to make it.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("AURUM_PYCLIENT_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/aurum-ci/pyclient")))
        .expect("HOME or AURUM_PYCLIENT_VENV is set");
    let python = venv.join("bin/python");
    assert!(
        python.is_file() && venv.join(".aurum-requirements").is_file(),
        "no python-socketio venv at {}: run scripts/pyclient.sh (.ci/run does)",
        venv.display()
    );
    python
}

async fn run_script(transports: &str) {
    let python = venv_python();
    let app = TestApp::spawn().await;
    app.seed(1, 10, 13).await;
    let (a, b) = (3_i64, 4_i64);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e");
    let mut child = tokio::process::Command::new(python)
        .arg("chat_python.py")
        .current_dir(&dir)
        .env("AURUM_WS_URL", &app.ws_base)
        .env("AURUM_TRANSPORTS", transports)
        .env("AURUM_TOKEN_A", app.token(a))
        .env("AURUM_TOKEN_B", app.token(b))
        .env("AURUM_USER_A", a.to_string())
        .env("AURUM_USER_B", b.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("the venv's python runs");
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the python-socketio script finished within a minute")
        .unwrap();
    assert!(
        status.success(),
        "the python-socketio script failed ({transports}): {status}"
    );
}
