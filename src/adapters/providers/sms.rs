//! SMS over HTTP: a generic JSON gateway and Twilio's Messages API, plus parsing of the
//! delivery reports (DLR webhooks) both send back.
//!
//! HTTP outcomes map to [`ProviderError`] so the dispatcher knows what to do: a timeout may
//! have been delivered (retry with the same message id), a 4xx never will be, a 5xx or a
//! refused connection was not and can be retried.

use super::{scrub, NoticeProvider, OutgoingNotice, ProviderError, Receipt, Secret};
use async_trait::async_trait;
use serde::Deserialize;
use std::time::Duration;

/// Twilio's production API.
pub const TWILIO_BASE_URL: &str = "https://api.twilio.com";

fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| ProviderError::Config(format!("http client: {e}")))
}

/// A request that got no HTTP answer. A timeout may have reached the gateway; anything else
/// (refused, reset before a reply, DNS) is treated as not sent.
fn request_error(e: reqwest::Error) -> ProviderError {
    if e.is_timeout() {
        ProviderError::Timeout(e.to_string())
    } else {
        ProviderError::Transport(e.to_string())
    }
}

/// Classify a non-2xx answer. 429 (rate limited) is worth retrying although it is a 4xx;
/// 504 comes from a proxy that gave up waiting, so the gateway may have sent the message.
fn status_error(status: reqwest::StatusCode, detail: String) -> ProviderError {
    let msg = format!("HTTP {}: {detail}", status.as_u16());
    match status.as_u16() {
        429 => ProviderError::Transport(msg),
        504 => ProviderError::Timeout(msg),
        400..=499 => ProviderError::Rejected(msg),
        _ => ProviderError::Transport(msg),
    }
}

/// Read a response: the body of a 2xx, or the classified error otherwise.
async fn read_response(
    res: reqwest::Response,
    n: &OutgoingNotice,
) -> Result<String, ProviderError> {
    let status = res.status();
    let text = res.text().await.map_err(request_error)?;
    if status.is_success() {
        Ok(text)
    } else {
        Err(status_error(status, scrub(&text, n)))
    }
}

/// The provider id in a 2xx body. The gateway has accepted the message by then, so an
/// unreadable body still counts as sent (reporting failure would send it twice).
fn provider_id(body: &str, field: &str, n: &OutgoingNotice) -> String {
    let id = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get(field).and_then(|x| x.as_str()).map(str::to_string));
    id.unwrap_or_else(|| {
        tracing::warn!(id = n.id, message_id = %n.message_id, "sms gateway accepted without an id");
        String::new()
    })
}

fn log_result(gateway: &str, n: &OutgoingNotice, r: &Result<Receipt, ProviderError>) {
    let to = n.masked_recipient();
    match r {
        Ok(rc) => tracing::info!(gateway, id = n.id, message_id = %n.message_id, %to,
            provider_id = %rc.provider_id, "sms sent"),
        Err(e) => tracing::warn!(gateway, id = n.id, message_id = %n.message_id, %to,
            error = %e, "sms not sent"),
    }
}

/// A gateway that takes `POST url` with a bearer token and the JSON
/// `{"message_id","to","text"}`, and answers `{"id": "..."}`. The message id also goes in
/// an `Idempotency-Key` header, so the gateway can drop retries of the same notice.
pub struct GenericJsonSms {
    url: String,
    token: Secret,
    client: reqwest::Client,
}

impl GenericJsonSms {
    pub fn new(
        url: impl Into<String>,
        token: Secret,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Ok(GenericJsonSms {
            url: url.into(),
            token,
            client: http_client(timeout)?,
        })
    }

    async fn post(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let payload = serde_json::json!({
            "message_id": n.message_id,
            "to": n.recipient,
            "text": n.body,
        });
        let res = self
            .client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header("Idempotency-Key", &n.message_id)
            .json(&payload)
            .send()
            .await
            .map_err(request_error)?;
        let body = read_response(res, n).await?;
        Ok(Receipt {
            provider_id: provider_id(&body, "id", n),
        })
    }
}

#[async_trait]
impl NoticeProvider for GenericJsonSms {
    fn channel(&self) -> &'static str {
        "sms"
    }

    async fn send(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let r = self.post(n).await;
        log_result("generic", n, &r);
        r
    }
}

/// Settings for [`TwilioSms`].
#[derive(Debug, Clone)]
pub struct TwilioConfig {
    /// [`TWILIO_BASE_URL`] in production; a local server in tests.
    pub base_url: String,
    pub account_sid: String,
    pub auth_token: Secret,
    /// A sender number, or a Messaging Service SID (`MG...`).
    pub from: String,
    pub timeout: Duration,
    /// Where Twilio posts delivery reports (`StatusCallback`), if anywhere.
    pub status_callback: Option<String>,
}

