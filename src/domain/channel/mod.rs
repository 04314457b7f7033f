//! Channels (代扣通道): the payment companies and banks that execute mandate debits.
//!
//! The engine talks to every channel through the [`Channel`] trait (a port; the adapters in
//! `adapters::channel` implement it), so the in-process simulator, a standalone simulator
//! server and the HTTP adapter (signed JSON, with timeout, concurrency and a TPS cap from
//! [`ChannelConfig`]) are interchangeable.
//!
//! The types here are the wire vocabulary too: they serialize to plain JSON so the HTTP
//! adapter and the simulator server exchange them as they are.
//!
//! Rules every implementation follows:
//! - A result is success, a definite failure with a code, or unknown. Unknown is not failure:
//!   the engine queries and never resubmits with a new order number.
//! - `submit` is idempotent by order number: the same order number never debits twice.
//! - A [`ChannelError`] means the channel gave no usable answer; see
//!   [`ChannelError::may_have_debited`] for whether the engine must treat it as unknown.

pub mod order_no;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use order_no::{Charset, OrderNoError, OrderNoRule};

/// Asynchronous result notification, POSTed by the channel to the merchant's webhook. It
/// may come late, twice, or (for failures) never: the receiver must be idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    pub order_no: String,
    pub outcome: DebitOutcome,
}

/// One debit attempt as sent to a channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebitRequest {
    /// Platform order number, fitted to the channel's [`OrderNoRule`]; the idempotency key.
    pub order_no: String,
    /// The mandate's channel-side agreement id (协议号).
    pub agreement: String,
    pub amount: Decimal,
    pub currency: String,
    /// The caller's clock. Real channels ignore it; the simulator uses it as "now" so that
    /// runs are deterministic and can be replayed at any simulated date.
    pub at: DateTime<Utc>,
}

/// What a channel said about one debit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DebitOutcome {
    /// Money moved. `amount` is what the channel debited, which reconciliation compares.
    Succeeded {
        channel_ref: String,
        amount: Decimal,
    },
    /// Definitely not debited; `code` is the channel's failure code (soft or hard).
    Failed { code: String, message: String },
    /// Timeout, "accepted", "bank processing": the debit may or may not happen. Query it.
    Unknown { code: String },
}

impl DebitOutcome {
    /// The failure or unknown code, if any; what failure classification keys on.
    pub fn code(&self) -> Option<&str> {
        match self {
            DebitOutcome::Succeeded { .. } => None,
            DebitOutcome::Failed { code, .. } | DebitOutcome::Unknown { code } => Some(code),
        }
    }

    /// Whether the outcome is final (success or definite failure), so querying is pointless.
    pub fn is_final(&self) -> bool {
        !matches!(self, DebitOutcome::Unknown { .. })
    }
}

/// Answer to a status query by order number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", content = "outcome", rename_all = "snake_case")]
pub enum QueryOutcome {
    Found(DebitOutcome),
    /// The channel never saw this order number. Only safe to act on once the submit that
    /// used it is known to have ended (see [`ChannelError::may_have_debited`]).
    NotFound,
}

/// One line of a channel's daily statement (对账文件), matched to attempts by order number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatementLine {
    pub order_no: String,
    pub channel_ref: String,
    pub amount: Decimal,
    /// What the channel charged for this line (0 when the statement has no fee column).
    #[serde(default)]
    pub fee: Decimal,
    /// "success" or "failed".
    pub status: String,
    pub at: DateTime<Utc>,
}

