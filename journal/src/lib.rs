//! Segmented, memory-mapped, append-only log of sequenced records (bytes in,
//! bytes out). Work in progress: see issue 3.
