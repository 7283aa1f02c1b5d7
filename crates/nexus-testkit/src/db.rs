//! Fresh databases for tests: a SQLite file in a temp dir, or a new PostgreSQL
//! database on the local server (`NEXUS_TEST_PG_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) that is dropped afterwards.

use sqlx::Connection;
use std::fmt;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        })
    }
}

/// The admin URL tests create their databases through.
pub fn pg_admin_url() -> String {
    std::env::var("NEXUS_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    url: String,
    backend: Backend,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl fmt::Debug for TestDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestDb").field("url", &self.url).finish()
    }
}

impl TestDb {
    pub async fn new(backend: Backend) -> anyhow::Result<TestDb> {
        let dir = tempfile::Builder::new().prefix("nexus-test-").tempdir()?;
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}/nexus.db", dir.path().display());
                Ok(TestDb { url, backend, dir, pg_name: None })
            }
            Backend::Postgres => {
                let name = format!("nexus_test_{}", uuid::Uuid::new_v4().simple());
                let admin = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.map_err(|e| {
                    anyhow::anyhow!("PostgreSQL at {admin} is not reachable ({e}); start it or set NEXUS_TEST_PG_URL")
                })?;
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
                conn.close().await?;
                let base = admin.rsplit_once('/').map(|(b, _)| b.to_owned()).unwrap_or(admin);
                Ok(TestDb { url: format!("{base}/{name}"), backend, dir, pg_name: Some(name) })
            }
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A private temp directory that lives as long as the database.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else { return };
        // Drop may run inside a runtime; do the async cleanup on its own thread.
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let fut = async {
                    let mut conn = sqlx::PgConnection::connect(&admin).await?;
                    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                    conn.close().await
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(20), fut).await;
            });
        })
        .join();
    }
}
