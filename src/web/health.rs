//! `/healthz` (no token: the database and the last tick) and `/metrics` (Prometheus, viewer
//! token).

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

/// The metrics page; needs a viewer token like the rest of the API.
pub async fn metrics(p: Result<Principal, AuthError>, State(s): State<ApiState>) -> Response {
    if let Err(e) = p.and_then(|p| p.require(Role::Viewer)) {
        return e.into_response();
    }
    // A database that cannot answer leaves the last values; the page itself still serves.
    if let Ok(g) = crate::engine::gauges::read_gauges(&s.engine, crate::engine::clock::now()).await
    {
        crate::web::metrics::set_gauges(&g);
    }
    crate::web::metrics::process_collector().collect();
    s.metrics.render().into_response()
}
