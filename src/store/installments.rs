//! Installments: the overdue ones to refresh, penalty updates, and the hand-off of loans to
//! collections.

use super::{stored_date, stored_tz, DecodeError, Rows, Val};
use crate::domain::status::{ActionStatus, InstallmentStatus, LoanStatus};
use chrono::NaiveDate;
use chrono_tz::Tz;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeSet;

/// An overdue installment with what refreshing it needs of its loan. Amounts are raw minor
/// units; a stored value that does not decode is kept as the row's error (`bad`, or `tz`)
/// and parks the loan instead of refreshing it.
pub struct OverdueRow {
    pub loan_id: String,
    pub seq: u32,
    pub due: NaiveDate,
    pub principal: i64,
    pub interest: i64,
    pub paid_principal: i64,
    pub paid_interest: i64,
    pub penalty: i64,
    pub penalty_through: Option<NaiveDate>,
    pub overdue_planned: bool,
    pub tz: Result<Tz, DecodeError>,
    pub policy: String,
    pub payday: Option<u32>,
    /// A stored date that did not decode.
    pub bad: Option<String>,
}

/// The next `limit` installments after `after` (loan id, seq) of active, unparked loans
/// that are due before `bound` and not refreshed through it.
pub async fn overdue_batch(
    conn: &mut AnyConnection,
    bound: &str,
    after: &(String, i64),
    limit: i64,
) -> Result<Vec<OverdueRow>, sqlx::Error> {
    // Raw columns, added up in Rust: a stored amount out of range fails its own row (and
    // parks its loan), where SQL arithmetic would fail the whole query.
    let sql = format!(
        "SELECT i.loan_id, i.seq, i.due_date, i.principal, i.paid_principal, i.interest, \
         i.paid_interest, i.penalty, i.penalty_through, i.overdue_planned, \
         l.tz, l.policy, b.payday \
         FROM installments i JOIN loans l ON l.id = i.loan_id JOIN borrowers b ON b.id = l.borrower_id \
         WHERE i.status <> '{paid}' AND l.status = '{active}' AND l.parked_at IS NULL AND i.due_date < $1 \
         AND (i.penalty_through IS NULL OR i.penalty_through < $1) \
         AND (i.loan_id, i.seq) > ($2, $3) \
         ORDER BY i.loan_id, i.seq LIMIT $4",
        paid = InstallmentStatus::Paid.as_str(),
        active = LoanStatus::Active.as_str(),
    );
    let rows = sqlx::query(&sql)
        .bind(bound)
        .bind(after.0.as_str())
        .bind(after.1)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.iter().map(overdue_row).collect())
}

fn overdue_row(r: &sqlx::any::AnyRow) -> OverdueRow {
    let mut bad = None;
    let mut keep = |e: DecodeError| {
        bad.get_or_insert(e.to_string());
    };
    let due = stored_date("due_date", &r.get::<String, _>("due_date"))
        .map_err(&mut keep)
        .unwrap_or(NaiveDate::MIN);
    let penalty_through = r
        .get::<Option<String>, _>("penalty_through")
        .and_then(|s| stored_date("penalty_through", &s).map_err(&mut keep).ok());
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
        tz: stored_tz("tz", &r.get::<String, _>("tz")),
        policy: r.get("policy"),
        payday: r.get::<Option<i64>, _>("payday").map(|d| d as u32),
        bad,
    }
}

/// An overdue installment's penalty after accrual, and the local date it is accrued through.
pub struct PenaltyUpdate {
    pub loan_id: String,
    pub seq: u32,
    pub penalty: i64,
    pub through: NaiveDate,
}

/// Write accrued penalties: each installment becomes overdue with its overdue plan made.
pub async fn write_penalties(
    conn: &mut AnyConnection,
    ups: &[PenaltyUpdate],
) -> Result<(), sqlx::Error> {
    if ups.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(5);
    for u in ups {
        rows.push(vec![
            u.loan_id.clone().into(),
            u.seq.into(),
            Val::Int(u.penalty),
            u.through.to_string().into(),
            Val::Int(1),
        ]);
    }
    let sql = format!(
        "UPDATE installments SET penalty = v.penalty, penalty_through = v.through, \
         overdue_planned = v.planned, status = '{overdue}' \
         FROM v WHERE installments.loan_id = v.loan_id AND installments.seq = v.seq \
         AND installments.status || '' <> '{paid}'",
        overdue = InstallmentStatus::Overdue.as_str(),
        paid = InstallmentStatus::Paid.as_str(),
    );
    rows.with_values(conn, "loan_id, seq, penalty, through, planned", &sql)
        .await?;
    Ok(())
}

/// Stop auto-debit: the loans are marked for collections and their pending attempts
/// cancelled.
pub async fn hand_to_collections(
    conn: &mut AnyConnection,
    loans: &BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    if loans.is_empty() {
        return Ok(());
    }
    let rows = || {
        let mut rows = Rows::new(1);
        for l in loans {
            rows.push(vec![l.clone().into()]);
        }
        rows
    };
    let sql = format!(
        "UPDATE loans SET status = '{}' FROM v WHERE loans.id = v.id",
        LoanStatus::Collections.as_str()
    );
    rows().with_values(conn, "id", &sql).await?;
    let sql = format!(
        "UPDATE actions SET status = '{cancelled}', note = 'handed to collections' FROM v \
         WHERE actions.loan_id = v.id AND actions.kind = 'attempt' AND actions.status || '' = '{pending}'",
        cancelled = ActionStatus::Cancelled.as_str(),
        pending = ActionStatus::Pending.as_str(),
    );
    rows().with_values(conn, "id", &sql).await?;
    Ok(())
}
