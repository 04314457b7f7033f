//! Importing a channel's statement of one day and reconciling it, in one transaction.

use super::{settle, ReconError};
use crate::domain::channel::{ChannelConfig, StatementLine};
use crate::domain::matching::{classify, AutoFix, Item, OurAttempt};
use crate::domain::statement as protocol;
use crate::domain::{from_minor, local_date, local_to_utc, to_minor};
use crate::engine::apply::{self, AttemptRec, Verdict, Writes};
use crate::engine::Engine;
use crate::store::loans::load_loans;
use crate::store::{alloc_on, Rows, Val};
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// What an import did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportOutcome {
    pub channel: String,
    pub date: String,
    pub statement_id: i64,
    /// The same content was imported before: nothing changed.
    pub already_imported: bool,
    pub lines: usize,
    /// Items per outcome.
    pub outcomes: BTreeMap<String, u64>,
    pub auto_fixed: u64,
    pub open_cases: u64,
    pub settled: Vec<settle::Settled>,
}

/// Import a statement file. The statement day is `date`, or else the channel-local date of
/// its lines (which must then all fall on one day). Malformed files are refused whole.
pub async fn import_file(
    engine: &Engine,
    channel: &str,
    path: &Path,
    date: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<ImportOutcome, ReconError> {
    let cfg = channel_config(engine, channel)?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ReconError::Read {
        file: file.clone(),
        message: e.to_string(),
    })?;
    let lines = protocol::parse_statement(&text, Some(&cfg.order_no)).map_err(|error| {
        ReconError::Statement {
            file: file.clone(),
            error,
        }
    })?;
    let date = match date {
        Some(d) => d,
        None => date_of_lines(&lines, cfg).map_err(|message| ReconError::Read {
            file: file.clone(),
            message,
        })?,
    };
    import_lines(engine, channel, date, &lines, &file, now).await
}

fn date_of_lines(lines: &[StatementLine], cfg: &ChannelConfig) -> Result<NaiveDate, String> {
    let dates: HashSet<NaiveDate> = lines
        .iter()
        .map(|l| local_date(l.at, cfg.settlement.tz))
        .collect();
    match dates.len() {
        1 => Ok(*dates.iter().next().expect("one date")),
        0 => Err("an empty statement needs --date".into()),
        _ => Err("lines span several days; give the statement day with --date".into()),
    }
}

pub(super) fn channel_config<'a>(
    engine: &'a Engine,
    channel: &str,
) -> Result<&'a ChannelConfig, ReconError> {
    engine
        .channel_configs
        .get(channel)
        .ok_or_else(|| ReconError::UnknownChannel(channel.into()))
}

/// The content hash: of the canonical CSV, so a file and a fetched statement with the same
/// lines are the same statement.
fn content_hash(lines: &[StatementLine]) -> String {
    hex::encode(Sha256::digest(protocol::statement_csv(lines).as_bytes()))
}

