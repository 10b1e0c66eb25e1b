//! Native API under `/api/v1`: identity, API keys, wallet, KYC and
//! administration (API.md "Native API"). JSON in, JSON out; JWT bearer auth
//! unless noted; every admin route checks a `resource:action` permission.

use axum::Router;

use crate::server::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
