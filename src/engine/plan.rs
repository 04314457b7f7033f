//! Persisting plans: the agenda rows for each installment, keyed so planning twice is a no-op.

use super::{Engine, EngineError};
use crate::domain::planner::{plan_installment, PlannedAction};
use crate::store::{in_list, DecodeError, Rows, Val};
use chrono::NaiveDate;
use chrono_tz::Tz;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

const PLAN_BATCH: i64 = 2000;

/// Refresh PostgreSQL's statistics after planning at least this many actions in one go.
const ANALYZE_AFTER: u64 = 20_000;

/// Plan every loan not planned yet (or just `only`), in batches. Returns actions written.
#[tracing::instrument(skip_all)]
pub async fn plan_new_loans(engine: &Engine, only: Option<&[String]>) -> Result<u64, EngineError> {
    let mut written = 0;
    loop {
        let mut tx = engine.db.begin().await?;
        let loans = unplanned(&mut tx, only).await?;
        if loans.is_empty() {
            tx.commit().await?;
            if written >= ANALYZE_AFTER && engine.db.is_postgres() {
                // A bulk plan (after a bulk import) changes the tables' shape by orders of
                // magnitude; without fresh statistics PostgreSQL plans the engine's keyed
                // joins as if the tables were empty until autovacuum gets round to them.
                sqlx::query("ANALYZE borrowers, loans, mandates, installments, actions")
                    .execute(&engine.db.pool)
                    .await?;
            }
            return Ok(written);
        }
        written += plan_batch(engine, &mut tx, &loans).await?;
        tx.commit().await?;
    }
}

struct Unplanned {
    id: String,
    tz: Result<Tz, crate::store::DecodeError>,
    policy: String,
    allow_early: bool,
}

async fn unplanned(
    conn: &mut AnyConnection,
    only: Option<&[String]>,
) -> Result<Vec<Unplanned>, sqlx::Error> {
    let rows = match only {
        Some(ids) if !ids.is_empty() => {
            let sql = format!(
                "SELECT id, tz, policy, allow_early FROM loans WHERE planned = 0 AND id IN ({})",
                in_list(conn, 1, ids.len())
            );
            let mut q = sqlx::query(&sql).persistent(false);
            for id in ids {
                q = q.bind(id.as_str());
            }
            q.fetch_all(&mut *conn).await?
        }
        Some(_) => vec![],
        None => sqlx::query(
            "SELECT id, tz, policy, allow_early FROM loans WHERE planned = 0 ORDER BY id LIMIT $1",
        )
        .bind(PLAN_BATCH)
        .fetch_all(&mut *conn)
        .await?,
    };
    Ok(rows
        .into_iter()
        .map(|r| Unplanned {
            id: r.get("id"),
            tz: crate::store::stored_tz("tz", &r.get::<String, _>("tz")),
            policy: r.get("policy"),
            allow_early: r.get::<i64, _>("allow_early") != 0,
        })
        .collect())
}

async fn plan_batch(
    engine: &Engine,
    conn: &mut AnyConnection,
    loans: &[Unplanned],
) -> Result<u64, EngineError> {
    let sql = format!(
        "SELECT loan_id, seq, due_date FROM installments WHERE status <> 'paid' AND loan_id IN ({})",
        in_list(conn, 1, loans.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for l in loans {
        q = q.bind(l.id.as_str());
    }
    let mut by_loan: HashMap<String, Vec<(u32, Result<NaiveDate, DecodeError>)>> = HashMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        let due = crate::store::stored_date("due_date", &r.get::<String, _>("due_date"));
        by_loan
            .entry(r.get("loan_id"))
            .or_default()
            .push((r.get::<i64, _>("seq") as u32, due));
    }
    let mut rows = Rows::new(5);
    for l in loans {
        let insts = by_loan.get(&l.id).map_or(&[][..], |v| v.as_slice());
        match plan_loan(engine, l, insts) {
            Ok(actions) => {
                for a in actions {
                    rows.push(action_row(&l.id, &a));
                }
            }
            // Marked planned below with the rest, so the batch moves on; unparking the loan
            // plans it again.
            Err(why) => {
                super::guard::park_loan(&mut *conn, &l.id, &why, chrono::Utc::now()).await?;
            }
        }
    }
    let written = insert_actions(conn, rows).await?;
    let sql = format!(
        "UPDATE loans SET planned = 1 WHERE id IN ({})",
        in_list(conn, 1, loans.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for l in loans {
        q = q.bind(l.id.as_str());
    }
    q.execute(&mut *conn).await?;
    Ok(written)
}

/// The agenda of one loan, pure; a stored value that does not decode, an unknown policy or a
/// panic is the loan's own failure, returned as the reason to park it.
fn plan_loan(
    engine: &Engine,
    l: &Unplanned,
    insts: &[(u32, Result<NaiveDate, DecodeError>)],
) -> Result<Vec<PlannedAction>, String> {
    let tz = l.tz.clone().map_err(|e| e.to_string())?;
    let policy = engine
        .policies
        .get(&l.policy)
        .ok_or_else(|| format!("unknown policy `{}`", l.policy))?;
    let mut out = Vec::new();
    for (seq, due) in insts {
        let due = due.clone().map_err(|e| e.to_string())?;
        let planned =
            super::guard::catch(|| plan_installment(policy, tz, *seq, due, l.allow_early))
                .map_err(|e| format!("panic while planning installment {seq}: {e}"))?;
        out.extend(planned);
    }
    Ok(out)
}

/// One agenda row: (loan_id, seq, kind, slot, due_at).
pub fn action_row(loan_id: &str, a: &PlannedAction) -> Vec<Val> {
    vec![
        loan_id.into(),
        a.seq.into(),
        a.kind.as_str().into(),
        a.slot.clone().into(),
        Val::Int(a.due_at.timestamp_millis()),
    ]
}

/// Insert agenda rows; a key already planned is left as it is.
pub async fn insert_actions(conn: &mut AnyConnection, rows: Rows) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    rows.insert(
        conn,
        "INSERT INTO actions (loan_id, seq, kind, slot, due_at)",
        "ON CONFLICT (loan_id, seq, kind, slot) DO NOTHING",
    )
    .await
}

/// Move a loan to another policy and re-plan its future: pending actions are dropped and the
/// new policy's agenda is written in the same transaction; overdue installments get the new
/// policy's overdue plan on the next run. Actions already done or in flight stay as they
/// are, so a slot that already ran is not planned again.
pub async fn change_policy(
    engine: &Engine,
    conn: &mut AnyConnection,
    loan_id: &str,
    policy: &str,
) -> Result<u64, EngineError> {
    engine
        .policies
        .get(policy)
        .ok_or_else(|| EngineError::UnknownPolicy {
            loan: loan_id.into(),
            policy: policy.into(),
        })?;
    sqlx::query("DELETE FROM actions WHERE loan_id = $1 AND status = 'pending'")
        .bind(loan_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("UPDATE loans SET policy = $1, planned = 0 WHERE id = $2")
        .bind(policy)
        .bind(loan_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE installments SET overdue_planned = 0 WHERE loan_id = $1 AND status <> 'paid'",
    )
    .bind(loan_id)
    .execute(&mut *conn)
    .await?;
    let ids = [loan_id.to_string()];
    let loans = unplanned(conn, Some(&ids)).await?;
    plan_batch(engine, conn, &loans).await
}
