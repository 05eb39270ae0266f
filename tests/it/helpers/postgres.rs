//! A private PostgreSQL cluster for one test, on a loopback port of its
//! own, that the test may stop and start again (on the same port, with its
//! data): the shared server on 5432 serves every other test and is never
//! stopped.
//!
//! initdb and postgres refuse to run as root, so both run as the
//! `postgres` user (or `nobody` where there is none), in a data directory
//! that user owns.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct TestPostgres {
    pub port: u16,
    dir: PathBuf,
    user: &'static str,
    running: bool,
}

impl TestPostgres {
    /// Creates the cluster, starts it, and migrates its `postgres`
    /// database (as `aurum migrate` does).
    pub async fn start() -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let dir = std::env::temp_dir().join(format!("aurum-pg-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let user = ["postgres", "nobody"]
            .into_iter()
            .find(|user| {
                Command::new("id")
                    .arg(user)
                    .output()
                    .is_ok_and(|out| out.status.success())
            })
            .expect("a postgres or nobody user to run PostgreSQL as");
        let chown = Command::new("chown")
            .args([user, dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(chown.success(), "chown {user} {}", dir.display());
        let mut postgres = Self {
            port,
            dir,
            user,
            running: false,
        };
        postgres.run(&[
            &format!("{BIN}/initdb"),
            "-D",
            &postgres.data(),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]);
        postgres.start_again().await;
        let url = postgres.url();
        aurum_schema::migrations::run(&url, aurum_schema::migrations::Direction::Up).unwrap();
        postgres
    }

    /// The migrated database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (`pg_ctl stop -m fast`: every session is
    /// terminated, open transactions roll back), as a restart or a
    /// failover does to its clients.
    pub fn stop(&mut self) {
        self.pg_ctl(&["stop", "-m", "fast"]);
        self.running = false;
    }

    /// Starts the server (again) with its data, and waits until it
    /// accepts connections.
    pub async fn start_again(&mut self) {
        assert!(!self.running, "already running");
        // Durability is not what these tests look at; speed is.
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log").display().to_string();
        self.pg_ctl(&["start", "-o", &options, "-l", &log]);
        self.running = true;
        for _ in 0..400 {
            if tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("PostgreSQL on port {} did not accept connections", self.port);
    }

    /// A plain client, for ground truth.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        actix_rt::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let pg_ctl = format!("{BIN}/pg_ctl");
        let data = self.data();
        let mut command = vec![pg_ctl.as_str(), "-D", data.as_str(), "-w", "-t", "30"];
        command.extend_from_slice(args);
        self.run(&command);
    }

    /// Runs `command` as the cluster's user, failing the test if it fails.
    fn run(&self, command: &[&str]) {
        let output = Command::new("runuser")
            .current_dir(&self.dir)
            .args(["-u", self.user, "--"])
            .args(command)
            .output()
            .expect("runuser runs");
        assert!(
            output.status.success(),
            "{command:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.running {
            let pg_ctl = format!("{BIN}/pg_ctl");
            let _ = Command::new("runuser")
                .current_dir(&self.dir)
                .args([
                    "-u",
                    self.user,
                    "--",
                    &pg_ctl,
                    "-D",
                    &self.data(),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
