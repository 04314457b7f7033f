//! Settling attempts whose result is not known: query the channel, never resubmit.

use super::apply::{self, verdict_of_query, AttemptRec, Verdict, Writes};
use super::guard::catch;
use super::{Engine, EngineError, RunSummary};
use crate::domain::loan::LoanState;
use crate::domain::{from_minor, to_minor};
use crate::store::loans::load_loans;
use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::{FutureExt, StreamExt};
use sqlx::Row;

/// Query every unknown attempt whose next query is due, and every `submitted` attempt whose
/// lease ran out (its submitter died between recording and hearing back).
#[tracing::instrument(skip_all)]
pub async fn resolve_open_attempts(
    engine: &Engine,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut seen = std::collections::HashSet::new();
    loop {
        let atts: Vec<OpenAttempt> = open_attempts(engine, now)
            .await?
            .into_iter()
            .filter(|a| seen.insert(a.rec.id))
            .collect();
        if atts.is_empty() {
            return Ok(());
        }
        resolve_batch(engine, atts, now, summary).await?;
    }
}

async fn open_attempts(
    engine: &Engine,
    now: DateTime<Utc>,
) -> Result<Vec<OpenAttempt>, sqlx::Error> {
    let wall = Utc::now().timestamp_millis();
    let lock = match engine.db.backend {
        crate::store::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        crate::store::Backend::Sqlite => "",
    };
    // Claimed with a lease while the query is in flight, so two instances never settle the
    // same attempt. A `submitted` attempt (its submitter may still be waiting for the channel)
    // is only taken once its owner is not alive (stale heartbeat, or gone from this host).
    let sql = format!(
        "UPDATE attempts SET lease_owner = $3, lease_until = $4 WHERE id IN (\
         SELECT id FROM attempts WHERE status IN ('unknown','submitted') AND \
         NOT EXISTS (SELECT 1 FROM loans p WHERE p.id = attempts.loan_id AND p.parked_at IS NOT NULL) AND \
         ((status = 'unknown' AND next_query_at <= $1 AND (lease_until IS NULL OR lease_until < $2)) OR \
          (status = 'submitted' AND lease_owner <> $3 AND NOT EXISTS ({alive}))) \
         ORDER BY id LIMIT 2000 {lock}) \
         RETURNING id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, amount, local_date, queries, created_at",
        alive = super::pursue::alive_owner("attempts.lease_owner", "$5"),
    );
    let rows = sqlx::query(&sql)
        .bind(now.timestamp_millis())
        .bind(wall)
        .bind(engine.cfg.owner.as_str())
        .bind(wall + engine.cfg.lease_ms)
        .bind(wall - engine.cfg.lease_ms)
        .fetch_all(&engine.db.pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| OpenAttempt {
            created_at: r.get("created_at"),
            rec: attempt_rec(&r),
        })
        .collect())
}

/// An open attempt and when it was made (for escalation to a person).
struct OpenAttempt {
    rec: AttemptRec,
    created_at: i64,
}

fn attempt_rec(r: &sqlx::any::AnyRow) -> AttemptRec {
    {
        AttemptRec {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            seq: r.get::<i64, _>("seq") as u32,
            mandate_id: r.get("mandate_id"),
            channel: r.get("channel"),
            order_no: r.get("order_no"),
            kind: r.get("kind"),
            ladder_step: r.get::<i64, _>("ladder_step") as u32,
            amount: from_minor(r.get("amount")),
            // A date that does not decode cannot come from repayd; the loan's own stored
            // dates are checked when it is loaded (and the loan parked).
            local_date: NaiveDate::parse_from_str(&r.get::<String, _>("local_date"), "%Y-%m-%d")
                .unwrap_or(NaiveDate::MIN),
            queries: r.get::<i64, _>("queries") as u32,
        }
    }
}

