//! repayd's channel protocol: signed JSON over HTTP.
//!
//! One protocol serves both directions, so the HTTP adapter ([`super::http::HttpChannel`]),
//! the simulator server ([`super::server::serve_simulator`]) and the merchant's webhook
//! share this module and cannot drift apart.
//!
//! Endpoints (all requests and all 200 responses are signed):
//! - `POST /v1/debits`: body [`super::DebitRequest`], answer [`DebitOutcome`]. Idempotent by
//!   order number.
//! - `GET /v1/debits/{order_no}`: answer [`super::QueryOutcome`].
//! - `GET /v1/statements/{YYYY-MM-DD}`: answer `text/csv`, see [`statement_csv`].
//! - `GET /v1/journal`: simulator only, the debits it really applied.
//!
//! Results also arrive asynchronously: the channel POSTs a [`Callback`] to the merchant's
//! webhook, signed the same way.
//!
//! Signing: `X-Repayd-Timestamp` carries the unix time in seconds and `X-Repayd-Signature`
//! carries `hex(HMAC-SHA256(secret, "{timestamp}.{body}"))` (the body is empty for GET).
//! The timestamp is signed and must be within [`MAX_SKEW_SECS`] of the receiver's clock,
//! so a captured message cannot be replayed later.

use chrono::Utc;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;

pub const SIGNATURE_HEADER: &str = "x-repayd-signature";
pub const TIMESTAMP_HEADER: &str = "x-repayd-timestamp";
/// How far a signed timestamp may be from the receiver's clock.
pub const MAX_SKEW_SECS: i64 = 300;
pub const DEBITS_PATH: &str = "/v1/debits";
pub const STATEMENTS_PATH: &str = "/v1/statements";
pub const JOURNAL_PATH: &str = "/v1/journal";

type HmacSha256 = Hmac<Sha256>;

pub use crate::domain::secret::Secret;

/// Why a signed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("timestamp `{0}` is not unix seconds")]
    BadTimestamp(String),
    #[error("timestamp is {0} s away from now, more than allowed")]
    Skewed(i64),
    #[error("signature does not match")]
    Mismatch,
}

pub use crate::domain::channel::Callback;

/// `hex(HMAC-SHA256(secret, "{ts}.{body}"))`.
pub fn sign(secret: &[u8], ts: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, ts, body).finalize().into_bytes())
}

fn mac(secret: &[u8], ts: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Check a message's signature headers. The comparison is constant-time (hmac's
/// `verify_slice`), so timing does not leak how much of a forged signature was right.
pub fn verify(
    secret: &[u8],
    ts_header: Option<&str>,
    sig_header: Option<&str>,
    body: &[u8],
    now_unix: i64,
    max_skew_secs: i64,
) -> Result<(), SignatureError> {
    let ts_text = ts_header.ok_or(SignatureError::Missing(TIMESTAMP_HEADER))?;
    let sig_text = sig_header.ok_or(SignatureError::Missing(SIGNATURE_HEADER))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp(ts_text.to_string()))?;
    let skew = now_unix.saturating_sub(ts);
    if skew.saturating_abs() > max_skew_secs {
        return Err(SignatureError::Skewed(skew));
    }
    let sig = hex::decode(sig_text.trim()).map_err(|_| SignatureError::Mismatch)?;
    mac(secret, ts, body)
        .verify_slice(&sig)
        .map_err(|_| SignatureError::Mismatch)
}

/// Current unix time in seconds, the clock signatures are made and checked with.
pub fn now_unix() -> i64 {
    Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::channel::DebitOutcome;

    #[test]
    fn signatures_verify_and_reject() {
        let body = br#"{"order_no":"1"}"#;
        let sig = sign(b"k", 1000, body);
        assert_eq!(sig.len(), 64);
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify(b"k", ts, sig, body, now, MAX_SKEW_SECS)
        };
        assert_eq!(check(Some("1000"), Some(&sig), body, 1100), Ok(()));
        assert_eq!(
            check(Some("1000"), Some(&sig), b"{}", 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1001"), Some(&sig), body, 1000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            check(Some("1000"), Some(&sig), body, 1301),
            Err(SignatureError::Skewed(301))
        );
        assert_eq!(
            check(None, Some(&sig), body, 1000),
            Err(SignatureError::Missing(TIMESTAMP_HEADER))
        );
        assert_eq!(
            check(Some("x"), Some(&sig), body, 1000),
            Err(SignatureError::BadTimestamp("x".into()))
        );
        assert_eq!(
            check(Some("1000"), Some("zz"), body, 1000),
            Err(SignatureError::Mismatch)
        );
        assert!(verify(b"other", Some("1000"), Some(&sig), body, 1000, 300).is_err());
    }

    #[test]
    fn callback_json_is_plain() {
        let cb = Callback {
            order_no: "WX1".into(),
            outcome: DebitOutcome::Unknown { code: "X".into() },
        };
        let json = serde_json::to_string(&cb).unwrap();
        assert_eq!(
            json,
            r#"{"order_no":"WX1","outcome":{"status":"unknown","code":"X"}}"#
        );
    }
}
