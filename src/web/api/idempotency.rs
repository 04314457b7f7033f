//! `Idempotency-Key` on every POST, once for all handlers (a middleware layer).
//!
//! The first request with a key (per actor, i.e. token name) reserves it, runs, and stores
//! its status and body. A repeat with the same method, path and body gets the stored
//! response; the same key with a different request is refused with 422; a repeat while the
//! first is still running gets 409. A 5xx answer frees the key so the client may retry; a
//! request that never finished (the server died mid-way) keeps the key reserved (409), since
//! its effect may have happened.

use super::error::ApiError;
use crate::api::ApiState;
use crate::web::auth::{authenticate, token_of};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::Row;

pub const HEADER: &str = "idempotency-key";
use super::MAX_BODY;

pub async fn layer(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).cloned() else {
        return next.run(req).await;
    };
    match run_once(&s, key, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run_once(
    s: &ApiState,
    key: HeaderValue,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let key = key
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255)
        .ok_or_else(|| ApiError::bad("Idempotency-Key", "1 to 255 visible characters"))?
        .to_string();
    let (parts, body) = req.into_parts();
    let actor = match token_of(&parts) {
        Some(t) => {
            let mut conn = s.engine.db.pool.acquire().await?;
            authenticate(&mut conn, &t).await?.map(|p| p.name)
        }
        None => None,
    };
    let Some(actor) = actor else {
        // Unauthenticated: the handler answers 401; nothing to remember.
        return Ok(next.run(Request::from_parts(parts, body)).await);
    };
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "bad_request",
            "the body is too large",
        )
    })?;
    let method = parts.method.to_string();
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path().to_string(), |p| p.to_string());
    let hash = request_hash(&method, &path, &bytes);
    let now = chrono::Utc::now().timestamp_millis();
    let pool = &s.engine.db.pool;
    let reserved = sqlx::query(
        "INSERT INTO idempotency_keys (actor, key, method, path, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (actor, key) DO NOTHING",
    )
    .bind(actor.as_str())
    .bind(key.as_str())
    .bind(method.as_str())
    .bind(path.as_str())
    .bind(hash.as_str())
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected()
        == 1;
    if !reserved {
        return earlier_answer(s, &actor, &key, &hash).await;
    }
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    remember(s, &actor, &key, resp).await
}

fn request_hash(method: &str, path: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

async fn earlier_answer(
    s: &ApiState,
    actor: &str,
    key: &str,
    hash: &str,
) -> Result<Response, ApiError> {
    let row = sqlx::query(
        "SELECT request_hash, status, response FROM idempotency_keys WHERE actor = $1 AND key = $2",
    )
    .bind(actor)
    .bind(key)
    .fetch_optional(&s.engine.db.pool)
    .await?;
    let Some(row) = row else {
        // Freed by a failed first try between our insert and this read: ask to retry.
        return Err(in_flight());
    };
    if row.get::<String, _>("request_hash") != hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used for a different request (method, path or body)",
        )
        .with_field("Idempotency-Key"));
    }
    let (Some(status), Some(body)) = (
        row.get::<Option<i64>, _>("status"),
        row.get::<Option<String>, _>("response"),
    ) else {
        return Err(in_flight());
    };
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    Ok(resp)
}

fn in_flight() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_in_flight",
        "a request with this Idempotency-Key is still being processed",
    )
    .with_field("Idempotency-Key")
}

/// Store the answer (or free the key on a server error) and pass the response on.
async fn remember(
    s: &ApiState,
    actor: &str,
    key: &str,
    resp: Response,
) -> Result<Response, ApiError> {
    let (parts, body) = resp.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(ApiError::internal)?;
    let pool = &s.engine.db.pool;
    if parts.status.is_server_error() {
        sqlx::query("DELETE FROM idempotency_keys WHERE actor = $1 AND key = $2")
            .bind(actor)
            .bind(key)
            .execute(pool)
            .await?;
    } else {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 WHERE actor = $3 AND key = $4",
        )
        .bind(parts.status.as_u16() as i64)
        .bind(String::from_utf8_lossy(&bytes).into_owned())
        .bind(actor)
        .bind(key)
        .execute(pool)
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
