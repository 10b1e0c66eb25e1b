//! Deterministic, seeded workload generators shared by `mx-bench` and the
//! criterion benchmarks: W1 and W2 (`workload`), W3 and the peer order books
//! it is run through (`w3`, `peers`), the measuring loops (`run`), the
//! persister load generator (`persister_bench`) and the W4 clients' send
//! ticks (`pacer`).

pub mod fanout;
pub mod journal_bench;
pub mod pacer;
pub mod peers;
pub mod persister_bench;
pub mod plot;
pub mod rest_bench;
pub mod run;
pub mod w3;
pub mod workload;
pub mod ws_bench;
