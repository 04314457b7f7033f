//! Matching statement lines to attempts by order number (流水勾兑), pure.

use crate::domain::channel::StatementLine;
use crate::domain::status::AttemptStatus;
use crate::domain::NOT_FOUND;
use rust_decimal::Decimal;
use serde::Serialize;
use std::collections::BTreeMap;

/// What we know of one attempt when it is matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OurAttempt {
    pub id: i64,
    pub loan_id: String,
    pub order_no: String,
    pub amount: Decimal,
    /// submitted, unknown, succeeded, failed.
    pub status: String,
    /// The failure code, if any.
    pub code: Option<String>,
    pub channel_ref: Option<String>,
    pub created_at: i64,
    /// Nobody else is settling it right now: an unknown attempt whose query lease is free,
    /// or a `submitted` one whose submitter's lease ran out.
    #[serde(skip)]
    pub fixable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Matched,
    OursOnly,
    ChannelOnly,
    AmountDiffers,
    StatusDiffers,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Matched => "matched",
            Outcome::OursOnly => "ours_only",
            Outcome::ChannelOnly => "channel_only",
            Outcome::AmountDiffers => "amount_differs",
            Outcome::StatusDiffers => "status_differs",
        }
    }
}

/// What a match fixes by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AutoFix {
    /// An open attempt the statement shows debited: resolved and posted as a success.
    ResolvedSucceeded,
    /// An open attempt the statement shows failed: marked failed.
    ResolvedFailed,
}

impl AutoFix {
    pub fn as_str(self) -> &'static str {
        match self {
            AutoFix::ResolvedSucceeded => "resolved_succeeded",
            AutoFix::ResolvedFailed => "resolved_failed",
        }
    }
}

/// One order number of one channel-day: the attempt and/or the line, and the verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub order_no: String,
    pub ours: Option<OurAttempt>,
    /// (1-based line number in the statement, the line).
    pub theirs: Option<(usize, StatementLine)>,
    pub outcome: Outcome,
    pub auto_fix: Option<AutoFix>,
}

impl Item {
    /// Anything but a clean or self-fixed match is a case for a person.
    pub fn is_case(&self) -> bool {
        self.outcome != Outcome::Matched
    }

    pub fn evidence(&self) -> serde_json::Value {
        serde_json::json!({
            "ours": self.ours,
            "theirs": self.theirs.as_ref().map(|(n, l)| serde_json::json!({
                "line": n, "order_no": l.order_no, "channel_ref": l.channel_ref,
                "amount": l.amount, "fee": l.fee, "status": l.status, "at": l.at,
            })),
        })
    }
}

/// Classify every order number found on either side; each attempt and each line ends up in
/// exactly one item, ordered by order number.
pub fn classify(ours: Vec<OurAttempt>, theirs: Vec<(usize, StatementLine)>) -> Vec<Item> {
    type Sides = (Option<OurAttempt>, Option<(usize, StatementLine)>);
    let mut by_no: BTreeMap<String, Sides> = BTreeMap::new();
    for a in ours {
        let key = a.order_no.clone();
        by_no.entry(key).or_default().0 = Some(a);
    }
    for l in theirs {
        let key = l.1.order_no.clone();
        by_no.entry(key).or_default().1 = Some(l);
    }
    by_no
        .into_iter()
        .map(|(order_no, (ours, theirs))| {
            let (outcome, auto_fix) = verdict(ours.as_ref(), theirs.as_ref().map(|t| &t.1));
            Item {
                order_no,
                ours,
                theirs,
                outcome,
                auto_fix,
            }
        })
        .collect()
}

fn never_sent(a: &OurAttempt) -> bool {
    a.status == AttemptStatus::Failed.as_str() && a.code.as_deref() == Some(NOT_FOUND)
}

