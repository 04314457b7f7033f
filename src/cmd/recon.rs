//! Money you can audit: statement reconciliation, settlement, refunds and reversals,
//! write-offs.
//! `repayd recon …`, `repayd refund`, `repayd write-off`.

use super::Ctx;
use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand, ValueEnum};
use repayd::app::engine_with_sims;
use repayd::engine::{Engine, EngineConfig};
use repayd::ops::money;
use repayd::recon::{self, RefundKind};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ReconCmd {
    /// Import a channel's statement file and reconcile it against our attempts; settles what
    /// is due. Re-importing the same content changes nothing.
    Import {
        #[arg(long)]
        channel: String,
        file: PathBuf,
        /// The statement day (default: the channel-local date of its lines).
        #[arg(long)]
        date: Option<String>,
        /// The clock (RFC 3339), default now.
        #[arg(long)]
        now: Option<String>,
    },
    /// Matches and open cases of a day.
    Report {
        #[arg(long)]
        date: String,
    },
    /// Settle every reconciled statement day whose T+N date has come.
    Settle {
        #[arg(long)]
        now: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    /// Give back money beyond what was owed (Dr overpayments).
    Overpayment,
    /// The debit was a mistake: reverse its allocation and re-open the installments.
    Erroneous,
}

#[derive(Args)]
pub struct RefundArgs {
    /// The attempt to refund (its id).
    pub attempt: i64,
    #[arg(long)]
    pub amount: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long, value_enum, default_value = "overpayment")]
    pub kind: KindArg,
    /// Who asks for it (recorded on the refund and in the audit log).
    #[arg(long, default_value = "cli")]
    pub actor: String,
    #[arg(long)]
    pub now: Option<String>,
}

#[derive(Args)]
pub struct WriteOffArgs {
    pub loan: String,
    #[arg(long)]
    pub reason: String,
    #[arg(long, default_value = "cli")]
    pub actor: String,
    #[arg(long)]
    pub now: Option<String>,
}

fn parse_now(s: Option<&str>) -> anyhow::Result<DateTime<Utc>> {
    match s {
        None => Ok(Utc::now()),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .with_context(|| {
                format!("--now `{s}` is not an RFC 3339 instant like 2027-01-15T08:00:00+08:00")
            }),
    }
}

fn parse_date(s: &str) -> anyhow::Result<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .with_context(|| format!("--date `{s}` is not a date like 2026-12-19"))
}

async fn engine(ctx: &Ctx) -> anyhow::Result<Engine> {
    let (engine, _) = engine_with_sims(&ctx.settings, EngineConfig::default()).await?;
    Ok(engine)
}

fn print<T: serde::Serialize>(ctx: &Ctx, value: &T, text: String) -> anyhow::Result<()> {
    if ctx.json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{text}");
    }
    Ok(())
}

pub async fn recon(cmd: &ReconCmd, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let engine = engine(ctx).await?;
    match cmd {
        ReconCmd::Import {
            channel,
            file,
            date,
            now,
        } => {
            let date = date.as_deref().map(parse_date).transpose()?;
            let now = parse_now(now.as_deref())?;
            let out = recon::import_file(&engine, channel, file, date, now).await?;
            let text = if out.already_imported {
                format!(
                    "statement {} of {} {} already imported: nothing changed\n",
                    out.statement_id, out.channel, out.date
                )
            } else {
                format!(
                    "statement {} of {} {}: {} lines, {:?}, {} auto-fixed, {} open cases, {} settlements\n",
                    out.statement_id,
                    out.channel,
                    out.date,
                    out.lines,
                    out.outcomes,
                    out.auto_fixed,
                    out.open_cases,
                    out.settled.len()
                )
            };
            print(ctx, &out, text)?;
        }
        ReconCmd::Report { date } => {
            parse_date(date)?;
            let mut conn = engine.db.pool.acquire().await?;
            let r = recon::recon_report(&mut conn, date).await?;
            print(ctx, &r, r.table())?;
        }
        ReconCmd::Settle { now } => {
            let now = parse_now(now.as_deref())?;
            let done = recon::settle_due(&engine, now).await?;
            let text: String = done
                .iter()
                .map(|s| {
                    format!(
                        "{} {} settled {}: gross {} fees {} net {}\n",
                        s.channel, s.stmt_date, s.settle_date, s.gross, s.fees, s.net
                    )
                })
                .collect();
            print(ctx, &done, text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn refund(args: &RefundArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let engine = engine(ctx).await?;
    let kind = match args.kind {
        KindArg::Overpayment => RefundKind::Overpayment,
        KindArg::Erroneous => RefundKind::Erroneous,
    };
    let now = parse_now(args.now.as_deref())?;
    let who = operator(&args.actor);
    let (attempt, amount, reason) = (args.attempt, &args.amount, &args.reason);
    let done = money::refund(&engine, &who, attempt, amount, kind, reason, now).await?;
    let text = format!(
        "refund {} ({}) of {} on attempt {}: entry {} corrects {}; refundable left {}; re-opened {:?}\n",
        done.refund_id,
        done.kind.as_str(),
        done.amount,
        args.attempt,
        done.entry_id,
        done.corrects_entry,
        done.refundable_left,
        done.reopened
    );
    print(ctx, &done, text)?;
    Ok(ExitCode::SUCCESS)
}

pub async fn write_off(args: &WriteOffArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let engine = engine(ctx).await?;
    let now = parse_now(args.now.as_deref())?;
    let who = operator(&args.actor);
    let amount = money::write_off(&engine, &who, &args.loan, &args.reason, now).await?;
    let value = serde_json::json!({ "loan": args.loan, "written_off": amount });
    print(
        ctx,
        &value,
        format!("loan {} written off: {amount}\n", args.loan),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// An operator at the command line has the database itself, so what they do is recorded
/// with the admin role.
fn operator(actor: &str) -> repayd::domain::actor::Actor {
    repayd::domain::actor::Actor {
        name: actor.to_string(),
        role: repayd::domain::actor::Role::Admin,
    }
}
