//! Native settlement API (`/api/v1/admin/settlements`, JWT bearer): run the
//! daily settlement of a UTC day, list the batches, read one batch with
//! its reconciliation result, and page through its per-(user, asset)
//! details.
//!
//! * `POST admin/settlements` `{"date": "YYYY-MM-DD"}` (`settlement:run`)
//!   journals `RunSettlement`; the engine accepts a day only once it is
//!   over (by the command's journal time) and only once. Answer 201 with
//!   the batch id and status PENDING: the persister computes the batch from
//!   the ledger in Postgres (persister `settlement.rs`).
//! * `GET admin/settlements` (`offset`, `limit`; newest first),
//!   `GET admin/settlements/{id}` (`settlement:read`), and
//!   `GET admin/settlements/{id}/details` (`user` = username or id,
//!   `asset`, `offset`, `limit`; `settlement:read` and, being other users'
//!   balances, `users:read`) read Postgres through the history pool. Which
//!   batches exist is known from the journal (the [`Batches`] read model,
//!   fed by engine events like the other read models): a batch the
//!   persister has not written yet is shown as PENDING. Without
//!   `DATABASE_URL` (or with Postgres unreachable) these GETs answer 503:
//!   settlement reports need the persister's database.
//!
//! Errors: -4000 malformed body, -4004 bad parameter or a day that is not
//! over, -4010 no token, -4030 permission, -4040 / -4042 unknown user or
//! asset filter, -4048 unknown batch, -4096 day already settled (a batch
//! of that day exists), -5030 no database.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use engine::settlement::{format_date, parse_date, utc_day};
use engine::{Command, Engine, Event, RejectReason, Settlement, UserId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::native::{
    authenticate, check, codes, execute, parse, query, rejected, reply, require, u64_param,
    NativeError, Res,
};
use crate::server::{now_ms, AppState};

/// Largest page of the settlement lists.
pub const MAX_PAGE: u64 = 1_000;
/// Default page.
pub const DEFAULT_PAGE: u64 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/admin/settlements", post(run).get(list))
        .route("/api/v1/admin/settlements/{id}", get(one))
        .route("/api/v1/admin/settlements/{id}/details", get(details))
}

// ------------------------------------------------------------ read model

/// Every settlement batch the engine accepted, by id: rebuilt from the
/// engine at startup, then kept current from `SettlementRequested` events
/// on the publisher thread (so a batch is listed as soon as its command is
/// answered).
#[derive(Debug, Default, Clone)]
pub struct Batches {
    by_id: BTreeMap<u64, Settlement>,
}

impl Batches {
    pub fn from_engine(e: &Engine) -> Batches {
        Batches {
            by_id: e.settlements().map(|s| (s.id, *s)).collect(),
        }
    }

    /// The events this view applies (see `IdentityView::wants`).
    pub fn wants(ev: &Event) -> bool {
        matches!(ev, Event::SettlementRequested { .. })
    }

