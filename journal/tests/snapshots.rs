//! Snapshot files on disk: atomic write, listing, verification, fallback to
//! an older snapshot when the newest is damaged, and pruning.

use journal::snapshot;
use journal::JournalError;
use std::fs;

fn state(seq: u64) -> Vec<u8> {
    (0..(seq * 37 % 5000) as usize)
        .map(|i| (i as u64 ^ seq) as u8)
        .collect()
}

#[test]
fn write_list_verify_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        snapshot::load_newest_valid(dir.path().join("none")).expect("load"),
        Default::default()
    );
    for seq in [100, 9, 2000] {
        snapshot::write(dir.path(), seq, &state(seq)).expect("write");
    }
    fs::write(dir.path().join("unrelated.txt"), b"x").expect("write");
    let list = snapshot::list(dir.path()).expect("list");
    assert_eq!(
        list.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![9, 100, 2000]
    );
    for s in &list {
        assert_eq!(s.size, 32 + state(s.seq).len() as u64);
        assert_eq!(
            snapshot::verify(&s.path).expect("verify"),
            (s.seq, state(s.seq).len() as u64)
        );
    }
    let loaded = snapshot::load_newest_valid(dir.path()).expect("load");
    assert_eq!(loaded.snapshot, Some((2000, state(2000))));
    assert!(loaded.skipped.is_empty());
}

#[test]
fn damaged_newest_falls_back_to_previous() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seq in [10, 20, 30] {
        snapshot::write(dir.path(), seq, &state(seq)).expect("write");
    }
    let newest = dir.path().join(snapshot::file_name(30));
    let mut bytes = fs::read(&newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&newest, &bytes).expect("write");
    // The middle one is truncated.
    let middle = dir.path().join(snapshot::file_name(20));
    let len = fs::metadata(&middle).expect("meta").len();
    fs::OpenOptions::new()
        .write(true)
        .open(&middle)
        .and_then(|f| f.set_len(len - 3))
        .expect("truncate");

    let err = snapshot::verify(&newest).expect_err("damaged");
    assert!(matches!(err, JournalError::SnapshotCorrupt { .. }), "{err}");
    let loaded = snapshot::load_newest_valid(dir.path()).expect("load");
    assert_eq!(loaded.snapshot, Some((10, state(10))));
    assert_eq!(
        loaded.skipped.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![30, 20]
    );
    assert!(
        loaded.skipped[0].reason.contains("payload checksum"),
        "{}",
        loaded.skipped[0].reason
    );
    assert!(
        loaded.skipped[1].reason.contains("truncated"),
        "{}",
        loaded.skipped[1].reason
    );
}

#[test]
fn damaged_only_snapshot_gives_none_with_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = snapshot::write(dir.path(), 7, &state(7)).expect("write");
    let mut bytes = fs::read(&path).expect("read");
    bytes[9] ^= 1; // header seq
    fs::write(&path, &bytes).expect("write");
    let loaded = snapshot::load_newest_valid(dir.path()).expect("load");
    assert_eq!(loaded.snapshot, None);
    assert_eq!(loaded.skipped.len(), 1);
    assert_eq!(loaded.skipped[0].path, path);
    assert!(
        loaded.skipped[0].reason.contains("header checksum"),
        "{}",
        loaded.skipped[0].reason
    );
}

#[test]
fn renamed_snapshot_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = snapshot::write(dir.path(), 5, b"five").expect("write");
    let wrong = dir.path().join(snapshot::file_name(6));
    fs::rename(&path, &wrong).expect("rename");
    let err = snapshot::verify(&wrong).expect_err("name mismatch");
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[test]
fn prune_keeps_newest_valid_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    for seq in 1..=6 {
        snapshot::write(dir.path(), seq * 10, &state(seq)).expect("write");
    }
    // Newest is damaged: it is neither counted nor deleted.
    let newest = dir.path().join(snapshot::file_name(60));
    fs::write(&newest, b"garbage").expect("write");
    let deleted = snapshot::prune(dir.path(), 2).expect("prune");
    assert_eq!(deleted.len(), 3);
    let left: Vec<u64> = snapshot::list(dir.path())
        .expect("list")
        .iter()
        .map(|s| s.seq)
        .collect();
    assert_eq!(left, vec![40, 50, 60]);
    assert!(snapshot::prune(dir.path(), 0).is_err());
    assert_eq!(
        snapshot::load_newest_valid(dir.path())
            .expect("load")
            .snapshot
            .map(|s| s.0),
        Some(50)
    );
}