async fn resolve_batch(
    engine: &Engine,
    atts: Vec<OpenAttempt>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut ids: Vec<String> = atts.iter().map(|a| a.rec.loan_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut conn = engine.db.pool.acquire().await?;
    let mut loans = load_loans(&mut conn, &ids, now.date_naive() - Days::new(2)).await?;
    drop(conn);
    let answers = query_all(engine, &atts, now).await;
    let ctx = apply::ApplyCtx::of(&engine.cfg);
    let mut w = Writes::default();
    let mut escalate = Vec::new();
    let mut settled_late = Vec::new();
    let mut poisoned = Vec::new();
    for (mut open, answer) in atts.into_iter().zip(answers) {
        let Some(loan) = loans.get_mut(&open.rec.loan_id) else {
            continue;
        };
        open.rec.queries += 1;
        let a = &open.rec;
        match settle_one(engine, loan, a, answer, now) {
            Ok((one, v)) => {
                w.merge(one);
                let late = escalation_due(engine, &open, now);
                match v {
                    Verdict::Unknown { code } if late => escalate.push((open, code)),
                    Verdict::Unknown { .. } => {}
                    v => {
                        summary.resolved += 1;
                        summary.count_attempt(&format!("{}(query)", a.kind), v.outcome_name());
                        super::export_answer(&a.kind, "query", &v, &loan.currency, &a.channel);
                        if late {
                            settled_late.push(a.id);
                        }
                    }
                }
            }
            Err(why) => {
                loans.remove(&a.loan_id);
                apply::stage_unknown(a, "UNAPPLIED", now, &ctx, &mut w);
                poisoned.push((a.loan_id.clone(), why));
            }
        }
    }
    let mut tx = engine.db.begin().await?;
    let flushed = apply::flush(&mut tx, &mut loans, w, now).await?;
    summary.add_collected(flushed.collected);
    // An answer that came late (its loan left out of the flush) opens no case either.
    escalate.retain(|(open, _)| loans.contains_key(&open.rec.loan_id));
    escalate_to_cases(engine, &mut tx, &escalate, now).await?;
    close_settled_cases(&mut tx, &settled_late, now).await?;
    tx.commit().await?;
    for (loan_id, why) in poisoned {
        let mut conn = engine.db.pool.acquire().await?;
        super::guard::park_loan(&mut conn, &loan_id, &why, now).await?;
        summary.loans_parked += 1;
    }
    Ok(())
}

async fn query_all(
    engine: &Engine,
    atts: &[OpenAttempt],
    now: DateTime<Utc>,
) -> Vec<Result<crate::domain::channel::QueryOutcome, crate::domain::channel::ChannelError>> {
    futures::stream::iter(atts.iter().map(|a| {
        let ch = engine.channels.get(&a.rec.channel).cloned();
        let order_no = a.rec.order_no.clone();
        async move {
            let Some(ch) = ch else {
                let why = "channel not configured".into();
                return Err(crate::domain::channel::ChannelError::Transport(why));
            };
            // A panicking adapter answers nothing: the attempt stays unknown.
            match std::panic::AssertUnwindSafe(ch.query(&order_no, now))
                .catch_unwind()
                .await
            {
                Ok(r) => r,
                Err(p) => Err(crate::domain::channel::ChannelError::Transport(format!(
                    "the channel panicked: {}",
                    super::guard::panic_text(p.as_ref())
                ))),
            }
        }
    }))
    .buffered(engine.cfg.concurrency.max(1))
    .collect()
    .await
}

/// Classify one query answer and apply it to its loan, into writes of its own: a panic (or
/// an unknown policy) stages nothing of the loan.
fn settle_one(
    engine: &Engine,
    loan: &mut LoanState,
    a: &AttemptRec,
    answer: Result<crate::domain::channel::QueryOutcome, crate::domain::channel::ChannelError>,
    now: DateTime<Utc>,
) -> Result<(Writes, Verdict), String> {
    if let Some(why) = &loan.broken {
        return Err(why.clone());
    }
    let policy = engine.policy(&loan.policy).map_err(|e| e.to_string())?;
    let ctx = apply::ApplyCtx::of(&engine.cfg);
    catch(|| {
        let v = verdict_of_query(policy, &a.channel, answer, a.queries);
        // The loan stays blocked while any attempt is open; settled here, it is free again.
        loan.open_attempt = false;
        let mut w = Writes::default();
        apply::apply_verdict(loan, policy, a, &v, now, &ctx, &mut w);
        (w, v)
    })
    .map_err(|e| format!("panic while applying the answer to attempt {}: {e}", a.id))
    .and_then(|(w, v)| {
        // What cannot be stored is found here, for this loan alone.
        w.check()
            .and_then(|()| loan.check_storable())
            .map_err(|e| format!("attempt {}: {e}", a.id))?;
        Ok((w, v))
    })
}

/// An attempt still unknown after `unknown_case_after_queries` queries or
/// `unknown_case_after_ms` goes to a person as a case, once. It stays blocked (it may have
/// debited) and keeps being queried; what is blocked is visible, never silent.
fn escalation_due(engine: &Engine, a: &OpenAttempt, now: DateTime<Utc>) -> bool {
    let cfg = &engine.cfg;
    a.rec.queries >= cfg.unknown_case_after_queries
        || now.timestamp_millis() - a.created_at >= cfg.unknown_case_after_ms
}

/// Open one `unresolved` reconciliation case per attempt, keyed like the statement line
/// that will settle it (channel, statement day, order number), so the day's statement takes
/// the case over when it comes.
async fn escalate_to_cases(
    engine: &Engine,
    conn: &mut sqlx::AnyConnection,
    atts: &[(OpenAttempt, String)],
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    for (a, code) in atts {
        let r = &a.rec;
        let tz = engine
            .channel_configs
            .get(&r.channel)
            .map_or(chrono_tz::UTC, |c| c.settlement.tz);
        let made = DateTime::from_timestamp_millis(a.created_at).unwrap_or(now);
        let day = crate::domain::local_date(made, tz);
        let evidence = serde_json::json!({
            "ours": { "id": r.id, "loan_id": r.loan_id, "order_no": r.order_no,
                      "amount": r.amount, "status": "unknown", "last_code": code,
                      "queries": r.queries, "since": made },
        });
        let id = crate::store::alloc_on(conn, "recon_item", 1).await?;
        let opened = sqlx::query(
            "INSERT INTO recon_items (id, channel, recon_date, order_no, attempt_id, outcome, \
             our_status, our_amount, case_status, evidence, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'unresolved', 'unknown', $6, 'open', $7, $8) \
             ON CONFLICT (channel, recon_date, order_no) DO NOTHING",
        )
        .bind(id)
        .bind(r.channel.as_str())
        .bind(day.to_string())
        .bind(r.order_no.as_str())
        .bind(r.id)
        .bind(to_minor(r.amount)?)
        .bind(evidence.to_string())
        .bind(now.timestamp_millis())
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if opened == 0 {
            continue;
        }
        metrics::counter!("repayd_unknown_escalated_total", "channel" => r.channel.clone())
            .increment(1);
        tracing::warn!(attempt = r.id, loan = %r.loan_id, channel = %r.channel, code = %code,
            queries = r.queries, "attempt still unknown; a reconciliation case is open for a person");
    }
    Ok(())
}

/// Attempts that may have been escalated and are settled now by a query: their case needs
/// no person any more.
async fn close_settled_cases(
    conn: &mut sqlx::AnyConnection,
    ids: &[i64],
    now: DateTime<Utc>,
) -> Result<(), EngineError> {
    let mut rows = crate::store::Rows::new(1);
    for id in ids {
        rows.push(vec![crate::store::Val::Int(*id)]);
    }
    if rows.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "UPDATE recon_items SET case_status = 'resolved', resolved_at = {}, \
         resolved_by = 'system', resolution = 'settled by a later query' FROM v \
         WHERE recon_items.attempt_id = v.id AND recon_items.outcome = 'unresolved' \
         AND recon_items.case_status = 'open'",
        now.timestamp_millis()
    );
    rows.with_values(conn, "id", &sql).await?;
    Ok(())
}
