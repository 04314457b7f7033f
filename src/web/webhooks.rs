//! The channel and SMS webhooks: authenticated by signature (never by token), and refused
//! whole for a channel without a secret. A callback is recorded and queues a query; it never
//! moves money by itself.

use crate::adapters::channel::protocol;
use crate::adapters::providers::sms::{parse_delivery_report, DeliveryStatus};
use crate::engine::callbacks;
use crate::web::state::ApiState;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A channel's asynchronous result. Verified by signature; recorded; a late or duplicate
/// callback changes nothing, and the attempt itself is settled by a query on the next run.
pub async fn channel_callback(
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
    let verified = protocol::verify(
        secret.expose().as_bytes(),
        header(&headers, "x-repayd-timestamp"),
        header(&headers, "x-repayd-signature"),
        &body,
        now,
        protocol::MAX_SKEW_SECS,
    );
    if let Err(e) = verified {
        tracing::warn!(channel = %name, error = %e, "callback with a bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let cb: protocol::Callback = match serde_json::from_slice(&body) {
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
pub async fn sms_delivery_report(
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
    let verified = protocol::verify(
        secret.as_bytes(),
        header(&headers, "x-repayd-timestamp"),
        header(&headers, "x-repayd-signature"),
        &body,
        chrono::Utc::now().timestamp(),
        protocol::MAX_SKEW_SECS,
    );
    if verified.is_err() {
        tracing::warn!("SMS delivery report with a bad signature");
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let mut conn = match s.engine.db.pool.acquire().await {
        Ok(c) => c,
        Err(_) => return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
    };
    let report = match parse_delivery_report(&body) {
        Ok(r) => r,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("delivery report: {e}")).into_response()
        }
    };
    let status = match &report.status {
        DeliveryStatus::Pending => "pending",
        DeliveryStatus::Delivered => "delivered",
        DeliveryStatus::Failed => "failed",
        DeliveryStatus::Other(s) => s.as_str(),
    };
    // Our message ids are `repayd-<notice id>`; the provider's own id is matched too.
    let id = report
        .message_id
        .as_deref()
        .and_then(|m| m.strip_prefix("repayd-"))
        .and_then(|n| n.parse::<i64>().ok());
    let provider_id = report.provider_id.as_deref();
    match crate::store::notices::record_delivery_status(&mut conn, id, provider_id, status).await {
        Ok(true) => (StatusCode::OK, "recorded").into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, "unknown message").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "recording a delivery report failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        }
    }
}
