//! `repayd simulate`: parse the flags, run the simulation, print the summary table, and
//! publish the report when asked.

use super::Ctx;
use anyhow::Context;
use chrono::NaiveDate;
use clap::Args;
use repayd::app::simulate::{self, files, Portfolio, SimulateOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct SimulateArgs {
    /// Loans file (JSON, JSON Lines or CSV, as `loans import` reads it).
    #[arg(long, conflicts_with = "generate", required_unless_present_any = ["generate", "print_model"])]
    portfolio: Option<PathBuf>,
    /// Generate N loans like the demo's sample instead of reading a file.
    #[arg(long, value_name = "N")]
    generate: Option<usize>,
    /// Simulated days.
    #[arg(long, default_value_t = 90, allow_negative_numbers = true)]
    days: i64,
    /// A policy file to try; repeat it to compare policies side by side.
    #[arg(
        long = "policy",
        value_name = "FILE",
        required_unless_present = "print_model"
    )]
    policies: Vec<PathBuf>,
    /// Borrower cash-flow model (TOML); `--print-model` shows the default with every field.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seed of every random draw: the same inputs and seed give byte-identical CSV files.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First simulated day, YYYY-MM-DD (default: 2027-01-01 for --generate, five days
    /// before the first due date for a file).
    #[arg(long)]
    start: Option<String>,
    /// Folder for the CSV files, figures.json and report.html.
    #[arg(long, default_value = "simulation")]
    out: PathBuf,
    /// Replace a report already in --out.
    #[arg(long)]
    force: bool,
    /// Print the default cash-flow model and exit.
    #[arg(long)]
    print_model: bool,
    /// Also store the report in the database (--database) for the dashboard's /simulations
    /// page and GET /api/v1/simulations.
    #[arg(long)]
    publish: bool,
}

pub async fn simulate(a: &SimulateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if a.print_model {
        print!("{}", repayd::domain::simulation::model::DEFAULT_MODEL);
        return Ok(ExitCode::SUCCESS);
    }
    let start = match &a.start {
        Some(s) => Some(
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .with_context(|| format!("--start `{s}` is not a date like 2027-01-01"))?,
        ),
        None => None,
    };
    let opts = SimulateOptions {
        portfolio: match (&a.portfolio, a.generate) {
            (Some(p), _) => Portfolio::File(p.clone()),
            (None, n) => Portfolio::Generate(n.unwrap_or(0)),
        },
        days: a.days,
        policies: a.policies.clone(),
        model: a.model.clone(),
        seed: a.seed,
        start,
        out: a.out.clone(),
        force: a.force,
        progress: !ctx.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let began = std::time::Instant::now();
    let plan = std::sync::Arc::new(simulate::prepare(&opts)?);
    let figures = simulate::run(&opts, plan.clone()).await?;
    let secs = began.elapsed().as_secs_f64();
    if ctx.json {
        println!("{}", files::figures_json(&figures));
    } else {
        println!("{}\n", files::title(&plan));
        print!("{}", files::terminal_table(&figures));
        println!(
            "\nwrote {} ({}, figures.json, {}) in {secs:.1} s",
            a.out.display(),
            files::CSV_FILES.join(", "),
            files::REPORT
        );
    }
    if a.publish {
        publish(&plan, &figures, &a.out, ctx).await?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn publish(
    plan: &simulate::Plan,
    figures: &[repayd::domain::simulation::figures::Figures],
    out: &std::path::Path,
    ctx: &Ctx,
) -> anyhow::Result<()> {
    let db = repayd::store::Db::open(&ctx.settings.database_url).await?;
    let html = std::fs::read_to_string(out.join(files::REPORT))
        .with_context(|| format!("reading {}", out.join(files::REPORT).display()))?;
    let who = repayd::domain::actor::Actor::cli();
    let id = repayd::ops::simulation::publish(
        &db,
        &who,
        &files::title(plan),
        &files::figures_json(figures),
        &html,
        chrono::Utc::now(),
    )
    .await?;
    if !ctx.json {
        println!(
            "published as simulation {id} in {} (/simulations/{id})",
            db.display_url
        );
    }
    Ok(())
}
