//! Daily settlement: the engine's share of a back-office batch over the
//! ledger. `Command::RunSettlement` closes one UTC day; the engine only
//! decides whether that day may be settled and names the batch:
//!
//! * the day must be over: strictly before the UTC day of the command's own
//!   journaled timestamp (clamped like every engine time, so a host clock
//!   that stepped back cannot reopen a day), never a wall clock;
//! * a day is settled at most once: the settled days are engine state
//!   (snapshot and `state_hash()` included), so a replay refuses exactly
//!   what the live engine refused.
//!
//! On success it emits `Event::SettlementRequested` with a new batch id
//! from its own counter. The figures (opening and closing balances,
//! movements by type, reconciliation) are computed by the persister from
//! the ledger rows in Postgres, in the transaction that writes the batch
//! (persister `settlement.rs`, migrations/0011_settlement.sql). Because every
//! ledger row of a day that is over has a smaller journal sequence number
//! than the command that settles it, the batch is a pure function of the
//! journal prefix up to that command.
//!
//! Also here: UTC day numbers <-> `YYYY-MM-DD` (proleptic Gregorian), used
//! by the gateway and the persister.

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::event::Event;
use crate::reject::RejectReason;
use crate::types::UserId;

/// Milliseconds in a UTC day.
pub const DAY_MS: u64 = 86_400_000;

/// A settlement batch the engine accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    /// From the engine's counter (1, 2, ...); never reused.
    pub id: u64,
    /// The settled UTC day, as days since 1970-01-01.
    pub date: u32,
    /// Who asked (user 0: the exchange itself, e.g. a scheduled job).
    pub requested_by: UserId,
    /// Journal time of the command (ms).
    pub requested_ms: u64,
}

/// UTC day number (days since 1970-01-01) of a millisecond timestamp.
pub fn utc_day(ts_ms: u64) -> u64 {
    ts_ms / DAY_MS
}

/// Days since 1970-01-01 of a proleptic Gregorian date, if it is a valid
/// date from 1970-01-01 on (Howard Hinnant's `days_from_civil`).
pub fn day_from_ymd(year: i64, month: u32, day: u32) -> Option<u32> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u32::try_from(days).ok()
}

