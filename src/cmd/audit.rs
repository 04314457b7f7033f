//! `repayd verify` and `repayd report …`.

use super::Ctx;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {}

#[derive(Subcommand)]
pub enum ReportCmd {
    /// The day's collections, success rates, buckets and recon cases as CSV and a chart.
    Daily {
        #[arg(long)]
        date: String,
        /// Folder the CSV and chart are written to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

pub async fn verify(_args: &VerifyArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}

pub async fn report(_cmd: &ReportCmd, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not built yet")
}
