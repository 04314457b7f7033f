//! `repayd simulate`: run collection policies over the same portfolio in virtual time, each on
//! its own fresh embedded database, with the production engine, planner and simulated
//! channels, while the borrower cash-flow model (`domain::simulation`) moves their money.
//! Writes a CSV per table, a self-contained HTML report and a terminal summary.

pub mod files;
pub mod world;

use crate::app::demo::generate;
use crate::app::AppError;
use crate::domain::import::LoanInput;
use crate::domain::policy::{Policy, PolicyErrors, PolicySet};
use crate::domain::simulation::figures::Figures;
use crate::domain::simulation::model::{Model, ModelError};
use chrono::{Days, NaiveDate};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Where the loans come from.
#[derive(Debug, Clone)]
pub enum Portfolio {
    File(PathBuf),
    /// N loans like the demo's sample (3 zones and currencies, 3–6 monthly installments).
    Generate(usize),
}

#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub portfolio: Portfolio,
    pub days: i64,
    pub policies: Vec<PathBuf>,
    pub model: Option<PathBuf>,
    pub seed: u64,
    /// First simulated day; defaults to 2027-01-01 for a generated book and to five days
    /// before the first due date for a file.
    pub start: Option<NaiveDate>,
    pub out: PathBuf,
    pub force: bool,
    pub progress: bool,
}

