//! The simulator as a standalone HTTP server speaking the repayd protocol.
//!
//! The in-process [`Simulator`] answers at once and never misbehaves on the wire. The
//! server adds what only a network channel does, so the HTTP adapter, the engine and the
//! webhook can be tested against it: latency, a TPS cap answered with 429, 5xx errors,
//! timeouts after the debit was applied, and asynchronous callbacks that come late, twice,
//! or (for failures) never. Random choices are drawn from the scenario seed and the order
//! number, so a run can be repeated.
//!
//! Its settings are the scenario's `[server]` table, see [`ServerSpec`].

use super::protocol::{
    now_unix, sign, verify, Callback, Secret, MAX_SKEW_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use super::sim::{draw, rate, Simulator};
use crate::domain::channel::{Channel, ChannelError, DebitOutcome, DebitRequest, QueryOutcome};
use crate::domain::statement::statement_csv;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Salts that make each kind of random choice independent of the others for one order.
const SALT_LATENCY: u64 = 0x1a7e;
const SALT_LATENCY_2: u64 = 0x1a7f;
const SALT_HANG: u64 = 0x4a49;
const SALT_5XX: u64 = 0x5005;
const SALT_5XX_APPLIED: u64 = 0x5006;
const SALT_DUPLICATE: u64 = 0xd0b1;
const SALT_MISSING: u64 = 0x1055;
/// Callback deliveries tried per copy when the webhook cannot be reached.
const CALLBACK_TRIES: u32 = 3;
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);
/// z-score of the 99th percentile of a standard normal distribution.
const Z_P99: f64 = 2.326_347_874;

/// Response latency in milliseconds: log-normal with this median and 99th percentile, fixed
/// at `median` without `p99`, none at 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Latency {
    pub median: u64,
    pub p99: Option<u64>,
}

impl Latency {
    /// The latency for two uniform draws in [0, 1) (Box–Muller for the normal variate).
    pub fn sample(&self, u1: f64, u2: f64) -> Duration {
        let median = self.median as f64;
        let Some(p99) = self.p99.filter(|&p| p > self.median && self.median > 0) else {
            return Duration::from_millis(self.median);
        };
        let sigma = (p99 as f64 / median).ln() / Z_P99;
        let z = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64(median * (sigma * z).exp() / 1000.0)
    }
}

/// The scenario's `[server]` table: how the simulator server misbehaves. Rates are
/// fractions in [0, 1]; all default to a well-behaved channel without latency or cap.
/// ```toml
/// [server]
/// latency_ms = { median = 100, p99 = 400 }
/// tps = 500                       # answer 429 above it (sliding 1 s window)
/// timeout_after_debit_rate = 0.1  # apply the debit, then hold the answer past the timeout
/// hang_ms = 60000                 # how long such an answer is held
/// error_5xx_rate = 0.01           # answer 5xx; half of these after applying the debit
/// callback_url = "http://127.0.0.1:8080/webhooks/sim"
/// callback_delay_ms = 500
/// callback_duplicate_rate = 0.05  # send the callback twice
/// callback_missing_rate = 0.2     # never send it; failures only, like real channels
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSpec {
    pub latency_ms: Latency,
    pub tps: Option<u32>,
    #[serde(deserialize_with = "rate")]
    pub timeout_after_debit_rate: f64,
    pub hang_ms: u64,
    #[serde(deserialize_with = "rate")]
    pub error_5xx_rate: f64,
    /// Where results are POSTed; the caller may set it at run time (e.g. from a CLI flag)
    /// before calling [`serve_simulator`]. No callbacks without it.
    pub callback_url: Option<String>,
    pub callback_delay_ms: u64,
    #[serde(deserialize_with = "rate")]
    pub callback_duplicate_rate: f64,
    #[serde(deserialize_with = "rate")]
    pub callback_missing_rate: f64,
}

impl Default for ServerSpec {
    fn default() -> Self {
        ServerSpec {
            latency_ms: Latency::default(),
            tps: None,
            timeout_after_debit_rate: 0.0,
            hang_ms: 60_000,
            error_5xx_rate: 0.0,
            callback_url: None,
            callback_delay_ms: 0,
            callback_duplicate_rate: 0.0,
            callback_missing_rate: 0.0,
        }
    }
}

impl ServerSpec {
    /// Rules serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.tps == Some(0) {
            return Err("server tps must be above 0 (omit it for no cap)".into());
        }
        if let Some(p99) = self.latency_ms.p99 {
            if p99 < self.latency_ms.median || (self.latency_ms.median == 0 && p99 > 0) {
                return Err(format!(
                    "latency p99 {p99} must be at least the median {} (and the median above 0)",
                    self.latency_ms.median
                ));
            }
        }
        if let Some(url) = &self.callback_url {
            reqwest::Url::parse(url).map_err(|e| format!("callback_url `{url}`: {e}"))?;
        }
        Ok(())
    }
}

