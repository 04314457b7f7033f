//! Daily upkeep of overdue installments: penalty accrual, overdue status, the overdue part of
//! the plan, and the hand-off to collections past the policy's stop point.

use super::plan::{action_row, insert_actions};
use super::{Engine, EngineError, RunSummary};
use crate::domain::planner::plan_overdue;
use crate::domain::{
    capped_penalty, days_past_due, from_minor, local_date, penalty_between, penalty_start,
    to_minor, PenaltyBase,
};
use crate::store::installments::{self, OverdueRow, PenaltyUpdate};
use crate::store::Rows;
use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::AnyConnection;
use std::collections::{BTreeSet, HashMap};

const REFRESH_BATCH: i64 = 2000;

/// Bring every overdue installment up to `now`'s local date.
#[tracing::instrument(skip_all)]
pub async fn refresh_overdue(
    engine: &Engine,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    // Local dates lag or lead UTC by at most a day, so this bound catches every zone.
    let bound = (now.date_naive() + Days::new(1)).to_string();
    let mut after = (String::new(), 0i64);
    loop {
        let mut tx = engine.db.begin().await?;
        let rows = installments::overdue_batch(&mut tx, &bound, &after, REFRESH_BATCH).await?;
        let Some(last) = rows.last() else {
            tx.commit().await?;
            let n = super::writeoff::write_off_past_point(engine, now).await?;
            if n > 0 {
                tracing::info!(loans = n, "written off past the policy's write-off point");
            }
            return Ok(());
        };
        after = (last.loan_id.clone(), last.seq as i64);
        refresh_batch(engine, &mut tx, rows, now, summary).await?;
        tx.commit().await?;
    }
}

async fn refresh_batch(
    engine: &Engine,
    conn: &mut AnyConnection,
    rows: Vec<OverdueRow>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut updates = Vec::new();
    let mut actions = Rows::new(5);
    let mut to_collections = BTreeSet::new();
    let mut oldest_due: HashMap<String, NaiveDate> = HashMap::new();
    let mut poisoned: Vec<(String, String)> = Vec::new();
    for r in rows {
        if poisoned.iter().any(|(l, _)| *l == r.loan_id) {
            continue;
        }
        match refresh_row(engine, &r, now) {
            Ok(None) => {}
            Ok(Some(u)) => {
                for a in u.overdue_plan {
                    actions.push(action_row(&r.loan_id, &a));
                }
                updates.push(PenaltyUpdate {
                    loan_id: r.loan_id.clone(),
                    seq: r.seq,
                    penalty: u.penalty,
                    through: u.today,
                });
                let oldest = oldest_due.entry(r.loan_id.clone()).or_insert(r.due);
                if days_past_due(Some(*oldest), u.today) > u.stop_after {
                    to_collections.insert(r.loan_id);
                }
            }
            Err(why) => poisoned.push((r.loan_id, why)),
        }
    }
    for (loan, why) in &poisoned {
        super::guard::park_loan(&mut *conn, loan, why, now).await?;
        summary.loans_parked += 1;
    }
    refresh_writes(conn, updates, actions, to_collections, summary).await
}

/// What refreshing one overdue installment changes.
struct Refreshed {
    today: NaiveDate,
    /// The installment's penalty after today's accrual, in minor units.
    penalty: i64,
    /// The overdue part of its plan, when not planned yet.
    overdue_plan: Vec<crate::domain::planner::PlannedAction>,
    stop_after: u32,
}

/// Penalty accrual and the overdue plan of one installment, pure; `None` when it is up to
/// date. A panic or an unknown policy is the loan's own failure.
fn refresh_row(
    engine: &Engine,
    r: &OverdueRow,
    now: DateTime<Utc>,
) -> Result<Option<Refreshed>, String> {
    if let Some(why) = &r.bad {
        return Err(why.clone());
    }
    // A zone that does not decode is the loan's own error: never a guessed UTC date.
    let tz = *r.tz.as_ref().map_err(|e| e.to_string())?;
    let today = local_date(now, tz);
    if r.due >= today || r.penalty_through == Some(today) && r.overdue_planned {
        return Ok(None);
    }
    let policy = engine.policy(&r.policy).map_err(|e| e.to_string())?;
    super::guard::catch(|| refresh_in_policy(policy, r, tz, today))
        .map_err(|e| format!("panic while refreshing installment {}: {e}", r.seq))?
        .map(Some)
        .map_err(|e| e.to_string())
}

fn refresh_in_policy(
    policy: &crate::domain::policy::Policy,
    r: &OverdueRow,
    tz: chrono_tz::Tz,
    today: NaiveDate,
) -> Result<Refreshed, crate::domain::MoneyError> {
    let pen = &policy.penalty;
    let (principal, interest) = (from_minor(r.principal), from_minor(r.interest));
    let principal_owed = principal - from_minor(r.paid_principal);
    let base = match pen.base {
        PenaltyBase::Principal => principal_owed,
        PenaltyBase::PrincipalInterest => principal_owed + interest - from_minor(r.paid_interest),
    };
    let start = penalty_start(r.due, pen.grace_days);
    let from = r.penalty_through.map_or(start, |t| t.max(start));
    let added = penalty_between(base, pen.daily_rate, from, today);
    let overdue_plan = if r.overdue_planned {
        Vec::new()
    } else {
        plan_overdue(policy, tz, r.seq, r.due, r.payday)
    };
    // The most penalty an installment carries is its principal and interest in full.
    let penalty = capped_penalty(from_minor(r.penalty), added, principal + interest);
    Ok(Refreshed {
        today,
        penalty: to_minor(penalty)?,
        overdue_plan,
        stop_after: policy.limits.stop_after_days_past_due,
    })
}

async fn refresh_writes(
    conn: &mut AnyConnection,
    updates: Vec<PenaltyUpdate>,
    actions: Rows,
    to_collections: BTreeSet<String>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    summary.installments_refreshed += updates.len() as u64;
    summary.loans_to_collections += to_collections.len() as u64;
    installments::write_penalties(conn, &updates).await?;
    insert_actions(conn, actions).await?;
    installments::hand_to_collections(conn, &to_collections).await?;
    Ok(())
}
