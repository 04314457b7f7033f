//! The `repayd` command line. Errors end here as `anyhow` with context; the library's
//! errors are typed.

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use repayd::app::{engine_with_sims, load_policies, Settings};
use repayd::engine::EngineConfig;
use repayd::{app::bench, app::demo, store::reports};
use std::path::PathBuf;
use std::process::ExitCode;

mod cmd;

#[derive(Parser)]
#[command(
    name = "repayd",
    version,
    about = "Collect loan installments by direct debit"
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Global {
    /// Database URL: sqlite://FILE (default; `init` or `demo` creates it) or postgres://…
    #[arg(long = "database", env = "REPAYD_DATABASE_URL", global = true, default_value = repayd::store::DEFAULT_DATABASE_URL)]
    database: String,
    /// Folder of policy files (the shipped policies are always available).
    #[arg(
        long,
        env = "REPAYD_POLICIES",
        global = true,
        default_value = "policies"
    )]
    policies: PathBuf,
    /// Scenario file of the built-in channel simulator.
    #[arg(long, env = "REPAYD_SCENARIO", global = true)]
    scenario: Option<PathBuf>,
    /// Folder where the built-in simulator keeps balances and its journal between runs.
    #[arg(
        long,
        env = "REPAYD_SIM_STATE",
        global = true,
        default_value = "repayd-sim"
    )]
    sim_state: PathBuf,
    /// File the dev notice sink appends to.
    #[arg(
        long,
        env = "REPAYD_NOTICE_LOG",
        global = true,
        default_value = "repayd-notices.log"
    )]
    notice_log: PathBuf,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Log lines as JSON (logs go to stderr; REPAYD_LOG sets the filter, default info for serve).
    #[arg(long, env = "REPAYD_LOG_JSON", global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the database and apply migrations.
    Init,
    /// Import the sample portfolio into a fresh SQLite database and run ~90 simulated days.
    Demo {
        /// Folder for the demo's database, sample files and notice log.
        #[arg(long, default_value = "repayd-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 90)]
        days: u32,
        /// Write the freshly generated sample files into DIR and exit (maintainers).
        #[arg(long, hide = true)]
        regenerate_sample: Option<PathBuf>,
    },
    /// Loans: import, show, list.
    #[command(subcommand)]
    Loans(LoansCmd),
    /// Policies: check files, list loaded ones.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// A loan's agenda of planned actions.
    #[command(subcommand)]
    Plan(PlanCmd),
    /// Execute everything due (`--once`) and exit.
    Run {
        /// Run once and exit (the daemon is `repayd serve`).
        #[arg(long)]
        once: bool,
        /// The instant to run as (RFC 3339); defaults to the wall clock.
        #[arg(long)]
        now: Option<String>,
    },
    /// Attempts, newest first.
    #[command(subcommand)]
    Attempts(AttemptsCmd),
    /// Notices (the SMS and email outbox), newest first.
    #[command(subcommand)]
    Notices(NoticesCmd),
    /// The ledger.
    #[command(subcommand)]
    Ledger(LedgerCmd),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Run the daemon: ticks, channels, notices, health, metrics and webhooks.
    /// Settings come from the config file and REPAYD_* variables (`repayd config default`).
    Serve {
        #[arg(long, env = "REPAYD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// API tokens for the collections workspace.
    #[command(subcommand)]
    Token(cmd::web::TokenCmd),
    /// Reconciliation with channel statements.
    #[command(subcommand)]
    Recon(cmd::recon::ReconCmd),
    /// Refund (part of) a successful attempt: a new journal entry linked to the original.
    Refund(cmd::recon::RefundArgs),
    /// Write off a loan's remaining balance to the losses account.
    WriteOff(cmd::recon::WriteOffArgs),
    /// Check every ledger and loan invariant; exits non-zero with a report on any drift.
    Verify(cmd::audit::VerifyArgs),
    /// Try collection policies on a portfolio in virtual time, side by side, before they
    /// touch a borrower: recovery, cost, protection and outcome, as CSV and an HTML report.
    Simulate(cmd::simulate::SimulateArgs),
    /// Reports.
    #[command(subcommand)]
    Report(cmd::audit::ReportCmd),
    /// The channel simulator as an HTTP server speaking repayd's signed JSON protocol.
    ChannelSim {
        #[arg(long, default_value = "127.0.0.1:9100")]
        listen: String,
        /// Balances, income, failures and the `[server]` table (latency, TPS cap, timeouts, callbacks).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// The channel it plays (its order-number rule).
        #[arg(long, default_value = "bank")]
        name: String,
        #[arg(
            long,
            env = "REPAYD_SIM_SECRET",
            default_value = "dev-secret",
            hide_env_values = true
        )]
        secret: String,
        /// Where to post asynchronous results (repayd's /webhooks/channels/NAME).
        #[arg(long)]
        callback_url: Option<String>,
        /// Print the journal of applied debits as JSON when stopped.
        #[arg(long)]
        print_journal: bool,
        /// Print a complete scenario file, every field commented, and exit.
        #[arg(long)]
        print_scenario: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Print a complete, commented configuration with the defaults.
    Default,
}

