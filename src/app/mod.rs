//! The top: configuration, wiring settings into an engine with its adapters, the daemon
//! (`repayd serve`), the demo and the benchmarks.

pub mod bench;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod policies;
pub mod simulate;
pub mod templates;
pub mod wiring;

pub use wiring::*;
