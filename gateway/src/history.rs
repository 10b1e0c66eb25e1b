//! Order and trade history beyond the in-memory read model, read from the
//! persister's PostgreSQL tables when `DATABASE_URL` is set.
//!
//! The in-memory history (accounts.rs) keeps a bounded number of closed
//! orders and trades per user. Once a user's history outgrew it, `allOrders`
//! and `myTrades` also ask Postgres for the page they need and merge it with
//! memory by id (memory wins: it is never behind). Postgres is a read model
//! that may lag the journal, but only for recent items, which memory holds.
//! A Postgres failure answers from memory alone and is logged; trading never
//! waits on it.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Filters of a history page (Binance `fromId`/`orderId`, `startTime`,
/// `endTime`, `limit`).
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub from_id: Option<u64>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: usize,
}

/// An `orders` row, amounts as minimal decimal text.
#[derive(Debug, Clone)]
pub struct PgOrder {
    pub id: u64,
    pub client_id: Option<String>,
    pub kind: String,
    pub side: String,
    pub tif: Option<String>,
    pub amount: String,
    pub price: Option<String>,
    pub stop_price: Option<String>,
    pub quote_qty: Option<String>,
    pub filled: String,
    pub cum_quote: String,
    pub status: String,
    pub stp: String,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One side of a `trades` row: the user's fill.
#[derive(Debug, Clone)]
pub struct PgTrade {
    pub id: u64,
    pub order: u64,
    pub price: String,
    pub qty: String,
    pub quote: String,
    pub commission: String,
    pub commission_asset: u64,
    pub time_ms: u64,
    pub is_buyer: bool,
    pub is_maker: bool,
}

/// A klines page (pair, interval, `start <= open time <= end`), the first
/// `limit` ascending or the last `limit` (returned newest first).
#[derive(Debug, Clone)]
pub struct KlinePage {
    pub pair: u64,
    pub interval: &'static str,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub ascending: bool,
    pub limit: usize,
    /// Decimals the amounts are printed with (Binance: the assets').
    pub base_dec: u32,
    pub quote_dec: u32,
}

/// A `klines` row, decimals printed at the pair's scales.
#[derive(Debug, Clone)]
pub struct PgKline {
    pub open_ms: u64,
    pub open: String,
    pub high: String,
    pub low: String,
    pub close: String,
    pub volume: String,
    pub quote_volume: String,
    pub trades: u64,
    pub taker_buy_volume: String,
    pub taker_buy_quote_volume: String,
}

fn kline_sql(ascending: bool) -> String {
    let dir = if ascending { "ASC" } else { "DESC" };
    format!(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint,
            round(open_price, $6)::text, round(high_price, $6)::text,
            round(low_price, $6)::text, round(close_price, $6)::text,
            round(volume, $7)::text, round(quote_volume, $6)::text, trades_count,
            round(taker_buy_volume, $7)::text, round(taker_buy_quote_volume, $6)::text
        FROM klines
        WHERE trading_pair_id = $1 AND interval = $2
          AND ($3::float8 IS NULL OR open_time >= to_timestamp($3::float8 / 1000))
          AND ($4::float8 IS NULL OR open_time <= to_timestamp($4::float8 / 1000))
        ORDER BY open_time {dir} LIMIT $5"
    )
}

/// A small connection pool on the persister's database.
pub struct PgHistory {
    pool: Pool,
}

impl std::fmt::Debug for PgHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHistory").finish_non_exhaustive()
    }
}

const ORDER_COLUMNS: &str = "id, client_order_id, type, side, time_in_force,
    trim_scale(amount)::text, trim_scale(price)::text, trim_scale(stop_price)::text,
    trim_scale(quote_order_qty)::text, trim_scale(filled_amount)::text,
    trim_scale(cumulative_quote_qty)::text, status, self_trade_prevention_mode,
    (extract(epoch FROM created_at) * 1000)::bigint, (extract(epoch FROM updated_at) * 1000)::bigint";

const TIME_FILTER: &str = "($4::float8 IS NULL OR created_at >= to_timestamp($4::float8 / 1000))
    AND ($5::float8 IS NULL OR created_at <= to_timestamp($5::float8 / 1000))";

fn order_sql(ascending: bool) -> String {
    let dir = if ascending { "ASC" } else { "DESC" };
    format!(
        "SELECT {ORDER_COLUMNS} FROM orders
        WHERE user_id = $1 AND trading_pair_id = $2 AND ($3::bigint IS NULL OR id >= $3)
          AND {TIME_FILTER}
        ORDER BY id {dir} LIMIT $6"
    )
}

fn trade_sql(ascending: bool) -> String {
    let dir = if ascending { "ASC" } else { "DESC" };
    let side = |who: &str, order: &str, fee: &str, maker: &str| {
        format!(
            "SELECT id, {order}, trim_scale(price)::text, trim_scale(amount)::text,
                trim_scale(quote_amount)::text, trim_scale({fee})::text, {fee}_asset_id,
                (extract(epoch FROM created_at) * 1000)::bigint, {is_buyer}, maker_side = '{maker}'
            FROM trades
            WHERE {who}_user_id = $1 AND trading_pair_id = $2 AND ($3::bigint IS NULL OR id >= $3)
              AND {TIME_FILTER} AND ($7::bigint IS NULL OR {order} = $7)",
            is_buyer = who == "buyer",
        )
    };
    format!(
        "{} UNION ALL {} ORDER BY 1 {dir} LIMIT $6",
        side("buyer", "buy_order_id", "buyer_fee", "BUY"),
        side("seller", "sell_order_id", "seller_fee", "SELL"),
    )
}

