//! Money actions a person takes: refund an attempt, write a loan off, resolve a
//! reconciliation case. Each checks its reason, then writes its change and its audit row in
//! one transaction. The API and the CLI both call these, so both check the same things and
//! log the same action names.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use thiserror::Error;

use super::{action, audit, reason_of, CollectionsError};
use crate::domain::actor::Actor;
use crate::engine::Engine;
use crate::recon::{self, CaseError, CaseRow, ReconError, RefundDone, RefundKind, RefundRequest};

#[derive(Debug, Error)]
pub enum MoneyError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(transparent)]
    Recon(#[from] ReconError),
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
}

fn checked_reason(reason: &str) -> Result<&str, MoneyError> {
    reason_of(reason).map_err(|e| match e {
        CollectionsError::Invalid { field, message } => MoneyError::Invalid { field, message },
        other => MoneyError::Invalid {
            field: "reason".into(),
            message: other.to_string(),
        },
    })
}

/// Refund `amount` (text, as typed) of a succeeded attempt; see [`recon::refund_in`].
pub async fn refund(
    engine: &Engine,
    who: &Actor,
    attempt_id: i64,
    amount: &str,
    kind: RefundKind,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<RefundDone, MoneyError> {
    let reason = checked_reason(reason)?;
    let req = RefundRequest {
        attempt_id,
        amount: recon::parse_amount(amount.trim())?,
        kind,
        reason: reason.to_string(),
        actor: who.name.clone(),
    };
    let mut tx = engine.db.begin().await?;
    let done = recon::refund_in(&mut tx, &req, now).await?;
    let mut detail = json!(done);
    detail["attempt_id"] = attempt_id.into();
    let at = now.timestamp_millis();
    audit(
        &mut tx,
        who,
        action::REFUND,
        Some(&done.loan_id),
        Some(reason),
        &detail,
        at,
    )
    .await?;
    tx.commit().await?;
    Ok(done)
}

/// Write off everything `loan_id` still owes; returns the amount written off.
pub async fn write_off(
    engine: &Engine,
    who: &Actor,
    loan_id: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Decimal, MoneyError> {
    let reason = checked_reason(reason)?;
    let mut tx = engine.db.begin().await?;
    let amount = recon::write_off_admin_in(&mut tx, loan_id, reason, &who.name, now).await?;
    let detail = json!({ "loan_id": loan_id, "amount": amount });
    let at = now.timestamp_millis();
    audit(
        &mut tx,
        who,
        action::WRITE_OFF,
        Some(loan_id),
        Some(reason),
        &detail,
        at,
    )
    .await?;
    tx.commit().await?;
    Ok(amount)
}

/// Resolve a reconciliation case with what was done about it.
pub async fn resolve_case(
    engine: &Engine,
    who: &Actor,
    case_id: i64,
    resolution: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<CaseRow, MoneyError> {
    let reason = checked_reason(reason)?;
    let at = now.timestamp_millis();
    let mut tx = engine.db.begin().await?;
    let case = recon::resolve_case(&mut tx, case_id, resolution, &who.name, at).await?;
    let loan = case.evidence["ours"]["loan_id"]
        .as_str()
        .map(str::to_string);
    let detail = json!({
        "case_id": case.id, "channel": case.channel, "recon_date": case.recon_date,
        "order_no": case.order_no, "outcome": case.outcome, "resolution": case.resolution,
    });
    audit(
        &mut tx,
        who,
        action::RESOLVE_CASE,
        loan.as_deref(),
        Some(reason),
        &detail,
        at,
    )
    .await?;
    tx.commit().await?;
    Ok(case)
}