#[derive(Subcommand)]
enum LoansCmd {
    /// Import loans from a .json, .jsonl or .csv file (all or nothing).
    Import { file: PathBuf },
    /// A loan's plan, balances, days past due and ledger lines.
    Show {
        id: String,
        /// Days past due and the bucket as of this date (YYYY-MM-DD) or instant (RFC 3339).
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Loans with days past due, bucket, next due date and what is overdue, filtered like
    /// the worklist.
    List(cmd::loans::ListArgs),
    /// Give a loan parked for a person (its pursuit failed) back to the engine.
    Unpark {
        id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate policy files; every problem is reported with file, line and field.
    Check { files: Vec<PathBuf> },
    /// Policies available (shipped and from the policies folder).
    List,
}

#[derive(Subcommand)]
enum PlanCmd {
    /// List a loan's agenda with local times, marking what is due and what comes next.
    Show {
        id: String,
        /// Place the agenda against this date (YYYY-MM-DD, noon UTC) or instant (RFC 3339);
        /// default now.
        #[arg(long)]
        as_of: Option<String>,
    },
}

#[derive(Subcommand)]
enum AttemptsCmd {
    /// Recent attempts.
    List {
        #[arg(long)]
        loan: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Stream attempts as they happen, like `tail -f` (from the daemon's live feed).
    Watch(cmd::web::WatchArgs),
}

#[derive(Subcommand)]
enum NoticesCmd {
    /// Notices with their kind, recipient (masked), status and times.
    List(cmd::notices::ListArgs),
}

#[derive(Subcommand)]
enum LedgerCmd {
    /// The account tree with balances; debits minus credits must be 0.
    TrialBalance,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The daemon's engine against three simulator servers over HTTP at once (bank, unionpay,
    /// wechat), each with its latency and TPS cap; loans spread in proportion to the caps.
    Net {
        #[arg(long, default_value_t = 50_000)]
        installments: usize,
        /// Median latency of every server (log-normal, p99 = 3 × median).
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        /// TPS caps of bank, unionpay and wechat (one to three, comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "150,500,2000")]
        tps: Vec<u32>,
        /// Daemons sharing the database and the channels' caps (more than 1 needs PostgreSQL).
        #[arg(long, default_value_t = 1)]
        daemons: usize,
        #[arg(long, default_value = "sqlite://repayd-bench.db")]
        bench_database: String,
    },
    /// Time import, planning and a due-date run on a generated portfolio, against a raw
    /// multi-row insert and a naive one-job-at-a-time worker.
    Run {
        #[arg(long, default_value_t = 100_000)]
        installments: usize,
        #[arg(long, default_value_t = 4)]
        per_loan: usize,
        /// Repeats (each on a fresh database); medians are reported.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
        /// Run at 10k, 100k and 1M installments (instead of --installments).
        #[arg(long)]
        scale: bool,
        /// Run at these sizes (comma-separated installments), like --scale.
        #[arg(long, value_delimiter = ',')]
        sizes: Option<Vec<usize>>,
        /// The bench database (dropped and recreated; a PostgreSQL name must contain "bench").
        /// The naive baseline uses a sibling: `<name>_naive`, or `<file>_naive.db`.
        #[arg(long, default_value = "sqlite://repayd-bench.db")]
        bench_database: String,
    },
}

fn settings(g: &Global) -> Settings {
    Settings {
        database_url: g.database.clone(),
        policies_dir: g.policies.clone(),
        scenario: g.scenario.clone(),
        sim_state: Some(g.sim_state.clone()),
        notice_log: g.notice_log.clone(),
        ..Settings::default()
    }
}

fn ctx(g: &Global) -> cmd::Ctx {
    cmd::Ctx {
        settings: settings(g),
        json: g.json,
    }
}

fn parse_now(s: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match s {
        None => Ok(Utc::now()),
        Some(s) => Ok(DateTime::parse_from_rfc3339(s)
            .with_context(|| {
                format!("--now `{s}` is not an RFC 3339 instant like 2027-01-15T08:00:00+08:00")
            })?
            .with_timezone(&Utc)),
    }
}

fn init_logs(cli: &Cli) {
    let default = if matches!(cli.cmd, Cmd::Serve { .. } | Cmd::ChannelSim { .. }) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REPAYD_LOG")
        .unwrap_or_else(|_| default.into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if cli.global.log_json {
        fmt.json().init();
    } else {
        fmt.init();
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled: a signal during start-up (opening the database, migrating)
/// then stops the daemon cleanly once it is up, instead of killing it mid-way.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = wait(term.take()) => {}
            _ = wait(int.take()) => {}
        }
    }
}

/// The error and its causes, each said once: a cause whose text its wrapper already
/// quotes (`cannot open database …: {source}`) is not repeated after it.
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
    }
    text
}

/// A command piped into `head` ends quietly when the reader goes away, as `cat` does,
/// instead of panicking on the next print. Rust ignores SIGPIPE by default; the daemons keep
/// that (a closed socket is an error to handle, not a reason to exit).
fn quiet_on_closed_pipe() {
    // SAFETY: `signal` only sets the process's disposition of SIGPIPE back to the default;
    // no handler of ours runs, and nothing has written to a pipe yet.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Serve { .. } | Cmd::ChannelSim { .. }) {
        quiet_on_closed_pipe();
    }
    init_logs(&cli);
    let json = cli.global.json;
    match dispatch(cli).await {
        Ok(code) => code,
        // With --json the error is JSON too, so a script reads one format either way.
        Err(e) if json => {
            eprintln!("{}", serde_json::json!({ "error": error_text(&e) }));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// Commands that work on `--database` as it is (and `run --once`, which checks after its
/// arguments). Only `init` and `demo` create a SQLite database; for these a mistyped path is
/// an error, never a new, empty book.
fn opens_existing_database(cmd: &Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Loans(_)
            | Cmd::Plan(_)
            | Cmd::Attempts(AttemptsCmd::List { .. })
            | Cmd::Notices(_)
            | Cmd::Ledger(_)
            | Cmd::Token(_)
            | Cmd::Recon(_)
            | Cmd::Refund(_)
            | Cmd::WriteOff(_)
            | Cmd::Verify(_)
            | Cmd::Report(_)
    )
}

async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let g = &cli.global;
    if opens_existing_database(&cli.cmd) {
        repayd::store::require_existing(&g.database)?;
    }
    match &cli.cmd {
        Cmd::Init => {
            let db = repayd::store::Db::open(&g.database).await?;
            println!("database ready: {}", db.display_url);
        }
        Cmd::Demo {
            dir,
            days,
            regenerate_sample,
        } => run_demo(g, dir, *days, regenerate_sample.as_deref()).await?,
        Cmd::Loans(LoansCmd::Import { file }) => import_file(g, file).await?,
        Cmd::Loans(LoansCmd::Show { id, as_of }) => show_loan(g, id, as_of.as_deref()).await?,
        Cmd::Loans(LoansCmd::List(a)) => cmd::loans::list(a, &ctx(g)).await?,
        Cmd::Notices(NoticesCmd::List(a)) => cmd::notices::list(a, &ctx(g)).await?,
        Cmd::Loans(LoansCmd::Unpark { id, reason }) => unpark_loan(g, id, reason).await?,
        Cmd::Policy(PolicyCmd::Check { files }) => return policy_check(files),
        Cmd::Policy(PolicyCmd::List) => list_policies(g)?,
        Cmd::Plan(PlanCmd::Show { id, as_of }) => {
            cmd::plan::show(&ctx(g), id, as_of.as_deref()).await?
        }
        Cmd::Run { once, now } => run_once(g, *once, now.as_deref()).await?,
        Cmd::Attempts(AttemptsCmd::List { loan, limit }) => {
            list_attempts(g, loan.as_deref(), *limit).await?
        }
        Cmd::Ledger(LedgerCmd::TrialBalance) => return trial_balance(g).await,
        Cmd::Serve { config } => {
            let stop = shutdown_signal();
            let cfg = repayd::app::config::Config::load(config.as_deref())?;
            let (engine, sims) = repayd::app::engine_from_config(&cfg).await?;
            repayd::app::daemon::serve(cfg, engine, sims, stop).await?;
        }
        Cmd::Config(ConfigCmd::Default) => print!("{}", repayd::app::config::DEFAULT_CONFIG),
        Cmd::Token(c) => return cmd::web::token(c, &ctx(g)).await,
        Cmd::Attempts(AttemptsCmd::Watch(a)) => return cmd::web::watch(a, &ctx(g)).await,
        Cmd::Recon(c) => return cmd::recon::recon(c, &ctx(g)).await,
        Cmd::Refund(a) => return cmd::recon::refund(a, &ctx(g)).await,
        Cmd::WriteOff(a) => return cmd::recon::write_off(a, &ctx(g)).await,
        Cmd::Verify(a) => return cmd::audit::verify(a, &ctx(g)).await,
        Cmd::Simulate(a) => return cmd::simulate::simulate(a, &ctx(g)).await,
        Cmd::Report(c) => return cmd::audit::report(c, &ctx(g)).await,
        Cmd::ChannelSim {
            listen,
            scenario,
            name,
            secret,
            callback_url,
            print_journal,
            print_scenario,
        } => {
            if *print_scenario {
                print!("{}", repayd::adapters::channel::sim::SCENARIO_TEMPLATE);
                return Ok(ExitCode::SUCCESS);
            }
            channel_sim(
                listen,
                scenario.as_deref(),
                name,
                secret,
                callback_url.clone(),
                *print_journal,
            )
            .await?
        }
        Cmd::Bench(c) => bench_cmd(g, c).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// `repayd bench …`: the figures the speed targets are held to.
async fn bench_cmd(g: &Global, c: &BenchCmd) -> anyhow::Result<()> {
    let progress = |m: &str| eprintln!("bench: {m}");
    match c {
        BenchCmd::Net {
            installments,
            latency_ms,
            tps,
            daemons,
            bench_database,
        } => {
            let opts = bench::NetBenchOptions {
                database_url: bench_database.clone(),
                installments: *installments,
                latency_median_ms: *latency_ms,
                tps: tps.clone(),
                daemons: *daemons,
            };
            bench_net(g, &opts).await?
        }
        BenchCmd::Run {
            installments,
            per_loan,
            repeat,
            scale,
            sizes,
            bench_database,
        } => {
            let opts = bench::BenchOptions {
                database_url: bench_database.clone(),
                installments: *installments,
                per_loan: *per_loan,
                repeat: *repeat,
            };
            let sizes = match sizes {
                Some(s) => Some(s.clone()),
                None => scale.then(|| bench::SCALE_SIZES.to_vec()),
            };
            match sizes {
                Some(sizes) => {
                    let r = bench::run_scale(&opts, &sizes, &progress).await?;
                    print_json_or(g, &r, print_scale)?
                }
                None => {
                    let r = bench::run_bench(&opts, &progress).await?;
                    print_json_or(g, &r, print_bench)?
                }
            }
        }
    }
    Ok(())
}

/// A bench report as JSON with `--json`, else as text.
fn print_json_or<T: serde::Serialize>(g: &Global, r: &T, text: fn(&T)) -> anyhow::Result<()> {
    if g.json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        text(r);
    }
    Ok(())
}

/// `repayd demo`: the sample portfolio over simulated days; fails unless the books balance.
async fn run_demo(
    g: &Global,
    dir: &std::path::Path,
    days: u32,
    regenerate_sample: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(out) = regenerate_sample {
        demo::regenerate_sample(out)?;
        println!("sample written to {}", out.display());
        return Ok(());
    }
    let opts = demo::DemoOptions {
        dir: dir.to_path_buf(),
        days,
        start: chrono::NaiveDate::parse_from_str(demo::SAMPLE_START, "%Y-%m-%d")?,
        progress: !g.json,
    };
    let summary = demo::run_demo(&opts).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        demo::print_summary(&summary);
    }
    let balanced = summary
        .trial_balance
        .as_ref()
        .is_some_and(|t| t.difference().is_zero());
    if !balanced {
        bail!("the trial balance is not zero");
    }
    Ok(())
}

/// `repayd run --once`: one run at `now`, as a registered instance with a heartbeat.
async fn run_once(g: &Global, once: bool, now: Option<&str>) -> anyhow::Result<()> {
    if !once {
        bail!("`repayd run` needs --once (the long-running daemon is `repayd serve`)");
    }
    let now = parse_now(now)?;
    // After the arguments, so a missing `--once` is said first.
    repayd::store::require_existing(&g.database)?;
    let cfg = EngineConfig {
        owner: repayd::engine::instance::new_instance_id(),
        ..EngineConfig::default()
    };
    let (engine, sims) = engine_with_sims(&settings(g), cfg).await?;
    let summary = repayd::engine::instance::run_registered(&engine, now).await?;
    sims.save()?;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn list_policies(g: &Global) -> anyhow::Result<()> {
    let set = load_policies(&g.policies)?;
    for n in set.names() {
        let p = set.get(n).expect("listed");
        println!("{n}\tv{}\t{}", p.version, p.description);
    }
    Ok(())
}

async fn list_attempts(g: &Global, loan: Option<&str>, limit: i64) -> anyhow::Result<()> {
    let db = repayd::store::Db::open(&g.database).await?;
    let mut conn = db.pool.acquire().await?;
    let rows = reports::attempts(&mut conn, loan, limit).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<16}  {:<10} {:<8} {:<8} {:>4}  {:>16}  {:<10} {:<22} {:<22} order",
            "made (UTC)",
            "loan#inst",
            "channel",
            "kind",
            "step",
            "amount",
            "outcome",
            "code",
            "account"
        );
        for a in rows {
            println!(
                "{:<16}  {:<10} {:<8} {:<8} {:>4}  {:>16}  {:<10} {:<22} {:<22} {}",
                a.at.format("%Y-%m-%d %H:%M"),
                format!("{}#{}", a.loan_id, a.seq),
                a.channel,
                a.kind,
                a.ladder_step,
                format!("{} {}", a.currency, a.amount),
                a.status,
                a.code.unwrap_or_default(),
                a.account,
                a.order_no
            );
        }
    }
    Ok(())
}