/// Import parsed lines as the statement of `channel` for `date` and reconcile them. The same
/// content again changes nothing; other content for a day already imported is refused.
#[tracing::instrument(skip(engine, lines), fields(lines = lines.len()))]
pub async fn import_lines(
    engine: &Engine,
    channel: &str,
    date: NaiveDate,
    lines: &[StatementLine],
    source: &str,
    now: DateTime<Utc>,
) -> Result<ImportOutcome, ReconError> {
    let cfg = channel_config(engine, channel)?;
    for (i, l) in lines.iter().enumerate() {
        cfg.order_no
            .check(&l.order_no)
            .map_err(|e| ReconError::Statement {
                file: source.to_string(),
                error: crate::domain::statement::StatementError {
                    line: i + 2,
                    column: 1,
                    message: format!("order_no: {e}"),
                },
            })?;
    }
    let hash = content_hash(lines);
    let mut out = ImportOutcome {
        channel: channel.into(),
        date: date.to_string(),
        lines: lines.len(),
        ..Default::default()
    };
    let mut tx = engine.db.begin().await?;
    let prior = sqlx::query(
        "SELECT id, content_hash FROM statements WHERE channel = $1 AND stmt_date = $2",
    )
    .bind(channel)
    .bind(date.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(r) = prior {
        let id: i64 = r.get("id");
        if r.get::<String, _>("content_hash") != hash {
            return Err(ReconError::Conflict {
                channel: channel.into(),
                date,
                id,
            });
        }
        tx.rollback().await?;
        out.statement_id = id;
        out.already_imported = true;
        out.settled = settle::settle_due(engine, now).await?;
        return Ok(out);
    }
    let id = alloc_on(&mut tx, "statement", 1).await?;
    let inserted = sqlx::query(
        "INSERT INTO statements (id, channel, stmt_date, content_hash, line_count, source, imported_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (channel, stmt_date, content_hash) DO NOTHING",
    )
    .bind(id)
    .bind(channel)
    .bind(date.to_string())
    .bind(&hash)
    .bind(lines.len() as i64)
    .bind(source)
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        // Another instance imported the same statement a moment ago.
        tx.rollback().await?;
        out.already_imported = true;
        return Ok(out);
    }
    out.statement_id = id;
    insert_lines(&mut tx, id, channel, lines).await?;
    let numbered: Vec<(usize, StatementLine)> = lines
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, l)| (i + 2, l))
        .collect();
    let ours = attempts_of_day(&mut tx, engine, cfg, date, lines).await?;
    let items = classify(ours, numbered);
    auto_fix(engine, &mut tx, &items, now).await?;
    insert_items(&mut tx, channel, date, id, &items, now).await?;
    tx.commit().await?;
    for i in &items {
        metrics::counter!("repayd_recon_items_total", "channel" => channel.to_string(),
            "outcome" => i.outcome.as_str())
        .increment(1);
        *out.outcomes.entry(i.outcome.as_str().into()).or_default() += 1;
        out.auto_fixed += u64::from(i.auto_fix.is_some());
        out.open_cases += u64::from(i.is_case());
    }
    tracing::info!(channel, %date, auto_fixed = out.auto_fixed, open_cases = out.open_cases, "statement reconciled");
    out.settled = settle::settle_due(engine, now).await?;
    Ok(out)
}

async fn insert_lines(
    conn: &mut AnyConnection,
    id: i64,
    channel: &str,
    lines: &[StatementLine],
) -> Result<(), ReconError> {
    let mut rows = Rows::new(9);
    for (i, l) in lines.iter().enumerate() {
        rows.push(vec![
            Val::Int(id),
            Val::Int(i as i64 + 2),
            channel.into(),
            l.order_no.clone().into(),
            l.channel_ref.clone().into(),
            Val::Int(to_minor(l.amount)?),
            Val::Int(to_minor(l.fee)?),
            l.status.clone().into(),
            Val::Int(l.at.timestamp_millis()),
        ]);
    }
    if !rows.is_empty() {
        rows.insert(
            conn,
            "INSERT INTO statement_lines (statement_id, line_no, channel, order_no, channel_ref, amount, fee, status, at)",
            "",
        )
        .await?;
    }
    Ok(())
}

const ATTEMPT_COLS: &str = "id, loan_id, order_no, amount, status, code, channel_ref, created_at, \
    lease_until, lease_owner";

/// The channel's attempts created on `date` (local to the channel's statement zone), plus
/// those the statement names from other days.
async fn attempts_of_day(
    conn: &mut AnyConnection,
    engine: &Engine,
    cfg: &ChannelConfig,
    date: NaiveDate,
    lines: &[StatementLine],
) -> Result<Vec<OurAttempt>, sqlx::Error> {
    let tz = cfg.settlement.tz;
    let start = local_to_utc(date, NaiveTime::MIN, tz).timestamp_millis();
    let end = local_to_utc(date + Days::new(1), NaiveTime::MIN, tz).timestamp_millis();
    let wall = Utc::now().timestamp_millis();
    let rows = sqlx::query(&format!(
        "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND created_at >= $2 AND created_at < $3"
    ))
    .bind(&cfg.name)
    .bind(start)
    .bind(end)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<OurAttempt> = rows.iter().map(|r| our_attempt(r, wall, engine)).collect();
    let known: HashSet<String> = out.iter().map(|a| a.order_no.clone()).collect();
    for l in lines.iter().filter(|l| !known.contains(&l.order_no)) {
        let r = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLS} FROM attempts WHERE channel = $1 AND order_no = $2"
        ))
        .bind(&cfg.name)
        .bind(&l.order_no)
        .fetch_optional(&mut *conn)
        .await?;
        out.extend(r.map(|r| our_attempt(&r, wall, engine)));
    }
    Ok(out)
}

