//! `/healthz`: no token; the database and the last tick.

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
