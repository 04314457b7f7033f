//! The daemon's HTTP surface: health, Prometheus metrics, and the channel and SMS webhooks.
//! Webhooks authenticate by signature, not by token; `/metrics` needs a viewer token. Every
//! route but `/healthz` is behind the limit on failed authentication ([`throttle`]).

use crate::app::config::{Config, Secret};
use crate::app::daemon::DaemonState;
use crate::engine::{callbacks, Engine};
use crate::web::auth::{AuthError, Principal, Role};
use crate::web::throttle::{self, AuthLimits, AuthThrottle};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    /// Key of the SMS gateway's signed delivery reports (the gateway token).
    pub sms_secret: Option<Secret>,
    pub daemon: Arc<DaemonState>,
    /// Shared secrets per channel, for callback signatures.
    pub channel_secrets: Arc<HashMap<String, Secret>>,
    pub metrics: PrometheusHandle,
    /// Failed authentications per client address.
    pub auth_throttle: Arc<AuthThrottle>,
}

impl ApiState {
    pub fn new(engine: Arc<Engine>, daemon: Arc<DaemonState>, cfg: &Config) -> Self {
        let secrets = cfg
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.secret.clone()))
            .collect();
        let limits = AuthLimits {
            burst: cfg.daemon.auth_failure_burst,
            per_second: cfg.daemon.auth_failures_per_second,
        };
        let metrics = metrics_handle();
        ApiState {
            sms_secret: cfg.notices.sms.as_ref().map(|s| s.token.clone()),
            engine,
            daemon,
            channel_secrets: Arc::new(secrets),
            metrics,
            auth_throttle: Arc::new(AuthThrottle::new(limits)),
        }
    }

    /// State for an engine without a daemon around it (tests, tools): no webhook secrets.
    /// The default limits on failed authentication apply.
    pub fn for_engine(engine: Arc<Engine>) -> Self {
        let metrics = metrics_handle();
        ApiState {
            engine,
            sms_secret: None,
            daemon: Arc::new(DaemonState::default()),
            channel_secrets: Arc::new(HashMap::new()),
            metrics,
            auth_throttle: Arc::new(AuthThrottle::new(AuthLimits::default())),
        }
    }

    /// Other limits on failed authentication (tests that fail on purpose many times).
    pub fn with_auth_limits(mut self, limits: AuthLimits) -> Self {
        self.auth_throttle = Arc::new(AuthThrottle::new(limits));
        self
    }
}

/// The process-wide Prometheus recorder (installed once).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("one metrics recorder per process")
        })
        .clone()
}

/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`, so that failed
/// authentication is limited per client address rather than for all clients together.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/webhooks/channels/{name}", post(channel_callback))
        .route("/webhooks/sms", post(sms_delivery_report))
        .merge(crate::web::router(&state))
        // Outermost, so an address over its limit is refused before its token is looked at.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            throttle::layer,
        ))
        // Added after the layer, so outside it: health takes no credential to fail.
        .route("/healthz", get(healthz))
        .with_state(state)
}

async fn healthz(State(s): State<ApiState>) -> Response {
    let db_ok = sqlx::query("SELECT 1")
        .execute(&s.engine.db.pool)
        .await
        .is_ok();
    let last = s.daemon.last_tick_ms.load(Ordering::Relaxed);
    let body = serde_json::json!({
        "database": if db_ok { "ok" } else { "unreachable" },
        "last_tick": chrono::DateTime::from_timestamp_millis(last).filter(|_| last > 0),
        "runs": s.daemon.runs.load(Ordering::Relaxed),
        "busy": s.daemon.busy.load(Ordering::Relaxed),
        "instance": s.daemon.instance,
    });
    let status = if db_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics; needs a viewer token like the rest of the API.
async fn metrics(p: Result<Principal, AuthError>, State(s): State<ApiState>) -> Response {
    if let Err(e) = p.and_then(|p| p.require(Role::Viewer)) {
        return e.into_response();
    }
    let lag = callbacks::due_lag_seconds(&s.engine, chrono::Utc::now())
        .await
        .unwrap_or(0.0);
    metrics::gauge!("repayd_due_lag_seconds").set(lag);
    if let Ok(parked) = crate::engine::guard::parked_count(&s.engine).await {
        metrics::gauge!("repayd_loans_parked").set(parked as f64);
    }
    s.metrics.render().into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A channel's asynchronous result. Verified by signature; recorded; a late or duplicate
/// callback changes nothing, and the attempt itself is settled by a query on the next run.
async fn channel_callback(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = s.channel_secrets.get(&name) else {
        return (StatusCode::NOT_FOUND, format!("no channel `{name}`")).into_response();
    };
    if secret.is_empty() {
        // An HMAC with the empty key is one anybody can make: without a secret nothing
        // proves the channel sent it, so no callback is taken (the daemon warned at start).
        tracing::warn!(channel = %name, "callback refused: the channel has no secret");
        return (
            StatusCode::UNAUTHORIZED,
            "this channel has no secret; its callbacks are refused",
        )
            .into_response();
    }
    let now = chrono::Utc::now().timestamp();
    let verified = crate::adapters::channel::protocol::verify(
        secret.expose().as_bytes(),
        header(&headers, "x-repayd-timestamp"),
        header(&headers, "x-repayd-signature"),
        &body,
        now,
        crate::adapters::channel::protocol::MAX_SKEW_SECS,
    );
    if let Err(e) = verified {
        tracing::warn!(channel = %name, error = %e, "callback with a bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let cb: crate::adapters::channel::protocol::Callback = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("bad callback: {e}")).into_response(),
    };
    match callbacks::record_callback(&s.engine, &name, &cb, &body).await {
        Ok(callbacks::Effect::UnknownOrder) => {
            tracing::warn!(channel = %name, order_no = %cb.order_no, "callback for an unknown order number");
            (StatusCode::NOT_FOUND, "unknown order number").into_response()
        }
        Ok(effect) => (
            StatusCode::OK,
            Json(serde_json::json!({ "effect": effect.as_str() })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "recording a callback failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        }
    }
}

/// A delivery report from the SMS gateway, signed like channel callbacks with the gateway's
/// token. Updates the delivery status of the notice it names.
async fn sms_delivery_report(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(secret) = &s.sms_secret else {
        return (StatusCode::NOT_FOUND, "no SMS gateway configured").into_response();
    };
    if secret.is_empty() {
        // Same as a channel without a secret: an empty key proves nothing.
        tracing::warn!("SMS delivery report refused: the gateway has no token");
        return (StatusCode::UNAUTHORIZED, "the SMS gateway has no token").into_response();
    }
    let verified = crate::adapters::channel::protocol::verify(
        secret.as_bytes(),
        header(&headers, "x-repayd-timestamp"),
        header(&headers, "x-repayd-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        crate::adapters::channel::protocol::MAX_SKEW_SECS,
    );
    if verified.is_err() {
        tracing::warn!("SMS delivery report with a bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let mut conn = match s.engine.db.pool.acquire().await {
        Ok(c) => c,
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
    };
    match crate::domain::notice::record_delivery_report(&mut conn, &body).await {
        Ok(true) => (StatusCode::OK, "recorded").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "unknown message").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