/// (year, month, day) of a UTC day number (Howard Hinnant's `civil_from_days`).
pub fn ymd_from_day(day: u32) -> (i64, u32, u32) {
    let z = day as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A `YYYY-MM-DD` date (exactly that shape, from 1970-01-01 on) as a UTC
/// day number.
pub fn parse_date(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = &s[r];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    day_from_ymd(digits(0..4)? as i64, digits(5..7)?, digits(8..10)?)
}

/// A UTC day number as `YYYY-MM-DD`.
pub fn format_date(day: u32) -> String {
    let (y, m, d) = ymd_from_day(day);
    format!("{y:04}-{m:02}-{d:02}")
}

impl Engine {
    /// Every accepted settlement batch, by settled day.
    pub fn settlements(&self) -> impl Iterator<Item = &Settlement> {
        self.settlements.values()
    }

    /// The batch that settled `date` (a UTC day number), if any.
    pub fn settlement_of(&self, date: u32) -> Option<&Settlement> {
        self.settlements.get(&date)
    }

    /// The id the next accepted settlement batch gets.
    pub fn next_settlement_id(&self) -> u64 {
        self.next_settlement_id
    }

    /// `Command::RunSettlement`: every check before any change.
    pub(crate) fn run_settlement(
        &mut self,
        date: u32,
        requested_by: UserId,
        ts: u64,
        out: &mut Vec<Event>,
    ) -> Result<(), RejectReason> {
        if self.users.get(requested_by.0 as usize).is_none() {
            return Err(RejectReason::UnknownUser);
        }
        if date as u64 >= utc_day(ts) {
            return Err(RejectReason::SettlementDayNotOver);
        }
        if self.settlements.contains_key(&date) {
            return Err(RejectReason::AlreadySettled);
        }
        let s = Settlement {
            id: self.next_settlement_id,
            date,
            requested_by,
            requested_ms: ts,
        };
        self.next_settlement_id += 1;
        self.settlements.insert(date, s);
        out.push(Event::SettlementRequested {
            id: s.id,
            date,
            requested_by,
            ts_ms: ts,
        });
        Ok(())
    }

    /// Settlement state is consistent: keyed by its own day, ids unique and
    /// below the counter, days over at the engine's time.
    pub(crate) fn check_settlements(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        for (date, s) in &self.settlements {
            if *date != s.date {
                return Err(format!("settlement {} filed under day {date}", s.id));
            }
            if s.id == 0 || s.id >= self.next_settlement_id || !ids.insert(s.id) {
                return Err(format!(
                    "settlement id {} duplicate or not below the counter {}",
                    s.id, self.next_settlement_id
                ));
            }
            if s.date as u64 >= utc_day(s.requested_ms) || s.requested_ms > self.last_ts_ms {
                return Err(format!("settlement {} of a day not over", s.id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    /// 2024-03-10T12:00:00Z.
    const NOON: u64 = 1_710_072_000_000;

    fn engine_with_admin() -> Engine {
        let mut e = Engine::new();
        let mut out = Vec::new();
        e.apply(
            1,
            NOON - DAY_MS,
            &Command::CreateUser {
                username: "root".into(),
                email: String::new(),
                password_hash: "$argon2id$x".into(),
                roles: crate::model::roles::ADMIN,
            },
            &mut out,
        );
        e
    }

    fn run(e: &mut Engine, seq: u64, ts: u64, date: u32, by: u64) -> Vec<Event> {
        let mut out = Vec::new();
        e.apply(
            seq,
            ts,
            &Command::RunSettlement {
                date,
                requested_by: UserId(by),
            },
            &mut out,
        );
        e.assert_invariants();
        out
    }

    fn rejected(reason: RejectReason) -> Vec<Event> {
        vec![Event::Rejected { reason }]
    }

    #[test]
    fn dates_round_trip() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-03-10"), Some((NOON / DAY_MS) as u32));
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        assert_eq!(format_date(11_016), "2000-02-29");
        for bad in [
            "",
            "2024-3-10",
            "2024-03-1",
            "2024/03/10",
            "2023-02-29",
            "1900-02-29",
            "2024-13-01",
            "2024-00-10",
            "2024-04-31",
            "1969-12-31",
            "+024-03-10",
            "2024-03-10 ",
            "２０２４-03-10",
            "2024-03-1x",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
        for day in (0..200_000u32).step_by(17) {
            assert_eq!(parse_date(&format_date(day)), Some(day), "day {day}");
        }
        assert_eq!(utc_day(NOON), 19_792);
    }

    #[test]
    fn a_day_that_is_over_is_settled_once() {
        let mut e = engine_with_admin();
        let today = utc_day(NOON) as u32;
        let h0 = e.state_hash();
        // Today and the future are refused, and change nothing.
        for (seq, date) in [(2, today), (3, today + 1), (4, u32::MAX)] {
            assert_eq!(
                run(&mut e, seq, NOON, date, 1),
                rejected(RejectReason::SettlementDayNotOver)
            );
        }
        // Unknown requester.
        assert_eq!(
            run(&mut e, 5, NOON, today - 1, 99),
            rejected(RejectReason::UnknownUser)
        );
        assert_eq!(e.state_hash(), h0);
        assert_eq!(e.next_settlement_id(), 1);
        // Yesterday: batch 1.
        assert_eq!(
            run(&mut e, 6, NOON, today - 1, 1),
            vec![Event::SettlementRequested {
                id: 1,
                date: today - 1,
                requested_by: UserId(1),
                ts_ms: NOON,
            }]
        );
        let h1 = e.state_hash();
        assert_ne!(h1, h0, "settled days are part of the state hash");
        // Again: refused, nothing changes.
        assert_eq!(
            run(&mut e, 7, NOON + 1, today - 1, 1),
            rejected(RejectReason::AlreadySettled)
        );
        assert_eq!(e.state_hash(), h1);
        // Any earlier day, by the exchange itself (user 0): batch 2.
        assert_eq!(
            run(&mut e, 8, NOON + 2, 0, 0),
            vec![Event::SettlementRequested {
                id: 2,
                date: 0,
                requested_by: UserId(0),
                ts_ms: NOON + 2,
            }]
        );
        assert_eq!(e.settlement_of(today - 1).map(|s| s.id), Some(1));
        assert_eq!(
            e.settlements().map(|s| (s.date, s.id)).collect::<Vec<_>>(),
            vec![(0, 2), (today - 1, 1)]
        );
        assert_eq!(e.next_settlement_id(), 3);
    }

    #[test]
    fn the_day_ends_by_journal_time_only() {
        let mut e = engine_with_admin();
        let today = utc_day(NOON) as u32;
        let midnight = (today as u64 + 1) * DAY_MS;
        // The last millisecond of the day: still not over.
        assert_eq!(
            run(&mut e, 2, midnight - 1, today, 1),
            rejected(RejectReason::SettlementDayNotOver)
        );
        // The first millisecond of the next day: over.
        assert!(matches!(
            run(&mut e, 3, midnight, today, 1)[..],
            [Event::SettlementRequested { id: 1, .. }]
        ));
        // A host clock that stepped back does not reopen a day: engine time
        // is clamped, so the next day is still not over.
        assert_eq!(
            run(&mut e, 4, NOON - 5 * DAY_MS, today + 1, 1),
            rejected(RejectReason::SettlementDayNotOver)
        );
    }

    #[test]
    fn the_command_encoding_is_versioned() {
        let c = Command::RunSettlement {
            date: 19_791,
            requested_by: UserId(4),
        };
        let bytes = c.encode();
        assert_eq!(
            &bytes[..2],
            &crate::command::COMMAND_FORMAT_VERSION.to_le_bytes()
        );
        assert_eq!(Command::decode(&bytes).unwrap(), c);
        // Version 2 records (no settlement yet) decode as before.
        let old = Command::RecordLogin {
            user: UserId(3),
            success: true,
        };
        let mut v2 = old.encode();
        v2[..2].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(Command::decode(&v2).unwrap(), old);
        // A newer version, or a cut record, is an error, never a panic.
        let mut newer = bytes.clone();
        newer[..2].copy_from_slice(&(crate::command::COMMAND_FORMAT_VERSION + 1).to_le_bytes());
        assert!(Command::decode(&newer).is_err());
        for n in 0..bytes.len() {
            assert!(Command::decode(&bytes[..n]).is_err(), "cut at {n}");
        }
    }

    #[test]
    fn settled_days_survive_a_snapshot_and_keep_being_refused() {
        let mut e = engine_with_admin();
        let today = utc_day(NOON) as u32;
        run(&mut e, 2, NOON, today - 3, 1);
        run(&mut e, 3, NOON, today - 1, 1);
        let bytes = e.snapshot_bytes();
        let mut r = Engine::from_snapshot(&bytes).expect("snapshot loads");
        assert_eq!(r.state_hash(), e.state_hash());
        assert_eq!(r.next_settlement_id(), 3);
        assert_eq!(
            r.settlements().copied().collect::<Vec<_>>(),
            e.settlements().copied().collect::<Vec<_>>()
        );
        assert_eq!(
            run(&mut r, 4, NOON, today - 3, 1),
            rejected(RejectReason::AlreadySettled)
        );
        assert!(matches!(
            run(&mut r, 5, NOON, today - 2, 1)[..],
            [Event::SettlementRequested { id: 3, .. }]
        ));
    }
}