async fn bench_net(g: &Global, opts: &bench::NetBenchOptions) -> anyhow::Result<()> {
    let progress = |m: &str| eprintln!("bench: {m}");
    let r = bench::run_net_bench(opts, &progress).await?;
    print_json_or(g, &r, print_net)
}

fn print_net(r: &bench::NetBenchReport) {
    println!(
        "networked due-date run, all channels at once ({} daemon):",
        r.daemons
    );
    for c in &r.channels {
        println!(
            "  {:<8} {:>7} attempts in {:.1}s = {:>6.1} TPS ({:.3} of its {} TPS cap) | 429s {} | latency p50 {:.0} ms p99 {:.0} ms",
            c.channel, c.attempts, c.active_seconds, c.achieved_tps, c.fraction_of_cap, c.tps_cap,
            c.http_429s, c.latency_p50_ms, c.latency_p99_ms
        );
    }
    println!(
        "total: {} attempts in {:.1}s = {:.1} TPS ({:.3} of the {} TPS of all caps) | 429s {} | latency p50 {:.0} ms p99 {:.0} ms | peak RSS {:.1} MB",
        r.attempts, r.seconds, r.achieved_tps, r.fraction_of_cap, r.tps_cap, r.http_429s,
        r.latency_p50_ms, r.latency_p99_ms, r.peak_rss_mb
    );
}

