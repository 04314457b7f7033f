//! Reconciliation cases for a person: the open and resolved items, and resolving one.

use crate::domain::from_minor;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CaseError {
    #[error("reconciliation case {0} not found")]
    NotFound(i64),
    #[error("reconciliation case {id} was already resolved by {by}")]
    AlreadyResolved { id: i64, by: String },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// One recon item that needs (or needed) a person.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaseRow {
    pub id: i64,
    pub channel: String,
    pub recon_date: String,
    pub order_no: String,
    pub attempt_id: Option<i64>,
    pub outcome: String,
    pub our_status: Option<String>,
    pub our_amount: Option<Decimal>,
    pub their_status: Option<String>,
    pub their_amount: Option<Decimal>,
    /// open or resolved.
    pub case_status: String,
    /// The attempt and statement line as seen when matched (no account numbers).
    pub evidence: serde_json::Value,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
    pub resolution: Option<String>,
}

const COLUMNS: &str = "id, channel, recon_date, order_no, attempt_id, outcome, our_status, \
    our_amount, their_status, their_amount, case_status, evidence, created_at, resolved_at, \
    resolved_by, resolution";

fn case_of(r: &sqlx::any::AnyRow) -> CaseRow {
    CaseRow {
        id: r.get("id"),
        channel: r.get("channel"),
        recon_date: r.get("recon_date"),
        order_no: r.get("order_no"),
        attempt_id: r.get("attempt_id"),
        outcome: r.get("outcome"),
        our_status: r.get("our_status"),
        our_amount: r.get::<Option<i64>, _>("our_amount").map(from_minor),
        their_status: r.get("their_status"),
        their_amount: r.get::<Option<i64>, _>("their_amount").map(from_minor),
        case_status: r
            .get::<Option<String>, _>("case_status")
            .unwrap_or_default(),
        evidence: serde_json::from_str(&r.get::<String, _>("evidence")).unwrap_or_default(),
        created_at: r.get("created_at"),
        resolved_at: r.get("resolved_at"),
        resolved_by: r.get("resolved_by"),
        resolution: r.get("resolution"),
    }
}

/// Cases with `status` (open or resolved), optionally of one recon date and channel, newest
/// first, with ids below `before_id`.
pub async fn cases_page(
    conn: &mut AnyConnection,
    status: &str,
    date: Option<&str>,
    channel: Option<&str>,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<CaseRow>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM recon_items WHERE case_status = $1 AND ($2 = '' OR recon_date = $2) \
         AND ($3 = '' OR channel = $3) AND id < $4 ORDER BY id DESC LIMIT $5"
    ))
    .bind(status)
    .bind(date.unwrap_or(""))
    .bind(channel.unwrap_or(""))
    .bind(before_id.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(case_of).collect())
}

/// Mark an open case resolved by `actor`, in the caller's transaction.
pub async fn resolve_case(
    conn: &mut AnyConnection,
    id: i64,
    resolution: &str,
    actor: &str,
    now_ms: i64,
) -> Result<CaseRow, CaseError> {
    let resolution = resolution.trim();
    if resolution.is_empty() || resolution.chars().count() > 500 {
        return Err(CaseError::Invalid {
            field: "resolution".into(),
            message: "1 to 500 characters".into(),
        });
    }
    let done = sqlx::query(
        "UPDATE recon_items SET case_status = 'resolved', resolved_at = $1, resolved_by = $2, \
         resolution = $3 WHERE id = $4 AND case_status = 'open'",
    )
    .bind(now_ms)
    .bind(actor)
    .bind(resolution)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM recon_items WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Err(CaseError::NotFound(id));
    };
    let case = case_of(&row);
    if done == 0 {
        // Matched items have no case; resolved ones cannot be resolved again.
        return match case.case_status.as_str() {
            "resolved" => Err(CaseError::AlreadyResolved {
                id,
                by: case.resolved_by.unwrap_or_default(),
            }),
            _ => Err(CaseError::NotFound(id)),
        };
    }
    Ok(case)
}