/// The channel gave no usable answer. Distinct from [`DebitOutcome::Failed`], which is the
/// channel's own definite answer.
#[derive(Debug, Error)]
pub enum ChannelError {
    /// Connection, TLS or I/O failure; the request may or may not have reached the channel.
    #[error("transport error: {0}")]
    Transport(String),
    /// No response within the configured timeout; the request may have been processed.
    #[error("timed out after {0} ms")]
    Timeout(u64),
    /// Refused before processing because the TPS cap (ours or the channel's) was reached.
    #[error("rate limited")]
    RateLimited,
    /// The channel refused the request as malformed or unauthorized (bad signature, order
    /// number off the rule, reused order number); nothing was processed.
    #[error("rejected by channel: {0}")]
    Rejected(String),
    /// A response arrived but could not be understood (bad signature, unparsable body).
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ChannelError {
    /// Whether the debit may have happened, so the engine must record the attempt as unknown
    /// and query rather than treat it as not sent. Only errors raised before the channel
    /// processed anything are safe to treat as "not sent".
    pub fn may_have_debited(&self) -> bool {
        match self {
            ChannelError::Transport(_) | ChannelError::Timeout(_) | ChannelError::Protocol(_) => {
                true
            }
            ChannelError::RateLimited | ChannelError::Rejected(_) => false,
        }
    }
}

/// A debit channel. Implementations must be cheap to share across tasks (`Send + Sync`) and
/// must enforce their own timeout, concurrency and TPS cap, so the engine can call freely.
#[async_trait]
pub trait Channel: Send + Sync {
    /// The channel's configured name, e.g. "wechat"; keys order number counters and stats.
    fn name(&self) -> &str;
    /// Ask for a debit. Idempotent by `req.order_no`.
    async fn submit(&self, req: &DebitRequest) -> Result<DebitOutcome, ChannelError>;
    /// Current status of an order; `at` is the caller's clock, as in [`DebitRequest::at`].
    async fn query(&self, order_no: &str, at: DateTime<Utc>) -> Result<QueryOutcome, ChannelError>;
    /// The daily statement for `date` (in the channel's own time zone).
    async fn statement(&self, date: NaiveDate) -> Result<Vec<StatementLine>, ChannelError>;
    /// The channel's TPS cap and concurrency belong to the channel, not to one process:
    /// `instances` live instances share them, each taking an equal part (1 = all of it).
    /// An adapter without limits ignores it.
    fn share_limits(&self, _instances: u32) {}
}

/// One instance's part of a TPS cap shared by `instances`: an equal part, rounded down.
/// Each adapter keeps its own part under the part in every sliding second (the HTTP
/// adapter's bucket stays one request and its burst below it), so the parts together stay
/// under the cap by at least one request per instance.
pub fn tps_share(tps: u32, instances: u32) -> u32 {
    (tps / instances.max(1)).max(1)
}

/// Static configuration of one channel, read from the daemon's configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub name: String,
    #[serde(default)]
    pub order_no: OrderNoRule,
    /// Requests per second never to exceed (WeChat entrusted debit: 150); `None` = no cap.
    #[serde(default)]
    pub tps: Option<u32>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per request; past it the attempt is unknown, not failed.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Statement day zone, fetch time, T+N settlement and fees.
    #[serde(default)]
    pub settlement: SettlementRule,
}

/// Where a settled line's fee comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeSource {
    /// The statement's `fee` column.
    Statement,
    /// `fee_rate` × amount, rounded half away from zero to cents, at least `fee_min`.
    Rate,
}

/// How a channel's statement days are read and paid out (清算): the matched successes of
/// statement day D are paid into the bank, net of fees, on D + `days` (T+N) in `tz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementRule {
    /// The zone of the channel's statement days: an attempt belongs to the statement of its
    /// creation instant's local date there.
    pub tz: chrono_tz::Tz,
    /// T+N.
    pub days: u32,
    pub fees: FeeSource,
    pub fee_rate: Decimal,
    pub fee_min: Decimal,
    /// Local time (in `tz`) after which the daemon fetches the previous day's statement.
    #[serde(with = "hhmm")]
    pub statement_time: chrono::NaiveTime,
}

impl Default for SettlementRule {
    fn default() -> Self {
        SettlementRule {
            tz: chrono_tz::UTC,
            days: 1,
            fees: FeeSource::Statement,
            fee_rate: Decimal::ZERO,
            fee_min: Decimal::ZERO,
            statement_time: chrono::NaiveTime::from_hms_opt(9, 0, 0).expect("valid time"),
        }
    }
}

impl SettlementRule {
    /// The fee of one settled line.
    pub fn fee_of(&self, amount: Decimal, statement_fee: Decimal) -> Decimal {
        match self.fees {
            FeeSource::Statement => statement_fee,
            FeeSource::Rate => crate::domain::round_money(amount * self.fee_rate).max(self.fee_min),
        }
    }
}

mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let text = String::deserialize(d)?;
        NaiveTime::parse_from_str(&text, "%H:%M")
            .map_err(|_| serde::de::Error::custom(format!("`{text}` is not a time like 09:00")))
    }
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl ChannelConfig {
    /// Check the configuration at load time, so a bad rule or limit stops start-up instead of
    /// failing the first attempt.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("channel `{}`: {m}", self.name));
        if self.name.trim().is_empty() {
            return Err("channel name is empty".into());
        }
        if let Err(e) = self.order_no.validate_rule() {
            return fail(e.to_string());
        }
        if self.tps == Some(0) {
            return fail("tps must be above 0 (omit it for no cap)".into());
        }
        if self.concurrency == 0 || self.timeout_ms == 0 {
            return fail("concurrency and timeout_ms must be above 0".into());
        }
        let s = &self.settlement;
        if s.fee_rate < Decimal::ZERO || s.fee_min < Decimal::ZERO || s.fee_rate >= Decimal::ONE {
            return fail("settlement fee_rate must be in [0, 1) and fee_min at least 0".into());
        }
        Ok(())
    }
}