async fn import_file(g: &Global, file: &PathBuf) -> anyhow::Result<()> {
    let (engine, _) = engine_with_sims(&settings(g), EngineConfig::default()).await?;
    let channels: Vec<String> = engine.channel_configs.keys().cloned().collect();
    let loans = repayd::ops::import::read_file(file, &engine.policies, &channels)?;
    let who = repayd::domain::actor::Actor::cli();
    let done = repayd::ops::import::import_loans(&engine, &who, &loans, Utc::now()).await?;
    let r = done.report;
    println!(
        "{}: {} loans added ({} installments), {} unchanged; {} actions planned",
        file.display(),
        r.loans_added,
        r.installments_added,
        r.loans_unchanged,
        done.actions_planned
    );
    Ok(())
}

async fn unpark_loan(g: &Global, id: &str, reason: &str) -> anyhow::Result<()> {
    let (engine, _) = engine_with_sims(&settings(g), EngineConfig::default()).await?;
    let who = repayd::domain::actor::Actor::cli();
    let state = repayd::ops::unpark(&engine, &who, id, reason, Utc::now()).await?;
    if g.json {
        println!("{}", serde_json::to_string_pretty(&state)?);
    } else {
        println!("loan {id} unparked; its pending actions run on the next tick");
    }
    Ok(())
}

