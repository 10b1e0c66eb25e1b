//! Throw-away databases for tests that need real Postgres.
//!
//! [`TestDb::create`] makes a fresh, uniquely named database on the server of
//! `DATABASE_URL` (default [`DEFAULT_DATABASE_URL`]), so tests run in
//! parallel without sharing state. [`TestDb::drop_db`] removes it; a `TestDb`
//! dropped without it (a failing test) removes it best-effort from a helper
//! thread. An unreachable server is a panic with instructions, never a
//! silent skip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::{Client, Config, NoTls};

use crate::migrate::{self, describe, MigrationReport};

/// Used when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// `DATABASE_URL`, or [`DEFAULT_DATABASE_URL`].
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned())
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
    client: Option<Client>,
}

impl TestDb {
    /// Creates a fresh database on `DATABASE_URL`'s server and connects to it.
    ///
    /// # Panics
    /// When Postgres cannot be reached or the database cannot be created.
    pub async fn create() -> TestDb {
        TestDb::create_on(&database_url()).await
    }

    /// Like [`TestDb::create`], then applies every migration.
    pub async fn create_migrated() -> TestDb {
        let mut db = TestDb::create().await;
        db.migrate().await;
        db
    }

    /// Creates a fresh database on the server of `admin_url` (any database
    /// there that the user may connect to; the new one is created beside it).
    pub async fn create_on(admin_url: &str) -> TestDb {
        let admin = connect_or_panic(admin_url, None).await;
        let name = unique_name();
        // The name is generated here from [a-z0-9_] only, so quoting suffices.
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|err| panic!("cannot create test database {name}: {}", describe(&err)));
        drop(admin);
        let url = with_dbname(admin_url, &name);
        let client = connect_or_panic(admin_url, Some(&name)).await;
        TestDb {
            name,
            url,
            admin_url: admin_url.to_owned(),
            client: Some(client),
        }
    }

    /// Name of the database.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Connection string (same form as `DATABASE_URL`) of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection opened by `create`.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("client present until drop_db")
    }

    /// The connection opened by `create`, mutably (for transactions).
    pub fn client_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("client present until drop_db")
    }

    /// Opens another connection to this database.
    pub async fn connect(&self) -> Client {
        connect_or_panic(&self.admin_url, Some(&self.name)).await
    }

    /// Applies all migrations over the main connection.
    ///
    /// # Panics
    /// When a migration fails.
    pub async fn migrate(&mut self) -> MigrationReport {
        let name = self.name.clone();
        migrate::run(self.client_mut())
            .await
            .unwrap_or_else(|err| panic!("migrating test database {name}: {err}"))
    }

    /// Closes the connection and drops the database.
    ///
    /// # Panics
    /// When the database cannot be dropped.
    pub async fn drop_db(mut self) {
        self.client = None;
        let admin = connect_or_panic(&self.admin_url, None).await;
        admin
            .batch_execute(&drop_sql(&self.name))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "cannot drop test database {}: {}",
                    self.name,
                    describe(&err)
                )
            });
        // Done: nothing left for Drop to do.
        self.name.clear();
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        self.client = None;
        let admin_url = self.admin_url.clone();
        let name = std::mem::take(&mut self.name);
        // Drop may run inside a runtime (and during a panic): use a thread
        // with its own runtime, and ignore failures (best effort).
        let cleanup = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(config) = admin_url.parse::<Config>() else {
                    return;
                };
                let mut config = config;
                config.connect_timeout(CONNECT_TIMEOUT);
                let Ok((client, connection)) = config.connect(NoTls).await else {
                    return;
                };
                tokio::spawn(connection);
                let _ = client.batch_execute(&drop_sql(&name)).await;
            });
        });
        let _ = cleanup.join();
    }
}

fn drop_sql(name: &str) -> String {
    format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")
}

/// `mx_test_<pid>_<counter>_<nanos>`: unique across parallel tests in one
/// process (counter) and across processes and runs (pid, time).
fn unique_name() -> String {
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000_000)
        .unwrap_or(0);
    format!("mx_test_{}_{}_{}", std::process::id(), counter, nanos)
}

async fn connect_or_panic(url: &str, dbname: Option<&str>) -> Client {
    let mut config: Config = url.parse().unwrap_or_else(|err| {
        panic!("DATABASE_URL {url:?} is not a valid connection string: {err}")
    });
    config.connect_timeout(CONNECT_TIMEOUT);
    if let Some(dbname) = dbname {
        config.dbname(dbname);
    }
    let (client, connection) = match config.connect(NoTls).await {
        Ok(pair) => pair,
        Err(err) => panic!(
            "cannot reach Postgres at {url}: {}. Start it (see README) or set DATABASE_URL",
            describe(&err)
        ),
    };
    tokio::spawn(async move {
        // Ends when the client is dropped; errors here come from the database
        // being dropped under an open connection, which is expected.
        let _ = connection.await;
    });
    client
}

/// `url` with its database replaced by `dbname`; handles URLs
/// (`postgres://user@host:port/db?opts`) and key=value strings.
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let trimmed = url.trim();
    for scheme in ["postgres://", "postgresql://"] {
        if let Some(rest) = trimmed.strip_prefix(scheme) {
            let (before_query, query) = match rest.find('?') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, ""),
            };
            // The authority may contain '@' and ':' but no '/'.
            let authority = before_query.split('/').next().unwrap_or("");
            return format!("{scheme}{authority}/{dbname}{query}");
        }
    }
    format!("{trimmed} dbname={dbname}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_dbname_replaces_or_adds_the_database() {
        assert_eq!(
            with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_dbname("postgresql://u:p@h/db?sslmode=disable", "t2"),
            "postgresql://u:p@h/t2?sslmode=disable"
        );
        assert_eq!(
            with_dbname("postgres://h:5433", "t3"),
            "postgres://h:5433/t3"
        );
        assert_eq!(
            with_dbname("postgres://h?application_name=x", "t4"),
            "postgres://h/t4?application_name=x"
        );
        assert_eq!(
            with_dbname("host=127.0.0.1 user=postgres", "t5"),
            "host=127.0.0.1 user=postgres dbname=t5"
        );
        let parsed: Config = with_dbname("host=127.0.0.1 user=postgres dbname=old", "t6")
            .parse()
            .unwrap();
        assert_eq!(parsed.get_dbname(), Some("t6"));
    }

    #[test]
    fn unique_names_differ_and_are_valid_identifiers() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        for name in [a, b] {
            assert!(name.len() < 63);
            assert!(name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
        }
    }
}
