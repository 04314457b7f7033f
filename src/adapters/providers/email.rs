//! Email over SMTP with lettre.
//!
//! Each notice becomes one plain-text message whose `Message-ID` derives from the notice's
//! stable message id, so a retry after a timeout carries the same id and shows up as a
//! duplicate in the recipient's mailbox tooling instead of as a second notice.

use super::{scrub, NoticeProvider, OutgoingNotice, ProviderError, Receipt, Secret};
use async_trait::async_trait;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::AsyncSmtpTransportBuilder;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connect, then STARTTLS, which is required (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only for a relay on localhost or a test server.
    Plain,
}

/// Settings for [`SmtpEmail`].
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender, `noreply@lender.example` or `Lender <noreply@lender.example>`. Its
    /// domain also ends every Message-ID.
    pub from: String,
    /// Bounds one whole send (connect, dialogue, data).
    pub timeout: Duration,
    /// An extra CA certificate (PEM) to trust besides the public web roots, for a relay
    /// whose certificate comes from a private CA.
    pub root_cert_pem: Option<String>,
}

/// Sends notices as plain-text email through one SMTP server.
pub struct SmtpEmail {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    timeout: Duration,
}

fn config_error(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::Config(format!("{what}: {e}"))
}

fn tls_parameters(cfg: &SmtpConfig) -> Result<TlsParameters, ProviderError> {
    let mut b = TlsParameters::builder(cfg.host.clone());
    if let Some(pem) = &cfg.root_cert_pem {
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| config_error("smtp root certificate", e))?;
        b = b.add_root_certificate(cert);
    }
    b.build().map_err(|e| config_error("smtp tls", e))
}

fn builder(cfg: &SmtpConfig) -> Result<AsyncSmtpTransportBuilder, ProviderError> {
    let tls = match cfg.security {
        Security::Starttls => Tls::Required(tls_parameters(cfg)?),
        Security::Tls => Tls::Wrapper(tls_parameters(cfg)?),
        Security::Plain => Tls::None,
    };
    Ok(
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout)),
    )
}

fn credentials(cfg: &SmtpConfig) -> Result<Option<Credentials>, ProviderError> {
    match (&cfg.username, &cfg.password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::new(u.clone(), p.expose().to_string()))),
        (None, None) => Ok(None),
        _ => Err(ProviderError::Config(
            "smtp username and password go together".into(),
        )),
    }
}

impl SmtpEmail {
    pub fn new(cfg: SmtpConfig) -> Result<Self, ProviderError> {
        let from: Mailbox = cfg.from.parse().map_err(|e| config_error("smtp from", e))?;
        let mut b = builder(&cfg)?;
        if let Some(c) = credentials(&cfg)? {
            b = b.credentials(c);
        }
        Ok(SmtpEmail {
            transport: b.build(),
            from,
            timeout: cfg.timeout,
        })
    }

    /// The Message-ID header for a notice: `<{message_id}@{sender's domain}>`.
    pub fn message_id_header(&self, message_id: &str) -> String {
        format!("<{message_id}@{}>", self.from.email.domain())
    }

    fn message(&self, n: &OutgoingNotice) -> Result<Message, ProviderError> {
        let to: Mailbox = n.recipient.parse().map_err(|e| {
            ProviderError::Rejected(format!("bad address {}: {e}", n.masked_recipient()))
        })?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.as_str())
            .message_id(Some(self.message_id_header(&n.message_id)))
            .header(ContentType::TEXT_PLAIN)
            .body(n.body.clone())
            .map_err(|e| ProviderError::Rejected(format!("cannot build message: {e}")))
    }

    async fn deliver(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let msg = self.message(n)?;
        // lettre bounds only the connect; a server that stops answering mid-dialogue
        // would otherwise hold the dispatcher forever.
        let sent = tokio::time::timeout(self.timeout, self.transport.send(msg))
            .await
            .map_err(|_| ProviderError::Timeout(format!("no SMTP answer in {:?}", self.timeout)))?;
        let reply = sent.map_err(|e| smtp_error(e, n))?;
        Ok(Receipt {
            provider_id: reply.message().collect::<Vec<_>>().join(" "),
        })
    }
}

/// A permanent (5xx) reply will not change on retry; a timeout may have been delivered;
/// everything else (4xx, refused connection, TLS trouble) is worth another try. A bad
/// certificate is usually ours to fix, and dropping the notice for it would be worse.
fn smtp_error(e: lettre::transport::smtp::Error, n: &OutgoingNotice) -> ProviderError {
    let msg = scrub(&e.to_string(), n);
    if e.is_timeout() {
        ProviderError::Timeout(msg)
    } else if e.is_permanent() {
        ProviderError::Rejected(msg)
    } else {
        ProviderError::Transport(msg)
    }
}

#[async_trait]
impl NoticeProvider for SmtpEmail {
    fn channel(&self) -> &'static str {
        "email"
    }

    async fn send(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let r = self.deliver(n).await;
        let to = n.masked_recipient();
        match &r {
            Ok(_) => tracing::info!(id = n.id, message_id = %n.message_id, %to, "email sent"),
            Err(e) => tracing::warn!(id = n.id, message_id = %n.message_id, %to, error = %e,
                "email not sent"),
        }
        r
    }
}