fn ms_param(v: Option<u64>) -> Option<f64> {
    v.map(|ms| ms as f64)
}

fn id_param(v: Option<u64>) -> Option<i64> {
    v.map(|id| i64::try_from(id).unwrap_or(i64::MAX))
}

impl PgHistory {
    /// The pool, for other reports on the persister's database
    /// (settlement.rs).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A pool of at most `max_size` connections to `url` (connections are
    /// opened on first use, so a database that is down does not stop
    /// startup).
    pub fn new(url: &str, max_size: usize) -> anyhow::Result<PgHistory> {
        let cfg: tokio_postgres::Config = url.parse()?;
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max_size.max(1))
            .wait_timeout(Some(std::time::Duration::from_secs(2)))
            .create_timeout(Some(std::time::Duration::from_secs(2)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()?;
        Ok(PgHistory { pool })
    }

    /// (most connections, open connections) of the pool.
    pub fn pool_sizes(&self) -> (usize, usize) {
        let st = self.pool.status();
        (st.max_size, st.size)
    }

    /// A user's orders on a pair: from `from_id` upwards (ascending), else
    /// the newest; at most `limit`.
    pub async fn orders(&self, user: u64, pair: u64, p: Page) -> anyhow::Result<Vec<PgOrder>> {
        let c = self.pool.get().await?;
        let stmt = c.prepare_cached(&order_sql(p.from_id.is_some())).await?;
        let rows = c
            .query(
                &stmt,
                &[
                    &(user as i64),
                    &(pair as i64),
                    &id_param(p.from_id),
                    &ms_param(p.start_ms),
                    &ms_param(p.end_ms),
                    &(p.limit as i64),
                ],
            )
            .await?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok(PgOrder {
                    id: u(r.try_get(0)?),
                    client_id: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    side: r.try_get(3)?,
                    tif: r.try_get(4)?,
                    amount: r.try_get(5)?,
                    price: r.try_get(6)?,
                    stop_price: r.try_get(7)?,
                    quote_qty: r.try_get(8)?,
                    filled: r.try_get(9)?,
                    cum_quote: r.try_get(10)?,
                    status: r.try_get(11)?,
                    stp: r.try_get(12)?,
                    created_ms: u(r.try_get(13)?),
                    updated_ms: u(r.try_get(14)?),
                })
            })
            .collect()
    }

    /// Klines of one pair and interval (see [`KlinePage`]).
    pub async fn klines(&self, p: &KlinePage) -> anyhow::Result<Vec<PgKline>> {
        let c = self.pool.get().await?;
        let stmt = c.prepare_cached(&kline_sql(p.ascending)).await?;
        let scale = |d: u32| i32::try_from(d.min(18)).unwrap_or(18);
        let rows = c
            .query(
                &stmt,
                &[
                    &(p.pair as i64),
                    &p.interval,
                    &ms_param(p.start_ms),
                    &ms_param(p.end_ms),
                    &(p.limit as i64),
                    &scale(p.quote_dec),
                    &scale(p.base_dec),
                ],
            )
            .await?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok(PgKline {
                    open_ms: u(r.try_get(0)?),
                    open: r.try_get(1)?,
                    high: r.try_get(2)?,
                    low: r.try_get(3)?,
                    close: r.try_get(4)?,
                    volume: r.try_get(5)?,
                    quote_volume: r.try_get(6)?,
                    trades: u(r.try_get(7)?),
                    taker_buy_volume: r.try_get(8)?,
                    taker_buy_quote_volume: r.try_get(9)?,
                })
            })
            .collect()
    }

    /// A user's fills on a pair (optionally of one order), paged like
    /// [`PgHistory::orders`].
    pub async fn trades(
        &self,
        user: u64,
        pair: u64,
        order: Option<u64>,
        p: Page,
    ) -> anyhow::Result<Vec<PgTrade>> {
        let c = self.pool.get().await?;
        let stmt = c.prepare_cached(&trade_sql(p.from_id.is_some())).await?;
        let rows = c
            .query(
                &stmt,
                &[
                    &(user as i64),
                    &(pair as i64),
                    &id_param(p.from_id),
                    &ms_param(p.start_ms),
                    &ms_param(p.end_ms),
                    &(p.limit as i64),
                    &id_param(order),
                ],
            )
            .await?;
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        rows.iter()
            .map(|r| {
                Ok(PgTrade {
                    id: u(r.try_get(0)?),
                    order: u(r.try_get(1)?),
                    price: r.try_get(2)?,
                    qty: r.try_get(3)?,
                    quote: r.try_get(4)?,
                    commission: r.try_get(5)?,
                    commission_asset: u(r.try_get(6)?),
                    time_ms: u(r.try_get(7)?),
                    is_buyer: r.try_get(8)?,
                    is_maker: r.try_get(9)?,
                })
            })
            .collect()
    }
}
