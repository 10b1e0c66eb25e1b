//! Building blocks of the Binance Spot v3 compatible trading API: errors
//! with Binance's codes and verbatim messages, request parameter decoding,
//! request signatures and timing, rate limits, and Binance's enums. Pure
//! functions and structs with no HTTP server and no engine dependency; the
//! REST and WebSocket gateways compose them.

pub mod enums;
pub mod errors;
pub mod params;
pub mod ratelimit;
pub mod sign;
pub mod ws_frame;

pub use errors::BinanceError;
pub use params::Params;
