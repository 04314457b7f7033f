//! Settling attempts whose result is not known: query the channel, never resubmit.

use super::apply::{self, verdict_of_query, AttemptRec, Verdict, Writes};
use super::state::load_loans;
use super::{Engine, EngineError, RunSummary};
use crate::domain::{from_minor, to_minor};
use chrono::{DateTime, Days, NaiveDate, Utc};
use futures::StreamExt;
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
        let atts: Vec<AttemptRec> = open_attempts(engine, now)
            .await?
            .into_iter()
            .filter(|a| seen.insert(a.id))
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
) -> Result<Vec<AttemptRec>, sqlx::Error> {
    let wall = Utc::now().timestamp_millis();
    let lock = match engine.db.backend {
        crate::store::Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        crate::store::Backend::Sqlite => "",
    };
    // Claimed with a lease while the query is in flight, so two instances never settle the
    // same attempt. A `submitted` attempt (its submitter may still be waiting for the channel)
    // is only taken once its lease ran out and its owner is not alive.
    let sql = format!(
        "UPDATE attempts SET lease_owner = $3, lease_until = $4 WHERE id IN (\
         SELECT id FROM attempts WHERE status IN ('unknown','submitted') AND \
         ((status = 'unknown' AND next_query_at <= $1 AND (lease_until IS NULL OR lease_until < $2)) OR \
          (status = 'submitted' AND lease_until < $2 AND NOT EXISTS ({alive}))) \
         ORDER BY id LIMIT 2000 {lock}) \
         RETURNING id, loan_id, seq, mandate_id, channel, order_no, kind, ladder_step, amount, local_date, queries",
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
        .map(|r| AttemptRec {
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
        })
        .collect())
}

async fn resolve_batch(
    engine: &Engine,
    atts: Vec<AttemptRec>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut ids: Vec<String> = atts.iter().map(|a| a.loan_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let mut conn = engine.db.pool.acquire().await?;
    let mut loans = load_loans(&mut conn, &ids, now.date_naive() - Days::new(2)).await?;
    drop(conn);
    let answers: Vec<_> = futures::stream::iter(atts.iter().map(|a| {
        let ch = engine.channels.get(&a.channel).cloned();
        let order_no = a.order_no.clone();
        async move {
            match ch {
                Some(ch) => ch.query(&order_no, now).await,
                None => Err(crate::channel::ChannelError::Transport(
                    "channel not configured".into(),
                )),
            }
        }
    }))
    .buffered(engine.cfg.concurrency.max(1))
    .collect()
    .await;
    let mut w = Writes::default();
    for (mut a, answer) in atts.into_iter().zip(answers) {
        let Some(loan) = loans.get_mut(&a.loan_id) else {
            continue;
        };
        let policy = engine.policy(&loan.policy)?;
        a.queries += 1;
        let v = verdict_of_query(policy, &a.channel, answer, a.queries);
        if !matches!(v, Verdict::Unknown { .. }) {
            summary.resolved += 1;
            summary.count_attempt(&format!("{}(query)", a.kind), v.outcome_name());
        }
        // The loan stays blocked while any attempt is open; settled here, it is free again.
        loan.open_attempt = false;
        apply::apply_verdict(
            loan,
            policy,
            &a,
            &v,
            now,
            &apply::ApplyCtx::of(&engine.cfg),
            &mut w,
        );
    }
    summary.collected_minor += to_minor(w.collected)?;
    let mut tx = engine.db.pool.begin().await?;
    apply::flush(&mut tx, &mut loans, w, now).await?;
    tx.commit().await?;
    Ok(())
}