fn our_attempt(r: &sqlx::any::AnyRow, wall: i64, engine: &Engine) -> OurAttempt {
    let status: String = r.get("status");
    let lease: Option<i64> = r.get("lease_until");
    let free = lease.is_none_or(|t| t < wall);
    let owner: Option<String> = r.get("lease_owner");
    let fixable = match status.as_str() {
        "unknown" => free || owner.as_deref() == Some(engine.cfg.owner.as_str()),
        "submitted" => free,
        _ => false,
    };
    OurAttempt {
        id: r.get("id"),
        loan_id: r.get("loan_id"),
        order_no: r.get("order_no"),
        amount: from_minor(r.get("amount")),
        status,
        code: r.get("code"),
        channel_ref: r.get("channel_ref"),
        created_at: r.get("created_at"),
        fixable,
    }
}

/// Resolve the open attempts the statement settles, through the engine's apply path (same
/// allocation, ledger entry and installment updates as a query answer).
async fn auto_fix(
    engine: &Engine,
    conn: &mut AnyConnection,
    items: &[Item],
    now: DateTime<Utc>,
) -> Result<(), ReconError> {
    let fixes: Vec<&Item> = items.iter().filter(|i| i.auto_fix.is_some()).collect();
    if fixes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = fixes
        .iter()
        .filter_map(|i| i.ours.as_ref().map(|a| a.id))
        .collect();
    let recs = attempt_recs(conn, &ids).await?;
    let mut loan_ids: Vec<String> = recs.iter().map(|a| a.loan_id.clone()).collect();
    loan_ids.sort();
    loan_ids.dedup();
    let mut loans = load_loans(conn, &loan_ids, now.date_naive() - Days::new(2)).await?;
    let mut w = Writes::default();
    for item in fixes {
        let (Some(ours), Some((_, line))) = (&item.ours, &item.theirs) else {
            continue;
        };
        let Some(rec) = recs.iter().find(|r| r.id == ours.id) else {
            continue;
        };
        let Some(loan) = loans.get_mut(&rec.loan_id) else {
            continue;
        };
        let policy = engine.policy(&loan.policy)?;
        let v = match item.auto_fix {
            Some(AutoFix::ResolvedSucceeded) => Verdict::Succeeded {
                amount: line.amount,
                channel_ref: line.channel_ref.clone(),
            },
            _ => Verdict::Failed {
                code: "STATEMENT_FAILED".into(),
                class: crate::domain::FailureClass::Soft,
            },
        };
        loan.open_attempt = false;
        apply::apply_verdict(
            loan,
            policy,
            rec,
            &v,
            now,
            &apply::ApplyCtx::of(&engine.cfg),
            &mut w,
        );
    }
    apply::flush(conn, &mut loans, w, now).await?;
    Ok(())
}

async fn attempt_recs(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<Vec<AttemptRec>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let r = sqlx::query(
            "SELECT id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, amount, local_date, queries \
             FROM attempts WHERE id = $1",
        )
        .bind(*id)
        .fetch_one(&mut *conn)
        .await?;
        out.push(AttemptRec {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            seq: r.get::<i64, _>("seq") as u32,
            mandate_id: r.get("mandate_id"),
            channel: r.get("channel"),
            order_no: r.get("order_no"),
            kind: r.get("kind"),
            ladder_step: r.get::<i64, _>("ladder_step") as u32,
            amount: from_minor(r.get("amount")),
            local_date: NaiveDate::parse_from_str(&r.get::<String, _>("local_date"), "%Y-%m-%d")
                .expect("stored date"),
            queries: r.get::<i64, _>("queries") as u32,
        });
    }
    Ok(out)
}

