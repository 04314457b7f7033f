//! repayd: collects loan installments by direct debit.
//!
//! The layers, each importing only those below it (ARCHITECTURE.md has the map, and
//! `tests/it/architecture.rs` enforces it):
//!
//! - `domain`: pure — money, schedules, policies, planning, pursuit decisions, the ledger's
//!   entries, notices, import formats, the channel and notice-sink ports.
//! - `store`: every SQL statement, grouped by table family.
//! - `adapters`: channels (HTTP, simulator) and notice providers, on the domain's ports.
//! - `engine`: the run — claim, pursue, apply, resolve, refresh, plan, dispatch.
//! - `recon`: statements, settlement, refunds, cases.
//! - `ops`: what a person does, once, with its audit row.
//! - `web`: the HTTP surface — API, dashboard, webhooks.
//! - `app`: configuration, wiring, the daemon, the demo and the benchmarks.

pub mod adapters;
pub mod app;
pub mod domain;
pub mod engine;
pub mod ops;
pub mod recon;
pub mod store;
pub mod web;
