//! Schema migrations: the SQL files of `migrations/`, embedded in the binary
//! and applied in version order.
//!
//! Invariants kept here:
//! * every migration runs in its own transaction together with the row that
//!   records it in `schema_migrations`, so it is applied entirely or not at all;
//! * concurrent runners (several processes starting at once) serialise on a
//!   session advisory lock; whoever comes second waits, then finds nothing to do;
//! * an applied migration is never edited: its SHA-256 is stored and a
//!   mismatch (or a version this binary does not know) stops the run before
//!   anything is applied.

use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, NoTls};

/// Key of the session advisory lock held while migrating ("mxmigrat").
/// Partition creation locks use the two-key form, a separate lock space.
const MIGRATION_LOCK_KEY: i64 = 0x6d78_6d69_6772_6174;

/// One embedded migration file `migrations/<name>.sql`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Number from the file name prefix; applied in ascending order.
    pub version: i32,
    /// File stem, e.g. `0001_foundation`.
    pub name: &'static str,
    /// The file's full text, run as one simple-query batch.
    pub sql: &'static str,
}

impl Migration {
    /// Hex SHA-256 of the SQL text, stored in `schema_migrations.checksum`.
    pub fn checksum(&self) -> String {
        let digest = Sha256::digest(self.sql.as_bytes());
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            hex.push_str(&format!("{byte:02x}"));
        }
        hex
    }
}

macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. The single place that lists the files: add new
/// ones here (a unit test checks this list against the directory).
pub static MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_foundation"),
    migration!(2, "0002_identity"),
    migration!(3, "0003_assets"),
    migration!(4, "0004_trading"),
    migration!(5, "0005_risk_settlement"),
    migration!(6, "0006_notifications_audit"),
    migration!(7, "0007_views"),
    migration!(8, "0008_initial_partitions"),
    migration!(9, "0009_base_data"),
    migration!(10, "0010_notification_templates"),
    migration!(11, "0011_settlement"),
    migration!(12, "0012_lean_hot_tables"),
    migration!(13, "0013_ledger_writer"),
];

/// A migration applied by this run.
#[derive(Debug, Clone)]
pub struct AppliedMigration {
    pub version: i32,
    pub name: &'static str,
    pub duration: Duration,
}

/// What [`run`] did.
#[derive(Debug, Clone, Default)]
pub struct MigrationReport {
    /// Applied now, in order.
    pub applied: Vec<AppliedMigration>,
    /// Versions found already applied (checksums verified).
    pub already_applied: Vec<i32>,
}

impl MigrationReport {
    /// True when the database was already up to date.
    pub fn is_noop(&self) -> bool {
        self.applied.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to Postgres at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("migration bookkeeping failed: {}", describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("migration {version} ({name}) failed: {reason}")]
    Failed {
        version: i32,
        name: &'static str,
        reason: String,
    },
    #[error(
        "migration {version} ({name}) was changed after it was applied: \
         checksum in database {applied}, embedded {embedded}; \
         add a new migration instead of editing an applied one"
    )]
    ChecksumMismatch {
        version: i32,
        name: String,
        applied: String,
        embedded: String,
    },
    #[error(
        "migration {version} is recorded as {applied_name} in the database but embedded as {embedded_name}"
    )]
    NameMismatch {
        version: i32,
        applied_name: String,
        embedded_name: &'static str,
    },
    #[error(
        "database has migration {version} ({name}) that this binary does not know; \
         refusing to run an older binary against a newer schema"
    )]
    UnknownApplied { version: i32, name: String },
}

/// The embedded migrations, in order.
pub fn migrations() -> &'static [Migration] {
    MIGRATIONS
}

/// Applies every pending migration over `client`'s connection.
///
/// Holds a session advisory lock for the whole run (released before
/// returning, also on error), so concurrent callers apply each migration
/// exactly once.
pub async fn run(client: &mut Client) -> Result<MigrationReport, MigrateError> {
    run_with(client, MIGRATIONS).await
}

/// [`run`] with an explicit list instead of the embedded one (tests, tools).
/// `migrations` must be sorted by version; applied versions missing from it
/// are an error, as in [`run`].
pub async fn run_with(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await?;
    let result = run_locked(client, migrations).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = result?;
    unlock?;
    Ok(report)
}