async fn insert_items(
    conn: &mut AnyConnection,
    channel: &str,
    date: NaiveDate,
    statement_id: i64,
    items: &[Item],
    now: DateTime<Utc>,
) -> Result<(), ReconError> {
    if items.is_empty() {
        return Ok(());
    }
    let first = alloc_on(conn, "recon_item", items.len() as i64).await?;
    let mut rows = Rows::new(16);
    for (i, it) in items.iter().enumerate() {
        let ours = it.ours.as_ref();
        let theirs = it.theirs.as_ref();
        rows.push(vec![
            Val::Int(first + i as i64),
            channel.into(),
            date.to_string().into(),
            it.order_no.clone().into(),
            ours.map(|a| a.id).into(),
            theirs.map(|_| statement_id).into(),
            theirs.map(|(n, _)| *n as i64).into(),
            it.outcome.as_str().into(),
            ours.map(|a| a.status.clone()).into(),
            ours.map(|a| to_minor(a.amount)).transpose()?.into(),
            theirs.map(|(_, l)| l.status.clone()).into(),
            theirs.map(|(_, l)| to_minor(l.amount)).transpose()?.into(),
            it.auto_fix.map(|f| f.as_str().to_string()).into(),
            it.is_case().then(|| "open".to_string()).into(),
            it.evidence().to_string().into(),
            Val::Int(now.timestamp_millis()),
        ]);
    }
    rows.insert(
            conn,
            "INSERT INTO recon_items (id, channel, recon_date, order_no, attempt_id, statement_id, line_no, \
             outcome, our_status, our_amount, their_status, their_amount, auto_fix, case_status, evidence, created_at)",
            // An attempt escalated while unknown has an `unresolved` case under this key:
            // the statement line is the evidence it waited for, so the item takes its place.
            "ON CONFLICT (channel, recon_date, order_no) DO UPDATE SET \
             statement_id = excluded.statement_id, line_no = excluded.line_no, \
             outcome = excluded.outcome, our_status = excluded.our_status, \
             our_amount = excluded.our_amount, their_status = excluded.their_status, \
             their_amount = excluded.their_amount, auto_fix = excluded.auto_fix, \
             case_status = excluded.case_status, evidence = excluded.evidence \
             WHERE recon_items.outcome = 'unresolved'",
        )
        .await?;
    Ok(())
}

/// The daemon's daily statement fetch: for each of `channels` whose `statement_time` (local
/// to its statement zone) has passed today, fetch the previous day's statement unless it is
/// already imported, and reconcile it; then settle what is due. The `statements` row (unique
/// per channel, day and content) is the record that the day was fetched, so several daemons
/// fetch it once between them (a race imports the same content once). A channel that fails
/// is logged and retried on the next tick.
pub async fn fetch_due(
    engine: &Engine,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<ImportOutcome>, ReconError> {
    let mut out = Vec::new();
    for name in channels {
        let cfg = channel_config(engine, name)?;
        let local = now.with_timezone(&cfg.settlement.tz);
        if local.time() < cfg.settlement.statement_time {
            continue;
        }
        let Some(day) = local.date_naive().pred_opt() else {
            continue;
        };
        let have: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM statements WHERE channel = $1 AND stmt_date = $2",
        )
        .bind(name.as_str())
        .bind(day.to_string())
        .fetch_one(&engine.db.pool)
        .await?;
        if have > 0 {
            continue;
        }
        let channel = engine.channel(name)?;
        match channel.statement(day).await {
            Ok(lines) => {
                let source = format!("fetched from {name}");
                match import_lines(engine, name, day, &lines, &source, now).await {
                    Ok(done) => out.push(done),
                    Err(e) => {
                        tracing::error!(channel = %name, %day, error = %e, "statement import failed")
                    }
                }
            }
            Err(e) => tracing::warn!(channel = %name, %day, error = %e, "statement fetch failed"),
        }
    }
    settle::settle_due(engine, now).await?;
    Ok(out)
}
