//! `repayd demo`: import the shipped sample portfolio into a fresh SQLite database and run
//! the schedule against the built-in channel simulator over about 90 simulated days.

pub mod generate;

use crate::app::{engine_with_sims, AppError, Settings};
use crate::engine::EngineConfig;
use crate::store::reports::{portfolio_summary, PortfolioSummary};
use chrono::{DateTime, Days, NaiveDate, Utc};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The shipped sample: 240 loans (see `generate::demo_portfolio`, seed 2027).
pub const SAMPLE_PORTFOLIO: &str = include_str!("portfolio.csv");
pub const SAMPLE_SCENARIO: &str = include_str!("scenario.toml");
pub const SAMPLE_START: &str = "2027-01-01";
pub const SAMPLE_LOANS: usize = 240;
pub const SAMPLE_SEED: u64 = 2027;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    pub days: u32,
    pub start: NaiveDate,
    pub progress: bool,
}

/// Write the sample files (portfolio.csv, scenario.toml) into `dir`, as shipped.
pub fn write_sample(dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let p = dir.join("portfolio.csv");
    let s = dir.join("scenario.toml");
    std::fs::write(&p, SAMPLE_PORTFOLIO)?;
    std::fs::write(&s, SAMPLE_SCENARIO)?;
    Ok((p, s))
}

/// Regenerate the shipped sample (used when the generator changes).
pub fn regenerate_sample(dir: &Path) -> std::io::Result<()> {
    let start = NaiveDate::parse_from_str(SAMPLE_START, "%Y-%m-%d").expect("constant");
    let (loans, scenario) = generate::demo_portfolio(SAMPLE_LOANS, SAMPLE_SEED, start);
    let loans: Vec<_> = loans.into_iter().map(|g| g.loan).collect();
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("portfolio.csv"), generate::to_csv(&loans))?;
    let toml = toml::to_string(&scenario).expect("scenario serialises");
    std::fs::write(
        dir.join("scenario.toml"),
        format!("# Channel simulator scenario for the demo portfolio (generated, seed {SAMPLE_SEED}).\n{toml}"),
    )
}

/// Run the demo end to end and return the final summary.
pub async fn run_demo(opts: &DemoOptions) -> Result<PortfolioSummary, AppError> {
    let (portfolio, scenario) = write_sample(&opts.dir).map_err(|e| AppError::io(&opts.dir, e))?;
    let db_path = opts.dir.join("repayd.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    let notices = opts.dir.join("notices.log");
    let _ = std::fs::remove_file(&notices);
    let settings = Settings {
        database_url: format!("sqlite://{}", db_path.display()),
        scenario: Some(scenario),
        notice_log: notices,
        ..Settings::default()
    };
    let (engine, _sims) = engine_with_sims(&settings, EngineConfig::default()).await?;
    let channels: Vec<String> = engine.channel_configs.keys().cloned().collect();
    let loans = crate::ops::import::read_file(&portfolio, &engine.policies, &channels)?;
    let start: DateTime<Utc> = opts.start.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
    let mut tx = engine.db.begin().await?;
    let report =
        crate::store::import::store_loans(&mut tx, &loans, start.timestamp_millis()).await?;
    tx.commit().await?;
    println!(
        "imported {} loans ({} installments) from {}",
        report.loans_added,
        report.installments_added,
        portfolio.display()
    );
    let end = start + Days::new(opts.days as u64);
    let bar = progress_bar(opts);
    let mut now = start;
    let mut runs = 0u64;
    loop {
        let next_day = (now.date_naive() + Days::new(1))
            .and_hms_opt(0, 5, 0)
            .expect("valid")
            .and_utc();
        let next = engine
            .next_wakeup(now)
            .await?
            .map_or(next_day, |t| t.min(next_day));
        if next > end {
            break;
        }
        now = next;
        engine.run_once(now).await?;
        runs += 1;
        bar.set_position((now - start).num_days() as u64);
        bar.set_message(format!(
            "{} · {runs} runs",
            now.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    bar.finish_and_clear();
    let mut conn = engine.db.pool.acquire().await?;
    let summary = portfolio_summary(&mut conn, &engine.policies, end).await?;
    drop(conn);
    // Closed here, not whenever the runtime gets to it: a demo run again in the same folder
    // removes this file, and no connection may still be open on it.
    engine.db.pool.close().await;
    println!(
        "ran the schedule {runs} times over {} simulated days ({} → {})",
        opts.days,
        start.date_naive(),
        end.date_naive()
    );
    Ok(summary)
}

fn progress_bar(opts: &DemoOptions) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(opts.days as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} simulated day {pos}/{len} [{bar:30}] {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar
}

/// Human-readable summary, ending with the trial balance check.
pub fn print_summary(s: &PortfolioSummary) {
    println!("\n== portfolio ==");
    println!("loans                      {}", s.loans);
    println!("installments due           {}", s.installments_due);
    println!("  collected in full        {}", s.collected_in_full);
    println!("  of which in steps        {}", s.collected_in_steps);
    println!("loans handed to collections {}", s.loans_in_collections);
    for (currency, amount) in &s.collected {
        println!("collected                  {currency} {amount}");
    }
    println!("\n== overdue by bucket ==");
    if s.overdue_by_bucket.is_empty() {
        println!("none");
    } else {
        println!(
            "{:<12} {:<8} {:>5} {:>14}",
            "bucket", "currency", "loans", "amount"
        );
    }
    for (b, per) in &s.overdue_by_bucket {
        for (currency, (n, amt)) in per {
            println!("{b:<12} {currency:<8} {n:>5} {amt:>14}");
        }
    }
    println!("\n== attempts by kind/outcome ==");
    for (k, n) in &s.attempts {
        println!("{k:<26} {n}");
    }
    println!("\n== notices by kind/status ==");
    for (k, n) in &s.notices {
        println!("{k:<26} {n}");
    }
    if let Some(tb) = &s.trial_balance {
        println!("\n== trial balance (per currency) ==");
        for c in &tb.currencies {
            println!(
                "{:<4} debits {}  credits {}  debits - credits = {}",
                c.currency,
                c.total_debit,
                c.total_credit,
                c.difference()
            );
        }
    }
}