#[derive(Debug, Error)]
pub enum SimulateError {
    #[error("{0}")]
    Model(#[from] ModelError),
    #[error("{0}")]
    Policy(#[from] PolicyErrors),
    /// A flag that does not make sense; names it.
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    #[error("{0} already holds a report; pass --force to replace it")]
    OutExists(String),
    #[error(transparent)]
    App(#[from] AppError),
}

fn flag(flag: &'static str, message: impl Into<String>) -> SimulateError {
    SimulateError::Flag {
        flag,
        message: message.into(),
    }
}

/// The most days one simulation covers (about ten years).
pub const MAX_DAYS: i64 = 3660;
/// The most loans `--generate` makes.
pub const MAX_GENERATED: usize = 5_000_000;

/// Everything a run needs, checked: the model, the policies, the loans and the window.
pub struct Plan {
    pub model: Model,
    pub policies: Vec<Policy>,
    pub loans: Arc<Vec<LoanInput>>,
    pub start: NaiveDate,
    pub days: u32,
    pub seed: u64,
}

/// Check the options and read every input; nothing runs until all of it is sound.
pub fn prepare(opts: &SimulateOptions) -> Result<Plan, SimulateError> {
    if opts.days <= 0 || opts.days > MAX_DAYS {
        return Err(flag(
            "--days",
            format!("{} is not from 1 to {MAX_DAYS}", opts.days),
        ));
    }
    if opts.policies.is_empty() {
        return Err(flag("--policy", "give at least one policy file"));
    }
    let model = match &opts.model {
        Some(path) => {
            let src = std::fs::read_to_string(path).map_err(|e| AppError::io(path, e))?;
            Model::parse(&src, &path.display().to_string())?
        }
        None => Model::default_model(),
    };
    let policies = read_policies(&opts.policies)?;
    let loans = read_portfolio(opts, &policies)?;
    let start = opts
        .start
        .unwrap_or_else(|| default_start(&opts.portfolio, &loans));
    refuse_existing_report(&opts.out, opts.force)?;
    Ok(Plan {
        model,
        policies,
        loans: Arc::new(loans),
        start,
        days: opts.days as u32,
        seed: opts.seed,
    })
}

fn read_policies(paths: &[PathBuf]) -> Result<Vec<Policy>, SimulateError> {
    let mut out: Vec<Policy> = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        match crate::app::policies::load_policy_file(p) {
            Ok(policy) if out.iter().any(|o| o.name == policy.name) => {
                return Err(flag(
                    "--policy",
                    format!("{}: policy `{}` given twice", p.display(), policy.name),
                ))
            }
            Ok(policy) => out.push(policy),
            Err(e) => problems.extend(e.0),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(PolicyErrors(problems).into())
    }
}

/// The loans, each later put under the policy being tried. A file is read with the import's
/// located errors; its policy names may be any loaded or tried policy.
fn read_portfolio(
    opts: &SimulateOptions,
    tried: &[Policy],
) -> Result<Vec<LoanInput>, SimulateError> {
    match &opts.portfolio {
        Portfolio::Generate(n) if *n == 0 || *n > MAX_GENERATED => Err(flag(
            "--generate",
            format!("{n} is not from 1 to {MAX_GENERATED}"),
        )),
        Portfolio::Generate(n) => {
            let start = opts.start.unwrap_or_else(sample_start);
            let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
            Ok((0..*n)
                .map(|i| generate::demo_loan(i, &mut rng, start).loan)
                .collect())
        }
        Portfolio::File(path) => {
            let mut known = PolicySet::builtin();
            for p in tried {
                known.insert(p.clone());
            }
            let channels: Vec<String> = crate::domain::channel::builtin_channels()
                .into_iter()
                .map(|c| c.name)
                .collect();
            Ok(crate::ops::import::read_file(path, &known, &channels).map_err(AppError::from)?)
        }
    }
}

fn sample_start() -> NaiveDate {
    NaiveDate::parse_from_str(crate::app::demo::SAMPLE_START, "%Y-%m-%d").expect("constant")
}

fn default_start(p: &Portfolio, loans: &[LoanInput]) -> NaiveDate {
    let first_due = loans
        .iter()
        .flat_map(|l| l.installments.iter().map(|i| i.due_date))
        .min();
    match (p, first_due) {
        (Portfolio::File(_), Some(d)) => d - Days::new(5),
        _ => sample_start(),
    }
}

fn refuse_existing_report(out: &Path, force: bool) -> Result<(), SimulateError> {
    let report = out.join(files::REPORT);
    if report.exists() && !force {
        return Err(SimulateError::OutExists(out.display().to_string()));
    }
    Ok(())
}

/// Run every policy (concurrently, each on its own database) and write the outputs.
pub async fn simulate(opts: &SimulateOptions) -> Result<Vec<Figures>, SimulateError> {
    run(opts, Arc::new(prepare(opts)?)).await
}

/// Run a prepared plan with the options' output folder and progress.
pub async fn run(opts: &SimulateOptions, plan: Arc<Plan>) -> Result<Vec<Figures>, SimulateError> {
    std::fs::create_dir_all(&opts.out).map_err(|e| AppError::io(&opts.out, e))?;
    let work = tempfile::Builder::new()
        .prefix("repayd-simulate-")
        .tempdir()
        .map_err(|e| AppError::io(Path::new("temporary folder"), e))?;
    let bars = MultiProgress::new();
    if !opts.progress {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut tasks = Vec::new();
    for (i, policy) in plan.policies.iter().enumerate() {
        let (plan, policy) = (plan.clone(), policy.clone());
        let db = work.path().join(format!("{i}.db"));
        let bar = bars.add(progress_bar(&policy.name, plan.days));
        // A thread of its own per policy, driving the shared runtime: the policies' runs
        // use both cores (the engine's futures are not all `Send`, so no `tokio::spawn`).
        let rt = tokio::runtime::Handle::current();
        tasks.push(tokio::task::spawn_blocking(move || {
            rt.block_on(world::run_policy(&plan, &policy, &db, &bar))
        }));
    }
    let mut figures = Vec::new();
    for t in tasks {
        let f = t
            .await
            .map_err(|e| AppError::Config(format!("a simulation task failed: {e}")))??;
        figures.push(f);
    }
    files::write_all(&opts.out, &plan, &figures)?;
    Ok(figures)
}

fn progress_bar(policy: &str, days: u32) -> ProgressBar {
    let bar = ProgressBar::new(u64::from(days));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} day {pos}/{len} [{bar:30}] {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(policy.to_string());
    bar
}
