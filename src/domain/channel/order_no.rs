//! Order numbers fitted to each channel's rules.
//!
//! Channels disagree on what an order number may look like (at most 12 digits, digits only,
//! 8–40 alphanumerics, at most 32 characters...). The platform therefore never lets a channel
//! or a retry counter pick the number: the caller allocates a value from a per-channel,
//! monotonically increasing counter kept in the database, and [`OrderNoRule::format`] turns it
//! into a string the channel accepts. Because `format` is injective, a counter that is never
//! handed out twice gives order numbers that are unique forever, so a failed order number is
//! never reused.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Characters a channel accepts in an order number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    /// `0-9` only. The default, because every channel accepts digits.
    #[default]
    Digits,
    /// `0-9A-Za-z`; generated numbers use uppercase base 36 so that they stay unique even on
    /// channels that compare case-insensitively.
    Alnum,
}

impl Charset {
    /// Digits per character position when encoding a counter.
    fn radix(self) -> u32 {
        match self {
            Charset::Digits => 10,
            Charset::Alnum => 36,
        }
    }

    /// Whether the channel accepts `c` anywhere in an order number.
    fn allows(self, c: char) -> bool {
        match self {
            Charset::Digits => c.is_ascii_digit(),
            Charset::Alnum => c.is_ascii_alphanumeric(),
        }
    }
}

/// Why a rule is unusable or a counter or string does not fit it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OrderNoError {
    /// The rule itself is inconsistent; caught when the channel configuration is loaded.
    #[error("invalid order number rule: {0}")]
    BadRule(String),
    /// The counter needs more characters than the channel allows: the channel's number space
    /// is exhausted and a new prefix (or rule) is needed.
    #[error("counter {counter} needs {len} characters, more than the {max_len} allowed")]
    TooLong {
        counter: u64,
        len: usize,
        max_len: usize,
    },
    /// A string does not follow the rule.
    #[error("order number `{order_no}` {reason}")]
    Invalid { order_no: String, reason: String },
}

/// One channel's order number rule: `prefix` followed by the counter, zero-padded so the
/// whole string is at least `min_len` characters long and never longer than `max_len`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OrderNoRule {
    /// Fixed leading characters, e.g. to tell environments or platforms apart.
    pub prefix: String,
    pub charset: Charset,
    /// Minimum total length (prefix included); shorter numbers are zero-padded.
    pub min_len: usize,
    /// Maximum total length (prefix included).
    pub max_len: usize,
}

impl Default for OrderNoRule {
    /// Digits, 1 to 32 characters: accepted by the most restrictive common rules.
    fn default() -> Self {
        OrderNoRule {
            prefix: String::new(),
            charset: Charset::Digits,
            min_len: 1,
            max_len: 32,
        }
    }
}

impl OrderNoRule {
    /// Check the rule is usable: a prefix the channel accepts, `min_len <= max_len`, and room
    /// for at least one counter character after the prefix.
    pub fn validate_rule(&self) -> Result<(), OrderNoError> {
        let bad = |m: String| Err(OrderNoError::BadRule(m));
        if let Some(c) = self.prefix.chars().find(|&c| !self.charset.allows(c)) {
            return bad(format!(
                "prefix `{}` has `{c}`, not allowed by {:?}",
                self.prefix, self.charset
            ));
        }
        if self.min_len > self.max_len {
            return bad(format!(
                "min_len {} is above max_len {}",
                self.min_len, self.max_len
            ));
        }
        if self.prefix.len() >= self.max_len {
            return bad(format!(
                "prefix `{}` leaves no room under max_len {}",
                self.prefix, self.max_len
            ));
        }
        Ok(())
    }

    /// The order number for `counter`. Injective in `counter` for a valid rule, so distinct
    /// counters always give distinct order numbers.
    pub fn format(&self, counter: u64) -> Result<String, OrderNoError> {
        self.validate_rule()?;
        let body = encode(counter, self.charset.radix());
        let width = self.min_len.saturating_sub(self.prefix.len());
        let len = self.prefix.len() + body.len().max(width);
        if len > self.max_len {
            return Err(OrderNoError::TooLong {
                counter,
                len,
                max_len: self.max_len,
            });
        }
        Ok(format!("{}{body:0>width$}", self.prefix))
    }

    /// Check that `s` follows the rule, e.g. an order number read back from a statement or
    /// typed by an operator.
    pub fn check(&self, s: &str) -> Result<(), OrderNoError> {
        let invalid = |reason: String| {
            Err(OrderNoError::Invalid {
                order_no: s.to_string(),
                reason,
            })
        };
        if !s.starts_with(&self.prefix) {
            return invalid(format!("does not start with `{}`", self.prefix));
        }
        let len = s.chars().count();
        if len < self.min_len || len > self.max_len {
            return invalid(format!(
                "has {len} characters, not {}..={}",
                self.min_len, self.max_len
            ));
        }
        match s.chars().find(|&c| !self.charset.allows(c)) {
            Some(c) => invalid(format!("has `{c}`, not allowed by {:?}", self.charset)),
            None => Ok(()),
        }
    }

