//! KYC records: submission, the one-pending rule, review (approve sets the
//! user's level, reject needs notes, nobody reviews their own record), the
//! level gating withdrawals, snapshots and the journal encoding. Every
//! rejection is checked to leave the state hash unchanged (`Harness::reject`).

mod common;
use common::*;
use engine::*;

fn submit(user: UserId, level: u8) -> Command {
    Command::SubmitKyc {
        user,
        level,
        document_type: KycDocumentType::Passport,
        // Stands in for the gateway's ciphertext: the engine never reads it.
        document_number: vec![0xA5; 45],
        data: r#"{"first_name":"Alice","country":"DE"}"#.into(),
    }
}

fn review(kyc: u64, reviewer: UserId, approve: bool, notes: &str) -> Command {
    Command::ReviewKyc {
        kyc,
        reviewer,
        approve,
        notes: notes.into(),
    }
}

fn submitted(ev: &[Event]) -> KycRecord {
    match ev {
        [Event::KycSubmitted(k)] => (**k).clone(),
        other => panic!("expected KycSubmitted, got {other:?}"),
    }
}

/// A harness with a trader and an operator who reviews.
fn setup() -> (Harness, UserId, UserId) {
    let mut h = Harness::new();
    let alice = h.user("alice");
    let op = h.user("operator");
    h.ok(Command::SetUserRoles {
        user: op,
        roles: roles::OPERATOR,
        by: None,
    });
    (h, alice, op)
}

#[test]
fn submission_creates_a_pending_record_with_ids_from_a_counter() {
    let (mut h, alice, op) = setup();
    let k = submitted(&h.ok(submit(alice, 2)));
    assert_eq!(
        k,
        KycRecord {
            id: 1,
            user: alice,
            level: 2,
            document_type: KycDocumentType::Passport,
            document_number: vec![0xA5; 45],
            data: r#"{"first_name":"Alice","country":"DE"}"#.into(),
            status: KycStatus::Pending,
            reviewer: None,
            notes: String::new(),
            created_ms: h.ts,
            reviewed_ms: 0,
        }
    );
    assert_eq!(h.e.kyc_record(1), Some(&k));
    assert_eq!(h.e.pending_kyc(alice), Some(&k));
    // Submitting does not change the level; only an approval does.
    assert_eq!(h.e.user(alice).unwrap().kyc_level, 0);
    // Another user's record takes the next id.
    let k2 = submitted(&h.ok(submit(op, 1)));
    assert_eq!(k2.id, 2);
    assert_eq!(h.e.kyc_records().count(), 2);
}

#[test]
fn levels_outside_1_to_3_are_refused() {
    let (mut h, alice, op) = setup();
    for level in [0, 4, 5, 255] {
        assert_eq!(
            h.reject(submit(alice, level)),
            RejectReason::InvalidKycLevel
        );
    }
    for level in 1..=3 {
        let k = submitted(&h.ok(submit(alice, level)));
        assert_eq!(k.level, level);
        h.ok(review(k.id, op, false, "retry"));
    }
}

#[test]
fn malformed_submissions_are_refused() {
    let (mut h, alice, _) = setup();
    let with = |document_number: Vec<u8>, data: &str| Command::SubmitKyc {
        user: alice,
        level: 1,
        document_type: KycDocumentType::IdCard,
        document_number,
        data: data.into(),
    };
    for bad in [
        with(Vec::new(), "{}"),
        with(vec![1; KYC_DOCUMENT_MAX_LEN + 1], "{}"),
        with(vec![1; 40], ""),
        with(vec![1; 40], "[1,2]"),
        with(vec![1; 40], "\"text\""),
        with(vec![1; 40], "{"),
        with(
            vec![1; 40],
            &format!("{{\"a\":\"{}\"}}", "x".repeat(KYC_DATA_MAX_LEN)),
        ),
    ] {
        assert_eq!(h.reject(bad), RejectReason::InvalidKycSubmission);
    }
    // The bounds themselves are fine.
    let at_limit = format!("{{\"a\":\"{}\"}}", "x".repeat(KYC_DATA_MAX_LEN - 8));
    assert_eq!(at_limit.len(), KYC_DATA_MAX_LEN);
    h.ok(with(vec![1; KYC_DOCUMENT_MAX_LEN], &at_limit));
}

#[test]
fn at_most_one_pending_record_per_user() {
    let (mut h, alice, op) = setup();
    let bob = h.user("bob");
    let k = submitted(&h.ok(submit(alice, 1)));
    assert_eq!(h.reject(submit(alice, 2)), RejectReason::KycAlreadyPending);
    // Others are not affected.
    h.ok(submit(bob, 1));
    // Once reviewed, the user may submit again.
    h.ok(review(k.id, op, false, "blurry scan"));
    assert!(h.e.pending_kyc(alice).is_none());
    let again = submitted(&h.ok(submit(alice, 2)));
    assert_eq!(again.id, 3);
    assert_eq!(h.e.pending_kyc(alice).map(|k| k.id), Some(3));
}