async fn show_loan(g: &Global, id: &str, as_of: Option<&str>) -> anyhow::Result<()> {
    let now = cmd::loans::as_of(as_of)?;
    let db = repayd::store::Db::open(&g.database).await?;
    let policies = load_policies(&g.policies)?;
    let mut conn = db.pool.acquire().await?;
    let Some(v) = reports::loan_view(&mut conn, &policies, id, now).await? else {
        bail!("no loan `{id}` in {}", db.display_url);
    };
    if g.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "loan {}  {}  {} {}  policy {}  status {}",
        v.id, v.borrower, v.currency, v.timezone, v.policy, v.status
    );
    println!(
        "phone {}  email {}  days past due {}  bucket {}",
        v.phone,
        v.email,
        v.days_past_due,
        v.bucket.as_deref().unwrap_or("-")
    );
    let park = repayd::ops::park_state(&mut conn, id).await?;
    if let (Some(at), Some(why)) = (park.parked_at, park.parked_reason) {
        println!("PARKED for a person since {at}: {why}  (repayd loans unpark {id} --reason …)");
    }
    for m in &v.mandates {
        println!(
            "mandate {} {:<8} {}  {}{}",
            m.priority,
            m.channel,
            m.account,
            m.status,
            m.status_code
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        );
    }
    println!(
        "\n seq  due date    {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}  status",
        "penalty", "fee", "interest", "principal", "paid", "outstanding"
    );
    for i in &v.installments {
        let paid: rust_decimal::Decimal = i.paid.iter().sum();
        println!(
            "{:>4}  {}  {:>10} {:>10} {:>10} {:>10} {:>11} {:>11}  {} ({} attempts)",
            i.seq,
            i.due_date,
            i.due[0],
            i.due[1],
            i.due[2],
            i.due[3],
            paid,
            i.outstanding,
            i.status,
            i.attempts
        );
    }
    println!("\nledger");
    for l in &v.ledger {
        println!(
            "  #{:<6} {:<10} {:<14} {:>12} {:>12}  {}",
            l.entry_id,
            l.kind,
            l.account,
            l.debit,
            l.credit,
            l.component
                .clone()
                .map(|c| format!("{c} #{}", l.seq.unwrap_or(0)))
                .unwrap_or_default()
        );
    }
    Ok(())
}

