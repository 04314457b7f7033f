//! `repayd verify` and `repayd report …`.

use super::Ctx;
use anyhow::Context;
use clap::{Args, Subcommand};
use repayd::store::verify::{verify as run_verify, VerifyOptions};
use repayd::store::Db;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct VerifyArgs {
    /// Findings shown (all are counted).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

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

/// Exit 0 with a one-line summary when clean; 1 with every finding (up to `--limit`) on drift.
pub async fn verify(args: &VerifyArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let db = Db::open(&ctx.settings.database_url).await?;
    let opts = VerifyOptions {
        limit: args.limit,
        progress: std::io::stderr().is_terminal(),
    };
    let report = run_verify(&db, &opts)
        .await
        .with_context(|| format!("verifying {}", db.display_url))?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for f in &report.findings {
            println!("{f}");
        }
        println!("{}", report.summary());
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Write the day's CSV and chart and say where they are.
pub async fn report(cmd: &ReportCmd, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let ReportCmd::Daily { date, out } = cmd;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .with_context(|| format!("--date {date}: expected YYYY-MM-DD"))?;
    let policies = repayd::app::load_policies(&ctx.settings.policies_dir)?;
    let db = Db::open(&ctx.settings.database_url).await?;
    let files = repayd::ops::daily::write_daily(&db, &policies, day, out).await?;
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(&files)?);
    } else {
        println!(
            "daily report {day}: {} figures\n  {}\n  {}",
            files.rows,
            files.csv.display(),
            files.svg.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
