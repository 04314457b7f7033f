//! Delivery of notices to real gateways: SMS over HTTP (a generic JSON gateway or Twilio),
//! email over SMTP, and the notice text from per-locale template files.
//!
//! Every provider takes a stable `message_id` that is reused on retries, so a gateway that
//! dedupes (or a person reading mail headers) can tell a retry from a second notice. Errors
//! say whether the outcome is unknown (`Timeout`), final (`Rejected`) or safe to retry
//! (`Transport`). Recipients only ever reach the logs masked.

pub mod email;
pub mod sinks;
pub mod sms;

use async_trait::async_trait;
use std::sync::Arc;

pub use crate::domain::notice::templates::{NoticeContext, TemplateError, Templates};
pub use email::{Security, SmtpConfig, SmtpEmail};
pub use sinks::{LogSink, ProviderSink};
pub use sms::{
    parse_delivery_report, DeliveryReport, DeliveryStatus, GenericJsonSms, ReportError,
    TwilioConfig, TwilioSms,
};

/// One notice handed to a provider.
#[derive(Debug, Clone)]
pub struct OutgoingNotice {
    pub id: i64,
    /// Stable across retries (see [`OutgoingNotice::message_id_for`]) so providers can dedupe.
    pub message_id: String,
    pub kind: String,
    /// `"sms"` or `"email"`.
    pub channel: String,
    pub recipient: String,
    /// Used by email only.
    pub subject: String,
    pub body: String,
}

impl OutgoingNotice {
    /// The message id for an outbox row. It derives from the row id alone, never from a
    /// retry counter, so every retry of one notice carries the same id.
    pub fn message_id_for(id: i64) -> String {
        format!("repayd-{id}")
    }

    /// The recipient as it may appear in logs.
    pub fn masked_recipient(&self) -> String {
        mask_recipient(&self.channel, &self.recipient)
    }
}

/// Mask a recipient for logs: phone numbers for SMS, addresses for email.
pub fn mask_recipient(channel: &str, recipient: &str) -> String {
    if channel == "email" {
        crate::domain::pii::mask_email(recipient)
    } else {
        crate::domain::pii::mask_phone(recipient)
    }
}

/// What a gateway said when it accepted a notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The gateway's own id (Twilio SID, SMTP queue reply, ...). Empty if it gave none.
    pub provider_id: String,
}

/// Why a send did not go through, classified by what the caller should do next.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The outcome is unknown: the gateway may have accepted it. Retry with the SAME message
    /// id, never a new one, so the gateway can drop the duplicate.
    #[error("timed out, outcome unknown: {0}")]
    Timeout(String),
    /// The gateway refused this notice for good (bad number, bad address, auth refused).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The notice did not get through (connection refused, 5xx, SMTP 4xx); retry later.
    #[error("transport: {0}")]
    Transport(String),
    /// The provider is misconfigured (bad sender address, bad URL); retrying will not help.
    #[error("configuration: {0}")]
    Config(String),
}

impl ProviderError {
    /// Whether a later retry (with the same message id) may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Timeout(_) | ProviderError::Transport(_)
        )
    }
}

/// A gateway for one channel.
#[async_trait]
pub trait NoticeProvider: Send + Sync {
    /// `"sms"` or `"email"`: which outbox rows this provider takes.
    fn channel(&self) -> &'static str;
    async fn send(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError>;
}

/// The providers configured for a daemon, looked up by channel.
#[derive(Clone, Default)]
pub struct ProviderSet {
    providers: Vec<Arc<dyn NoticeProvider>>,
}

impl ProviderSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a provider; a later one for the same channel replaces the earlier.
    pub fn with(mut self, p: Arc<dyn NoticeProvider>) -> Self {
        self.providers.retain(|q| q.channel() != p.channel());
        self.providers.push(p);
        self
    }

    pub fn get(&self, channel: &str) -> Option<&dyn NoticeProvider> {
        self.providers
            .iter()
            .find(|p| p.channel() == channel)
            .map(|p| p.as_ref())
    }
}

pub use crate::domain::secret::Secret;

/// Shorten a gateway's error text and hide the recipient in it: gateways often echo the
/// number back, and these messages end up in logs and the outbox.
pub(crate) fn scrub(text: &str, n: &OutgoingNotice) -> String {
    let mut s = text.trim().to_string();
    if !n.recipient.is_empty() {
        s = s.replace(&n.recipient, &n.masked_recipient());
    }
    if s.chars().count() > 300 {
        s = s.chars().take(300).collect::<String>() + "…";
    }
    s
}

#[cfg(test)]
mod server_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn retry_classes() {
        assert!(ProviderError::Timeout("x".into()).retryable());
        assert!(ProviderError::Transport("x".into()).retryable());
        assert!(!ProviderError::Rejected("x".into()).retryable());
        assert!(!ProviderError::Config("x".into()).retryable());
    }

    #[test]
    fn scrub_masks_recipient() {
        let n = OutgoingNotice {
            id: 1,
            message_id: OutgoingNotice::message_id_for(1),
            kind: "paid".into(),
            channel: "sms".into(),
            recipient: "13812345678".into(),
            subject: String::new(),
            body: String::new(),
        };
        assert_eq!(
            scrub("bad number 13812345678", &n),
            "bad number 138****5678"
        );
        assert_eq!(n.message_id, "repayd-1");
    }
}
