//! Money you can audit: statement reconciliation (对账), settlement (清算), refunds and
//! reversals, write-offs.
//!
//! - [`statement`] imports a channel's statement for one day (a file or a fetched one) and
//!   reconciles it: every statement line and every attempt of that day ends up in exactly one
//!   `recon_items` row. "Our attempts of day D" are the channel's attempts created (the
//!   engine's clock at submit, which is also the `at` sent to the channel) on local date D in
//!   the channel's statement zone (`settlement.tz`), plus any attempt a line of D names.
//! - [`matching`] is the pure classification; unknown attempts the statement settles are
//!   resolved through the engine's own apply path (`engine::apply`), never debited again.
//! - [`settle`] moves the matched successes of a statement day from channel clearing to the
//!   bank, net of fees, once the channel's T+N date has come: after each statement import and
//!   on each daemon statement tick (`repayd recon settle` by hand).
//! - [`refund`] posts overpayment refunds and erroneous-debit reversals, each its own entry
//!   pointing at the repayment it corrects. Refunds are always paid from the bank (1200): the
//!   clearing account is only ever settled by the channel's statement, so it keeps equal to
//!   what the channel owes us.
//! - [`writeoff`] writes loans off by a person, past the policy's write-off point, and (from
//!   `engine::apply`) residues at or below the policy's threshold.

pub mod cases;
pub mod refund;
pub mod settle;
pub mod statement;
pub mod writeoff;

use crate::domain::statement::StatementError;
use crate::engine::EngineError;
use crate::store::ledger::LedgerError;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use thiserror::Error;

pub use crate::domain::matching::{classify, Item, OurAttempt, Outcome};
pub use crate::store::recon_report::{recon_report, ReconReport};
pub use cases::{cases_page, resolve_case, CaseError, CaseRow};
pub use refund::{refund, refund_in, RefundDone, RefundKind, RefundRequest};
pub use settle::{settle_due, Settled};
pub use statement::{fetch_due, import_file, import_lines, ImportOutcome};
pub use writeoff::{write_off_admin, write_off_admin_in};

#[derive(Debug, Error)]
pub enum ReconError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Money(#[from] crate::domain::MoneyError),
    #[error("{file}: {error}")]
    Statement { file: String, error: StatementError },
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("no channel `{0}` is configured")]
    UnknownChannel(String),
    #[error(
        "the {channel} statement of {date} was already imported with other content \
         (statement {id}); a corrected statement needs a person"
    )]
    Conflict {
        channel: String,
        date: NaiveDate,
        id: i64,
    },
    #[error("attempt {0} not found")]
    AttemptNotFound(i64),
    #[error("attempt {id} is {status}: only a succeeded attempt can be refunded")]
    NotSucceeded { id: i64, status: String },
    #[error("refund of {asked} exceeds what attempt {attempt} can still refund ({left})")]
    ExceedsRefundable {
        attempt: i64,
        asked: Decimal,
        left: Decimal,
    },
    #[error("refund of {asked} exceeds the overpayment attempt {attempt} still holds ({left})")]
    ExceedsOverpayment {
        attempt: i64,
        asked: Decimal,
        left: Decimal,
    },
    #[error("amount `{text}`: {message}")]
    BadAmount { text: String, message: String },
    #[error("loan {0} not found")]
    LoanNotFound(String),
    #[error("loan {loan} is {status}: nothing to write off")]
    NothingToWriteOff { loan: String, status: String },
}

/// A refund or write-off amount as typed by a person: positive, at most 2 decimals.
pub fn parse_amount(text: &str) -> Result<Decimal, ReconError> {
    let bad = |message: String| ReconError::BadAmount {
        text: text.to_string(),
        message,
    };
    let d = crate::domain::parse_money(text).map_err(|e| bad(e.to_string()))?;
    if d <= Decimal::ZERO {
        return Err(bad("must be above 0".into()));
    }
    Ok(d)
}
