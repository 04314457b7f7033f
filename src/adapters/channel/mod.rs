//! Channel adapters: repayd's signed JSON protocol (`protocol`) and its client (`http`),
//! and the simulator (`sim`) with its HTTP server (`server`).

pub mod http;
pub mod protocol;
pub mod server;
pub mod sim;

#[cfg(test)]
mod wire_tests;

pub use http::{HttpChannel, HttpStats};
pub use protocol::{Callback, SignatureError};
pub use server::{serve_simulator, Latency, ServerSpec};
pub use sim::{Scenario, SimDebit, SimError, Simulator};
