//! `Idempotency-Key` on every POST of the API, once for all handlers (a middleware layer).
//!
//! A keyed request is authenticated first: without a valid token it gets 401 before its key
//! is looked at or its body read. Keys belong to the token (by id, since names are only
//! labels): the first request with a key reserves it, runs, and stores its status and body,
//! and only that same token, while it is still valid, ever gets the stored answer. Since a
//! token's role never changes and a refusal is not kept, a replay only goes to a caller the
//! route let in the first time. A repeat with the same method, path and body gets the stored
//! response; the same key with a different request is refused with 422; a repeat while the
//! first is still running gets 409. An answer that holds a secret (a new token, marked
//! [`ShownOnce`]) is never stored: its repeat is refused with 409, so the secret is shown
//! once. A refusal (4xx) frees the key, since nothing took effect: the client may fix the
//! request and retry with the same key. A 5xx is kept like a success, and a request that
//! never finished (the server died mid-way) keeps the key reserved (409): in both the effect
//! (say, a debit) may have happened, so it is never redone under that key. Keys are kept for
//! a day.

use super::error::ApiError;
use crate::web::auth::Principal;
use crate::web::state::ApiState;
use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::Row;

pub const HEADER: &str = "idempotency-key";
use super::MAX_BODY;

/// How long a key and its answer are kept.
const KEEP_MS: i64 = 24 * 3600 * 1000;

/// Marks a response that holds a secret shown once (a new token): it is never stored, and a
/// repeat of its key is refused rather than answered with the secret again.
#[derive(Debug, Clone, Copy)]
pub struct ShownOnce;

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
    let (mut parts, body) = req.into_parts();
    // Who asks comes before anything about the key or the body (401 first).
    let p = Principal::from_request_parts(&mut parts, s).await?;
    let key = key
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| ApiError::bad("Idempotency-Key", "1 to 255 visible characters"))?
        .to_string();
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
    let owner = Owner {
        token_id: p.token_id,
        key: &key,
    };
    if !reserve(s, &owner, &method, &path, &hash).await? {
        return earlier_answer(s, &owner, &hash).await;
    }
    // The handler's extractors take the principal established here.
    parts.extensions.insert(p);
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    remember(s, &owner, resp).await
}

/// A key as stored: the token it belongs to and the client's key.
struct Owner<'a> {
    token_id: i64,
    key: &'a str,
}

/// Reserve the key for this request; false when it is already taken.
async fn reserve(
    s: &ApiState,
    o: &Owner<'_>,
    method: &str,
    path: &str,
    hash: &str,
) -> Result<bool, ApiError> {
    let now = chrono::Utc::now().timestamp_millis();
    let pool = &s.engine.db.pool;
    // Keys are kept a day, like Stripe's; after that the key may be used afresh.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2 AND created_at < $3",
    )
    .bind(o.token_id)
    .bind(o.key)
    .bind(now - KEEP_MS)
    .execute(pool)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (token_id, key, method, path, request_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_id, key) DO NOTHING",
    )
    .bind(o.token_id)
    .bind(o.key)
    .bind(method)
    .bind(path)
    .bind(hash)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
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

async fn earlier_answer(s: &ApiState, o: &Owner<'_>, hash: &str) -> Result<Response, ApiError> {
    let row = sqlx::query(
        "SELECT request_hash, status, response FROM idempotency_keys \
         WHERE token_id = $1 AND key = $2",
    )
    .bind(o.token_id)
    .bind(o.key)
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
    let status = row.get::<Option<i64>, _>("status");
    let body = row.get::<Option<String>, _>("response");
    let (status, body) = match (status, body) {
        (Some(status), Some(body)) => (status, body),
        (Some(_), None) => return Err(shown_once()),
        (None, _) => return Err(in_flight()),
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

fn shown_once() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "idempotency_key_secret_shown",
        "the request with this Idempotency-Key created a token, and a token's secret is shown \
         only once: it is not shown again (GET /api/v1/tokens lists the token; revoke it and \
         create another if the secret was lost)",
    )
    .with_field("Idempotency-Key")
}

/// Store the answer (or free the key on an error) and pass the response on.
async fn remember(s: &ApiState, o: &Owner<'_>, resp: Response) -> Result<Response, ApiError> {
    let (parts, body) = resp.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(ApiError::internal)?;
    let pool = &s.engine.db.pool;
    // Handlers refuse (4xx) before they change anything, so a refusal is not kept. A 5xx is
    // kept: the failure may have come after the effect (a debit), so it is never redone.
    if parts.status.is_client_error() {
        sqlx::query("DELETE FROM idempotency_keys WHERE token_id = $1 AND key = $2")
            .bind(o.token_id)
            .bind(o.key)
            .execute(pool)
            .await?;
    } else {
        // A secret is never written down: the status alone says the request was done.
        let stored = (parts.extensions.get::<ShownOnce>().is_none())
            .then(|| String::from_utf8_lossy(&bytes).into_owned());
        sqlx::query(
            "UPDATE idempotency_keys SET status = $1, response = $2 \
             WHERE token_id = $3 AND key = $4",
        )
        .bind(parts.status.as_u16() as i64)
        .bind(stored)
        .bind(o.token_id)
        .bind(o.key)
        .execute(pool)
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(bytes)))
}