    pub fn apply(&mut self, events: &[Event]) {
        for ev in events.iter().filter(|e| Self::wants(e)) {
            if let Event::SettlementRequested {
                id,
                date,
                requested_by,
                ts_ms,
            } = ev
            {
                self.by_id.insert(
                    *id,
                    Settlement {
                        id: *id,
                        date: *date,
                        requested_by: *requested_by,
                        requested_ms: *ts_ms,
                    },
                );
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&Settlement> {
        self.by_id.get(&id)
    }

    pub fn by_date(&self, date: u32) -> Option<&Settlement> {
        self.by_id.values().find(|s| s.date == date)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Settlement> {
        self.by_id.values().rev()
    }
}

// ------------------------------------------------------------- Postgres

/// A `settlement_batches` row.
#[derive(Debug, Clone)]
struct PgBatch {
    status: String,
    total_trades: i64,
    total_volume: String,
    account_count: i64,
    difference_count: i64,
    error_message: Option<String>,
    started_ms: Option<i64>,
    completed_ms: Option<i64>,
    journal_seq: Option<i64>,
    reconciliation: Option<Value>,
}

const BATCHES_SQL: &str = "SELECT id, status, total_trades, trim_scale(total_volume)::text,
        account_count, difference_count, error_message,
        (extract(epoch FROM started_at) * 1000)::bigint,
        (extract(epoch FROM completed_at) * 1000)::bigint, journal_seq,
        CASE WHEN $2 THEN reconciliation_result::text END
    FROM settlement_batches WHERE id = ANY($1::bigint[])";

/// Amount columns of a detail, printed at the asset's precision.
const DETAIL_AMOUNTS: [&str; 13] = [
    "opening_balance",
    "bought_amount",
    "sold_amount",
    "trade_amount",
    "fee_amount",
    "net_amount",
    "fee_income_amount",
    "deposit_amount",
    "withdrawal_amount",
    "withdrawal_fee_amount",
    "adjustment_amount",
    "closing_balance",
    "difference",
];

fn details_sql() -> String {
    let cols: Vec<String> = DETAIL_AMOUNTS
        .iter()
        .map(|c| format!("round(d.{c}, s.scale)::text"))
        .collect();
    format!(
        "SELECT d.user_id, d.asset_id, {}
        FROM settlement_details d
        LEFT JOIN assets a ON a.id = d.asset_id
        CROSS JOIN LATERAL (SELECT COALESCE(a.decimals, 18)::int AS scale) s
        WHERE d.batch_id = $1 AND ($2::bigint IS NULL OR d.user_id = $2)
          AND ($3::bigint IS NULL OR d.asset_id = $3)
        ORDER BY d.user_id, d.asset_id LIMIT $4 OFFSET $5",
        cols.join(", ")
    )
}

const DETAILS_COUNT_SQL: &str = "SELECT count(*) FROM settlement_details
    WHERE batch_id = $1 AND ($2::bigint IS NULL OR user_id = $2)
      AND ($3::bigint IS NULL OR asset_id = $3)";

fn no_database() -> NativeError {
    NativeError::unavailable(
        "Settlement reports need the persister's database: start the exchange with DATABASE_URL set.",
    )
}

fn database_error(e: impl std::fmt::Display) -> NativeError {
    tracing::warn!(error = %e, "settlement report: Postgres unavailable");
    NativeError::unavailable(
        "Settlement reports are unavailable: the persister's database cannot be read now; retry later.",
    )
}

fn pool(st: &AppState) -> Result<&deadpool_postgres::Pool, NativeError> {
    st.history
        .as_ref()
        .map(|h| h.pool())
        .ok_or_else(no_database)
}

async fn pg_batches(
    st: &AppState,
    ids: &[u64],
    with_result: bool,
) -> Result<BTreeMap<u64, PgBatch>, NativeError> {
    let pool = pool(st)?;
    let c = pool.get().await.map_err(database_error)?;
    let ids: Vec<i64> = ids.iter().map(|i| *i as i64).collect();
    let rows = c
        .query(BATCHES_SQL, &[&ids, &with_result])
        .await
        .map_err(database_error)?;
    let mut out = BTreeMap::new();
    for r in rows {
        let get = || -> Result<(u64, PgBatch), tokio_postgres::Error> {
            let result: Option<String> = r.try_get(10)?;
            Ok((
                r.try_get::<_, i64>(0)? as u64,
                PgBatch {
                    status: r.try_get(1)?,
                    total_trades: r.try_get(2)?,
                    total_volume: r.try_get(3)?,
                    account_count: r.try_get(4)?,
                    difference_count: r.try_get(5)?,
                    error_message: r.try_get(6)?,
                    started_ms: r.try_get(7)?,
                    completed_ms: r.try_get(8)?,
                    journal_seq: r.try_get(9)?,
                    reconciliation: result.and_then(|t| serde_json::from_str(&t).ok()),
                },
            ))
        };
        let (id, b) = get().map_err(database_error)?;
        out.insert(id, b);
    }
    Ok(out)
}

// ------------------------------------------------------------ rendering

/// The engine's own account (user 0) is not a login.
const EXCHANGE_ACCOUNT: &str = "exchange";

fn username_in(ident: &crate::identity::IdentityView, id: UserId) -> Value {
    if id.0 == 0 {
        return json!(EXCHANGE_ACCOUNT);
    }
    ident.user(id).map_or(Value::Null, |u| json!(u.username))
}

fn username(st: &AppState, id: UserId) -> Value {
    username_in(&st.identity.read().expect("identity lock"), id)
}

fn batch_json(st: &AppState, s: &Settlement, pg: Option<&PgBatch>, with_result: bool) -> Value {
    let mut v = json!({
        "id": s.id,
        "date": format_date(s.date),
        "requested_by": s.requested_by.0,
        "requested_by_username": username(st, s.requested_by),
        "requested_at": s.requested_ms,
    });
    match pg {
        None => {
            // Journaled; the persister has not written it yet.
            v["status"] = json!("PENDING");
            for k in [
                "total_trades",
                "total_volume",
                "account_count",
                "difference_count",
                "error_message",
                "started_at",
                "completed_at",
                "journal_seq",
            ] {
                v[k] = Value::Null;
            }
            if with_result {
                v["reconciliation"] = Value::Null;
            }
        }
        Some(b) => {
            v["status"] = json!(b.status);
            v["total_trades"] = json!(b.total_trades);
            v["total_volume"] = json!(b.total_volume);
            v["account_count"] = json!(b.account_count);
            v["difference_count"] = json!(b.difference_count);
            v["error_message"] = json!(b.error_message);
            v["started_at"] = json!(b.started_ms);
            v["completed_at"] = json!(b.completed_ms);
            v["journal_seq"] = json!(b.journal_seq);
            if with_result {
                v["reconciliation"] = b.reconciliation.clone().unwrap_or(Value::Null);
            }
        }
    }
    v
}

// ------------------------------------------------------------- handlers

fn bad(msg: impl Into<String>) -> NativeError {
    NativeError::bad(codes::INVALID_PARAMETER, msg)
}

fn unknown_batch() -> NativeError {
    NativeError::new(
        StatusCode::NOT_FOUND,
        codes::UNKNOWN_SETTLEMENT,
        "Unknown settlement batch.",
    )
}

fn already_settled(date: u32, id: Option<u64>) -> NativeError {
    let by = id.map(|i| format!(" by batch {i}")).unwrap_or_default();
    NativeError::new(
        StatusCode::CONFLICT,
        codes::ALREADY_EXISTS,
        format!("{} is already settled{by}.", format_date(date)),
    )
}

fn not_over(date: u32) -> NativeError {
    bad(format!(
        "{} is not over yet: only a UTC day before today can be settled.",
        format_date(date)
    ))
}

/// A batch id from the path: 400 unless a number, 404 unless journaled.
fn batch_of(
    st: &AppState,
    path: Result<Path<String>, PathRejection>,
) -> Result<Settlement, NativeError> {
    let Path(raw) = path.map_err(|_| bad("Bad settlement batch id in the path."))?;
    if raw.is_empty() || raw.len() > 20 || !raw.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad("Settlement batch id must be a number."));
    }
    let id: u64 = raw
        .parse()
        .map_err(|_| bad("Settlement batch id is too large."))?;
    st.settlements
        .read()
        .expect("settlements lock")
        .get(id)
        .copied()
        .ok_or_else(unknown_batch)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunReq {
    date: String,
}

/// Journal the settlement of a UTC day that is over: 201, PENDING.
async fn run(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Res {
    let (caller, roles) = authenticate(&st, &headers)?;
    require(roles, "settlement:run")?;
    let r: RunReq = parse(body)?;
    let date = parse_date(&r.date).ok_or_else(|| {
        bad("date must be a UTC calendar day as YYYY-MM-DD (1970-01-01 or later).")
    })?;
    // Cheap early answers; the engine decides by the command's journal time.
    if date as u64 >= utc_day(now_ms()) {
        return Err(not_over(date));
    }
    if let Some(s) = st
        .settlements
        .read()
        .expect("settlements lock")
        .by_date(date)
    {
        return Err(already_settled(date, Some(s.id)));
    }
    let o = execute(
        &st,
        Command::RunSettlement {
            date,
            requested_by: caller,
        },
    )
    .await?;
    match o.events.first() {
        Some(Event::Rejected {
            reason: RejectReason::AlreadySettled,
        }) => return Err(already_settled(date, None)),
        Some(Event::Rejected {
            reason: RejectReason::SettlementDayNotOver,
        }) => return Err(not_over(date)),
        _ => check(&o)?,
    }
    let s = o
        .events
        .iter()
        .find_map(|e| match e {
            Event::SettlementRequested {
                id,
                date,
                requested_by,
                ts_ms,
            } => Some(Settlement {
                id: *id,
                date: *date,
                requested_by: *requested_by,
                requested_ms: *ts_ms,
            }),
            _ => None,
        })
        .ok_or_else(|| NativeError::unavailable("Settlement result missing."))?;
    let mut v = batch_json(&st, &s, None, false);
    v["journal_seq"] = json!(o.seq);
    reply(StatusCode::CREATED, v)
}

/// Batches newest first (`offset`, `limit`).
async fn list(State(st): State<AppState>, headers: HeaderMap, RawQuery(q): RawQuery) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "settlement:read")?;
    let p = query(q.as_deref(), &["offset", "limit"])?;
    let offset = u64_param(&p, "offset", 0..=u32::MAX as u64)?.unwrap_or(0) as usize;
    let limit = u64_param(&p, "limit", 1..=MAX_PAGE)?.unwrap_or(DEFAULT_PAGE) as usize;
    pool(&st)?;
    let (total, page): (usize, Vec<Settlement>) = {
        let b = st.settlements.read().expect("settlements lock");
        (
            b.len(),
            b.newest_first().skip(offset).take(limit).copied().collect(),
        )
    };
    let ids: Vec<u64> = page.iter().map(|s| s.id).collect();
    let pg = pg_batches(&st, &ids, false).await?;
    let items: Vec<Value> = page
        .iter()
        .map(|s| batch_json(&st, s, pg.get(&s.id), false))
        .collect();
    reply(
        StatusCode::OK,
        json!({ "total": total, "offset": offset, "limit": limit, "batches": items }),
    )
}

/// One batch with its reconciliation result.
async fn one(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "settlement:read")?;
    pool(&st)?;
    let s = batch_of(&st, path)?;
    let pg = pg_batches(&st, &[s.id], true).await?;
    reply(StatusCode::OK, batch_json(&st, &s, pg.get(&s.id), true))
}

/// The details of a batch, by (user, asset); `user` (username or id),
/// `asset` (symbol), `offset`, `limit`.
async fn details(
    State(st): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(q): RawQuery,
) -> Res {
    let (_, roles) = authenticate(&st, &headers)?;
    require(roles, "settlement:read")?;
    // Other users' balances (migrations/README.md "Roles and permissions").
    require(roles, "users:read")?;
    let p = query(q.as_deref(), &["user", "asset", "offset", "limit"])?;
    let offset = u64_param(&p, "offset", 0..=u32::MAX as u64)?.unwrap_or(0);
    let limit = u64_param(&p, "limit", 1..=MAX_PAGE)?.unwrap_or(DEFAULT_PAGE);
    let user = match p.get("user") {
        None => None,
        Some(u) => {
            let ident = st.identity.read().expect("identity lock");
            let found = if !u.is_empty() && u.len() <= 20 && u.bytes().all(|c| c.is_ascii_digit()) {
                u.parse().ok().and_then(|id| ident.user(UserId(id)))
            } else {
                ident.user_by_name(u)
            };
            Some(
                found
                    .map(|x| x.id)
                    .ok_or_else(|| rejected(RejectReason::UnknownUser))?,
            )
        }
    };
    let table = crate::wallet::asset_table(&st);
    let asset = match p.get("asset") {
        None => None,
        Some(s) => Some(crate::wallet::asset_by_symbol(&table, s)?.0),
    };
    let pool = pool(&st)?;
    let s = batch_of(&st, path)?;
    let c = pool.get().await.map_err(database_error)?;
    let args = (
        s.id as i64,
        user.map(|u| u.0 as i64),
        asset.map(|a| a.0 as i64),
    );
    let total: i64 = c
        .query_one(DETAILS_COUNT_SQL, &[&args.0, &args.1, &args.2])
        .await
        .map_err(database_error)?
        .get(0);
    let rows = c
        .query(
            &details_sql(),
            &[&args.0, &args.1, &args.2, &(limit as i64), &(offset as i64)],
        )
        .await
        .map_err(database_error)?;
    let status = pg_batches(&st, &[s.id], false)
        .await?
        .get(&s.id)
        .map_or("PENDING".to_string(), |b| b.status.clone());
    let ident = st.identity.read().expect("identity lock");
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        let user_id = r.get::<_, i64>(0) as u64;
        let asset_id = r.get::<_, i64>(1) as u32;
        let mut v = json!({
            "user_id": user_id,
            "username": username_in(&ident, UserId(user_id)),
            "asset": table.get(&engine::AssetId(asset_id)).map(|(sym, _)| sym.clone()),
        });
        for (i, col) in DETAIL_AMOUNTS.iter().enumerate() {
            v[*col] = json!(r.get::<_, String>(2 + i));
        }
        items.push(v);
    }
    drop(ident);
    reply(
        StatusCode::OK,
        json!({
            "batch_id": s.id,
            "date": format_date(s.date),
            "status": status,
            "total": total,
            "offset": offset,
            "limit": limit,
            "details": items,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_read_model_follows_the_events() {
        let mut b = Batches::default();
        assert!(b.is_empty());
        b.apply(&[
            Event::SettlementRequested {
                id: 1,
                date: 19_000,
                requested_by: UserId(3),
                ts_ms: 5,
            },
            Event::Rejected {
                reason: RejectReason::AlreadySettled,
            },
            Event::SettlementRequested {
                id: 2,
                date: 18_000,
                requested_by: UserId(3),
                ts_ms: 6,
            },
        ]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.by_date(18_000).map(|s| s.id), Some(2));
        assert_eq!(b.get(1).map(|s| s.date), Some(19_000));
        assert_eq!(
            b.newest_first().map(|s| s.id).collect::<Vec<_>>(),
            vec![2, 1]
        );
    }

    #[test]
    fn detail_query_lists_every_amount() {
        let sql = details_sql();
        for c in DETAIL_AMOUNTS {
            assert!(sql.contains(&format!("round(d.{c}, s.scale)")), "{c}");
        }
    }
}
