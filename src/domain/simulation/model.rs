//! The borrower cash-flow model: what `model.toml` says, parsed exactly and checked field by
//! field. A problem reads `FILE:LINE: FIELD: MESSAGE`.

use crate::domain::money::MAX_AMOUNT;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};
use std::fmt;

/// The default model, with every field commented (`repayd simulate --print-model`).
pub const DEFAULT_MODEL: &str = include_str!("model.toml");

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub salary: Salary,
    pub opening: Opening,
    pub spending: Spending,
    pub broke: Broke,
    pub hard_failures: HardFailures,
    pub timeouts: Timeouts,
    pub self_cure: SelfCure,
    pub costs: Costs,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Salary {
    pub share: f64,
    #[serde(deserialize_with = "decimal")]
    pub min_multiple: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub max_multiple: Decimal,
    pub paydays: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Opening {
    #[serde(deserialize_with = "decimal")]
    pub min_multiple: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub max_multiple: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spending {
    #[serde(deserialize_with = "decimal")]
    pub daily_share: Decimal,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broke {
    pub share: f64,
    pub days: u32,
    pub latest_start_day: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardFailures {
    pub monthly_rate: f64,
    pub codes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub unknown_rate: f64,
    pub applied_share: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCure {
    pub enabled: bool,
    pub first_contact: f64,
    pub decay: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Costs {
    #[serde(deserialize_with = "decimal")]
    pub attempt_fee: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub success_fee_rate: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub sms: Decimal,
    #[serde(deserialize_with = "decimal")]
    pub email: Decimal,
}

/// A model file that does not parse or make sense.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ModelError {
    pub file: String,
    pub line: usize,
    /// Dotted path of the field (`spending.daily_share`), empty when the file as a whole is bad.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.as_str() {
            "" => write!(f, "{}:{}: {}", self.file, self.line, self.message),
            field => write!(f, "{}:{}: {field}: {}", self.file, self.line, self.message),
        }
    }
}

/// Decimals as strings ("0.03"), read exactly; a TOML float is refused with a hint.
fn decimal<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => s
            .trim()
            .parse::<Decimal>()
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a decimal"))),
        toml::Value::Integer(i) => Ok(Decimal::from(i)),
        other => Err(serde::de::Error::custom(format!(
            "write it as a string such as \"0.5\" so it is read exactly (found {})",
            other.type_str()
        ))),
    }
}

impl Model {
    /// Parse and check a model; `file` names the source in errors.
    pub fn parse(src: &str, file: &str) -> Result<Model, ModelError> {
        let model: Model = toml::from_str(src).map_err(|e| {
            let line = e.span().map_or(1, |s| line_at(src, s.start));
            let field = field_at(src, line);
            let message = e.message().trim().to_string();
            ModelError {
                file: file.into(),
                line,
                field,
                message,
            }
        })?;
        if let Some((field, message)) = model.problems().into_iter().next() {
            return Err(ModelError {
                file: file.into(),
                line: line_of_field(src, field),
                field: field.into(),
                message,
            });
        }
        Ok(model)
    }

    /// The shipped default.
    pub fn default_model() -> Model {
        Model::parse(DEFAULT_MODEL, "model.toml").expect("the shipped model is valid")
    }

    /// What serde cannot check: ranges and orderings, each with its field.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let rates = [
            ("salary.share", self.salary.share),
            ("broke.share", self.broke.share),
            (
                "hard_failures.monthly_rate",
                self.hard_failures.monthly_rate,
            ),
            ("timeouts.unknown_rate", self.timeouts.unknown_rate),
            ("timeouts.applied_share", self.timeouts.applied_share),
            ("self_cure.first_contact", self.self_cure.first_contact),
            ("self_cure.decay", self.self_cure.decay),
        ];
        for (field, r) in rates {
            if !(0.0..=1.0).contains(&r) {
                out.push((field, format!("{r} is not between 0 and 1")));
            }
        }
        let shares = [
            ("spending.daily_share", self.spending.daily_share),
            ("costs.success_fee_rate", self.costs.success_fee_rate),
        ];
        for (field, s) in shares {
            if s < Decimal::ZERO || s > Decimal::ONE {
                out.push((field, format!("{s} is not between 0 and 1")));
            }
        }
        self.range_problems(&mut out);
        out
    }

    fn range_problems(&self, out: &mut Vec<(&'static str, String)>) {
        let ranges = [
            ("salary", self.salary.min_multiple, self.salary.max_multiple),
            (
                "opening",
                self.opening.min_multiple,
                self.opening.max_multiple,
            ),
        ];
        let cap = Decimal::from(1000);
        for (table, min, max) in ranges {
            if min < Decimal::ZERO || max > cap || min > max {
                let field = if table == "salary" {
                    "salary.max_multiple"
                } else {
                    "opening.max_multiple"
                };
                out.push((
                    field,
                    format!("need 0 <= min_multiple ({min}) <= max_multiple ({max}) <= {cap}"),
                ));
            }
        }
        if self.salary.paydays.is_empty()
            || self.salary.paydays.iter().any(|d| !(1..=31).contains(d))
        {
            out.push((
                "salary.paydays",
                "days of the month from 1 to 31, at least one".into(),
            ));
        }
        if self.hard_failures.codes.is_empty() && self.hard_failures.monthly_rate > 0.0 {
            out.push((
                "hard_failures.codes",
                "at least one code when monthly_rate > 0".into(),
            ));
        }
        let c = &self.costs;
        for (field, v) in [
            ("costs.attempt_fee", c.attempt_fee),
            ("costs.sms", c.sms),
            ("costs.email", c.email),
        ] {
            if v < Decimal::ZERO || v > MAX_AMOUNT {
                out.push((
                    field,
                    format!("{v} is not an amount from 0 to {MAX_AMOUNT}"),
                ));
            }
        }
    }
}

