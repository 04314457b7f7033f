//! Every status and kind the database stores, as enums: each has one spelling (`as_str`,
//! `Display`), parses back with an error naming the value (`FromStr`), and lists its values
//! (`ALL`), which the migrations' CHECK constraints repeat (a test keeps the two in step).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A stored value that is none of its enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a {what} (expected one of: {expected})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(UnknownValue {
                        what: $what,
                        value: other.chars().take(40).collect(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

status_enum!(
    /// Where a loan stands.
    LoanStatus, "loan status" {
        /// Pursued by the engine.
        Active = "active",
        Paid = "paid",
        /// Past the policy's stop point: auto-debit stopped, people collect.
        Collections = "collections",
        WrittenOff = "written_off",
    }
);

status_enum!(
    /// Where an installment stands.
    InstallmentStatus, "installment status" {
        Pending = "pending",
        Overdue = "overdue",
        Paid = "paid",
        WrittenOff = "written_off",
    }
);

status_enum!(
    /// What an agenda row does.
    ActionKind, "action kind" {
        Notice = "notice",
        Attempt = "attempt",
    }
);

status_enum!(
    /// Where an agenda row stands.
    ActionStatus, "action status" {
        Pending = "pending",
        /// Taken by an instance, with a lease.
        Claimed = "claimed",
        Done = "done",
        Skipped = "skipped",
        Cancelled = "cancelled",
    }
);

status_enum!(
    /// Why an attempt is made; shown to collections and used for catch-up rules.
    AttemptKind, "attempt kind" {
        Early = "early",
        Due = "due",
        Overdue = "overdue",
        Payday = "payday",
        /// Asked for by a person (`requested_by` says who).
        Manual = "manual",
    }
);

status_enum!(
    /// Where an attempt stands. `submitted` and `unknown` are open: queried, never resent.
    AttemptStatus, "attempt status" {
        Submitted = "submitted",
        Unknown = "unknown",
        Succeeded = "succeeded",
        Failed = "failed",
    }
);

status_enum!(
    /// Whether a mandate may be debited.
    MandateStatus, "mandate status" {
        Active = "active",
        /// The channel reported it unusable (a hard failure): the borrower must re-bind.
        Invalid = "invalid",
        /// Revoked by staff.
        Revoked = "revoked",
    }
);

status_enum!(
    /// Where an outbox row stands.
    NoticeStatus, "notice status" {
        Pending = "pending",
        Claimed = "claimed",
        /// Committed before the provider is called: never sent again.
        Sending = "sending",
        Sent = "sent",
        Failed = "failed",
    }
);

status_enum!(
    /// Whether a reconciliation item needs a person.
    CaseStatus, "case status" {
        Open = "open",
        Resolved = "resolved",
    }
);

impl AttemptStatus {
    /// An answer is still awaited: the attempt blocks its loan and is queried.
    pub fn is_open(self) -> bool {
        matches!(self, AttemptStatus::Submitted | AttemptStatus::Unknown)
    }
}

impl AttemptKind {
    /// The attempt kind a planned slot name encodes (`due:08:00`, `od:D+4`, …). A name of no
    /// known kind is an error, never taken for an overdue attempt.
    pub fn of_slot(slot: &str) -> Result<AttemptKind, UnknownValue> {
        match slot.split(':').next() {
            Some("early") => Ok(AttemptKind::Early),
            Some("due") => Ok(AttemptKind::Due),
            Some("od") => Ok(AttemptKind::Overdue),
            Some("payday") => Ok(AttemptKind::Payday),
            _ => Err(UnknownValue {
                what: "attempt slot",
                value: slot.chars().take(40).collect(),
                expected: "early:…, due:…, od:…, payday:…".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_parses_back_and_others_are_named() {
        for s in AttemptStatus::ALL {
            assert_eq!(s.as_str().parse::<AttemptStatus>(), Ok(*s));
        }
        for k in LoanStatus::ALL {
            assert_eq!(k.to_string().parse::<LoanStatus>(), Ok(*k));
        }
        let e = "bogus".parse::<ActionStatus>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`bogus` is not a action status (expected one of: pending, claimed, done, skipped, cancelled)"
        );
        assert_eq!(
            serde_json::to_string(&LoanStatus::WrittenOff).unwrap(),
            "\"written_off\""
        );
    }

    #[test]
    fn slots_name_their_kind_and_an_unknown_slot_is_an_error() {
        assert_eq!(AttemptKind::of_slot("due:08:00"), Ok(AttemptKind::Due));
        assert_eq!(AttemptKind::of_slot("od:D+4"), Ok(AttemptKind::Overdue));
        assert_eq!(
            AttemptKind::of_slot("payday:2027-01-20"),
            Ok(AttemptKind::Payday)
        );
        assert_eq!(
            AttemptKind::of_slot("early:T-1@20:00"),
            Ok(AttemptKind::Early)
        );
        assert!(AttemptKind::of_slot("someday:1").is_err());
    }
}