/// Everything the handlers share.
struct Server {
    sim: Arc<Simulator>,
    secret: Secret,
    spec: ServerSpec,
    seed: u64,
    /// Arrival times of requests admitted in the last second, for the TPS cap.
    window: Mutex<VecDeque<Instant>>,
    client: reqwest::Client,
    /// Becomes true at shutdown, releasing answers held to simulate timeouts.
    closing: watch::Receiver<bool>,
}

/// Serve the protocol over `sim` on `listener` until `shutdown` completes, then finish the
/// requests in flight (held "timeout" answers are released at once).
pub async fn serve_simulator(
    listener: tokio::net::TcpListener,
    sim: Arc<Simulator>,
    secret: Secret,
    spec: ServerSpec,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), std::io::Error> {
    spec.validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (close, closing) = watch::channel(false);
    let server = Arc::new(Server {
        seed: sim.scenario().seed,
        sim,
        secret,
        spec,
        window: Mutex::default(),
        client: reqwest::Client::new(),
        closing,
    });
    let app = Router::new()
        .route("/v1/debits", post(post_debit))
        .route("/v1/debits/{order_no}", get(get_debit))
        .route("/v1/statements/{date}", get(get_statement))
        .route("/v1/journal", get(get_journal))
        .with_state(server);
    let signal = async move {
        shutdown.await;
        let _ = close.send(true);
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await
}

type Shared = State<Arc<Server>>;

async fn post_debit(State(s): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = s.refusal(&headers, &body) {
        return refusal;
    }
    let req: DebitRequest = match serde_json::from_slice(&body) {
        Ok(req) => req,
        Err(e) => return s.reply(StatusCode::BAD_REQUEST, "text/plain", e.to_string()),
    };
    s.delay(&req.order_no).await;
    s.debit(req).await
}

async fn get_debit(State(s): Shared, Path(order_no): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = s.refusal(&headers, b"") {
        return refusal;
    }
    s.delay(&format!("query:{order_no}")).await;
    match s.sim.query(&order_no, Utc::now()).await {
        Ok(found) => s.json(&found),
        Err(e) => s.reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

async fn get_statement(State(s): Shared, Path(date): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refusal) = s.refusal(&headers, b"") {
        return refusal;
    }
    let Ok(day) = NaiveDate::parse_from_str(&date, "%Y-%m-%d") else {
        let message = format!("`{date}` is not a date like 2026-12-19");
        return s.reply(StatusCode::BAD_REQUEST, "text/plain", message);
    };
    s.delay(&format!("statement:{date}")).await;
    match s.sim.statement(day).await {
        Ok(lines) => s.reply(StatusCode::OK, "text/csv", statement_csv(&lines)),
        Err(e) => s.reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

async fn get_journal(State(s): Shared, headers: HeaderMap) -> Response {
    if let Some(refusal) = s.refusal(&headers, b"") {
        return refusal;
    }
    s.json(&s.sim.journal())
}

impl Server {
    /// The answer refusing an unsigned request (401) or one over the TPS cap (429), if it
    /// is refused. The signature is checked first so that strangers cannot spend the cap.
    fn refusal(&self, headers: &HeaderMap, body: &[u8]) -> Option<Response> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let signed = verify(
            self.secret.as_bytes(),
            header(TIMESTAMP_HEADER),
            header(SIGNATURE_HEADER),
            body,
            now_unix(),
            MAX_SKEW_SECS,
        );
        if let Err(e) = signed {
            return Some(self.reply(StatusCode::UNAUTHORIZED, "text/plain", e.to_string()));
        }
        if let Err(wait) = self.take_slot() {
            let mut refusal =
                self.reply(StatusCode::TOO_MANY_REQUESTS, "text/plain", "over TPS cap");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            refusal.headers_mut().insert(RETRY_AFTER, secs.into());
            return Some(refusal);
        }
        None
    }

    /// Admit one request under the cap, counting requests admitted in the last second
    /// (a true sliding window); otherwise how long until a slot frees.
    fn take_slot(&self) -> Result<(), Duration> {
        let Some(tps) = self.spec.tps else {
            return Ok(());
        };
        let now = Instant::now();
        let second = Duration::from_secs(1);
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        while window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= second)
        {
            window.pop_front();
        }
        if let Some(oldest) = window.front().filter(|_| window.len() >= tps as usize) {
            return Err(second.saturating_sub(now.duration_since(*oldest)));
        }
        window.push_back(now);
        Ok(())
    }

    /// A uniform draw for one kind of choice about `key`, the same on every run.
    fn chance(&self, salt: u64, key: &str) -> f64 {
        draw(self.seed ^ salt.rotate_left(32), key)
    }

    async fn delay(&self, key: &str) {
        let u1 = self.chance(SALT_LATENCY, key);
        let u2 = self.chance(SALT_LATENCY_2, key);
        let wait = self.spec.latency_ms.sample(u1, u2);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Submit to the simulator, injecting 5xx and timeouts. Injections and callbacks apply
    /// only to new orders: a replayed order number just gets its stored answer.
    async fn debit(self: &Arc<Self>, req: DebitRequest) -> Response {
        let order_no = req.order_no.clone();
        let error_5xx = self.chance(SALT_5XX, &order_no) < self.spec.error_5xx_rate;
        if error_5xx && self.chance(SALT_5XX_APPLIED, &order_no) < 0.5 {
            return self.reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "try later");
        }
        let (answer, fresh) = match self.sim.submit_tracked(&req) {
            Ok(done) => done,
            Err(e) => return self.refused(e),
        };
        if fresh {
            self.spawn_callback(order_no.clone());
        }
        if error_5xx {
            return self.reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                "failed after debit",
            );
        }
        if fresh && self.chance(SALT_HANG, &order_no) < self.spec.timeout_after_debit_rate {
            self.hang().await;
        }
        self.json(&answer)
    }

    fn refused(&self, e: ChannelError) -> Response {
        let status = match e {
            ChannelError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ChannelError::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        self.reply(status, "text/plain", e.to_string())
    }

    /// Hold the answer for `hang_ms` (past any sane client timeout), or until shutdown.
    async fn hang(&self) {
        let mut closing = self.closing.clone();
        if *closing.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.spec.hang_ms)) => {}
            _ = closing.changed() => {}
        }
    }

    fn json<T: Serialize>(&self, value: &T) -> Response {
        let body = serde_json::to_vec(value).expect("protocol types serialize");
        self.reply(StatusCode::OK, "application/json", body)
    }

    /// Every answer is signed, so clients can tell the channel's answers from a proxy's.
    fn reply(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: impl Into<Vec<u8>>,
    ) -> Response {
        let body = body.into();
        let ts = now_unix();
        let sig = sign(self.secret.as_bytes(), ts, &body);
        let headers = [
            (CONTENT_TYPE, content_type.to_string()),
            (
                TIMESTAMP_HEADER.parse().expect("valid header name"),
                ts.to_string(),
            ),
            (SIGNATURE_HEADER.parse().expect("valid header name"), sig),
        ];
        (status, headers, body).into_response()
    }

    /// Send the order's real outcome to the webhook later, in the background: missing for
    /// some failures, twice for some orders.
    fn spawn_callback(self: &Arc<Self>, order_no: String) {
        let Some(url) = self.spec.callback_url.clone() else {
            return;
        };
        let server = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(server.spec.callback_delay_ms)).await;
            let Ok(QueryOutcome::Found(outcome)) = server.sim.query(&order_no, Utc::now()).await
            else {
                return;
            };
            let failed = matches!(outcome, DebitOutcome::Failed { .. });
            if failed && server.chance(SALT_MISSING, &order_no) < server.spec.callback_missing_rate
            {
                return;
            }
            let twice =
                server.chance(SALT_DUPLICATE, &order_no) < server.spec.callback_duplicate_rate;
            let body = serde_json::to_vec(&Callback { order_no, outcome }).expect("serializes");
            for _ in 0..(1 + usize::from(twice)) {
                server.deliver(&url, &body).await;
            }
        });
    }

    /// POST one signed callback, retrying a couple of times when the webhook cannot be
    /// reached. Any HTTP answer counts as delivered: a real channel would not know better.
    async fn deliver(&self, url: &str, body: &[u8]) {
        for attempt in 0..CALLBACK_TRIES {
            let ts = now_unix();
            let sent = self
                .client
                .post(url)
                .timeout(CALLBACK_TIMEOUT)
                .header(CONTENT_TYPE, "application/json")
                .header(TIMESTAMP_HEADER, ts.to_string())
                .header(SIGNATURE_HEADER, sign(self.secret.as_bytes(), ts, body))
                .body(body.to_vec())
                .send()
                .await;
            match sent {
                Ok(_) => return,
                Err(e) => tracing::debug!(attempt, error = %e, "callback not delivered"),
            }
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        tracing::warn!(url, "callback dropped after {CALLBACK_TRIES} tries");
    }
}