fn policy_check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    if files.is_empty() {
        bail!("name at least one policy file");
    }
    let mut ok = true;
    for f in files {
        match repayd::app::policies::load_policy_file(f) {
            Ok(p) => println!("{}: ok (policy `{}` v{})", f.display(), p.name, p.version),
            Err(e) => {
                ok = false;
                eprintln!("{e}");
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn trial_balance(g: &Global) -> anyhow::Result<ExitCode> {
    let db = repayd::store::Db::open(&g.database).await?;
    let mut conn = db.pool.acquire().await?;
    let tb = repayd::store::ledger::trial_balance(&mut conn).await?;
    if g.json {
        let books: Vec<_> = tb.currencies.iter().map(trial_balance_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "currencies": books, "balanced": tb.difference().is_zero(),
            }))?
        );
    } else if tb.currencies.is_empty() {
        println!("the journal has no entries");
    }
    for book in tb.currencies.iter().filter(|_| !g.json) {
        print_trial_balance(book);
    }
    Ok(if tb.difference().is_zero() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn trial_balance_json(c: &repayd::store::ledger::CurrencyBalance) -> serde_json::Value {
    let rows: Vec<_> = c
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({"code": r.code, "name": r.name, "depth": r.depth,
                "debit": r.debit, "credit": r.credit, "balance": r.balance()})
        })
        .collect();
    serde_json::json!({
        "currency": c.currency, "rows": rows, "total_debit": c.total_debit,
        "total_credit": c.total_credit, "difference": c.difference(),
    })
}