/// Demo channels for the simulator and examples, shaped like real rules: a 12-digit card
/// scheme, WeChat's entrusted debit with its 150 TPS cap, and a bank's alphanumeric API.
pub fn builtin_channels() -> Vec<ChannelConfig> {
    let channel = |name: &str, prefix: &str, charset, min_len, max_len, tps| ChannelConfig {
        name: name.into(),
        order_no: OrderNoRule {
            prefix: prefix.into(),
            charset,
            min_len,
            max_len,
        },
        tps,
        concurrency: default_concurrency(),
        timeout_ms: default_timeout_ms(),
        settlement: SettlementRule::default(),
    };
    vec![
        channel("unionpay", "8", Charset::Digits, 12, 12, None),
        channel("wechat", "WX", Charset::Alnum, 8, 32, Some(150)),
        channel("bank", "BK", Charset::Alnum, 16, 32, None),
    ]
}

/// Channels backed by an in-process simulator write statements in the scenario's zone: their
/// statement days follow it.
pub fn with_statement_zone(
    mut configs: Vec<ChannelConfig>,
    tz: chrono_tz::Tz,
) -> Vec<ChannelConfig> {
    for c in &mut configs {
        c.settlement.tz = tz;
    }
    configs
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn builtin_channels_are_valid() {
        let all = builtin_channels();
        let names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["unionpay", "wechat", "bank"]);
        for c in &all {
            c.validate().unwrap();
            let no = c.order_no.format(1).unwrap();
            c.order_no.check(&no).unwrap();
        }
        assert_eq!(all[0].order_no.format(7).unwrap(), "800000000007");
        assert_eq!(all[1].tps, Some(150));
    }

    #[test]
    fn config_reads_from_toml_with_defaults() {
        let c: ChannelConfig = toml::from_str(
            "name = \"x\"\ntps = 10\n[order_no]\nprefix = \"X\"\ncharset = \"alnum\"\nmax_len = 20",
        )
        .unwrap();
        assert_eq!(c.order_no.max_len, 20);
        assert_eq!((c.concurrency, c.timeout_ms), (4, 10_000));
        c.validate().unwrap();
        assert_eq!(c.settlement, SettlementRule::default());
        let bad = ChannelConfig {
            tps: Some(0),
            ..c.clone()
        };
        assert!(bad.validate().unwrap_err().contains("tps"));
        let s: ChannelConfig = toml::from_str(
            "name = \"y\"\n[settlement]\ntz = \"Asia/Shanghai\"\ndays = 2\nfees = \"rate\"\nfee_rate = \"0.006\"\nfee_min = \"0.10\"\nstatement_time = \"10:30\"",
        )
        .unwrap();
        let r = &s.settlement;
        assert_eq!(
            (r.days, r.fees, r.tz),
            (2, FeeSource::Rate, chrono_tz::Asia::Shanghai)
        );
        assert_eq!(r.fee_of(dec!(100.00), dec!(9)), dec!(0.60));
        assert_eq!(r.fee_of(dec!(1.00), dec!(9)), dec!(0.10));
        assert_eq!(
            SettlementRule::default().fee_of(dec!(100), dec!(0.25)),
            dec!(0.25)
        );
        let bad: ChannelConfig =
            toml::from_str("name = \"z\"\n[settlement]\nfee_rate = \"1.5\"").unwrap();
        assert!(bad.validate().unwrap_err().contains("fee_rate"));
    }

    #[test]
    fn outcomes_have_plain_json() {
        let ok = DebitOutcome::Succeeded {
            channel_ref: "R1".into(),
            amount: dec!(10.50),
        };
        let json = serde_json::to_string(&QueryOutcome::Found(ok.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"result":"found","outcome":{"status":"succeeded","channel_ref":"R1","amount":"10.50"}}"#
        );
        let back: QueryOutcome = serde_json::from_str(&json).unwrap();
        assert_eq!(back, QueryOutcome::Found(ok));
        let nf = serde_json::to_string(&QueryOutcome::NotFound).unwrap();
        assert_eq!(
            serde_json::from_str::<QueryOutcome>(&nf).unwrap(),
            QueryOutcome::NotFound
        );
    }

    #[test]
    fn errors_say_whether_money_may_have_moved() {
        assert!(ChannelError::Timeout(3000).may_have_debited());
        assert!(ChannelError::Transport("reset".into()).may_have_debited());
        assert!(!ChannelError::RateLimited.may_have_debited());
        assert!(!ChannelError::Rejected("bad sign".into()).may_have_debited());
    }
}
