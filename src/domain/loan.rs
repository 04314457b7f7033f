//! In-memory state of the loans a batch works on (`store::loans` loads it), and what can be
//! asked of it: what is owed, what was used of a mandate's daily limit, whether it can be
//! stored back.

use crate::domain::status::{InstallmentStatus, LoanStatus, MandateStatus};
use crate::domain::Outstanding;
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct InstState {
    pub seq: u32,
    pub due: NaiveDate,
    pub principal: Decimal,
    pub interest: Decimal,
    pub fee: Decimal,
    pub penalty: Decimal,
    pub paid: Outstanding,
    pub status: InstallmentStatus,
    pub attempts: u32,
    pub paid_at: Option<i64>,
    /// Changed in memory; must be written back.
    pub dirty: bool,
}

impl InstState {
    /// What is still owed, per component.
    pub fn outstanding(&self) -> Outstanding {
        Outstanding {
            seq: self.seq,
            penalty: self.penalty - self.paid.penalty,
            fee: self.fee - self.paid.fee,
            interest: self.interest - self.paid.interest,
            principal: self.principal - self.paid.principal,
        }
    }

    pub fn owed(&self) -> Decimal {
        self.outstanding().total()
    }
}

#[derive(Debug, Clone)]
pub struct MandateState {
    pub id: i64,
    pub channel: String,
    pub agreement: String,
    pub account_masked: String,
    pub per_debit_limit: Option<Decimal>,
    pub daily_limit: Option<Decimal>,
    pub status: MandateStatus,
    pub status_code: Option<String>,
    pub dirty: bool,
}

impl MandateState {
    pub fn usable(&self) -> bool {
        self.status == MandateStatus::Active
    }
}

#[derive(Debug, Clone)]
pub struct LoanState {
    pub id: String,
    pub borrower_id: String,
    pub borrower_name: String,
    pub phone: String,
    pub email: String,
    pub payday: Option<u32>,
    pub currency: String,
    pub tz: Tz,
    pub policy: String,
    pub allow_early: bool,
    pub status: LoanStatus,
    pub ladder_pos: u32,
    /// Unpaid installments, oldest first.
    pub insts: Vec<InstState>,
    /// Mandates in priority order.
    pub mandates: Vec<MandateState>,
    /// An attempt is submitted or unknown: no new debit until it is resolved.
    pub open_attempt: bool,
    /// An attempt was made at or after the current run's instant: the loan was already
    /// pursued in this run (by an earlier batch), so later claimed actions merge into it.
    /// Read from the attempts table, so no set of attempted loans grows with the portfolio.
    pub attempted_in_run: bool,
    /// Amount debited or in flight per (mandate, local date), for daily limits.
    pub used: HashMap<(i64, NaiveDate), Decimal>,
    pub dirty: bool,
    /// A stored value of the loan did not decode: it cannot be pursued, only parked.
    pub broken: Option<String>,
}

impl LoanState {
    /// Owed now: every installment due on or before `today` (plus `also` for early attempts).
    pub fn owed_through(&self, today: NaiveDate, also: Option<u32>) -> Decimal {
        self.insts
            .iter()
            .filter(|i| i.due <= today || Some(i.seq) == also)
            .map(|i| i.owed())
            .sum()
    }

    pub fn inst_mut(&mut self, seq: u32) -> Option<&mut InstState> {
        self.insts.iter_mut().find(|i| i.seq == seq)
    }

    pub fn used_on(&self, mandate: i64, day: NaiveDate) -> Decimal {
        self.used.get(&(mandate, day)).copied().unwrap_or_default()
    }

    /// Whether what would be written back fits the database (minor units in `i64`).
    pub fn check_storable(&self) -> Result<(), String> {
        for i in self.insts.iter().filter(|i| i.dirty) {
            let p = &i.paid;
            for amount in [p.principal, p.interest, p.fee, p.penalty] {
                crate::domain::to_minor(amount)
                    .map_err(|e| format!("installment {}: {e}", i.seq))?;
            }
        }
        Ok(())
    }

    pub fn fully_paid(&self) -> bool {
        self.insts.iter().all(|i| i.owed() <= Decimal::ZERO)
    }
}
