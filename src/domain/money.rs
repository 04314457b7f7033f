//! Money: the one place where amounts are parsed, rounded, bounded and stored.
//!
//! Rules (every other module relies on them):
//! - Amounts are `rust_decimal::Decimal`, never floats.
//! - Stored amounts have [`MONEY_SCALE`] (2) decimal places and live in the database as
//!   `BIGINT` minor units (hundredths), see [`to_minor`] / [`from_minor`].
//! - Computed amounts that are *owed* (interest, penalty, installment splits) round half away
//!   from zero with [`round_money`].
//! - Amounts that are *asked for* (ladder steps) round toward zero with [`round_down`], so
//!   we never ask for more than the step allows.
//!
//! Bounds (so that no sum anywhere can overflow its storage type, `i64` minor units):
//! - Any single amount read from outside — an installment component, a mandate limit, a
//!   statement line, a channel's answer, an amount a person types — is at most
//!   [`MAX_AMOUNT`] (one trillion units). [`parse_money`] refuses more.
//! - A whole installment and a whole loan (principal + interest + fee) are at most
//!   [`MAX_AMOUNT`] too; import refuses more, naming the record and field.
//! - The book — every loan ever imported, principal + interest + fee — is at most
//!   [`MAX_BOOK_MINOR`] (10^18 minor units, 10^16 units). Import refuses a file that would
//!   pass it.
//! - A penalty never exceeds the principal and interest it accrues on
//!   (`delinquency::penalty_between` callers cap it), so penalties add at most the book again.
//!
//! Every account's running total is then at most a few times the book: openings, repayments
//! (at most book + penalties), settlements and refunds (at most what was collected). Four
//! times [`MAX_BOOK_MINOR`] is still below `i64::MAX` (9.22 × 10^18), so every `SUM` over the
//! journal or the installments fits, on SQLite (which raises on overflow) and PostgreSQL.
//! Conversions are checked all the same: [`to_minor`] returns an error, never panics.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use thiserror::Error;

/// Decimal places of every stored amount.
pub const MONEY_SCALE: u32 = 2;

/// The largest amount of any one figure, installment or loan: 1,000,000,000,000.00.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);

/// The largest book (sum over every loan of principal + interest + fee), in minor units.
pub const MAX_BOOK_MINOR: i64 = 1_000_000_000_000_000_000;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount")]
    NotANumber(String),
    #[error("`{0}` has more than {MONEY_SCALE} decimal places")]
    TooPrecise(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is more than the largest amount repayd accepts ({MAX_AMOUNT})")]
    TooLarge(String),
}

/// Round an owed amount to cents, half away from zero.
pub fn round_money(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::MidpointAwayFromZero)
}

/// Round an amount to ask for down to cents (toward zero).
pub fn round_down(d: Decimal) -> Decimal {
    d.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::ToZero)
}

/// Parse a non-negative amount with at most two decimal places and at most [`MAX_AMOUNT`].
pub fn parse_money(s: &str) -> Result<Decimal, MoneyError> {
    let t = s.trim();
    let d: Decimal = t
        .parse()
        .map_err(|_| MoneyError::NotANumber(t.to_string()))?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(MoneyError::Negative(t.to_string()));
    }
    if d.normalize().scale() > MONEY_SCALE {
        return Err(MoneyError::TooPrecise(t.to_string()));
    }
    check_bound(d).map_err(|_| MoneyError::TooLarge(t.to_string()))
}

/// `d` itself when its magnitude is at most [`MAX_AMOUNT`].
pub fn check_bound(d: Decimal) -> Result<Decimal, MoneyError> {
    if d.abs() > MAX_AMOUNT {
        return Err(MoneyError::TooLarge(d.to_string()));
    }
    Ok(d)
}

/// Add amounts, refusing a total above [`MAX_AMOUNT`] (a loan's or an installment's total).
pub fn bounded_sum(parts: impl IntoIterator<Item = Decimal>) -> Result<Decimal, MoneyError> {
    let mut total = Decimal::ZERO;
    for p in parts {
        total = total
            .checked_add(p)
            .ok_or_else(|| MoneyError::TooLarge(p.to_string()))?;
        check_bound(total)?;
    }
    Ok(total)
}

/// Minor units (hundredths) for storage, rounded half away from zero. Checked: an amount that
/// does not fit `i64` minor units is an error, never a panic.
pub fn to_minor(d: Decimal) -> Result<i64, MoneyError> {
    debug_assert_eq!(round_money(d), d, "amount {d} not rounded to cents");
    round_money(d)
        .checked_mul(Decimal::ONE_HUNDRED)
        .and_then(|m| m.trunc().to_i64())
        .ok_or_else(|| MoneyError::TooLarge(d.to_string()))
}

/// Amount from stored minor units.
pub fn from_minor(m: i64) -> Decimal {
    Decimal::new(m, MONEY_SCALE)
}

/// Add stored minor units, refusing to overflow.
pub fn add_minor(a: i64, b: i64) -> Result<i64, MoneyError> {
    a.checked_add(b)
        .ok_or_else(|| MoneyError::TooLarge(format!("{} + {}", from_minor(a), from_minor(b))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn rounding_is_explicit() {
        assert_eq!(round_money(dec!(1.005)), dec!(1.01));
        assert_eq!(round_money(dec!(-1.005)), dec!(-1.01));
        assert_eq!(round_down(dec!(1.009)), dec!(1.00));
    }

    #[test]
    fn minor_units_round_trip() {
        assert_eq!(to_minor(dec!(12.34)), Ok(1234));
        assert_eq!(from_minor(1234), dec!(12.34));
        assert_eq!(from_minor(-5), dec!(-0.05));
    }

    #[test]
    fn parse_rejects_bad_amounts() {
        assert_eq!(parse_money("10.50"), Ok(dec!(10.50)));
        assert!(matches!(
            parse_money("1.234"),
            Err(MoneyError::TooPrecise(_))
        ));
        assert!(matches!(parse_money("-1"), Err(MoneyError::Negative(_))));
        assert!(matches!(parse_money("abc"), Err(MoneyError::NotANumber(_))));
    }

    #[test]
    fn the_bounds_are_what_the_docs_say() {
        assert_eq!(MAX_AMOUNT, dec!(1_000_000_000_000));
        assert_eq!(parse_money("1000000000000.00"), Ok(MAX_AMOUNT));
        assert!(matches!(
            parse_money("1000000000000.01"),
            Err(MoneyError::TooLarge(_))
        ));
        // Four books still fit i64 minor units: every journal or installment sum fits.
        assert!(MAX_BOOK_MINOR.checked_mul(4).is_some());
        assert!(to_minor(MAX_AMOUNT).unwrap() < MAX_BOOK_MINOR);
    }

    #[test]
    fn hostile_amounts_are_errors_not_panics() {
        // The largest Decimal: multiplying it by 100 overflowed and panicked before.
        let huge = "79228162514264337593543950335";
        assert!(matches!(parse_money(huge), Err(MoneyError::TooLarge(_))));
        assert!(to_minor(Decimal::MAX).is_err());
        assert!(to_minor(dec!(92233720368547758.08)).is_err());
        assert_eq!(
            to_minor(dec!(92233720368547758.07)),
            Ok(i64::MAX),
            "the edge of i64 converts"
        );
        assert!(add_minor(i64::MAX, 1).is_err());
        assert!(bounded_sum([dec!(600000000000), dec!(600000000000)]).is_err());
        assert_eq!(bounded_sum([dec!(1), dec!(2)]), Ok(dec!(3)));
    }
}
