//! Persisting plans: the agenda rows for each installment, keyed so planning twice is a no-op.

use super::{Engine, EngineError};
use crate::domain::planner::{plan_installment, PlannedAction};
use crate::store::agenda::{self, DueRow, Unplanned};
pub use crate::store::agenda::{action_row, insert_actions};
use crate::store::Rows;
use sqlx::AnyConnection;

const PLAN_BATCH: i64 = 5000;

/// Refresh PostgreSQL's statistics after planning at least this many actions in one go.
const ANALYZE_AFTER: u64 = 20_000;

/// Plan every loan not planned yet (or just `only`), in batches. Returns actions written.
#[tracing::instrument(skip_all)]
pub async fn plan_new_loans(engine: &Engine, only: Option<&[String]>) -> Result<u64, EngineError> {
    let (mut written, mut after) = (0, String::new());
    loop {
        let mut tx = engine.db.begin().await?;
        let loans = agenda::unplanned(&mut tx, only, &after, PLAN_BATCH).await?;
        if loans.is_empty() {
            tx.commit().await?;
            if written >= ANALYZE_AFTER && engine.db.is_postgres() {
                // A bulk plan (after a bulk import) changes the tables' shape by orders of
                // magnitude; without fresh statistics PostgreSQL plans the engine's keyed
                // joins as if the tables were empty until autovacuum gets round to them.
                agenda::analyze_planned(&engine.db.pool).await?;
            }
            return Ok(written);
        }
        written += plan_batch(engine, &mut tx, &loans).await?;
        tx.commit().await?;
        after = loans.last().map(|l| l.id.clone()).unwrap_or_default();
    }
}

async fn plan_batch(
    engine: &Engine,
    conn: &mut AnyConnection,
    loans: &[Unplanned],
) -> Result<u64, EngineError> {
    let ids: Vec<&str> = loans.iter().map(|l| l.id.as_str()).collect();
    let by_loan = agenda::unpaid_dues(conn, &ids).await?;
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
    agenda::mark_planned(conn, &ids).await?;
    Ok(written)
}

/// The agenda of one loan, pure; a stored value that does not decode, an unknown policy or a
/// panic is the loan's own failure, returned as the reason to park it.
fn plan_loan(
    engine: &Engine,
    l: &Unplanned,
    insts: &[DueRow],
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
    agenda::switch_policy(conn, loan_id, policy).await?;
    let ids = [loan_id.to_string()];
    let loans = agenda::unplanned(conn, Some(&ids), "", PLAN_BATCH).await?;
    plan_batch(engine, conn, &loans).await
}
