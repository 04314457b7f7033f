//! Pursuit: the attempts a loan's debt is pursued with, and the pure decisions about them.

use chrono::NaiveDate;
use rust_decimal::Decimal;

/// An attempt as recorded before the channel was called.
#[derive(Debug, Clone)]
pub struct AttemptRec {
    pub id: i64,
    pub loan_id: String,
    /// The installment the attempt is counted against (the oldest owed).
    pub seq: u32,
    pub mandate_id: i64,
    pub channel: String,
    pub order_no: String,
    pub kind: String,
    pub ladder_step: u32,
    pub amount: Decimal,
    pub local_date: NaiveDate,
    pub queries: u32,
}
