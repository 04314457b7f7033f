//! Write-offs by a person and past the policy's write-off point (residues are written off
//! by `engine::apply` right after the payment that leaves them).

use super::ReconError;
use crate::domain::status::LoanStatus;
use crate::engine::apply::{self, stage_write_off, WriteOffKind, Writes};
use crate::engine::Engine;
use crate::store::loans::load_loans;
use chrono::{DateTime, Days, Utc};
use rust_decimal::Decimal;
use sqlx::AnyConnection;

/// Write off everything `loan` still owes, by `actor` (`repayd write-off`).
pub async fn write_off_admin(
    engine: &Engine,
    loan: &str,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Decimal, ReconError> {
    let mut tx = engine.db.begin().await?;
    let amount = write_off_admin_in(&mut tx, loan, reason, actor, now).await?;
    tx.commit().await?;
    Ok(amount)
}

/// [`write_off_admin`] within the caller's transaction (the API audits it atomically).
pub async fn write_off_admin_in(
    conn: &mut AnyConnection,
    loan: &str,
    reason: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Decimal, ReconError> {
    let ids = vec![loan.to_string()];
    let mut loans = load_loans(&mut *conn, &ids, now.date_naive() - Days::new(2)).await?;
    let state = loans
        .get_mut(loan)
        .ok_or_else(|| ReconError::LoanNotFound(loan.into()))?;
    let status = state.status;
    let mut w = Writes::default();
    let staged = match status {
        LoanStatus::Paid | LoanStatus::WrittenOff => None,
        LoanStatus::Active | LoanStatus::Collections => {
            stage_write_off(state, WriteOffKind::Admin, reason, actor, now, &mut w)
        }
    };
    let Some(amount) = staged else {
        return Err(ReconError::NothingToWriteOff {
            loan: loan.into(),
            status: status.to_string(),
        });
    };
    apply::flush(&mut *conn, &mut loans, w, now).await?;
    Ok(amount)
}
