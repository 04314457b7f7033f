//! The notice sinks: the dev log file, and the SMS and email providers.

use super::{OutgoingNotice, ProviderError, ProviderSet};
use crate::domain::notice::{DeliveryError, NoticeSink, Outgoing};
use crate::domain::pii::{mask_email, mask_phone};
use async_trait::async_trait;
use std::io::Write;
use std::path::PathBuf;
use tracing::Instrument;

/// Appends one line per notice to a file, with the recipient masked.
pub struct LogSink {
    pub path: PathBuf,
}

#[async_trait]
impl NoticeSink for LogSink {
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError> {
        let to = if n.channel == "sms" {
            mask_phone(&n.recipient)
        } else {
            mask_email(&n.recipient)
        };
        let line = format!(
            "{}\t{}\t{}\t{to}\t{}\n",
            n.id,
            n.channel,
            n.kind,
            n.body.replace('\n', " ")
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| DeliveryError::Retry(format!("{}: {e}", self.path.display())))?;
        file.write_all(line.as_bytes())
            .map_err(|e| DeliveryError::Failed(format!("{}: {e}", self.path.display())))?;
        Ok(None)
    }
}

/// Sends through the SMS and email providers. A provider timeout is retried at once with the
/// same message id (providers dedupe on it); a notice still unanswered is marked failed rather
/// than risk sending it twice.
pub struct ProviderSink {
    pub providers: ProviderSet,
    pub timeout_retries: u32,
}

#[async_trait]
impl NoticeSink for ProviderSink {
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError> {
        let Some(provider) = self.providers.get(&n.channel) else {
            return Err(DeliveryError::Failed(format!(
                "no provider for {}",
                n.channel
            )));
        };
        let out = OutgoingNotice {
            id: n.id,
            message_id: OutgoingNotice::message_id_for(n.id),
            kind: n.kind.clone(),
            channel: n.channel.clone(),
            recipient: n.recipient.clone(),
            subject: n.subject.clone(),
            body: n.body.clone(),
        };
        let mut tries = 0;
        loop {
            let span =
                tracing::info_span!("notice", id = n.id, channel = %n.channel, kind = %n.kind);
            let result = provider.send(&out).instrument(span).await;
            match result {
                Ok(r) => return Ok(Some(r.provider_id)),
                Err(ProviderError::Timeout(e)) if tries < self.timeout_retries => {
                    tries += 1;
                    tracing::warn!(id = n.id, error = %e, "provider timeout; retrying with the same message id");
                }
                Err(ProviderError::Timeout(e)) => {
                    return Err(DeliveryError::Failed(format!("timeout: {e}")))
                }
                Err(e) if e.retryable() => return Err(DeliveryError::Retry(e.to_string())),
                Err(e) => return Err(DeliveryError::Failed(e.to_string())),
            }
        }
    }
}