/// One currency's table; amounts of different currencies are never in one column.
fn print_trial_balance(c: &repayd::store::ledger::CurrencyBalance) {
    let cur = if c.currency.is_empty() {
        "(no currency)"
    } else {
        &c.currency
    };
    println!("== {cur} ==");
    println!(
        "{:<44} {:>16} {:>16} {:>16}",
        "account", "debit", "credit", "balance"
    );
    for r in &c.rows {
        let label = format!("{}{} {}", "  ".repeat(r.depth), r.code, r.name);
        println!(
            "{label:<44} {:>16} {:>16} {:>16}",
            r.debit,
            r.credit,
            r.balance()
        );
    }
    println!(
        "{cur} total debits {}  total credits {}  debits - credits = {}\n",
        c.total_debit,
        c.total_credit,
        c.difference()
    );
}

fn print_bench(r: &bench::BenchReport) {
    println!(
        "backend {}  installments {}  loans {}  repeats {}",
        r.backend,
        r.installments,
        r.loans,
        r.runs.len()
    );
    for (i, f) in r.runs.iter().enumerate() {
        println!("  run {}: baseline {:.0} rows/s | import {:.0} inst/s | plan {:.0} inst/s | due-date run {} attempts in {:.2}s = {:.0} attempts/s | naive worker {} attempts in {:.2}s = {:.0} attempts/s",
            i + 1, f.baseline_rows_per_sec, f.import_installments_per_sec, f.plan_installments_per_sec,
            f.run_attempts, f.run_seconds, f.run_attempts_per_sec,
            f.naive_attempts, f.naive_seconds, f.naive_attempts_per_sec);
    }
    let m = &r.median;
    println!("median: import {:.0} inst/s ({:.2}x baseline insert) | plan {:.0} inst/s | due-date run {:.0} attempts/s ({} attempts, {:.3} per due installment)",
        m.import_installments_per_sec, m.import_installments_per_sec / m.baseline_rows_per_sec,
        m.plan_installments_per_sec, m.run_attempts_per_sec, m.run_attempts, m.run_attempts_per_due_installment);
    println!("due-date run: engine {:.0} attempts/s | naive worker {:.0} attempts/s ({} attempts over {} installments, {:.3} per due installment) | engine/naive = {:.1}× | raw multi-row insert ceiling {:.0} rows/s",
        m.run_attempts_per_sec, m.naive_attempts_per_sec, m.naive_attempts, m.naive_installments,
        m.naive_attempts_per_due_installment, m.engine_vs_naive, m.baseline_rows_per_sec);
    println!("peak RSS {:.1} MB | verify {:.2}s, {} findings (naive database: {}), RSS {:.1} MB before and peak {:.1} MB during verify", r.peak_rss_mb, m.verify_seconds, m.verify_findings, m.naive_verify_findings, m.rss_before_verify_mb, m.verify_peak_rss_mb);
}

