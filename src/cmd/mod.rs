//! Subcommands kept in their own files; `main.rs` parses and dispatches.

pub mod audit;
pub mod loans;
pub mod notices;
pub mod plan;
pub mod recon;
pub mod simulate;
pub mod web;

/// What every subcommand here gets from the global flags.
pub struct Ctx {
    pub settings: repayd::app::Settings,
    pub json: bool,
}
