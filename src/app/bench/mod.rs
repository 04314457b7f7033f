//! `repayd bench run`: generate a portfolio on the chosen database and time import, planning
//! and a due-date run against the zero-latency simulator, with two baselines measured in the
//! same run so figures can be compared across noisy machines: a raw multi-row insert (the
//! ceiling) and the same due-date work done by a naive one-job-at-a-time worker
//! ([`naive`], on a sibling database of the same server). `run_scale` repeats it at several
//! sizes; `bench net` ([`net`]) runs the engine against simulator servers over HTTP.

mod db;
pub mod naive;
pub mod net;
mod portfolio;
mod rss;

pub use net::{
    net_engine, run_net_bench, spread, start_servers, NetBenchOptions, NetBenchReport,
    NetChannelReport, NetServer, Probe, NET_CHANNELS,
};
pub use portfolio::BENCH_POLICY;
pub use rss::peak_rss_mb;

use crate::app::AppError;
use crate::engine::plan;
use crate::store::{backend_of, Db};
use portfolio::{bench_engine, bench_loan, due_morning, eve, first_due, import_loans};
use rss::reset_peak_rss;
use serde::Serialize;
use std::time::Instant;

/// The naive baseline runs on at most this many installments, so it stays fast.
pub const NAIVE_MAX_INSTALLMENTS: usize = 5_000;
/// The sizes `--scale` runs at.
pub const SCALE_SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub database_url: String,
    pub installments: usize,
    pub per_loan: usize,
    pub repeat: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchFigures {
    pub baseline_rows_per_sec: f64,
    pub import_installments_per_sec: f64,
    pub plan_installments_per_sec: f64,
    pub run_attempts: u64,
    pub run_attempts_per_sec: f64,
    pub run_seconds: f64,
    /// Attempts per installment due on the run's morning (one per loan).
    pub run_attempts_per_due_installment: f64,
    /// `repayd verify` over the database the run left.
    pub verify_seconds: f64,
    pub verify_findings: u64,
    /// Peak RSS of import, planning and the run (reset when the run starts, read before
    /// verify resets it again).
    pub run_peak_rss_mb: f64,
    /// Resident memory when verify started, and its peak while verify ran.
    pub rss_before_verify_mb: f64,
    pub verify_peak_rss_mb: f64,
    /// The naive worker's portfolio (installments), at most [`NAIVE_MAX_INSTALLMENTS`].
    pub naive_installments: u64,
    pub naive_attempts: u64,
    pub naive_seconds: f64,
    pub naive_attempts_per_sec: f64,
    pub naive_attempts_per_due_installment: f64,
    /// `verify` findings on the naive worker's database.
    pub naive_verify_findings: u64,
    /// The engine's due-date attempts/s as a multiple of the naive worker's.
    pub engine_vs_naive: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub backend: String,
    pub installments: usize,
    pub loans: usize,
    pub runs: Vec<BenchFigures>,
    pub median: BenchFigures,
    pub peak_rss_mb: f64,
}

/// One size of `bench run --scale`.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleRow {
    pub installments: usize,
    pub loans: usize,
    pub attempts: u64,
    pub attempts_per_sec: f64,
    /// Wall time of the due-date run per attempt, in microseconds.
    pub us_per_attempt: f64,
    /// Peak RSS of this size's import, planning and run (reset before it started).
    pub peak_rss_mb: f64,
    pub naive_attempts_per_sec: f64,
    pub engine_vs_naive: f64,
    pub verify_findings: u64,
    pub naive_verify_findings: u64,
    /// The medians of this size, all figures.
    pub figures: BenchFigures,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub backend: String,
    pub per_loan: usize,
    pub sizes: Vec<ScaleRow>,
}

fn per_sec(n: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        n / seconds
    } else {
        0.0
    }
}

