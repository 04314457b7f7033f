//! `repayd bench run`: generate a portfolio on the chosen database and time import, planning
//! and a due-date run against the zero-latency simulator, with a raw-insert baseline measured
//! in the same run so figures can be compared across noisy machines.

use crate::adapters::channel::sim::AccountSpec;
use crate::adapters::channel::Scenario;
use crate::app::{load_policies, simulated_engine, AppError};
use crate::domain::channel::{builtin_channels, Channel};
use crate::domain::import::{BorrowerInput, LoanInput, MandateInput};
use crate::domain::policy::parse_policy;
use crate::domain::{round_money, PlannedInstallment};
use crate::engine::{plan, Engine, EngineConfig};
use crate::store::import::store_loans;
use crate::store::{backend_of, Backend, Db, Rows, Val};
use chrono::{Days, Months, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Connection;
use std::sync::Arc;
use std::time::Instant;

/// The policy the benchmark portfolio follows: one SMS notice at T-1, three due-date slots,
/// result notices on, no early attempts (so the due-date run does the collecting).
pub const BENCH_POLICY: &str = r#"
name = "bench"
version = 1
description = "benchmark policy"
[notices]
before_due = [{ days = 1, at = "10:00" }]
channels = ["sms"]
on_result = true
overdue_every_days = 0
quiet_hours = [{ start = "22:00", end = "08:00" }]
daily_cap = 5
[early]
allowed = false
[due]
at = ["08:00", "12:00", "20:00"]
[ladder]
steps = [1, 0.75, 0.5, 0.25]
min_amount = "10.00"
on_codes = ["INSUFFICIENT_BALANCE"]
within_slot = true
"#;

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
    /// `repayd verify` over the database the run left.
    pub verify_seconds: f64,
    pub verify_findings: u64,
    /// Peak RSS of import, planning and the run (before verify reset the peak).
    pub run_peak_rss_mb: f64,
    /// Resident memory when verify started, and its peak while verify ran.
    pub rss_before_verify_mb: f64,
    pub verify_peak_rss_mb: f64,
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

/// Start every repeat from an empty database. Only files or databases that are clearly
/// benchmark databases are dropped.
async fn fresh_database(url: &str) -> Result<(), AppError> {
    match backend_of(url)? {
        Backend::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{path}{suffix}"));
            }
            Ok(())
        }
        Backend::Postgres => {
            let (base, name) = url
                .rsplit_once('/')
                .ok_or_else(|| AppError::Config(format!("no database name in {url}")))?;
            let name = name.split('?').next().unwrap_or(name);
            if !name.contains("bench") {
                return Err(AppError::Config(format!(
                    "refusing to drop PostgreSQL database `{name}`: the bench database name must contain `bench`"
                )));
            }
            sqlx::any::install_default_drivers();
            let mut admin = sqlx::AnyConnection::connect(&format!("{base}/postgres")).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await?;
            sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                .execute(&mut admin)
                .await?;
            Ok(())
        }
    }
}

fn bench_loan(i: usize, per_loan: usize, first_due: NaiveDate) -> LoanInput {
    let installments = (0..per_loan)
        .map(|k| PlannedInstallment {
            seq: k as u32 + 1,
            due_date: first_due
                .checked_add_months(Months::new(k as u32))
                .expect("date"),
            principal: Decimal::new(1000_00 + (i % 50) as i64 * 100, 2),
            interest: Decimal::new(35_50, 2),
            fee: Decimal::new(5_00, 2),
        })
        .collect();
    let channel = ["unionpay", "wechat", "bank"][i % 3];
    LoanInput {
        id: format!("BL{i:08}"),
        borrower: BorrowerInput {
            id: format!("BB{i:08}"),
            name: "Bench Borrower".into(),
            phone: format!("139{:08}", i % 100_000_000),
            email: format!("b{i}@example.com"),
            payday: None,
            update: false,
        },
        currency: "CNY".into(),
        tz: chrono_tz::Asia::Shanghai,
        policy: "bench".into(),
        allow_early: false,
        mandates: vec![MandateInput {
            channel: channel.into(),
            agreement: format!("BA{i:08}"),
            account_masked: "6222 **** **** 0000".into(),
            per_debit_limit: None,
            daily_limit: None,
        }],
        installments,
    }
}

/// About 10% of accounts are short of money: half empty, half with 60% of the installment.
fn bench_scenario(loans: usize) -> Scenario {
    let mut s = Scenario::default();
    for i in (0..loans).filter(|i| i % 10 == 3) {
        let owed = Decimal::new(1000_00 + (i % 50) as i64 * 100 + 35_50 + 5_00, 2);
        let balance = if i % 20 == 3 {
            Decimal::ZERO
        } else {
            round_money(owed * Decimal::new(60, 2))
        };
        s.accounts
            .push(AccountSpec::with_balance(format!("BA{i:08}"), balance));
    }
    s
}

