//! Bearer tokens and roles.
//!
//! A token is 32 random bytes shown once by `repayd token create`; only its SHA-256 is
//! stored. A fast hash is enough because the token is random and long: there is nothing to
//! brute-force that a slow hash would protect. The API takes `Authorization: Bearer TOKEN`;
//! the dashboard's login puts the same token in the `repayd_token` cookie (HttpOnly).

use crate::store::alloc_on;
use crate::web::state::ApiState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection, Row};
use thiserror::Error;

/// Cookie the dashboard keeps the token in.
pub const COOKIE: &str = "repayd_token";
const TOKEN_PREFIX: &str = "rpd_";

pub use crate::domain::actor::Role;

/// The caller, as established from a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: i64,
    /// The token's name, which the audit log records as the actor.
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// The caller as operations record them.
    pub fn actor(&self) -> crate::domain::actor::Actor {
        crate::domain::actor::Actor {
            name: self.name.clone(),
            role: self.role,
        }
    }

    /// Refuse with 403 unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), AuthError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(AuthError::Forbidden {
                need: role,
                have: self.role,
            })
        }
    }
}

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("a bearer token is required (Authorization: Bearer TOKEN)")]
    Missing,
    #[error("the token is not valid (unknown or revoked)")]
    Invalid,
    #[error("this needs the {need} role; the token has {have}")]
    Forbidden { need: Role, have: Role },
    #[error("the token store is unavailable")]
    Store(#[from] sqlx::Error),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AuthError::Missing | AuthError::Invalid => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AuthError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            AuthError::Store(e) => {
                tracing::error!(error = %e, "token lookup failed");
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
        };
        let body = serde_json::json!({ "error": code, "message": self.to_string() });
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// SHA-256 of a token, hex; what the table stores and lookups compare.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Create a token; returns its id and the token itself, which is never stored.
pub async fn create_token(
    conn: &mut AnyConnection,
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<(i64, String), sqlx::Error> {
    let token = new_token();
    let id = alloc_on(conn, "api_token", 1).await?;
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(name)
    .bind(role.as_str())
    .bind(hash_token(&token))
    .bind(now_ms)
    .execute(&mut *conn)
    .await?;
    Ok((id, token))
}

/// Revoke a token by name; returns how many were revoked.
pub async fn revoke_token(
    conn: &mut AnyConnection,
    name: &str,
    now_ms: i64,
) -> Result<u64, sqlx::Error> {
    let r =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(name)
            .execute(&mut *conn)
            .await?;
    Ok(r.rows_affected())
}

/// The principal a token stands for, if it is known and not revoked.
pub async fn authenticate(
    conn: &mut AnyConnection,
    token: &str,
) -> Result<Option<Principal>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, name, role FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.and_then(|r| {
        let role: String = r.get("role");
        Some(Principal {
            token_id: r.get("id"),
            name: r.get("name"),
            role: role.parse().ok()?,
        })
    }))
}

/// The token a request carries: the bearer header first, then the dashboard's cookie.
pub fn token_of(parts: &Parts) -> Option<String> {
    let h = &parts.headers;
    if let Some(v) = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
            .filter(|t| !t.is_empty());
    }
    h.get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<ApiState> for Principal {
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, s: &ApiState) -> Result<Self, AuthError> {
        // Established for this very request by a layer in front (idempotency); clients
        // cannot set extensions.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let token = token_of(parts).ok_or(AuthError::Missing)?;
        let mut conn = s.engine.db.pool.acquire().await?;
        authenticate(&mut conn, &token)
            .await?
            .ok_or(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Admin > Role::Collections && Role::Collections > Role::Viewer);
        assert_eq!("collections".parse::<Role>().unwrap(), Role::Collections);
        assert!("root".parse::<Role>().unwrap_err().contains("admin"));
        let p = Principal {
            token_id: 1,
            name: "n".into(),
            role: Role::Collections,
        };
        assert!(p.require(Role::Viewer).is_ok());
        assert!(matches!(
            p.require(Role::Admin),
            Err(AuthError::Forbidden { .. })
        ));
    }

    #[test]
    fn tokens_are_random_and_hashes_stable() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 64);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
    }

    #[test]
    fn token_comes_from_bearer_or_cookie() {
        let parts = |k: &str, v: &str| {
            let (p, _) = axum::http::Request::builder()
                .header(k, v)
                .body(())
                .unwrap()
                .into_parts();
            p
        };
        assert_eq!(
            token_of(&parts("authorization", "Bearer abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(token_of(&parts("authorization", "Basic abc")), None);
        assert_eq!(
            token_of(&parts("cookie", "a=1; repayd_token=xyz")).as_deref(),
            Some("xyz")
        );
        assert_eq!(token_of(&parts("cookie", "a=1")), None);
    }
}