/// Import, plan, the advance notices' eve (untimed) and the timed due-date run on a fresh
/// database, then verify it.
async fn engine_run(
    opts: &BenchOptions,
    progress: &dyn Fn(&str),
) -> Result<BenchFigures, AppError> {
    db::fresh_database(&opts.database_url).await?;
    let db = Db::open(&opts.database_url).await?;
    let mut figures = BenchFigures {
        baseline_rows_per_sec: db::baseline(&db, opts.installments.min(200_000)).await?,
        ..Default::default()
    };
    let loans = opts.installments.div_ceil(opts.per_loan);
    let installments = (loans * opts.per_loan) as f64;
    let engine = bench_engine(db, loans)?;
    progress(&format!(
        "importing {loans} loans ({} installments)",
        loans * opts.per_loan
    ));
    let t = Instant::now();
    let make = |i| bench_loan(i, opts.per_loan, first_due());
    import_loans(&engine, loans, &make, progress).await?;
    figures.import_installments_per_sec = per_sec(installments, t.elapsed().as_secs_f64());
    progress("planning");
    let t = Instant::now();
    plan::plan_new_loans(&engine, None).await?;
    figures.plan_installments_per_sec = per_sec(installments, t.elapsed().as_secs_f64());
    progress("advance notices (untimed)");
    engine.run_once(eve()).await?;
    progress("due-date run");
    crate::engine::phase::reset();
    let t = Instant::now();
    let summary = engine.run_once(due_morning()).await?;
    figures.run_seconds = t.elapsed().as_secs_f64();
    progress(&phase_line());
    figures.run_attempts = summary.total_attempts();
    figures.run_attempts_per_sec = per_sec(figures.run_attempts as f64, figures.run_seconds);
    figures.run_attempts_per_due_installment = figures.run_attempts as f64 / loans as f64;
    time_verify(&engine.db, &mut figures, progress).await?;
    engine.db.pool.close().await;
    Ok(figures)
}

/// Where the due-date run's time went, by stage (stages of different batches overlap).
fn phase_line() -> String {
    let parts: Vec<String> = crate::engine::phase::busy_seconds()
        .into_iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(p, s)| format!("{p} {s:.2}s"))
        .collect();
    format!("busy time by stage: {}", parts.join(", "))
}