fn verdict(
    ours: Option<&OurAttempt>,
    theirs: Option<&StatementLine>,
) -> (Outcome, Option<AutoFix>) {
    let (a, l) = match (ours, theirs) {
        (Some(a), Some(l)) => (a, l),
        // Proved never to have reached the channel (its query answered "not found"): the
        // statement rightly does not show it, and no person needs to look at it.
        (Some(a), None) if never_sent(a) => return (Outcome::Matched, None),
        (Some(_), None) => return (Outcome::OursOnly, None),
        (None, _) => return (Outcome::ChannelOnly, None),
    };
    let success = l.status == "success";
    match (a.status.as_str(), success) {
        ("succeeded", true) if a.amount == l.amount => (Outcome::Matched, None),
        ("succeeded", true) => (Outcome::AmountDiffers, None),
        ("failed", false) => (Outcome::Matched, None),
        ("unknown" | "submitted", true) if a.fixable && a.amount == l.amount => {
            (Outcome::Matched, Some(AutoFix::ResolvedSucceeded))
        }
        ("unknown" | "submitted", true) if a.amount != l.amount => (Outcome::AmountDiffers, None),
        ("unknown" | "submitted", false) if a.fixable => {
            (Outcome::Matched, Some(AutoFix::ResolvedFailed))
        }
        _ => (Outcome::StatusDiffers, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use rust_decimal_macros::dec;

    fn ours(no: &str, status: &str, amount: Decimal) -> OurAttempt {
        OurAttempt {
            id: 1,
            loan_id: "L".into(),
            order_no: no.into(),
            amount,
            status: status.into(),
            code: None,
            channel_ref: None,
            created_at: 0,
            fixable: true,
        }
    }

    fn line(no: &str, status: &str, amount: Decimal) -> (usize, StatementLine) {
        (
            2,
            StatementLine {
                order_no: no.into(),
                channel_ref: "R".into(),
                amount,
                fee: dec!(0),
                status: status.into(),
                at: Utc.with_ymd_and_hms(2026, 12, 19, 2, 0, 0).unwrap(),
            },
        )
    }

    #[test]
    fn an_attempt_the_channel_never_received_is_no_case() {
        let never = OurAttempt {
            code: Some(NOT_FOUND.into()),
            ..ours("N", "failed", dec!(100))
        };
        let soft = OurAttempt {
            code: Some("INSUFFICIENT_BALANCE".into()),
            ..ours("S", "failed", dec!(100))
        };
        let items = classify(vec![never, soft], vec![]);
        let got: Vec<(&str, Outcome)> = items
            .iter()
            .map(|i| (i.order_no.as_str(), i.outcome))
            .collect();
        assert_eq!(got, [("N", Outcome::Matched), ("S", Outcome::OursOnly)]);
        assert!(!items[0].is_case());
    }

    #[test]
    fn every_combination_has_one_verdict() {
        let a = dec!(100);
        let items = classify(
            vec![
                ours("A", "succeeded", a),
                ours("B", "succeeded", a),
                ours("C", "unknown", a),
                ours("D", "unknown", a),
                ours("E", "succeeded", a),
                ours("F", "failed", a),
                ours("G", "succeeded", a),
                ours("H", "unknown", a),
                OurAttempt {
                    fixable: false,
                    ..ours("I", "submitted", a)
                },
            ],
            vec![
                line("A", "success", a),
                line("B", "success", dec!(99)),
                line("C", "success", a),
                line("D", "failed", a),
                line("F", "failed", a),
                line("G", "failed", a),
                line("H", "success", dec!(1)),
                line("I", "success", a),
                line("X", "success", a),
            ],
        );
        let got: Vec<(&str, Outcome, Option<AutoFix>)> = items
            .iter()
            .map(|i| (i.order_no.as_str(), i.outcome, i.auto_fix))
            .collect();
        use AutoFix::*;
        use Outcome::*;
        assert_eq!(
            got,
            [
                ("A", Matched, None),
                ("B", AmountDiffers, None),
                ("C", Matched, Some(ResolvedSucceeded)),
                ("D", Matched, Some(ResolvedFailed)),
                ("E", OursOnly, None),
                ("F", Matched, None),
                ("G", StatusDiffers, None),
                ("H", AmountDiffers, None),
                ("I", StatusDiffers, None),
                ("X", ChannelOnly, None),
            ]
        );
        assert!(items[1].evidence()["theirs"]["amount"] == "99");
    }
}
