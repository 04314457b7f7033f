//! The audit log: who did what to which loan, and why. Rows are only ever added.

use serde_json::Value;
use sqlx::AnyConnection;

/// One audit record, written in the transaction of the change it describes, so the change
/// and its record commit together or not at all.
#[derive(Debug, Clone)]
pub struct AuditRow {
    pub actor: String,
    pub role: String,
    pub action: String,
    pub loan_id: Option<String>,
    pub reason: Option<String>,
    pub detail: Value,
}

/// Add `row` in the caller's transaction.
pub async fn insert_audit(
    conn: &mut AnyConnection,
    row: &AuditRow,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (at, actor, role, action, loan_id, reason, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now_ms)
    .bind(row.actor.as_str())
    .bind(row.role.as_str())
    .bind(row.action.as_str())
    .bind(row.loan_id.as_deref())
    .bind(row.reason.as_deref())
    .bind(row.detail.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}
