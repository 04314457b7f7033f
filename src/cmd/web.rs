//! `repayd token …` and `repayd attempts watch`.

use super::Ctx;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create an API token; it is printed once and stored hashed.
    Create {
        #[arg(long)]
        role: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Args)]
pub struct WatchArgs {}

pub async fn token(_cmd: &TokenCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub async fn watch(_args: &WatchArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
