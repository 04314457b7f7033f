//! `/healthz` (no token: the database and the last tick) and `/metrics` (Prometheus, viewer
//! token).

use crate::engine::{callbacks, guard};
use crate::web::auth::{AuthError, Principal, Role};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::sync::atomic::Ordering;

pub async fn healthz(State(s): State<ApiState>) -> Response {
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
pub async fn metrics(p: Result<Principal, AuthError>, State(s): State<ApiState>) -> Response {
    if let Err(e) = p.and_then(|p| p.require(Role::Viewer)) {
        return e.into_response();
    }
    let lag = callbacks::due_lag_seconds(&s.engine, chrono::Utc::now())
        .await
        .unwrap_or(0.0);
    metrics::gauge!("repayd_due_lag_seconds").set(lag);
    if let Ok(parked) = guard::parked_count(&s.engine).await {
        metrics::gauge!("repayd_loans_parked").set(parked as f64);
    }
    s.metrics.render().into_response()
}
