//! One PostgreSQL database per test, cloned from a template that holds the
//! migrated schema (cloning takes milliseconds; migrating takes longer).

use std::sync::OnceLock;

use tokio_postgres::NoTls;

/// The server tests use, without a database name. `make test` sets it to
/// whatever server it brought up.
pub fn server_url() -> String {
    std::env::var("AURUM_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

fn admin_url() -> String {
    format!("{}/postgres", server_url())
}

/// Runs `f` on a fresh thread with its own runtime, so it can be called from
/// any test runtime (actix's is single-threaded) and from `Drop`.
fn blocking<T: Send + 'static>(f: impl AsyncFnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(f())
    })
    .join()
    .unwrap()
}

async fn admin_client() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at {}: {e}", server_url()));
    tokio::spawn(connection);
    client
}

/// The template's name changes with the migrations' text, so an edited
/// migration gets a fresh template.
fn template_name() -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut entries: Vec<_> = walk(&dir);
    entries.sort();
    let mut hasher = DefaultHasher::new();
    for path in entries {
        path.to_string_lossy().hash(&mut hasher);
        std::fs::read(&path).unwrap().hash(&mut hasher);
    }
    format!("aurum_test_tpl_{:016x}", hasher.finish())
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn ensure_template() -> &'static str {
    static TEMPLATE: OnceLock<String> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let name = template_name();
        let name_for_thread = name.clone();
        blocking(async move || {
            let name = name_for_thread;
            let client = admin_client().await;
            // Test processes run in parallel: one builds, the others wait.
            client
                .execute("SELECT pg_advisory_lock(727274)", &[])
                .await
                .unwrap();
            let exists = client
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some();
            if !exists {
                let building = format!("{name}_building");
                client
                    .execute(&format!("DROP DATABASE IF EXISTS {building}"), &[])
                    .await
                    .unwrap();
                client
                    .execute(&format!("CREATE DATABASE {building}"), &[])
                    .await
                    .unwrap();
                let url = format!("{}/{building}", server_url());
                aurum_schema::migrations::run(&url, aurum_schema::migrations::Direction::Up).unwrap();
                client
                    .execute(&format!("ALTER DATABASE {building} RENAME TO {name}"), &[])
                    .await
                    .unwrap();
            }
            client
                .execute("SELECT pg_advisory_unlock(727274)", &[])
                .await
                .unwrap();
        });
        name
    })
}

/// A database of the test's own, dropped when the test ends.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    /// A migrated, empty database.
    pub fn migrated() -> Self {
        let template = ensure_template().to_owned();
        Self::create(Some(template))
    }

    /// An empty database with no schema at all.
    pub fn empty() -> Self {
        Self::create(None)
    }

    fn create(template: Option<String>) -> Self {
        let name = format!("aurum_test_{:016x}", rand::random::<u64>());
        let name_for_thread = name.clone();
        blocking(async move || {
            let client = admin_client().await;
            let sql = match &template {
                Some(template) => format!("CREATE DATABASE {name_for_thread} TEMPLATE {template}"),
                None => format!("CREATE DATABASE {name_for_thread}"),
            };
            // Cloning fails while another session is connected to the
            // template (only briefly, while it is being built): retry.
            for attempt in 0.. {
                match client.execute(&sql, &[]).await {
                    Ok(_) => break,
                    Err(e) if attempt < 50 => {
                        eprintln!("retrying CREATE DATABASE: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("CREATE DATABASE failed: {e}"),
                }
            }
        });
        let url = format!("{}/{name}", server_url());
        Self { name, url }
    }

    /// A plain client on this database, for ground truth and set-up.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        actix_rt::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        blocking(async move || {
            let client = admin_client().await;
            let _ = client
                .execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])
                .await;
        });
    }
}

/// The single `int8` a query without parameters answers (a count, a
/// counter), for ground-truth checks.
pub async fn query_i64(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}
