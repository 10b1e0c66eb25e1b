//! Binance Spot v3 signed endpoints (TRADE / USER_DATA): order entry,
//! queries, cancels, account. Requests are authenticated by API key +
//! signature, converted exactly into engine commands, executed through the
//! pipeline (answered only once durable) and rendered with Binance's fields.

use axum::Router;

use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