#[test]
fn only_active_registered_users_submit() {
    let (mut h, alice, _) = setup();
    assert_eq!(h.reject(submit(UserId(0), 1)), RejectReason::UnknownUser);
    assert_eq!(h.reject(submit(UserId(99), 1)), RejectReason::UnknownUser);
    h.ok(Command::SetUserStatus {
        user: alice,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(h.reject(submit(alice, 1)), RejectReason::UserSuspended);
}

#[test]
fn approval_sets_the_level_and_emits_kyc_level_set() {
    let (mut h, alice, op) = setup();
    let k = submitted(&h.ok(submit(alice, 2)));
    let ev = h.ok(review(k.id, op, true, "documents match"));
    let at = h.ts;
    assert_eq!(
        ev,
        vec![
            Event::KycReviewed {
                kyc: k.id,
                user: alice,
                reviewer: op,
                status: KycStatus::Approved,
                level: 2,
                notes: "documents match".into(),
                reviewed_ms: at,
            },
            Event::KycLevelSet {
                user: alice,
                level: 2
            },
        ]
    );
    assert_eq!(h.e.user(alice).unwrap().kyc_level, 2);
    let r = h.e.kyc_record(k.id).unwrap();
    assert_eq!(
        (r.status, r.reviewer, r.notes.as_str(), r.reviewed_ms),
        (KycStatus::Approved, Some(op), "documents match", at)
    );
    // Approval needs no notes.
    let bob = h.user("bob");
    let k = submitted(&h.ok(submit(bob, 3)));
    h.ok(review(k.id, op, true, ""));
    assert_eq!(h.e.user(bob).unwrap().kyc_level, 3);
}

#[test]
fn rejection_needs_notes_and_leaves_the_level() {
    let (mut h, alice, op) = setup();
    let k = submitted(&h.ok(submit(alice, 3)));
    assert_eq!(
        h.reject(review(k.id, op, false, "")),
        RejectReason::InvalidKycReview
    );
    assert_eq!(
        h.reject(review(k.id, op, false, " \n ")),
        RejectReason::InvalidKycReview
    );
    let long = "n".repeat(KYC_NOTES_MAX_LEN + 1);
    assert_eq!(
        h.reject(review(k.id, op, true, &long)),
        RejectReason::InvalidKycReview
    );
    let ev = h.ok(review(k.id, op, false, "expired passport"));
    assert!(matches!(
        ev.as_slice(),
        [Event::KycReviewed {
            status: KycStatus::Rejected,
            ..
        }]
    ));
    assert_eq!(h.e.user(alice).unwrap().kyc_level, 0);
    assert_eq!(h.e.kyc_record(k.id).unwrap().notes, "expired passport");
}

#[test]
fn only_pending_records_are_reviewed_by_someone_else() {
    let (mut h, alice, op) = setup();
    assert_eq!(
        h.reject(review(1, op, true, "")),
        RejectReason::UnknownKycRecord
    );
    let k = submitted(&h.ok(submit(alice, 1)));
    assert_eq!(
        h.reject(review(k.id, alice, true, "")),
        RejectReason::KycSelfReview
    );
    assert_eq!(
        h.reject(review(k.id, UserId(0), true, "")),
        RejectReason::UnknownUser
    );
    assert_eq!(
        h.reject(review(k.id, UserId(99), true, "")),
        RejectReason::UnknownUser
    );
    h.ok(Command::SetUserStatus {
        user: op,
        status: UserStatus::Suspended,
        cancel_orders: true,
        by: None,
    });
    assert_eq!(
        h.reject(review(k.id, op, true, "")),
        RejectReason::UserSuspended
    );
    h.ok(Command::SetUserStatus {
        user: op,
        status: UserStatus::Active,
        cancel_orders: true,
        by: None,
    });
    h.ok(review(k.id, op, true, "ok"));
    // Reviewed already, either way.
    assert_eq!(
        h.reject(review(k.id, op, true, "again")),
        RejectReason::KycNotPending
    );
    assert_eq!(
        h.reject(review(k.id, op, false, "changed my mind")),
        RejectReason::KycNotPending
    );
    assert_eq!(
        h.reject(review(k.id + 1, op, true, "")),
        RejectReason::UnknownKycRecord
    );
}

#[test]
fn approved_level_gates_withdrawals() {
    let (mut h, alice, op) = setup();
    // 2 BTC a day at level 1, 20 at level 2 (asset rule).
    let mut btc = asset("BTC");
    btc.daily_withdraw_limit_units = 2 * ONE;
    h.ok(Command::UpdateAsset {
        asset: BTC,
        spec: btc,
        by: None,
    });
    h.fund(alice, BTC, 10 * ONE);
    let w = |amount| Command::RequestWithdrawal {
        user: alice,
        asset: BTC,
        amount,
        address: "bc1qalice".into(),
    };
    assert_eq!(h.reject(w(ONE)), RejectReason::KycRequired);
    // A pending or rejected record grants nothing.
    let k = submitted(&h.ok(submit(alice, 1)));
    assert_eq!(h.reject(w(ONE)), RejectReason::KycRequired);
    h.ok(review(k.id, op, false, "unreadable"));
    assert_eq!(h.reject(w(ONE)), RejectReason::KycRequired);
    // Level 1 approved: withdrawals within the level 1 limit.
    let k = submitted(&h.ok(submit(alice, 1)));
    h.ok(review(k.id, op, true, ""));
    h.ok(w(ONE));
    assert_eq!(h.reject(w(2 * ONE)), RejectReason::DailyWithdrawLimit);
    // Level 2 approved: ten times the limit.
    let k = submitted(&h.ok(submit(alice, 2)));
    h.ok(review(k.id, op, true, ""));
    h.ok(w(2 * ONE));
}

#[test]
fn records_survive_a_snapshot_with_the_pending_rule() {
    let (mut h, alice, op) = setup();
    let bob = h.user("bob");
    let k = submitted(&h.ok(submit(alice, 1)));
    h.ok(review(k.id, op, true, "ok"));
    h.ok(submit(alice, 2));
    h.ok(submit(bob, 1));
    let restored = Engine::from_snapshot(&h.e.snapshot_bytes()).unwrap();
    assert_eq!(restored.state_hash(), h.e.state_hash());
    assert_eq!(
        restored.kyc_records().collect::<Vec<_>>(),
        h.e.kyc_records().collect::<Vec<_>>()
    );
    let mut h2 = Harness {
        e: restored,
        seq: h.seq,
        ts: h.ts,
        out: Vec::new(),
    };
    // The pending rule holds on both (each run also moves the clock on).
    for h in [&mut h, &mut h2] {
        assert_eq!(h.reject(submit(alice, 3)), RejectReason::KycAlreadyPending);
    }
    // The counter continues: the next record is 4 on both.
    h.ok(review(2, op, false, "no"));
    h2.ok(review(2, op, false, "no"));
    assert_eq!(submitted(&h.ok(submit(alice, 3))).id, 4);
    assert_eq!(submitted(&h2.ok(submit(alice, 3))).id, 4);
    assert_eq!(h.e.state_hash(), h2.e.state_hash());
}

#[test]
fn kyc_commands_round_trip_and_version_2_records_still_decode() {
    for c in [
        submit(UserId(3), 2),
        review(7, UserId(1), false, "mismatch"),
    ] {
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }
    // A version 2 record (before KYC commands existed) decodes as before.
    let c = Command::SetKycLevel {
        user: UserId(3),
        level: 1,
        by: None,
    };
    let mut old = c.encode();
    old[..2].copy_from_slice(&2u16.to_le_bytes());
    assert_eq!(Command::decode(&old).unwrap(), c);
    // A newer version is refused by number.
    let mut newer = c.encode();
    newer[..2].copy_from_slice(&(command::COMMAND_FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        Command::decode(&newer),
        Err(command::DecodeError::Version(_))
    ));
    // Truncated KYC records are errors, not panics.
    let enc = submit(UserId(3), 2).encode();
    for n in 0..enc.len() {
        assert!(Command::decode(&enc[..n]).is_err());
    }
}

#[test]
fn document_types_have_stable_names() {
    let names: Vec<&str> = KycDocumentType::ALL.iter().map(|t| t.name()).collect();
    assert_eq!(
        names,
        [
            "PASSPORT",
            "ID_CARD",
            "DRIVERS_LICENSE",
            "RESIDENCE_PERMIT",
            "OTHER"
        ]
    );
    for t in KycDocumentType::ALL {
        assert_eq!(KycDocumentType::from_name(t.name()), Some(t));
    }
    assert_eq!(KycDocumentType::from_name("passport"), None);
    assert_eq!(
        [KycStatus::Pending, KycStatus::Approved, KycStatus::Rejected].map(KycStatus::name),
        ["PENDING", "APPROVED", "REJECTED"]
    );
}

proptest::proptest! {
    /// Journal decoding of KYC records: corrupted or truncated payloads are
    /// an `Err` or another valid command, never a panic or a huge
    /// allocation (lengths are bounded by the decoder's limit).
    #[test]
    fn corrupted_kyc_records_never_panic(
        flips in proptest::collection::vec((0usize..512, proptest::prelude::any::<u8>()), 1..8),
        cut in 0usize..512,
        review_record in proptest::prelude::any::<bool>(),
    ) {
        let c = if review_record {
            review(7, UserId(2), false, "blurry scan")
        } else {
            submit(UserId(3), 2)
        };
        let mut bytes = c.encode();
        for (at, v) in flips {
            let n = bytes.len();
            bytes[at % n] = v;
        }
        bytes.truncate(cut.max(2).min(bytes.len()));
        if let Ok(d) = Command::decode(&bytes) {
            proptest::prop_assert_eq!(Command::decode(&d.encode()).unwrap(), d);
        }
    }
}
