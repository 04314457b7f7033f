//! `repayd recon …`, `repayd refund`, `repayd write-off`.

use super::Ctx;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ReconCmd {
    /// Import a channel's statement file and reconcile it against our attempts.
    Import {
        #[arg(long)]
        channel: String,
        file: PathBuf,
    },
    /// Matches and open cases of a day.
    Report {
        #[arg(long)]
        date: String,
    },
}

#[derive(Args)]
pub struct RefundArgs {
    /// The attempt to refund (its id).
    pub attempt: i64,
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub reason: String,
}

#[derive(Args)]
pub struct WriteOffArgs {
    pub loan: String,
    #[arg(long)]
    pub reason: String,
}

pub async fn recon(_cmd: &ReconCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub async fn refund(_args: &RefundArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub async fn write_off(_args: &WriteOffArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