impl TwilioConfig {
    /// Production settings with a 10 s timeout and no status callback.
    pub fn new(account_sid: &str, auth_token: Secret, from: &str) -> Self {
        TwilioConfig {
            base_url: TWILIO_BASE_URL.to_string(),
            account_sid: account_sid.to_string(),
            auth_token,
            from: from.to_string(),
            timeout: Duration::from_secs(10),
            status_callback: None,
        }
    }
}

/// Twilio's Messages API: a form POST to `/2010-04-01/Accounts/{sid}/Messages.json` with
/// basic auth, answered by `201` and a JSON body holding the message `sid`. Twilio has no
/// idempotency key for this call, so a timeout here can mean a duplicate on retry.
pub struct TwilioSms {
    cfg: TwilioConfig,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct TwilioErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

impl TwilioSms {
    pub fn new(cfg: TwilioConfig) -> Result<Self, ProviderError> {
        let client = http_client(cfg.timeout)?;
        Ok(TwilioSms { cfg, client })
    }

    fn url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.cfg.base_url.trim_end_matches('/'),
            self.cfg.account_sid
        )
    }

    fn form<'a>(&'a self, n: &'a OutgoingNotice) -> Vec<(&'static str, &'a str)> {
        let from_field = if self.cfg.from.starts_with("MG") {
            "MessagingServiceSid"
        } else {
            "From"
        };
        let mut form = vec![
            ("To", n.recipient.as_str()),
            (from_field, self.cfg.from.as_str()),
            ("Body", n.body.as_str()),
        ];
        if let Some(cb) = &self.cfg.status_callback {
            form.push(("StatusCallback", cb.as_str()));
        }
        form
    }

    async fn post(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let res = self
            .client
            .post(self.url())
            .basic_auth(&self.cfg.account_sid, Some(self.cfg.auth_token.expose()))
            .form(&self.form(n))
            .send()
            .await
            .map_err(request_error)?;
        let body = read_response(res, n).await.map_err(twilio_detail)?;
        Ok(Receipt {
            provider_id: provider_id(&body, "sid", n),
        })
    }
}

/// Replace Twilio's JSON error body by its code and message, which is what staff look up.
fn twilio_detail(e: ProviderError) -> ProviderError {
    let tidy = |s: String| match s.split_once(": ") {
        Some((head, json)) => match serde_json::from_str::<TwilioErrorBody>(json) {
            Ok(b) => format!(
                "{head}: Twilio error {}: {}",
                b.code.unwrap_or_default(),
                b.message.unwrap_or_default()
            ),
            Err(_) => s,
        },
        None => s,
    };
    match e {
        ProviderError::Rejected(s) => ProviderError::Rejected(tidy(s)),
        ProviderError::Transport(s) => ProviderError::Transport(tidy(s)),
        other => other,
    }
}

#[async_trait]
impl NoticeProvider for TwilioSms {
    fn channel(&self) -> &'static str {
        "sms"
    }

    async fn send(&self, n: &OutgoingNotice) -> Result<Receipt, ProviderError> {
        let r = self.post(n).await;
        log_result("twilio", n, &r);
        r
    }
}

/// Where a delivered message stands, as far as a report says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted, queued or sent to the carrier; a later report will follow.
    Pending,
    Delivered,
    /// Failed, undelivered or cancelled: it will not arrive.
    Failed,
    /// A status this code does not know; kept as reported.
    Other(String),
}

impl DeliveryStatus {
    fn parse(s: &str) -> Self {
        match s.to_ascii_lowercase().as_str() {
            "delivered" | "read" => DeliveryStatus::Delivered,
            "failed" | "undelivered" | "canceled" | "cancelled" | "rejected" | "expired" => {
                DeliveryStatus::Failed
            }
            "accepted" | "scheduled" | "queued" | "sending" | "sent" | "pending" => {
                DeliveryStatus::Pending
            }
            other => DeliveryStatus::Other(other.to_string()),
        }
    }

    /// Whether no further report is expected.
    pub fn is_final(&self) -> bool {
        matches!(self, DeliveryStatus::Delivered | DeliveryStatus::Failed)
    }
}

/// One delivery report. The generic gateway echoes our `message_id`; Twilio reports its own
/// SID, which is the `provider_id` of the [`Receipt`] it gave. Match on whichever is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReport {
    pub message_id: Option<String>,
    pub provider_id: Option<String>,
    pub status: DeliveryStatus,
    /// The gateway's error code or text for a failure.
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("delivery report is not valid JSON: {0}")]
    Json(String),
    #[error("delivery report is not valid form data: {0}")]
    Form(String),
    #[error("delivery report lacks {0}")]
    Missing(&'static str),
}

