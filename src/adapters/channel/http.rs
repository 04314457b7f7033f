//! [`HttpChannel`]: a [`Channel`] that speaks the signed JSON protocol of
//! [`super::protocol`] to a real channel or to the simulator server.
//!
//! The engine calls channels freely from many tasks, so this adapter enforces the channel's
//! limits itself: at most `concurrency` requests in flight, never more than `tps` requests
//! per second (waiting, not failing, when the budget is spent), and `timeout_ms` per request.
//! Every answer that could carry money is judged with "unknown is not failure" in mind: a
//! timeout or a 5xx on submit may have debited, so it is reported as
//! [`DebitOutcome::Unknown`] and the engine queries instead of resubmitting.

use super::protocol::{
    now_unix, sign, verify, Secret, DEBITS_PATH, JOURNAL_PATH, MAX_SKEW_SECS, SIGNATURE_HEADER,
    STATEMENTS_PATH, TIMESTAMP_HEADER,
};
use super::sim::{SimDebit, TIMEOUT};
use crate::domain::channel::{
    tps_share, Channel, ChannelConfig, ChannelError, DebitOutcome, DebitRequest, QueryOutcome,
    StatementLine,
};
use crate::domain::statement::parse_statement_csv;
use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Code of the Unknown answer for a 5xx on submit: the channel failed somewhere, possibly
/// after debiting.
pub const HTTP_5XX: &str = "HTTP_5xx";
/// 429 retries per request before giving up with [`ChannelError::RateLimited`].
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// First backoff after a 429 without Retry-After; doubles each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest Retry-After honoured, so a confused channel cannot stall a worker for long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// HTTP requests sent, retries included.
    pub requests: u64,
    /// 429 answers received.
    pub throttled: u64,
}

/// A channel reached over HTTP with the repayd protocol.
pub struct HttpChannel {
    name: String,
    base_url: Url,
    secret: Secret,
    client: reqwest::Client,
    timeout_ms: u64,
    slots: Semaphore,
    concurrency: usize,
    tps: Option<u32>,
    /// This instance's part of the TPS cap; replaced when the live instances change.
    limiter: RwLock<Option<Arc<DefaultDirectRateLimiter>>>,
    /// How many live instances share the limits: each request takes that many slots.
    share: AtomicU32,
    max_retries: u32,
    requests: AtomicU64,
    throttled: AtomicU64,
}