/// Connects to `database_url` (URL or key=value form, no TLS) and runs
/// [`run`]. Must be called inside a tokio runtime.
pub async fn run_url(database_url: &str) -> Result<MigrationReport, MigrateError> {
    let (mut client, connection) =
        tokio_postgres::connect(database_url, NoTls)
            .await
            .map_err(|err| MigrateError::Connect {
                url: database_url.to_owned(),
                reason: describe(&err),
            })?;
    let driver = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "migration connection closed with an error");
        }
    });
    let result = run(&mut client).await;
    drop(client);
    // The driver ends once the client is gone; its error, if any, is logged.
    let _ = driver.await;
    result
}

async fn run_locked(
    client: &mut Client,
    migrations: &[Migration],
) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER     PRIMARY KEY,
                 name       TEXT        NOT NULL,
                 checksum   TEXT        NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await?;

    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut report = MigrationReport::default();
    for row in &rows {
        let version: i32 = row.get(0);
        let name: String = row.get(1);
        let checksum: String = row.get(2);
        let Some(known) = migrations.iter().find(|m| m.version == version) else {
            return Err(MigrateError::UnknownApplied { version, name });
        };
        if known.name != name {
            return Err(MigrateError::NameMismatch {
                version,
                applied_name: name,
                embedded_name: known.name,
            });
        }
        let embedded = known.checksum();
        if embedded != checksum {
            return Err(MigrateError::ChecksumMismatch {
                version,
                name,
                applied: checksum,
                embedded,
            });
        }
        report.already_applied.push(version);
    }

    for migration in migrations {
        if report.already_applied.contains(&migration.version) {
            continue;
        }
        let started = Instant::now();
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql)
            .await
            .map_err(|err| MigrateError::Failed {
                version: migration.version,
                name: migration.name,
                reason: describe(&err),
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) \
             VALUES ($1, $2, $3, now())",
            &[&migration.version, &migration.name, &migration.checksum()],
        )
        .await?;
        tx.commit().await?;
        let duration = started.elapsed();
        tracing::info!(
            version = migration.version,
            name = migration.name,
            duration_ms = duration.as_millis() as u64,
            "applied migration"
        );
        report.applied.push(AppliedMigration {
            version: migration.version,
            name: migration.name,
            duration,
        });
    }
    if report.applied.is_empty() {
        tracing::info!(applied = report.already_applied.len(), "schema up to date");
    }
    Ok(report)
}

/// Renders a Postgres error with the server's message, detail and hint
/// (tokio-postgres' own Display says only "db error").
pub(crate) fn describe(err: &tokio_postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        // Connection errors keep the useful part ("Connection refused") in
        // the source chain.
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        return text;
    };
    let mut text = format!(
        "{}: {} (SQLSTATE {})",
        db.severity(),
        db.message(),
        db.code().code()
    );
    if let Some(detail) = db.detail() {
        text.push_str(&format!("; detail: {detail}"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; hint: {hint}"));
    }
    if let Some(context) = db.where_() {
        text.push_str(&format!("; context: {context}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_matches_migrations_directory() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut stems: Vec<String> = std::fs::read_dir(&dir)
            .expect("read migrations/")
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
            .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        stems.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|m| m.name).collect();
        assert_eq!(
            stems, listed,
            "MIGRATIONS must list every migrations/*.sql file in order"
        );
    }

    #[test]
    fn versions_are_the_file_prefixes_strictly_increasing() {
        let mut previous = 0;
        for m in MIGRATIONS {
            let prefix: i32 = m.name[..4].parse().expect("4-digit prefix");
            assert_eq!(prefix, m.version, "{}", m.name);
            assert_eq!(&m.name[4..5], "_", "{}", m.name);
            assert!(m.version > previous, "{} out of order", m.name);
            previous = m.version;
        }
    }

    #[test]
    fn checksum_is_sha256_hex() {
        let m = Migration {
            version: 1,
            name: "x",
            sql: "abc",
        };
        assert_eq!(
            m.checksum(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
