//! Daily upkeep of overdue installments: penalty accrual, overdue status, the overdue part of
//! the plan, and the hand-off to collections past the policy's stop point.

use super::plan::{action_row, insert_actions};
use super::{Engine, EngineError, RunSummary};
use crate::domain::planner::plan_overdue;
use crate::domain::{
    capped_penalty, days_past_due, from_minor, local_date, penalty_between, penalty_start,
    to_minor, PenaltyBase,
};
use crate::store::{stored_date, stored_tz, Rows, Val};
use chrono::{DateTime, Days, NaiveDate, Utc};
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeSet, HashMap};

const REFRESH_BATCH: i64 = 2000;

struct OverdueRow {
    loan_id: String,
    seq: u32,
    due: NaiveDate,
    principal: i64,
    interest: i64,
    paid_principal: i64,
    paid_interest: i64,
    penalty: i64,
    penalty_through: Option<NaiveDate>,
    overdue_planned: bool,
    tz: chrono_tz::Tz,
    policy: String,
    payday: Option<u32>,
    /// A stored value that did not decode: the loan is parked instead of refreshed.
    bad: Option<String>,
}

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
        let rows = overdue_batch(&mut tx, &bound, &after).await?;
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

async fn overdue_batch(
    conn: &mut AnyConnection,
    bound: &str,
    after: &(String, i64),
) -> Result<Vec<OverdueRow>, sqlx::Error> {
    let rows = sqlx::query(
        // Raw columns, added up in Rust: a stored amount out of range fails its own row (and
        // parks its loan), where SQL arithmetic would fail the whole query.
        "SELECT i.loan_id, i.seq, i.due_date, i.principal, i.paid_principal, i.interest, \
         i.paid_interest, i.penalty, i.penalty_through, i.overdue_planned, \
         l.tz, l.policy, b.payday \
         FROM installments i JOIN loans l ON l.id = i.loan_id JOIN borrowers b ON b.id = l.borrower_id \
         WHERE i.status <> 'paid' AND l.status = 'active' AND l.parked_at IS NULL AND i.due_date < $1 \
         AND (i.penalty_through IS NULL OR i.penalty_through < $1) \
         AND (i.loan_id, i.seq) > ($2, $3) \
         ORDER BY i.loan_id, i.seq LIMIT $4",
    )
    .bind(bound)
    .bind(after.0.as_str())
    .bind(after.1)
    .bind(REFRESH_BATCH)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(overdue_row).collect())
}

fn overdue_row(r: &sqlx::any::AnyRow) -> OverdueRow {
    let mut bad = None;
    let mut keep = |e: crate::store::DecodeError| {
        bad.get_or_insert(e.to_string());
    };
    let due = stored_date("due_date", &r.get::<String, _>("due_date"))
        .map_err(&mut keep)
        .unwrap_or(NaiveDate::MIN);
    let penalty_through = r
        .get::<Option<String>, _>("penalty_through")
        .and_then(|s| stored_date("penalty_through", &s).map_err(&mut keep).ok());
    let tz = stored_tz("tz", &r.get::<String, _>("tz"))
        .map_err(&mut keep)
        .unwrap_or(chrono_tz::UTC);
    OverdueRow {
        loan_id: r.get("loan_id"),
        seq: r.get::<i64, _>("seq") as u32,
        due,
        principal: r.get("principal"),
        interest: r.get("interest"),
        paid_principal: r.get("paid_principal"),
        paid_interest: r.get("paid_interest"),
        penalty: r.get("penalty"),
        penalty_through,
        overdue_planned: r.get::<i64, _>("overdue_planned") != 0,
        tz,
        policy: r.get("policy"),
        payday: r.get::<Option<i64>, _>("payday").map(|d| d as u32),
        bad,
    }
}

async fn refresh_batch(
    engine: &Engine,
    conn: &mut AnyConnection,
    rows: Vec<OverdueRow>,
    now: DateTime<Utc>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    let mut updates = Rows::new(5);
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
                updates.push(vec![
                    r.loan_id.clone().into(),
                    r.seq.into(),
                    Val::Int(u.penalty),
                    u.today.to_string().into(),
                    Val::Int(1),
                ]);
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
    let today = local_date(now, r.tz);
    if r.due >= today || r.penalty_through == Some(today) && r.overdue_planned {
        return Ok(None);
    }
    let policy = engine.policy(&r.policy).map_err(|e| e.to_string())?;
    super::guard::catch(|| refresh_in_policy(policy, r, today))
        .map_err(|e| format!("panic while refreshing installment {}: {e}", r.seq))?
        .map(Some)
        .map_err(|e| e.to_string())
}

fn refresh_in_policy(
    policy: &crate::domain::policy::Policy,
    r: &OverdueRow,
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
        plan_overdue(policy, r.tz, r.seq, r.due, r.payday)
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
    updates: Rows,
    actions: Rows,
    to_collections: BTreeSet<String>,
    summary: &mut RunSummary,
) -> Result<(), EngineError> {
    summary.installments_refreshed += updates.len() as u64;
    summary.loans_to_collections += to_collections.len() as u64;
    if !updates.is_empty() {
        updates
            .with_values(
                conn,
                "loan_id, seq, penalty, through, planned",
                "UPDATE installments SET penalty = v.penalty, penalty_through = v.through, \
                 overdue_planned = v.planned, status = 'overdue' \
                 FROM v WHERE installments.loan_id = v.loan_id AND installments.seq = v.seq \
                 AND installments.status || '' <> 'paid'",
            )
            .await?;
    }
    insert_actions(conn, actions).await?;
    hand_to_collections(conn, &to_collections).await?;
    Ok(())
}

/// Stop auto-debit: the loan is marked for collections and its pending attempts cancelled.
async fn hand_to_collections(
    conn: &mut AnyConnection,
    loans: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    if loans.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(1);
    for l in loans {
        rows.push(vec![l.clone().into()]);
    }
    let mut again = Rows::new(1);
    for l in loans {
        again.push(vec![l.clone().into()]);
    }
    rows.with_values(
        conn,
        "id",
        "UPDATE loans SET status = 'collections' FROM v WHERE loans.id = v.id",
    )
    .await?;
    again
        .with_values(
            conn,
            "id",
            "UPDATE actions SET status = 'cancelled', note = 'handed to collections' FROM v \
             WHERE actions.loan_id = v.id AND actions.kind = 'attempt' AND actions.status || '' = 'pending'",
        )
        .await?;
    Ok(())
}
