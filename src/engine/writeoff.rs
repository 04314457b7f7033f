//! Loans past their policy's write-off point are written off by the engine's refresh (a
//! person's write-off is `recon::write_off_admin`; residues are written off by `apply`
//! right after the payment that leaves them).

use super::apply::{self, stage_write_off, WriteOffKind, Writes};
use super::{Engine, EngineError};
use crate::domain::status::InstallmentStatus;
use crate::domain::{days_past_due, local_date};
use crate::store::loans::load_loans;
use chrono::{DateTime, Days, Utc};
use rust_decimal::Decimal;

/// Write off the loans whose oldest open installment is past their policy's write-off point
/// (`limits.write_off_after_days_past_due`). Run by the engine's refresh; returns how many.
pub async fn write_off_past_point(engine: &Engine, now: DateTime<Utc>) -> Result<u64, EngineError> {
    let mut total = 0;
    for name in engine.policies.names() {
        let Some(days) = engine.policy(name)?.limits.write_off_after_days_past_due else {
            continue;
        };
        // Local dates are within a day of UTC: a wide bound, then the exact check per loan.
        let bound = now.date_naive() - Days::new(u64::from(days).saturating_sub(1));
        let mut conn = engine.db.pool.acquire().await?;
        let ids = crate::store::loans::with_open_due_before(&mut conn, name, bound).await?;
        drop(conn);
        for chunk in ids.chunks(1000) {
            total += write_off_chunk(engine, chunk, days, now).await?;
        }
    }
    Ok(total)
}

async fn write_off_chunk(
    engine: &Engine,
    ids: &[String],
    days: u32,
    now: DateTime<Utc>,
) -> Result<u64, EngineError> {
    let mut tx = engine.db.begin().await?;
    let mut loans = load_loans(&mut tx, ids, now.date_naive() - Days::new(2)).await?;
    let mut w = Writes::default();
    let mut n = 0;
    for loan in loans.values_mut() {
        let today = local_date(now, loan.tz);
        let oldest = loan
            .insts
            .iter()
            .filter(|i| i.status != InstallmentStatus::WrittenOff && i.owed() > Decimal::ZERO)
            .map(|i| i.due)
            .min();
        let dpd = days_past_due(oldest, today);
        if dpd > days && !loan.open_attempt {
            let reason = format!("{dpd} days past due, past the policy's {days}");
            if stage_write_off(loan, WriteOffKind::Policy, &reason, "system", now, &mut w).is_some()
            {
                n += 1;
            }
        }
    }
    apply::flush(&mut tx, &mut loans, w, now).await?;
    tx.commit().await?;
    Ok(n)
}
