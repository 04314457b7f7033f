//! Money: the one place where amounts are parsed, rounded and stored.
//!
//! Rules (every other module relies on them):
//! - Amounts are `rust_decimal::Decimal`, never floats.
//! - Stored amounts have [`MONEY_SCALE`] (2) decimal places and live in the database as
//!   `BIGINT` minor units (hundredths), see [`to_minor`] / [`from_minor`].
//! - Computed amounts that are *owed* (interest, penalty, installment splits) round half away
//!   from zero with [`round_money`].
//! - Amounts that are *asked for* (ladder steps) round toward zero with [`round_down`], so
//!   we never ask for more than the step allows.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use thiserror::Error;

/// Decimal places of every stored amount.
pub const MONEY_SCALE: u32 = 2;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount")]
    NotANumber(String),
    #[error("`{0}` has more than {MONEY_SCALE} decimal places")]
    TooPrecise(String),
    #[error("`{0}` is negative")]
    Negative(String),
    #[error("`{0}` is too large")]
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

/// Parse a non-negative amount with at most two decimal places.
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
    to_minor_checked(d).ok_or_else(|| MoneyError::TooLarge(t.to_string()))?;
    Ok(d)
}

fn to_minor_checked(d: Decimal) -> Option<i64> {
    (d * Decimal::from(100)).trunc().to_i64()
}

/// Minor units (hundredths) for storage. The amount must already be rounded to cents.
pub fn to_minor(d: Decimal) -> i64 {
    debug_assert_eq!(round_money(d), d, "amount {d} not rounded to cents");
    to_minor_checked(round_money(d)).expect("amount out of i64 range")
}

/// Amount from stored minor units.
pub fn from_minor(m: i64) -> Decimal {
    Decimal::new(m, MONEY_SCALE)
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
        assert_eq!(to_minor(dec!(12.34)), 1234);
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
}
