//! repayd: collects loan installments by direct debit.
//!
//! See ARCHITECTURE.md for the map. In short: `domain` and `planner` are pure; `store`,
//! `engine`, `ledger`, `notify` and `import` do the I/O; `channel` talks to payment channels;
//! `app` wires them from settings; the binary (`main.rs`) is the CLI.

pub mod api;
pub mod app;
pub mod bench;
pub mod channel;
pub mod clock;
pub mod collections;
pub mod config;
pub mod daemon;
pub mod daily;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod import;
pub mod import_csv;
pub mod ledger;
pub mod notify;
pub mod pii;
pub mod planner;
pub mod policy;
pub mod providers;
pub mod recon;
pub mod report;
pub mod secret;
pub mod store;
pub mod verify;
pub mod web;
