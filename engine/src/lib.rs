//! The mini-exchange matching engine: every order book, balance, order and
//! user in memory, changed only by sequenced commands through
//! [`Engine::apply`], which is deterministic (no clock, no randomness, no
//! I/O) and reports everything it did as [`Event`]s. See ARCHITECTURE.md.
//!
//! Modules: `types` (integer newtypes), `decimal` (exact string <-> units at
//! the edges), `model` (config and state records), `command`/`event` (the
//! interface), `reject` (stable reject reasons), `book` (price levels and
//! the order slab), `engine` (the rules), `risk` (risk rules, their
//! evaluation and risk events), `snapshot` (canonical state encoding and
//! `state_hash`), `invariants` (self-checks), `reference` (a naive model
//! used to test the fast one), `settlement` (which UTC days may be
//! settled, and day numbers <-> dates), `templates` (edited notification
//! templates).

pub mod book;
pub mod command;
pub mod decimal;
mod engine;
pub mod event;
pub mod fxhash;
mod invariants;
pub mod model;
pub mod reference;
pub mod reject;
pub mod risk;
pub mod settlement;
pub mod snapshot;
pub mod templates;
pub mod types;

pub use command::{
    valid_webhook_shape, CancelReplaceMode, Command, NewOrder, OrderRef, NOTIFY_MAX_READ_IDS,
    NOTIFY_WEBHOOK_MAX_LEN,
};
pub use engine::{fires_upward, stop_fires, valid_username, Engine, MemoryReport, PairState};
pub use event::{AcceptedOrder, BalanceCause, BalanceChange, Event, Trade};
pub use model::*;
pub use reject::RejectReason;
pub use risk::{
    RiskAction, RiskEvent, RiskEventStatus, RiskLevel, RiskLimit, RiskParams, RiskRule,
    RiskRuleChanges, RiskRuleType,
};
pub use settlement::Settlement;
pub use templates::{
    valid_template_name, valid_template_text, NotificationTemplate, NOTIFY_TEMPLATES_MAX,
    NOTIFY_TEMPLATE_CONTENT_MAX_LEN, NOTIFY_TEMPLATE_NAME_MAX_LEN, NOTIFY_TEMPLATE_SUBJECT_MAX_LEN,
};
pub use types::*;
