//! The `mini-exchange` binary's library: command-line interface and the
//! operations it runs. `main.rs` is a thin wrapper over [`cli::main`].

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod binance;
pub mod bounded;
pub mod cli;
pub mod config;
pub mod history;
pub mod identity;
pub mod json_text;
pub mod kyc;
pub mod ledger;
pub mod listener;
pub mod market;
pub mod native;
pub mod notifications;
pub mod pipeline;
pub mod rest;
pub mod risk;
pub mod server;
pub mod settlement;
pub mod threads;
pub mod trade;
pub mod userstream;
pub mod wallet;
pub mod ws;
pub mod wsapi;