/// An HTTP answer other than 429, read in full.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl HttpChannel {
    /// Build the adapter for `cfg` at `base_url` (e.g. `http://127.0.0.1:8081`, a path prefix
    /// is kept). Fails on an invalid configuration or URL, so mistakes stop start-up.
    pub fn new(
        cfg: &ChannelConfig,
        base_url: String,
        secret: Secret,
    ) -> Result<Self, ChannelError> {
        cfg.validate().map_err(ChannelError::Rejected)?;
        let base_url = Url::parse(&base_url)
            .ok()
            .filter(|u| !u.cannot_be_a_base())
            .ok_or_else(|| ChannelError::Rejected(format!("`{base_url}` is not a base URL")))?;
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| ChannelError::Transport(error_chain(&e)))?;
        Ok(HttpChannel {
            name: cfg.name.clone(),
            base_url,
            secret,
            client,
            timeout_ms: cfg.timeout_ms,
            slots: Semaphore::new(cfg.concurrency),
            concurrency: cfg.concurrency,
            tps: cfg.tps,
            limiter: RwLock::new(cfg.tps.map(|t| Arc::new(rate_limiter(t)))),
            share: AtomicU32::new(1),
            max_retries: DEFAULT_MAX_RETRIES,
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        })
    }

    /// How many times a request answered 429 is sent again before giving up.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    pub fn stats(&self) -> HttpStats {
        HttpStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    /// The simulator server's journal of applied debits (not part of the real protocol).
    pub async fn journal(&self) -> Result<Vec<SimDebit>, ChannelError> {
        let reply = self
            .exchange(Method::GET, self.url(JOURNAL_PATH, None), Vec::new())
            .await?;
        self.decode(&reply)
    }

    /// `path` (a protocol constant) under the base URL, then `item` as one escaped segment,
    /// so an order number can never change the path.
    fn url(&self, path: &str, item: Option<&str>) -> Url {
        let mut url = self.base_url.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            segments.extend(path.split('/').filter(|s| !s.is_empty()));
            segments.extend(item);
        }
        url
    }

    /// Send one request, holding a concurrency slot throughout, and send it again (same
    /// body, so the same order number) after each 429 until `max_retries` is spent.
    async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<Reply, ChannelError> {
        // With n instances sharing the channel, a request takes n of its slots, so this
        // instance keeps at most 1/n of the channel's concurrency in flight.
        let take = self
            .share
            .load(Ordering::Relaxed)
            .clamp(1, self.concurrency.max(1) as u32);
        let _slot = self
            .slots
            .acquire_many(take)
            .await
            .map_err(|_| ChannelError::Transport("channel closed".into()))?;
        for attempt in 0.. {
            let reply = self
                .send_once(method.clone(), url.clone(), body.clone())
                .await?;
            if reply.status != StatusCode::TOO_MANY_REQUESTS {
                return Ok(reply);
            }
            self.throttled.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("repayd_channel_throttled_total", "channel" => self.name.clone())
                .increment(1);
            if attempt >= self.max_retries {
                break;
            }
            tokio::time::sleep(backoff(attempt, &reply.headers)).await;
        }
        Err(ChannelError::RateLimited)
    }

    /// One signed HTTP round trip within the timeout. Waits for the TPS budget first, right
    /// before sending, so requests leave no faster than the cap.
    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Vec<u8>,
    ) -> Result<Reply, ChannelError> {
        let limiter = self.limiter.read().map(|l| l.clone()).unwrap_or(None);
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let ts = now_unix();
        let request = self
            .client
            .request(method, url)
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(self.secret.as_bytes(), ts, &body))
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let round_trip = async {
            let response = request.send().await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Reply {
                status,
                headers,
                body,
            })
        };
        match tokio::time::timeout(Duration::from_millis(self.timeout_ms), round_trip).await {
            Err(_) => Err(ChannelError::Timeout(self.timeout_ms)),
            Ok(Err(e)) if e.is_timeout() => Err(ChannelError::Timeout(self.timeout_ms)),
            Ok(Err(e)) => Err(ChannelError::Transport(error_chain(&e))),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    /// The body of a 200 answer whose signature checks out. A 4xx means the channel refused
    /// the request before processing it; anything else is no usable answer.
    fn verified_body<'r>(&self, reply: &'r Reply) -> Result<&'r [u8], ChannelError> {
        let status = reply.status;
        if status.is_client_error() {
            let text = String::from_utf8_lossy(&reply.body);
            return Err(ChannelError::Rejected(format!("HTTP {status}: {text}")));
        }
        if status != StatusCode::OK {
            return Err(ChannelError::Transport(format!(
                "channel answered HTTP {status}"
            )));
        }
        let header = |name| reply.headers.get(name).and_then(|v| v.to_str().ok());
        verify(
            self.secret.as_bytes(),
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            &reply.body,
            now_unix(),
            MAX_SKEW_SECS,
        )
        .map_err(|e| ChannelError::Protocol(format!("response signature: {e}")))?;
        Ok(&reply.body)
    }

    fn decode<T: DeserializeOwned>(&self, reply: &Reply) -> Result<T, ChannelError> {
        let body = self.verified_body(reply)?;
        serde_json::from_slice(body).map_err(|e| ChannelError::Protocol(format!("bad JSON: {e}")))
    }
}

/// A token bucket that never lets more than `tps` requests leave in any sliding second:
/// rate `tps - burst - margin` with a burst of about 10 ms of requests (at least 2) and a
/// margin of 1 % (at least 1). The burst is
/// what lets a waiter woken a little late (timers tick in milliseconds, and at 500 TPS a
/// request is due every 2 ms) catch up instead of losing its slot for good, which would keep
/// the channel well under its cap; rate plus burst stays below the cap, so a sliding second
/// never holds more than `tps` (the bucket's default burst, equal to the rate, would allow
/// `2 × tps`). A cap of three or less is spaced strictly.
fn rate_limiter(tps: u32) -> DefaultDirectRateLimiter {
    let (rate, burst) = bucket_of(tps);
    let rate = NonZeroU32::new(rate).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// `(rate, burst)` of the bucket for a cap of `tps`.
fn bucket_of(tps: u32) -> (u32, u32) {
    if tps <= 3 {
        return (tps.max(1), 1);
    }
    let burst = (tps / 100).max(2);
    // Arrivals bunch on the way (at 2,000 TPS a few requests more than sent landed in one
    // of the server's sliding seconds): keep 1 % (at least one request) back as well.
    let margin = (tps / 100).max(1);
    (tps - burst - margin, burst)
}

/// Wait before retrying a 429: the channel's Retry-After (seconds) if it gave one, else
/// exponential from 50 ms.
fn backoff(attempt: u32, headers: &HeaderMap) -> Duration {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match retry_after {
        Some(secs) => Duration::from_secs(secs).min(MAX_RETRY_AFTER),
        None => FIRST_BACKOFF
            .saturating_mul(1 << attempt.min(16))
            .min(MAX_BACKOFF),
    }
}

/// The error with its causes: reqwest's own message hides whether it was a refused
/// connection, a reset or DNS.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unknown(code: &str) -> DebitOutcome {
    DebitOutcome::Unknown {
        code: code.to_string(),
    }
}

