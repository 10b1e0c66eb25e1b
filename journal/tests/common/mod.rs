//! Shared helpers for the black-box journal tests: deterministic payloads
//! derived from the seq (so any reader can check any record on its own),
//! config shortcuts and raw access to segment files for fault injection.
#![allow(dead_code)]

use journal::record::{self, RecordKind};
use journal::{Durability, JournalConfig, OwnedEntry, Reader, Writer};
use std::path::{Path, PathBuf};

pub const SEG: u64 = 64 * 1024;

/// Payload of record `seq`: length 0..=max_len-1, bytes derived from seq.
pub fn payload(seq: u64, max_len: u64) -> Vec<u8> {
    let h = mix(seq);
    let len = (h % max_len) as usize;
    (0..len)
        .map(|i| (h >> (i % 8 * 8)) as u8 ^ i as u8)
        .collect()
}

pub fn ts(seq: u64) -> u64 {
    seq * 1_000 + 7
}

/// splitmix64: a tiny deterministic hash / PRNG step.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn cfg(dir: &Path, durability: Durability) -> JournalConfig {
    JournalConfig {
        segment_size: SEG,
        durability,
        // Only `close` stores the watermark unless a test asks otherwise,
        // so crash-like drops leave tails recovery may legitimately cut.
        watermark_interval: u32::MAX,
        ..JournalConfig::new(dir)
    }
}

pub fn repair(mut c: JournalConfig) -> JournalConfig {
    c.repair = true;
    c
}

/// Appends `n` batches of 1..=max_batch records; returns the last seq.
pub fn write_batches(w: &mut Writer, n: u64, max_batch: u64, max_len: u64) -> u64 {
    for _ in 0..n {
        let size = 1 + mix(w.last_seq() ^ 0xba7c) % max_batch;
        for _ in 0..size {
            let seq = w.last_seq() + 1;
            assert_eq!(
                w.append(ts(seq), &payload(seq, max_len)).expect("append"),
                seq
            );
        }
        w.commit().expect("commit");
    }
    w.last_seq()
}

pub fn read_all(dir: &Path, from: u64) -> Vec<OwnedEntry> {
    Reader::open(dir, from)
        .expect("reader")
        .collect::<Result<Vec<_>, _>>()
        .expect("read")
}

/// Asserts the journal holds exactly seqs `from..=last` with the payloads
/// `payload(seq, max_len)`.
pub fn assert_contents(dir: &Path, from: u64, last: u64, max_len: u64) {
    let all = read_all(dir, from);
    assert_eq!(all.len() as u64, last + 1 - from, "record count");
    for (e, seq) in all.iter().zip(from..) {
        assert_eq!(e.seq, seq);
        assert_eq!(e.timestamp_ns, ts(seq), "ts of {seq}");
        assert_eq!(e.payload, payload(seq, max_len), "payload of {seq}");
    }
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

/// A record's position inside a segment file.
#[derive(Debug, Clone, Copy)]
pub struct Pos {
    pub offset: usize,
    pub len: usize,
    pub seq: u64,
    pub commit: bool,
}

/// Walks the valid records of a segment image from offset 64.
pub fn records(bytes: &[u8]) -> Vec<Pos> {
    let mut out = Vec::new();
    let mut at = 64;
    while let Ok(rec) = record::decode(&bytes[at..]) {
        out.push(Pos {
            offset: at,
            len: rec.encoded_len(),
            seq: rec.seq,
            commit: rec.kind == RecordKind::Commit,
        });
        at += rec.encoded_len();
    }
    out
}

pub fn flip_bit(path: &Path, offset: usize, bit: u8) {
    let mut b = std::fs::read(path).expect("read");
    b[offset] ^= 1 << bit;
    std::fs::write(path, b).expect("write");
}
