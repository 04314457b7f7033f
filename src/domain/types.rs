//! Small shared vocabulary of the domain: plain enums with no behaviour beyond naming.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The failure code of an attempt the channel says it never received: its query answered
/// "not found" after the channel had time to see it. Nothing was debited.
pub const NOT_FOUND: &str = "NOT_FOUND";

/// A component of an installment that a payment can be allocated to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    Penalty,
    Fee,
    Interest,
    Principal,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::Penalty,
        Component::Fee,
        Component::Interest,
        Component::Principal,
    ];
    /// Civil Code art. 561 default: costs (penalty, fee), then interest, then principal.
    pub const DEFAULT_ORDER: [Component; 4] = Self::ALL;

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Penalty => "penalty",
            Component::Fee => "fee",
            Component::Interest => "interest",
            Component::Principal => "principal",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Component {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "penalty" => Ok(Component::Penalty),
            "fee" => Ok(Component::Fee),
            "interest" => Ok(Component::Interest),
            "principal" => Ok(Component::Principal),
            other => Err(format!(
                "unknown component `{other}` (expected penalty, fee, interest or principal)"
            )),
        }
    }
}

/// How a definite channel failure is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Retry later or for less (insufficient balance, over a limit).
    Soft,
    /// Stop using the mandate; the borrower must re-bind (card cancelled, agreement expired).
    Hard,
    /// Not a failure: the outcome is not known yet and must be queried.
    Unknown,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Soft => "soft",
            FailureClass::Hard => "hard",
            FailureClass::Unknown => "unknown",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How installments are generated from loan terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// 等额本息: equal total payments.
    Annuity,
    /// 等额本金: equal principal, decreasing interest.
    EqualPrincipal,
    /// Interest each period, all principal at the end.
    Bullet,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "annuity" => Ok(Method::Annuity),
            "equal_principal" | "equal-principal" => Ok(Method::EqualPrincipal),
            "bullet" => Ok(Method::Bullet),
            other => Err(format!(
                "unknown method `{other}` (expected annuity, equal_principal or bullet)"
            )),
        }
    }
}

/// What the daily penalty is computed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PenaltyBase {
    /// Overdue principal only.
    Principal,
    /// Overdue principal plus overdue interest.
    PrincipalInterest,
}

/// How a payment walks across several due installments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstallmentOrder {
    /// Settle the oldest installment completely (in component order) before the next.
    OldestFirst,
    /// Settle one component across all installments (oldest first) before the next component.
    ComponentFirst,
}
