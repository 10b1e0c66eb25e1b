//! Shared by the persister's table tests: a scripted journal and a writer
//! run until it has written a given record.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Command;
use persister::replica::DataDir;
use persister::writer::{self, Follow, PersisterStatus, WriterConfig};

/// Append records up to `to` (from where the journal ends): `cmd(seq)` at
/// journal time `ts_ms(seq)`, committed once.
pub fn append_journal(
    data: &DataDir,
    to: u64,
    cmd: impl Fn(u64) -> Command,
    ts_ms: impl Fn(u64) -> u64,
) {
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 64 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let mut buf = Vec::new();
    for seq in w.last_seq() + 1..=to {
        buf.clear();
        cmd(seq).encode_into(&mut buf);
        w.append(ts_ms(seq) * 1_000_000, &buf).unwrap();
    }
    w.commit().unwrap();
    w.close().unwrap();
}

/// Run a writer until it has written `to`, then stop it.
pub fn write_to(url: &str, data: &DataDir, to: u64) {
    let cfg = WriterConfig {
        max_backoff: Duration::from_millis(300),
        ..WriterConfig::new(url, data.clone())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let status = Arc::new(PersisterStatus::default());
    let h = writer::spawn(cfg, Follow::Poll, stop.clone(), status.clone()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while status.written_seq.load(Ordering::Relaxed) < to {
        assert!(!h.is_finished(), "writer ended early: {:?}", h.join());
        assert!(Instant::now() < deadline, "writer did not reach {to}");
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Release);
    h.join().unwrap().unwrap();
}
