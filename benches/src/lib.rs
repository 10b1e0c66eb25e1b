//! Deterministic, seeded workload generators shared by `mx-bench` and the
//! criterion benchmarks.