fn print_scale(r: &bench::ScaleReport) {
    println!("backend {}  per loan {}", r.backend, r.per_loan);
    println!(
        "{:>12} {:>9} {:>10} {:>12} {:>12} {:>13} {:>13} {:>12} {:>9}",
        "installments",
        "loans",
        "attempts",
        "attempts/s",
        "µs/attempt",
        "peak RSS MB",
        "naive att/s",
        "engine/naive",
        "findings"
    );
    for s in &r.sizes {
        println!(
            "{:>12} {:>9} {:>10} {:>12.0} {:>12.1} {:>13.1} {:>13.0} {:>11.1}× {:>9}",
            s.installments,
            s.loans,
            s.attempts,
            s.attempts_per_sec,
            s.us_per_attempt,
            s.peak_rss_mb,
            s.naive_attempts_per_sec,
            s.engine_vs_naive,
            s.verify_findings + s.naive_verify_findings
        );
    }
}

async fn channel_sim(
    listen: &str,
    scenario: Option<&std::path::Path>,
    name: &str,
    secret: &str,
    callback_url: Option<String>,
    print_journal: bool,
) -> anyhow::Result<()> {
    use repayd::adapters::channel::{serve_simulator, Scenario, Simulator};
    use repayd::domain::channel::builtin_channels;
    use repayd::domain::secret::Secret;
    let scenario = match scenario {
        Some(p) => Scenario::load(p)?,
        None => Scenario::default(),
    };
    let mut spec = scenario.server.clone();
    if callback_url.is_some() {
        spec.callback_url = callback_url;
    }
    let rule = builtin_channels()
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| c.order_no)
        .unwrap_or_default();
    let sim = std::sync::Arc::new(Simulator::new(name, scenario).with_order_no_rule(rule));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    println!("channel-sim {name} listening on {}", listener.local_addr()?);
    serve_simulator(
        listener,
        sim.clone(),
        Secret::new(secret),
        spec,
        shutdown_signal(),
    )
    .await?;
    if print_journal {
        println!("{}", serde_json::to_string_pretty(&sim.journal())?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot open database x: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn a_quoted_cause_is_said_once_and_an_unquoted_one_is_added() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = anyhow::Error::new(Quoting { source: io });
        assert_eq!(error_text(&e), "cannot open database x: refused");
        let e = anyhow::anyhow!("refused").context("importing loans.json");
        assert_eq!(error_text(&e), "importing loans.json: refused");
    }
}
