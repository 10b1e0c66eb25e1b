//! The snapshotter follows a live writer in another thread, never reads past
//! the durable point, and writes snapshots that equal a clean replay of the
//! journal up to their sequence number; pruning keeps the newest ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::*;
use persister::replica::{self, DataDir, SnapshotPolicy, Snapshotter};

fn cmd(seq: u64) -> Command {
    match seq {
        1 => Command::AddAsset {
            spec: AssetSpec {
                symbol: "BTC".into(),
                name: "Bitcoin".into(),
                decimals: 8,
                min_withdraw_units: 0,
                withdraw_fee_units: 0,
                daily_withdraw_limit_units: 0,
                confirmations: 1,
                active: true,
            },
            by: None,
        },
        n if n % 3 == 0 => Command::CreateUser {
            username: format!("snap{n}"),
            email: String::new(),
            password_hash: String::new(),
            roles: roles::TRADER,
        },
        n => Command::Deposit {
            user: UserId(n % 7),
            asset: AssetId(1),
            amount: n,
            tx_hash: format!("t{n}"),
            confirmations: 1,
            by: None,
        },
    }
}

/// Wait (at most 30 s) for a snapshot newer than `seq`; returns its seq.
fn wait_for_snapshot_after(data: &DataDir, seq: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let newest = journal::snapshot::list(data.snapshots())
            .unwrap()
            .last()
            .map_or(0, |s| s.seq);
        if newest > seq {
            return newest;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot after {seq} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn follows_a_live_writer_and_snapshots_match_clean_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 64 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let durable = w.durable_handle();
    let snap = Snapshotter::start(
        data.clone(),
        durable.clone(),
        SnapshotPolicy {
            every_records: 500,
            every: Duration::from_secs(3600),
            keep: 3,
            retain_journal: false,
        },
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let follower = std::thread::spawn(move || snap.run(&stop2).unwrap());
    const N: u64 = 5_000;
    let mut seq = 0;
    let mut next_pause = 1_000;
    let mut last_seen = 0;
    while seq < N {
        for _ in 0..(1 + seq % 37) {
            if seq == N {
                break;
            }
            seq += 1;
            w.append(seq * 1_000_000, &cmd(seq).encode()).unwrap();
        }
        w.commit().unwrap();
        // Every ~1,000 records, wait for a snapshot newer than the last one
        // seen (one is due: the follower is over 500 records behind the
        // last), so that at least five snapshots exist whatever the
        // machine's load (the follower catches up in bulk, and a writer
        // running far ahead of it would leave it fewer, larger steps).
        if seq >= next_pause {
            last_seen = wait_for_snapshot_after(&data, last_seen);
            next_pause += 1_000;
        }
    }
    stop.store(true, Ordering::Release);
    let replica_engine = follower.join().unwrap();
    assert_eq!(replica_engine.last_seq(), N);

    let snaps = journal::snapshot::list(data.snapshots()).unwrap();
    assert_eq!(snaps.len(), 3, "pruned to the newest 3: {snaps:?}");
    assert_eq!(snaps.last().unwrap().seq, N, "final snapshot at the end");
    for s in &snaps {
        let (e, seq, skipped) = replica::load_snapshot(&data.snapshots(), s.seq).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(seq, s.seq);
        let mut clean = Engine::new();
        replica::replay(
            &mut clean,
            &data.journal(),
            s.seq,
            None,
            |_, _, _, _| {},
            |_| {},
        )
        .unwrap();
        assert_eq!(clean.last_seq(), s.seq);
        assert_eq!(
            clean.state_hash(),
            e.state_hash(),
            "snapshot at {} differs",
            s.seq
        );
    }
    w.close().unwrap();
}

#[test]
fn retention_deletes_segments_only_behind_the_oldest_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig {
        segment_size: 16 * 1024,
        ..journal::JournalConfig::new(data.journal())
    })
    .unwrap();
    let mut snap = Snapshotter::start(
        data.clone(),
        w.durable_handle(),
        SnapshotPolicy {
            every_records: 400,
            every: Duration::from_secs(3600),
            keep: 1,
            retain_journal: true,
        },
    )
    .unwrap();
    for seq in 1..=3_000u64 {
        w.append(seq, &cmd(seq).encode()).unwrap();
        if seq % 50 == 0 {
            w.commit().unwrap();
            snap.poll(usize::MAX).unwrap();
        }
    }
    let snaps = journal::snapshot::list(data.snapshots()).unwrap();
    assert_eq!(snaps.len(), 1);
    // Recovery still works from what is left: snapshot + remaining journal.
    let rec = replica::recover(&data, u64::MAX, |_| {}).unwrap();
    assert_eq!(rec.engine.last_seq(), 3_000);
    assert_eq!(rec.engine.state_hash(), snap.engine().state_hash());
    // And the oldest segments are gone.
    let oldest = journal::Reader::open(data.journal(), 1);
    assert!(oldest.is_err(), "seq 1 should have been pruned");
    w.close().unwrap();
}

/// `snapshot.interval_records = 0` and `interval_secs = 0` mean "never by
/// count" and "never by time" (config/default.toml), not "always": a
/// replica with both at 0 writes no snapshot, however much it applies, and
/// `follow` does not chase the journal at all.
#[test]
fn zero_intervals_never_snapshot() {
    let never = SnapshotPolicy {
        every_records: 0,
        every: Duration::ZERO,
        keep: 3,
        retain_journal: false,
    };
    assert!(!never.snapshots());
    for (behind, since) in [(0, 0), (1, 0), (1_000_000, 0), (5, 86_400)] {
        assert!(!never.due(behind, Duration::from_secs(since)));
    }
    let by_count = SnapshotPolicy {
        every_records: 100,
        ..never
    };
    assert!(by_count.snapshots());
    assert!(!by_count.due(99, Duration::from_secs(86_400)));
    assert!(by_count.due(100, Duration::ZERO));
    let by_time = SnapshotPolicy {
        every: Duration::from_secs(60),
        ..never
    };
    assert!(!by_time.due(1_000_000, Duration::from_secs(59)));
    assert!(by_time.due(1, Duration::from_secs(60)));
    assert!(!by_time.due(0, Duration::from_secs(600)), "nothing new");

    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::new(tmp.path());
    data.create().unwrap();
    let (mut w, _) = journal::Writer::open(journal::JournalConfig::new(data.journal())).unwrap();
    let mut snap = Snapshotter::start(data.clone(), w.durable_handle(), never).unwrap();
    for seq in 1..=2_000u64 {
        w.append(seq, &cmd(seq).encode()).unwrap();
        if seq % 100 == 0 {
            w.commit().unwrap();
            let (_, written) = snap.poll(usize::MAX).unwrap();
            assert!(written.is_none(), "snapshot written at {seq}");
        }
    }
    assert_eq!(snap.engine().last_seq(), 2_000);
    assert!(journal::snapshot::list(data.snapshots())
        .unwrap()
        .is_empty());

    // Following with that policy applies nothing; stopping is still prompt.
    let mut idle = Snapshotter::start(data.clone(), w.durable_handle(), never).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::spawn(move || {
        idle.follow(&stop2).unwrap();
        idle
    });
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Release);
    let idle = t.join().unwrap();
    assert_eq!(idle.engine().last_seq(), 0);
    assert!(journal::snapshot::list(data.snapshots())
        .unwrap()
        .is_empty());
    w.close().unwrap();
}
