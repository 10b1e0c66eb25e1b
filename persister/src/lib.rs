//! Persister: replays the journal into the partitioned PostgreSQL read model.
//!
//! Postgres is a read model rebuilt from the journal at will; the journal stays
//! the single source of truth. This crate owns the schema (`migrations/` at the
//! workspace root, embedded by [`migrate`]) and, later, the writers that tail
//! the journal (see issue 6). [`testdb`] gives every test its own throw-away
//! database on the server named by `DATABASE_URL`.

pub mod migrate;
pub mod replica;
pub mod testdb;