/// 1-based line of byte offset `pos`.
fn line_at(src: &str, pos: usize) -> usize {
    src[..pos.min(src.len())].matches('\n').count() + 1
}

/// The dotted field a line defines (`[table]` above it, then `key =`), or the table alone.
fn field_at(src: &str, line: usize) -> String {
    let mut table = String::new();
    for (i, text) in src.lines().enumerate() {
        let t = text.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            table = name.trim().to_string();
        }
        if i + 1 == line {
            let key = t.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
            return match (table.is_empty(), key.is_empty() || t.starts_with('[')) {
                (_, true) => table,
                (true, false) => key.to_string(),
                (false, false) => format!("{table}.{key}"),
            };
        }
    }
    table
}

/// The line where a dotted field is written (1 if it is not found).
fn line_of_field(src: &str, field: &str) -> usize {
    (1..=src.lines().count())
        .find(|&l| field_at(src, l) == field)
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_model_parses() {
        let m = Model::default_model();
        assert_eq!(m.spending.daily_share, Decimal::new(3, 2));
        assert!(m.self_cure.enabled);
    }

    #[test]
    fn a_rate_outside_0_1_names_its_field_and_line() {
        let src = DEFAULT_MODEL.replace("monthly_rate = 0.01", "monthly_rate = 1.5");
        let e = Model::parse(&src, "m.toml").unwrap_err();
        assert_eq!(e.field, "hard_failures.monthly_rate");
        let line = src
            .lines()
            .position(|l| l.starts_with("monthly_rate"))
            .unwrap()
            + 1;
        assert_eq!(e.line, line);
        assert!(e
            .to_string()
            .starts_with(&format!("m.toml:{line}: hard_failures.monthly_rate: 1.5")));
    }

    #[test]
    fn unknown_and_mistyped_fields_are_named() {
        let src = DEFAULT_MODEL.replace("decay = 0.5", "decay = 0.5\nfatigue = 2");
        let e = Model::parse(&src, "m.toml").unwrap_err();
        assert!(e.message.contains("fatigue"), "{e}");
        let src = DEFAULT_MODEL.replace("daily_share = \"0.03\"", "daily_share = 0.03");
        let e = Model::parse(&src, "m.toml").unwrap_err();
        assert_eq!(e.field, "spending.daily_share");
        assert!(e.message.contains("string"), "{e}");
        let src = DEFAULT_MODEL.replace("max_multiple = \"4.0\"", "max_multiple = \"0.5\"");
        assert_eq!(
            Model::parse(&src, "m").unwrap_err().field,
            "salary.max_multiple"
        );
    }
}
