//! The integration tests, one binary (as zero-to-production does): `tests/common` is
//! compiled and linked once. Each module is one area; most tests run on SQLite and
//! PostgreSQL (`both_backends!`), each on a database of its own that is dropped when the test
//! ends, pass or fail.

#[macro_use]
mod common;

mod api;
mod architecture;
mod bench;
mod browser;
mod cli;
mod crash;
mod daemon;
mod demo;
mod export;
mod hardening;
mod import;
mod late_answer;
mod layers;
mod migrations;
mod notes;
mod notices;
mod recon;
mod refunds;
mod scenarios;
mod simulate;
mod verify;