#[derive(Deserialize)]
struct JsonReport {
    message_id: Option<String>,
    #[serde(alias = "provider_id")]
    id: Option<String>,
    status: Option<String>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TwilioReport {
    message_sid: Option<String>,
    message_status: Option<String>,
    error_code: Option<String>,
}

/// Parse a DLR webhook body: the generic gateway's JSON
/// `{"message_id": "...", "status": "delivered"}`, or Twilio's form-encoded StatusCallback
/// (`MessageSid`, `MessageStatus`, `ErrorCode`). JSON is told apart by its leading `{`.
pub fn parse_delivery_report(body: &[u8]) -> Result<DeliveryReport, ReportError> {
    if body.trim_ascii_start().starts_with(b"{") {
        parse_json_report(body)
    } else {
        parse_twilio_report(body)
    }
}

fn parse_json_report(body: &[u8]) -> Result<DeliveryReport, ReportError> {
    let r: JsonReport =
        serde_json::from_slice(body).map_err(|e| ReportError::Json(e.to_string()))?;
    if r.message_id.is_none() && r.id.is_none() {
        return Err(ReportError::Missing("message_id"));
    }
    let status = r.status.ok_or(ReportError::Missing("status"))?;
    let error = r.error.map(|v| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    });
    Ok(DeliveryReport {
        message_id: r.message_id,
        provider_id: r.id,
        status: DeliveryStatus::parse(&status),
        error,
    })
}

fn parse_twilio_report(body: &[u8]) -> Result<DeliveryReport, ReportError> {
    let r: TwilioReport =
        serde_urlencoded::from_bytes(body).map_err(|e| ReportError::Form(e.to_string()))?;
    let sid = r.message_sid.ok_or(ReportError::Missing("MessageSid"))?;
    let status = r
        .message_status
        .ok_or(ReportError::Missing("MessageStatus"))?;
    Ok(DeliveryReport {
        message_id: None,
        provider_id: Some(sid),
        status: DeliveryStatus::parse(&status),
        error: r.error_code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report() {
        let r =
            parse_delivery_report(br#" {"message_id":"repayd-7","status":"DELIVERED"}"#).unwrap();
        assert_eq!(r.message_id.as_deref(), Some("repayd-7"));
        assert_eq!(r.status, DeliveryStatus::Delivered);
        assert!(r.status.is_final());
    }

    #[test]
    fn json_report_failure_with_code() {
        let r = parse_delivery_report(br#"{"message_id":"repayd-8","status":"failed","error":17}"#)
            .unwrap();
        assert_eq!(r.status, DeliveryStatus::Failed);
        assert_eq!(r.error.as_deref(), Some("17"));
    }

    #[test]
    fn twilio_report() {
        let body = b"SmsSid=SM1&SmsStatus=undelivered&MessageStatus=undelivered&To=%2B8613812345678&MessageSid=SM1&AccountSid=AC1&ErrorCode=30003&ApiVersion=2010-04-01";
        let r = parse_delivery_report(body).unwrap();
        assert_eq!(r.provider_id.as_deref(), Some("SM1"));
        assert_eq!(r.message_id, None);
        assert_eq!(r.status, DeliveryStatus::Failed);
        assert_eq!(r.error.as_deref(), Some("30003"));
    }

    #[test]
    fn pending_and_unknown_statuses() {
        let r = parse_delivery_report(b"MessageSid=SM2&MessageStatus=sent").unwrap();
        assert_eq!(r.status, DeliveryStatus::Pending);
        assert!(!r.status.is_final());
        let r = parse_delivery_report(br#"{"message_id":"m","status":"weird"}"#).unwrap();
        assert_eq!(r.status, DeliveryStatus::Other("weird".into()));
    }

    #[test]
    fn bad_reports() {
        assert!(matches!(
            parse_delivery_report(br#"{"status":"delivered"}"#),
            Err(ReportError::Missing("message_id"))
        ));
        assert!(matches!(
            parse_delivery_report(b"{not json"),
            Err(ReportError::Json(_))
        ));
        assert!(matches!(
            parse_delivery_report(b"MessageStatus=sent"),
            Err(ReportError::Missing("MessageSid"))
        ));
    }

    #[test]
    fn status_classes() {
        use reqwest::StatusCode as S;
        assert!(matches!(
            status_error(S::BAD_REQUEST, "x".into()),
            ProviderError::Rejected(_)
        ));
        assert!(matches!(
            status_error(S::TOO_MANY_REQUESTS, "x".into()),
            ProviderError::Transport(_)
        ));
        assert!(matches!(
            status_error(S::BAD_GATEWAY, "x".into()),
            ProviderError::Transport(_)
        ));
        assert!(matches!(
            status_error(S::GATEWAY_TIMEOUT, "x".into()),
            ProviderError::Timeout(_)
        ));
    }
}