/// The same due-date work by the naive worker, on its own fresh database of the same server
/// with the same portfolio (at most [`NAIVE_MAX_INSTALLMENTS`]), planned and past its eve
/// (untimed); then verify it.
async fn naive_run(
    opts: &BenchOptions,
    figures: &mut BenchFigures,
    progress: &dyn Fn(&str),
) -> Result<(), AppError> {
    let installments = opts.installments.min(NAIVE_MAX_INSTALLMENTS);
    let loans = installments.div_ceil(opts.per_loan);
    let url = db::naive_url(&opts.database_url)?;
    progress(&format!(
        "naive baseline: {loans} loans on {} (set-up untimed)",
        crate::store::redact_url(&url)
    ));
    db::fresh_database(&url).await?;
    let engine = bench_engine(Db::open(&url).await?, loans)?;
    let make = |i| bench_loan(i, opts.per_loan, first_due());
    import_loans(&engine, loans, &make, progress).await?;
    plan::plan_new_loans(&engine, None).await?;
    engine.run_once(eve()).await?;
    progress("naive baseline: one job per attempt, one job at a time");
    let run = naive::run_naive(&engine, due_morning()).await?;
    figures.naive_installments = (loans * opts.per_loan) as u64;
    figures.naive_attempts = run.attempts;
    figures.naive_seconds = run.seconds;
    figures.naive_attempts_per_sec = run.attempts_per_sec();
    figures.naive_attempts_per_due_installment = run.attempts as f64 / loans as f64;
    figures.engine_vs_naive = ratio(figures.run_attempts_per_sec, figures.naive_attempts_per_sec);
    let stored = db::count_attempts(&engine.db).await?;
    if stored != run.attempts as i64 {
        return Err(AppError::Config(format!(
            "the naive worker made {} attempts but {stored} are stored",
            run.attempts
        )));
    }
    let report = verify_quietly(&engine.db).await?;
    figures.naive_verify_findings = report.total_findings;
    progress(&format!("naive baseline {}", report.summary()));
    engine.db.pool.close().await;
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

async fn one_run(opts: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchFigures, AppError> {
    reset_peak_rss();
    let mut figures = engine_run(opts, progress).await?;
    naive_run(opts, &mut figures, progress).await?;
    Ok(figures)
}

async fn verify_quietly(db: &Db) -> Result<crate::store::verify::VerifyReport, AppError> {
    let opts = crate::store::verify::VerifyOptions {
        limit: 5,
        progress: false,
    };
    crate::store::verify::verify(db, &opts)
        .await
        .map_err(|crate::store::verify::VerifyError::Sql(e)| AppError::Sql(e))
}

/// Run `repayd verify` over the bench database, with the peak RSS reset just before it.
async fn time_verify(
    db: &Db,
    figures: &mut BenchFigures,
    progress: &dyn Fn(&str),
) -> Result<(), AppError> {
    progress("verify");
    figures.run_peak_rss_mb = peak_rss_mb();
    figures.rss_before_verify_mb = reset_peak_rss();
    let t = Instant::now();
    let report = verify_quietly(db).await?;
    figures.verify_seconds = t.elapsed().as_secs_f64();
    figures.verify_peak_rss_mb = peak_rss_mb();
    figures.verify_findings = report.total_findings;
    progress(&format!(
        "{} | RSS {:.1} MB before, peak {:.1} MB during verify",
        report.summary(),
        figures.rss_before_verify_mb,
        figures.verify_peak_rss_mb
    ));
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// The median of every rate and duration; counts from the first run, findings the worst.
fn medians(runs: &[BenchFigures]) -> BenchFigures {
    let pick = |f: fn(&BenchFigures) -> f64| median(runs.iter().map(f).collect());
    let worst = |f: fn(&BenchFigures) -> u64| runs.iter().map(f).max().unwrap_or(0);
    BenchFigures {
        baseline_rows_per_sec: pick(|f| f.baseline_rows_per_sec),
        import_installments_per_sec: pick(|f| f.import_installments_per_sec),
        plan_installments_per_sec: pick(|f| f.plan_installments_per_sec),
        run_attempts: runs[0].run_attempts,
        run_attempts_per_sec: pick(|f| f.run_attempts_per_sec),
        run_seconds: pick(|f| f.run_seconds),
        run_attempts_per_due_installment: pick(|f| f.run_attempts_per_due_installment),
        verify_seconds: pick(|f| f.verify_seconds),
        verify_findings: worst(|f| f.verify_findings),
        rss_before_verify_mb: pick(|f| f.rss_before_verify_mb),
        verify_peak_rss_mb: pick(|f| f.verify_peak_rss_mb),
        run_peak_rss_mb: pick(|f| f.run_peak_rss_mb),
        naive_installments: runs[0].naive_installments,
        naive_attempts: runs[0].naive_attempts,
        naive_seconds: pick(|f| f.naive_seconds),
        naive_attempts_per_sec: pick(|f| f.naive_attempts_per_sec),
        naive_attempts_per_due_installment: pick(|f| f.naive_attempts_per_due_installment),
        naive_verify_findings: worst(|f| f.naive_verify_findings),
        engine_vs_naive: pick(|f| f.engine_vs_naive),
    }
}

/// Run the benchmark `repeat` times, each on a fresh database, and report medians.
pub async fn run_bench(
    opts: &BenchOptions,
    progress: &dyn Fn(&str),
) -> Result<BenchReport, AppError> {
    if opts.per_loan == 0 || opts.installments == 0 {
        return Err(AppError::Config(
            "--installments and --per-loan must be positive".into(),
        ));
    }
    let mut runs = Vec::new();
    for r in 0..opts.repeat.max(1) {
        progress(&format!("repeat {}/{}", r + 1, opts.repeat.max(1)));
        runs.push(one_run(opts, progress).await?);
    }
    let median = medians(&runs);
    let peak = runs
        .iter()
        .map(|f| f.run_peak_rss_mb)
        .fold(peak_rss_mb(), f64::max);
    Ok(BenchReport {
        backend: format!("{:?}", backend_of(&opts.database_url)?),
        installments: opts.installments,
        loans: opts.installments.div_ceil(opts.per_loan),
        runs,
        median,
        peak_rss_mb: peak,
    })
}

/// The due-date bench at each of `sizes` installments in one invocation (each with its
/// repeats, on fresh databases, the peak RSS reset before it), with the naive ratio.
pub async fn run_scale(
    opts: &BenchOptions,
    sizes: &[usize],
    progress: &dyn Fn(&str),
) -> Result<ScaleReport, AppError> {
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(AppError::Config("--sizes takes positive sizes".into()));
    }
    let mut rows = Vec::new();
    for &size in sizes {
        progress(&format!("size {size} installments"));
        let one = BenchOptions {
            installments: size,
            ..opts.clone()
        };
        let r = run_bench(&one, progress).await?;
        let m = r.median;
        rows.push(ScaleRow {
            installments: size,
            loans: r.loans,
            attempts: m.run_attempts,
            attempts_per_sec: m.run_attempts_per_sec,
            us_per_attempt: ratio(m.run_seconds * 1e6, m.run_attempts as f64),
            peak_rss_mb: m.run_peak_rss_mb,
            naive_attempts_per_sec: m.naive_attempts_per_sec,
            engine_vs_naive: m.engine_vs_naive,
            verify_findings: m.verify_findings,
            naive_verify_findings: m.naive_verify_findings,
            figures: m,
        });
    }
    Ok(ScaleReport {
        backend: format!("{:?}", backend_of(&opts.database_url)?),
        per_loan: opts.per_loan,
        sizes: rows,
    })
}
