//! Persister: replays the journal into the partitioned PostgreSQL read model.
//! Work in progress: see issue 6.
