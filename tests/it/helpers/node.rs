//! A node as its own `aurum serve` process, for what an in-process node
//! cannot show: being killed.

use std::process::Stdio;
use std::time::Duration;

use super::app::TEST_SECRET;

pub struct ChildNode {
    pub base: String,
    pub ws_base: String,
    child: tokio::process::Child,
}

fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

impl ChildNode {
    /// Starts `aurum serve` on loopback ports with `env`, and waits until
    /// its socket listener accepts.
    pub async fn start(database_url: &str, env: &[(&str, String)]) -> Self {
        let (http, ws) = (free_port(), free_port());
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_aurum"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("JWT_SECRET", TEST_SECRET)
            .env("BIND", format!("127.0.0.1:{http}"))
            .env("WS_BIND", format!("127.0.0.1:{ws}"))
            .env("HTTP_WORKERS", "1")
            .env("MAX_CONNECTIONS", "7")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().unwrap();
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", ws)).await.is_ok() {
                return Self {
                    base: format!("http://127.0.0.1:{http}"),
                    ws_base: format!("ws://127.0.0.1:{ws}"),
                    child,
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("aurum serve did not start listening on {ws}");
    }

    /// SIGSTOP: the process holds its connections and reads none of them,
    /// as a node stalled by swapping or a long pause would.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`ChildNode::freeze`].
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} failed");
    }

    /// `GET path` on the node's REST listener, as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let client = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
        let mut response = client.get(format!("{}{path}", self.base)).send().await.unwrap();
        response.json().await.unwrap()
    }

    /// SIGTERM, as Kubernetes stops a pod: the node drains.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// The exit status, if the process ends within `wait`.
    pub async fn exited_within(&mut self, wait: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(wait, self.child.wait())
            .await
            .ok()
            .map(Result::unwrap)
    }

    /// SIGKILL: no draining, no goodbye to anyone.
    pub async fn kill(&mut self) {
        self.child.kill().await.unwrap();
    }

    /// The process's resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
    }
}
