//! The agenda (`actions`): claims, requeues, ends, and what is due next.

use super::{in_list, Rows, Val};
use crate::domain::planner::PlannedAction;
use crate::domain::status::{ActionStatus, AttemptStatus, InstallmentStatus, NoticeStatus};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// Give `owner`'s claimed actions of `loans` back to the agenda (pending, no lease).
pub async fn requeue_claims(
    conn: &mut AnyConnection,
    loans: &[String],
    owner: &str,
) -> Result<u64, sqlx::Error> {
    let n = loans.len();
    let sql = format!(
        "UPDATE actions SET status = '{pending}', lease_owner = NULL, lease_until = NULL \
         WHERE status = '{claimed}' AND lease_owner = ${} AND loan_id IN ({})",
        n + 1,
        in_list(conn, 1, n),
        pending = ActionStatus::Pending.as_str(),
        claimed = ActionStatus::Claimed.as_str(),
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for id in loans {
        q = q.bind(id.as_str());
    }
    Ok(q.bind(owner).execute(&mut *conn).await?.rows_affected())
}

/// The due instant of the oldest pending action due at or before `now_ms`.
pub async fn oldest_pending_due(
    conn: &mut AnyConnection,
    now_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!(
        "SELECT MIN(due_at) AS oldest FROM actions WHERE status = '{}' AND due_at <= $1",
        ActionStatus::Pending.as_str()
    );
    let row = sqlx::query(&sql).bind(now_ms).fetch_one(&mut *conn).await?;
    Ok(row.get("oldest"))
}

/// Pending agenda rows by kind (`notice`, `attempt`), for the `/metrics` gauge.
pub async fn pending_by_kind(conn: &mut AnyConnection) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let sql = format!(
        "SELECT kind, COUNT(*) AS n FROM actions WHERE status = '{}' GROUP BY kind",
        ActionStatus::Pending.as_str()
    );
    let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(|r| (r.get("kind"), r.get("n"))).collect())
}

/// The earliest instant after `after_ms` at which an action, a notice or an attempt query
/// is due.
pub async fn next_due_after(
    conn: &mut AnyConnection,
    after_ms: i64,
) -> Result<Option<i64>, sqlx::Error> {
    let sql = format!(
        "SELECT MIN(x) FROM (\
         SELECT MIN(due_at) AS x FROM actions WHERE status = '{action}' AND due_at > $1 \
         UNION ALL SELECT MIN(send_after) FROM notices WHERE status = '{notice}' AND send_after > $1 \
         UNION ALL SELECT MIN(next_query_at) FROM attempts WHERE status = '{attempt}' AND next_query_at > $1) AS t",
        action = ActionStatus::Pending.as_str(),
        notice = NoticeStatus::Pending.as_str(),
        attempt = AttemptStatus::Unknown.as_str(),
    );
    sqlx::query_scalar(&sql)
        .bind(after_ms)
        .fetch_one(&mut *conn)
        .await
}

/// A loan not planned yet, as stored; a zone that does not decode is the loan's own error.
pub struct Unplanned {
    pub id: String,
    pub tz: Result<chrono_tz::Tz, super::DecodeError>,
    pub policy: String,
    pub allow_early: bool,
}

/// Loans not planned yet: `only` these, or the next `limit` in id order after `after`.
/// Paging by key (not from the start each time) keeps a bulk plan linear: the planned
/// loans before `after` are never read again.
pub async fn unplanned(
    conn: &mut AnyConnection,
    only: Option<&[String]>,
    after: &str,
    limit: i64,
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
        None => {
            sqlx::query(
                "SELECT id, tz, policy, allow_early FROM loans WHERE planned = 0 AND id > $1 \
             ORDER BY id LIMIT $2",
            )
            .bind(after)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|r| Unplanned {
            id: r.get("id"),
            tz: super::stored_tz("tz", &r.get::<String, _>("tz")),
            policy: r.get("policy"),
            allow_early: r.get::<i64, _>("allow_early") != 0,
        })
        .collect())
}

/// An installment to plan: seq and due date (an error when the stored date does not decode).
pub type DueRow = (u32, Result<chrono::NaiveDate, super::DecodeError>);

/// The installments not paid yet of `loans`, by loan.
pub async fn unpaid_dues(
    conn: &mut AnyConnection,
    loans: &[&str],
) -> Result<HashMap<String, Vec<DueRow>>, sqlx::Error> {
    let sql = format!(
        "SELECT loan_id, seq, due_date FROM installments WHERE status <> '{}' AND loan_id IN ({})",
        InstallmentStatus::Paid.as_str(),
        in_list(conn, 1, loans.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for l in loans {
        q = q.bind(*l);
    }
    let mut by_loan: HashMap<String, Vec<DueRow>> = HashMap::new();
    for r in q.fetch_all(&mut *conn).await? {
        let due = super::stored_date("due_date", &r.get::<String, _>("due_date"));
        by_loan
            .entry(r.get("loan_id"))
            .or_default()
            .push((r.get::<i64, _>("seq") as u32, due));
    }
    Ok(by_loan)
}

pub async fn mark_planned(conn: &mut AnyConnection, loans: &[&str]) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE loans SET planned = 1 WHERE id IN ({})",
        in_list(conn, 1, loans.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for l in loans {
        q = q.bind(*l);
    }
    q.execute(&mut *conn).await?;
    Ok(())
}

/// Fresh PostgreSQL statistics for the tables a bulk plan grows.
pub async fn analyze_planned(pool: &sqlx::AnyPool) -> Result<(), sqlx::Error> {
    sqlx::query("ANALYZE borrowers, loans, mandates, installments, actions")
        .execute(pool)
        .await?;
    Ok(())
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

/// Put a loan under another policy, to be planned again: its pending actions go, and its
/// open installments' overdue plans are to be made again.
pub async fn switch_policy(
    conn: &mut AnyConnection,
    loan_id: &str,
    policy: &str,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "DELETE FROM actions WHERE loan_id = $1 AND status = '{}'",
        ActionStatus::Pending.as_str()
    );
    sqlx::query(&sql).bind(loan_id).execute(&mut *conn).await?;
    sqlx::query("UPDATE loans SET policy = $1, planned = 0 WHERE id = $2")
        .bind(policy)
        .bind(loan_id)
        .execute(&mut *conn)
        .await?;
    let sql = format!(
        "UPDATE installments SET overdue_planned = 0 WHERE loan_id = $1 AND status <> '{}'",
        InstallmentStatus::Paid.as_str()
    );
    sqlx::query(&sql).bind(loan_id).execute(&mut *conn).await?;
    Ok(())
}