    /// How many counters (0 up to capacity - 1) fit the rule, saturating at `u64::MAX`;
    /// 0 for an invalid rule. Lets operators alert before a channel's number space runs out.
    pub fn capacity(&self) -> u64 {
        if self.validate_rule().is_err() {
            return 0;
        }
        let room = (self.max_len - self.prefix.len()) as u32;
        u64::from(self.charset.radix())
            .checked_pow(room)
            .unwrap_or(u64::MAX)
    }
}

/// `n` in base `radix` with uppercase letters, no leading zeros ("0" for zero).
fn encode(mut n: u64, radix: u32) -> String {
    let mut out = Vec::new();
    loop {
        let digit = (n % u64::from(radix)) as u32;
        out.push(
            char::from_digit(digit, radix)
                .expect("digit below radix")
                .to_ascii_uppercase(),
        );
        n /= u64::from(radix);
        if n == 0 {
            break;
        }
    }
    out.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashSet;

    fn rule(prefix: &str, charset: Charset, min_len: usize, max_len: usize) -> OrderNoRule {
        OrderNoRule {
            prefix: prefix.into(),
            charset,
            min_len,
            max_len,
        }
    }

    /// Rules shaped like the real ones: at most 12 digits, digits only, 8–40 alphanumerics,
    /// at most 32 characters.
    fn real_rules() -> Vec<OrderNoRule> {
        vec![
            rule("8", Charset::Digits, 12, 12),
            rule("", Charset::Digits, 1, 32),
            rule("WX", Charset::Alnum, 8, 40),
            rule("R", Charset::Alnum, 1, 32),
        ]
    }

    #[test]
    fn formats_pad_and_encode() {
        assert_eq!(
            rule("8", Charset::Digits, 12, 12).format(42).unwrap(),
            "800000000042"
        );
        assert_eq!(
            rule("WX", Charset::Alnum, 8, 32).format(35).unwrap(),
            "WX00000Z"
        );
        assert_eq!(rule("", Charset::Digits, 1, 5).format(0).unwrap(), "0");
        assert_eq!(
            rule("BK", Charset::Alnum, 4, 32).format(36 * 36).unwrap(),
            "BK100"
        );
    }

    #[test]
    fn overflow_is_an_error_not_a_truncation() {
        let r = rule("8", Charset::Digits, 3, 3);
        assert_eq!(r.capacity(), 100);
        assert_eq!(r.format(99).unwrap(), "899");
        assert_eq!(
            r.format(100),
            Err(OrderNoError::TooLong {
                counter: 100,
                len: 4,
                max_len: 3
            })
        );
    }

    #[test]
    fn rules_are_validated() {
        assert!(rule("WX", Charset::Digits, 8, 12).validate_rule().is_err());
        assert!(rule("8", Charset::Digits, 13, 12).validate_rule().is_err());
        assert!(rule("12345", Charset::Digits, 1, 5)
            .validate_rule()
            .is_err());
        assert!(rule("8-", Charset::Alnum, 1, 5).validate_rule().is_err());
        for r in real_rules() {
            r.validate_rule().unwrap();
        }
        assert_eq!(rule("", Charset::Alnum, 1, 40).capacity(), u64::MAX);
    }

    #[test]
    fn check_rejects_strings_off_the_rule() {
        let r = rule("WX", Charset::Alnum, 8, 12);
        r.check("WX00ab12").unwrap();
        assert!(r.check("XX000001").is_err());
        assert!(r.check("WX001").is_err());
        assert!(r.check("WX0000000000001").is_err());
        assert!(r.check("WX00-00001").is_err());
    }

    #[test]
    fn rule_toml_uses_defaults() {
        let r: OrderNoRule = toml::from_str("prefix = \"7\"\ncharset = \"alnum\"").unwrap();
        assert_eq!(
            r,
            OrderNoRule {
                prefix: "7".into(),
                charset: Charset::Alnum,
                ..Default::default()
            }
        );
    }

    /// Property: for each rule, `format` is injective over counters and every output passes
    /// `check`. Counters are edge values plus seeded random samples across all magnitudes.
    #[test]
    fn format_is_injective_and_checked() {
        let mut rng = StdRng::seed_from_u64(20260101);
        for r in real_rules() {
            let cap = r.capacity();
            let mut counters: Vec<u64> =
                (0..2000).chain([cap - 1, cap / 2, u64::MAX - 1]).collect();
            for _ in 0..5000 {
                let bits = rng.gen_range(1..=64);
                counters.push(rng.gen::<u64>() >> (64 - bits));
            }
            counters.sort_unstable();
            counters.dedup();
            let mut seen = HashSet::new();
            for c in counters {
                match r.format(c) {
                    Ok(s) => {
                        r.check(&s).unwrap();
                        assert!(seen.insert(s.clone()), "{s} produced twice by {r:?}");
                    }
                    Err(OrderNoError::TooLong { .. }) => assert!(c >= cap, "{c} under {cap}"),
                    Err(e) => panic!("{e}"),
                }
            }
        }
    }
}
