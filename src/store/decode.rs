//! Decoding stored values that are text in the schema (dates, zones): a value that does not
//! decode is an error naming the column and value, never a panic and never a silent
//! default (a loan silently moved to UTC would be debited and notified at the wrong hours).

use chrono::NaiveDate;
use chrono_tz::Tz;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("stored {column} `{value}` is not {expected}")]
pub struct DecodeError {
    pub column: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// A `YYYY-MM-DD` date column.
pub fn stored_date(column: &'static str, value: &str) -> Result<NaiveDate, DecodeError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| DecodeError {
        column,
        value: value.chars().take(40).collect(),
        expected: "a date YYYY-MM-DD",
    })
}

/// An IANA time zone column.
pub fn stored_tz(column: &'static str, value: &str) -> Result<Tz, DecodeError> {
    value.parse().map_err(|_| DecodeError {
        column,
        value: value.chars().take(40).collect(),
        expected: "an IANA time zone",
    })
}

/// A status or kind column, as its enum (`domain::status`). The schema's CHECKs make a bad
/// value unlikely; a database edited by hand still gets an error, not a guess.
pub fn stored_status<T: std::str::FromStr>(
    column: &'static str,
    value: &str,
    default: T,
) -> (T, Result<(), DecodeError>) {
    match value.parse() {
        Ok(v) => (v, Ok(())),
        Err(_) => (
            default,
            Err(DecodeError {
                column,
                value: value.chars().take(40).collect(),
                expected: "a known status",
            }),
        ),
    }
}

/// A stored zone for a query's caller that speaks `sqlx::Error`: the decode error travels as
/// `sqlx::Error::Decode`, naming the column and value.
pub fn zone(value: &str) -> Result<Tz, sqlx::Error> {
    stored_tz("tz", value).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_are_errors_naming_the_column() {
        assert!(stored_date("due_date", "2027-01-15").is_ok());
        let e = stored_date("due_date", "15/01/2027").unwrap_err();
        assert_eq!(
            e.to_string(),
            "stored due_date `15/01/2027` is not a date YYYY-MM-DD"
        );
        assert_eq!(
            stored_tz("tz", "Asia/Shanghai"),
            Ok(chrono_tz::Asia::Shanghai)
        );
        assert!(stored_tz("tz", "Mars/Olympus").is_err());
    }
}