#[async_trait]
impl Channel for HttpChannel {
    fn name(&self) -> &str {
        &self.name
    }

    fn share_limits(&self, instances: u32) {
        let instances = instances.max(1);
        if self.share.swap(instances, Ordering::Relaxed) == instances {
            return;
        }
        let Some(tps) = self.tps else { return };
        let part = tps_share(tps, instances);
        if let Ok(mut l) = self.limiter.write() {
            *l = Some(Arc::new(rate_limiter(part)));
        }
        tracing::info!(channel = %self.name, instances, tps = part, "channel limits shared");
    }

    /// A timeout or 5xx may have debited, so both are `Ok(Unknown)`, never an error the
    /// engine could mistake for "not sent".
    async fn submit(&self, req: &DebitRequest) -> Result<DebitOutcome, ChannelError> {
        let body = serde_json::to_vec(req).map_err(|e| ChannelError::Protocol(e.to_string()))?;
        let reply = match self
            .exchange(Method::POST, self.url(DEBITS_PATH, None), body)
            .await
        {
            Err(ChannelError::Timeout(_)) => return Ok(unknown(TIMEOUT)),
            other => other?,
        };
        if reply.status.is_server_error() {
            return Ok(unknown(HTTP_5XX));
        }
        self.decode(&reply)
    }

    /// Real channels answer from their own records, so `at` is not sent.
    async fn query(
        &self,
        order_no: &str,
        _at: DateTime<Utc>,
    ) -> Result<QueryOutcome, ChannelError> {
        let reply = self
            .exchange(
                Method::GET,
                self.url(DEBITS_PATH, Some(order_no)),
                Vec::new(),
            )
            .await?;
        self.decode(&reply)
    }

    async fn statement(&self, date: NaiveDate) -> Result<Vec<StatementLine>, ChannelError> {
        let day = date.format("%Y-%m-%d").to_string();
        let reply = self
            .exchange(
                Method::GET,
                self.url(STATEMENTS_PATH, Some(&day)),
                Vec::new(),
            )
            .await?;
        let body = self.verified_body(&reply)?;
        let text = std::str::from_utf8(body)
            .map_err(|_| ChannelError::Protocol("statement is not UTF-8".into()))?;
        parse_statement_csv(text).map_err(|e| ChannelError::Protocol(format!("statement: {e}")))
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::*;
    use crate::domain::channel::tps_share;

    #[test]
    fn a_bucket_never_fills_a_sliding_second_to_the_cap() {
        for tps in [1, 2, 3, 4, 50, 147, 150, 500, 2000, 10_000] {
            let (rate, burst) = bucket_of(tps);
            assert!(
                rate + burst <= tps.max(2) - 1 || tps <= 3,
                "{tps}: {rate} + {burst}"
            );
            assert!(rate >= 1 && burst >= 1);
        }
        assert_eq!(bucket_of(500), (490, 5));
        assert_eq!(bucket_of(2000), (1960, 20));
    }

    #[test]
    fn shared_parts_stay_under_the_cap_together_and_use_most_of_it() {
        for (tps, n) in [(150, 3), (500, 3), (2000, 3), (150, 2), (40, 3)] {
            let part = tps_share(tps, n);
            let (rate, burst) = bucket_of(part);
            let together = (rate + burst) * n;
            assert!(together < tps, "{tps}/{n}: {together}");
            if tps >= 150 {
                assert!(
                    f64::from(together) >= 0.95 * f64::from(tps),
                    "{tps}/{n}: {together}"
                );
            }
        }
    }
}
