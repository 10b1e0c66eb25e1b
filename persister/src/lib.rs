//! Persister: replays the journal into the partitioned PostgreSQL read model.
//!
//! Postgres is a read model rebuilt from the journal at will; the journal stays
//! the single source of truth. This crate owns the schema (`migrations/` at the
//! workspace root, embedded by [`migrate`]) and the writer that tails the journal
//! ([`writer`], rows built by [`rows`] and written by [`sql`]; candles and
//! the 24 h ticker derived from the trades by [`klines`]) and
//! [`reconcile`]; settlement batches by [`settlement`]. [`notify`] derives
//! the in-app notifications of a journal record (shared with the gateway).
//! [`testdb`] gives every test its own throw-away
//! database on the server named by `DATABASE_URL`.

pub mod copy;
pub mod klines;
pub mod migrate;
pub mod notify;
pub mod reconcile;
pub mod replica;
pub mod rows;
pub mod settlement;
pub mod sql;
pub mod testdb;
pub mod writer;
