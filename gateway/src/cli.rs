//! Command line of `mini-exchange` (API.md "Operations contract"): one
//! binary, one subcommand per operation, every option documented in
//! `--help`, errors that say what to do.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mini-exchange",
    version,
    about = "mini-exchange: a spot crypto exchange core (deterministic matching engine, mmap journal, Binance-compatible API)",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Apply the SQL migrations of migrations/ to DATABASE_URL (idempotent;
    /// concurrent runs are safe).
    Migrate {
        /// PostgreSQL connection URL.
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MX_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn main() -> Result<()> {
    let cli = Cli::parse();
    init_tracing();
    match cli.cmd {
        Cmd::Migrate { database_url } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = rt
                .block_on(persister::migrate::run_url(&database_url))
                .with_context(|| {
                    "migration failed; check that DATABASE_URL points at a reachable PostgreSQL 15+ server you may create tables in"
                })?;
            println!("{report:?}");
            Ok(())
        }
    }
}