/// Peak resident set size of this process, in MB (Linux).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn baseline(db: &Db, rows: usize) -> Result<f64, AppError> {
    let mut conn = db.pool.acquire().await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_baseline (a BIGINT, b TEXT, c BIGINT)")
        .execute(&mut *conn)
        .await?;
    let mut r = Rows::new(3);
    for i in 0..rows {
        r.push(vec![
            Val::Int(i as i64),
            Val::Text(format!("row-{i}")),
            Val::Int(7),
        ]);
    }
    let t = Instant::now();
    let mut tx = conn.begin().await?;
    r.insert(&mut tx, "INSERT INTO bench_baseline (a, b, c)", "")
        .await?;
    tx.commit().await?;
    Ok(rows as f64 / t.elapsed().as_secs_f64())
}

async fn one_run(opts: &BenchOptions, progress: &dyn Fn(&str)) -> Result<BenchFigures, AppError> {
    fresh_database(&opts.database_url).await?;
    let db = Db::open(&opts.database_url).await?;
    let mut figures = BenchFigures {
        baseline_rows_per_sec: baseline(&db, opts.installments.min(200_000)).await?,
        ..Default::default()
    };
    let loans = opts.installments.div_ceil(opts.per_loan);
    let first_due = NaiveDate::from_ymd_opt(2027, 3, 15).expect("date");
    let engine = bench_engine(db, loans)?;
    progress(&format!("importing {loans} loans"));
    let t = Instant::now();
    let mut tx = engine.db.begin().await?;
    for chunk_start in (0..loans).step_by(5000) {
        let chunk: Vec<LoanInput> = (chunk_start..(chunk_start + 5000).min(loans))
            .map(|i| bench_loan(i, opts.per_loan, first_due))
            .collect();
        store_loans(&mut tx, &chunk, 0).await?;
    }
    tx.commit().await?;
    figures.import_installments_per_sec =
        (loans * opts.per_loan) as f64 / t.elapsed().as_secs_f64();
    progress("planning");
    let t = Instant::now();
    plan::plan_new_loans(&engine, None).await?;
    figures.plan_installments_per_sec = (loans * opts.per_loan) as f64 / t.elapsed().as_secs_f64();
    let tz = chrono_tz::Asia::Shanghai;
    let eve = tz
        .from_local_datetime(&(first_due - Days::new(1)).and_hms_opt(12, 0, 0).expect("t"))
        .unwrap()
        .with_timezone(&Utc);
    progress("advance notices (untimed)");
    engine.run_once(eve).await?;
    let morning = tz
        .from_local_datetime(&first_due.and_hms_opt(8, 0, 0).expect("t"))
        .unwrap()
        .with_timezone(&Utc);
    progress("due-date run");
    let t = Instant::now();
    let summary = engine.run_once(morning).await?;
    figures.run_seconds = t.elapsed().as_secs_f64();
    figures.run_attempts = summary.total_attempts();
    figures.run_attempts_per_sec = figures.run_attempts as f64 / figures.run_seconds;
    time_verify(&engine.db, &mut figures, progress).await?;
    Ok(figures)
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
    let opts = crate::store::verify::VerifyOptions {
        limit: 5,
        progress: false,
    };
    let report = crate::store::verify::verify(db, &opts)
        .await
        .map_err(|crate::store::verify::VerifyError::Sql(e)| AppError::Sql(e))?;
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

/// Reset this process's peak RSS to its current RSS (Linux `clear_refs`); returns the
/// current RSS in MB.
fn reset_peak_rss() -> f64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn bench_engine(db: Db, loans: usize) -> Result<Engine, AppError> {
    let mut policies = load_policies(std::path::Path::new("policies"))?;
    policies.insert(parse_policy(BENCH_POLICY, "bench policy")?);
    let log = std::env::temp_dir().join("repayd-bench-notices.log");
    let cfg = EngineConfig {
        batch_size: 5000,
        ..EngineConfig::default()
    };
    let (engine, _sims) = simulated_engine(db, policies, bench_scenario(loans), None, &log, cfg)?;
    Ok(engine)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
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
    let pick = |f: fn(&BenchFigures) -> f64| median(runs.iter().map(f).collect());
    let median = BenchFigures {
        baseline_rows_per_sec: pick(|f| f.baseline_rows_per_sec),
        import_installments_per_sec: pick(|f| f.import_installments_per_sec),
        plan_installments_per_sec: pick(|f| f.plan_installments_per_sec),
        run_attempts: runs[0].run_attempts,
        run_attempts_per_sec: pick(|f| f.run_attempts_per_sec),
        run_seconds: pick(|f| f.run_seconds),
        verify_seconds: pick(|f| f.verify_seconds),
        verify_findings: runs.iter().map(|f| f.verify_findings).max().unwrap_or(0),
        rss_before_verify_mb: pick(|f| f.rss_before_verify_mb),
        verify_peak_rss_mb: pick(|f| f.verify_peak_rss_mb),
        run_peak_rss_mb: pick(|f| f.run_peak_rss_mb),
    };
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

/// Options of the networked benchmark: the daemon's engine against the simulator server
/// over loopback HTTP, with the server's latency and TPS cap.
#[derive(Debug, Clone)]
pub struct NetBenchOptions {
    pub database_url: String,
    pub installments: usize,
    pub latency_median_ms: u64,
    pub tps: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetBenchReport {
    pub attempts: u64,
    pub seconds: f64,
    pub achieved_tps: f64,
    pub tps_cap: u32,
    pub fraction_of_cap: f64,
    pub http_429s: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub peak_rss_mb: f64,
}

/// An HTTP channel that records each submit's latency.
struct Timed {
    inner: crate::adapters::channel::HttpChannel,
    latencies: std::sync::Mutex<Vec<f64>>,
}

#[async_trait::async_trait]
impl Channel for Timed {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn submit(
        &self,
        req: &crate::domain::channel::DebitRequest,
    ) -> Result<crate::domain::channel::DebitOutcome, crate::domain::channel::ChannelError> {
        let t = Instant::now();
        let r = self.inner.submit(req).await;
        self.latencies
            .lock()
            .expect("latencies")
            .push(t.elapsed().as_secs_f64() * 1000.0);
        r
    }
    async fn query(
        &self,
        order_no: &str,
        at: chrono::DateTime<Utc>,
    ) -> Result<crate::domain::channel::QueryOutcome, crate::domain::channel::ChannelError> {
        self.inner.query(order_no, at).await
    }
    async fn statement(
        &self,
        date: NaiveDate,
    ) -> Result<Vec<crate::domain::channel::StatementLine>, crate::domain::channel::ChannelError>
    {
        self.inner.statement(date).await
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Collect `installments` single-installment loans due the same morning through the `bank`
/// channel served by the simulator server (log-normal latency, its own TPS cap answering 429),
/// with the client-side cap set to the same TPS.
pub async fn run_net_bench(
    opts: &NetBenchOptions,
    progress: &dyn Fn(&str),
) -> Result<NetBenchReport, AppError> {
    use crate::adapters::channel::{serve_simulator, HttpChannel, Latency, ServerSpec, Simulator};
    use crate::domain::secret::Secret;
    fresh_database(&opts.database_url).await?;
    let db = Db::open(&opts.database_url).await?;
    let mut engine = bench_engine(db, 0)?;
    let mut rule = builtin_channels()
        .into_iter()
        .find(|c| c.name == "bank")
        .expect("built-in bank");
    rule.tps = Some(opts.tps);
    rule.concurrency = 256;
    rule.timeout_ms = 10_000;
    let spec = ServerSpec {
        latency_ms: Latency {
            median: opts.latency_median_ms,
            p99: Some(opts.latency_median_ms * 3),
        },
        tps: Some(opts.tps),
        ..ServerSpec::default()
    };
    let sim = Arc::new(
        Simulator::new("bank", Scenario::default()).with_order_no_rule(rule.order_no.clone()),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| AppError::io(std::path::Path::new("127.0.0.1:0"), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| AppError::io(std::path::Path::new("127.0.0.1:0"), e))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_simulator(
        listener,
        sim,
        Secret::new("bench"),
        spec,
        async {
            let _ = stop_rx.await;
        },
    ));
    let http = HttpChannel::new(&rule, format!("http://{addr}"), Secret::new("bench"))
        .map_err(|e| AppError::Config(e.to_string()))?;
    let timed = Arc::new(Timed {
        inner: http,
        latencies: Default::default(),
    });
    engine.channels.insert("bank".into(), timed.clone());
    engine.channel_configs.insert("bank".into(), rule);
    engine.cfg.concurrency = 256;
    let first_due = NaiveDate::from_ymd_opt(2027, 3, 15).expect("date");
    progress(&format!("importing {} loans", opts.installments));
    let mut tx = engine.db.begin().await?;
    for start in (0..opts.installments).step_by(5000) {
        let chunk: Vec<LoanInput> = (start..(start + 5000).min(opts.installments))
            .map(|i| {
                let mut l = bench_loan(i, 1, first_due);
                l.mandates[0].channel = "bank".into();
                l
            })
            .collect();
        store_loans(&mut tx, &chunk, 0).await?;
    }
    tx.commit().await?;
    plan::plan_new_loans(&engine, None).await?;
    let tz = chrono_tz::Asia::Shanghai;
    let at = |d: NaiveDate, h| {
        tz.from_local_datetime(&d.and_hms_opt(h, 0, 0).expect("t"))
            .unwrap()
            .with_timezone(&Utc)
    };
    engine.run_once(at(first_due - Days::new(1), 12)).await?;
    progress("due-date run over HTTP");
    let t = Instant::now();
    let summary = engine.run_once(at(first_due, 8)).await?;
    let seconds = t.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = server.await;
    let mut lat = timed.latencies.lock().expect("latencies").clone();
    lat.sort_by(|a, b| a.total_cmp(b));
    let attempts = summary.total_attempts();
    let achieved = attempts as f64 / seconds;
    Ok(NetBenchReport {
        attempts,
        seconds,
        achieved_tps: achieved,
        tps_cap: opts.tps,
        fraction_of_cap: achieved / opts.tps as f64,
        http_429s: timed.inner.stats().throttled,
        latency_p50_ms: percentile(&lat, 0.5),
        latency_p99_ms: percentile(&lat, 0.99),
        peak_rss_mb: peak_rss_mb(),
    })
}
