//! Tokens (admin), policies, and the delinquency report.

use super::error::{ApiError, ApiJson, ErrorBody};
use super::idempotency::ShownOnce;
use super::now;
use super::param;
use super::{Admin, Viewer};
use crate::ops::{self, action};
use crate::store::reports::{self, DelinquencyReport};
use crate::web::auth::{self, Role};
use crate::web::state::ApiState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(schema_with = param::name)]
    pub name: String,
    /// admin, collections or viewer
    #[schema(schema_with = param::role)]
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    pub id: i64,
    pub name: String,
    pub role: String,
    /// Shown once; only its hash is kept.
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub items: Vec<TokenInfo>,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens",
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = TokenRequest,
    responses((status = 201, body = TokenCreated), (status = "4XX", body = ErrorBody)))]
pub async fn create_token(
    Admin(p): Admin,
    State(s): State<ApiState>,
    ApiJson(b): ApiJson<TokenRequest>,
) -> Result<(StatusCode, Extension<ShownOnce>, Json<TokenCreated>), ApiError> {
    let role: Role = b
        .role
        .parse()
        .map_err(|e: String| ApiError::invalid("role", e))?;
    let name = b.name.as_str();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    // A name goes in URLs (`/tokens/{name}/revoke`) and the audit log: plain characters.
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(ApiError::invalid(
            "name",
            "1 to 64 letters, digits, `.`, `_` or `-`",
        ));
    }
    let now = now();
    let mut tx = s.engine.db.begin().await?;
    let (id, token) = create_named(&mut tx, name, role, now.timestamp_millis()).await?;
    let detail = serde_json::json!({ "token_id": id, "name": name, "role": role.as_str() });
    ops::audit(
        &mut tx,
        &p.actor(),
        action::CREATE_TOKEN,
        None,
        None,
        &detail,
        now.timestamp_millis(),
    )
    .await?;
    tx.commit().await?;
    // The secret is in this answer only: never stored for an Idempotency-Key replay.
    Ok((
        StatusCode::CREATED,
        Extension(ShownOnce),
        Json(TokenCreated {
            id,
            name: name.into(),
            role: role.as_str().into(),
            token,
        }),
    ))
}

/// Create a token with a name no token ever had. Names are what the audit log shows and what
/// tokens are revoked by, so a name is one token for good, even after it is revoked (the
/// schema's unique index holds it when two creations race).
pub async fn create_named(
    conn: &mut sqlx::AnyConnection,
    name: &str,
    role: Role,
    now_ms: i64,
) -> Result<(i64, String), ApiError> {
    let taken: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_tokens WHERE name = $1")
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    let name_taken = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "name: a token named `{name}` exists or existed; names are never reused, \
                 even after revocation"
            ),
        )
        .with_field("name")
    };
    if taken > 0 {
        return Err(name_taken());
    }
    match auth::create_token(conn, name, role, now_ms).await {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(name_taken()),
        other => Ok(other?),
    }
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = TokenList), (status = "4XX", body = ErrorBody)))]
pub async fn list_tokens(
    Admin(_who): Admin,
    State(s): State<ApiState>,
) -> Result<Json<TokenList>, ApiError> {
    let rows =
        sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_tokens ORDER BY id")
            .fetch_all(&s.engine.db.pool)
            .await?;
    let ms = |v: i64| DateTime::from_timestamp_millis(v).unwrap_or_default();
    let items = rows
        .into_iter()
        .map(|r| TokenInfo {
            id: r.get("id"),
            name: r.get("name"),
            role: r.get("role"),
            created_at: ms(r.get("created_at")),
            revoked_at: r.get::<Option<i64>, _>("revoked_at").map(ms),
        })
        .collect();
    Ok(Json(TokenList { items }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenRevoked {
    pub name: String,
    pub revoked: u64,
}

#[utoipa::path(post, path = "/api/v1/tokens/{name}/revoke", tag = "tokens",
    description = "Revoke the active token with this name; the token of the request itself is refused (409).",
    params(("name" = String, Path, description = "token name"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    responses((status = 200, body = TokenRevoked), (status = "4XX", body = ErrorBody)))]
pub async fn revoke_token(
    Admin(p): Admin,
    State(s): State<ApiState>,
    param::ApiPath(name): param::ApiPath<String>,
) -> Result<Json<TokenRevoked>, ApiError> {
    // Revoking the token the request carries would lock its admin out mid-session; another
    // admin token, or `repayd token revoke` on the server, can do it.
    if name == p.name {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "own_token",
            format!(
                "`{name}` is the token of this request; revoke it with another admin token \
                 or `repayd token revoke --name {name}`"
            ),
        )
        .with_field("name"));
    }
    let now = now().timestamp_millis();
    let mut tx = s.engine.db.begin().await?;
    let revoked = auth::revoke_token(&mut tx, &name, now).await?;
    if revoked == 0 {
        return Err(ApiError::not_found(format!("active token `{name}`")));
    }
    let detail = serde_json::json!({ "name": name, "revoked": revoked });
    ops::audit(
        &mut tx,
        &p.actor(),
        action::REVOKE_TOKEN,
        None,
        None,
        &detail,
        now,
    )
    .await?;
    tx.commit().await?;
    Ok(Json(TokenRevoked { name, revoked }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicySummary {
    pub name: String,
    pub version: u32,
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyList {
    pub items: Vec<PolicySummary>,
}

#[utoipa::path(get, path = "/api/v1/policies", tag = "policies",
    responses((status = 200, body = PolicyList), (status = "4XX", body = ErrorBody)))]
pub async fn list_policies(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
) -> Result<Json<PolicyList>, ApiError> {
    let items = s
        .engine
        .policies
        .names()
        .into_iter()
        .filter_map(|n| s.engine.policies.get(n))
        .map(|p| PolicySummary {
            name: p.name.clone(),
            version: p.version,
            description: p.description.clone(),
        })
        .collect();
    Ok(Json(PolicyList { items }))
}

#[utoipa::path(get, path = "/api/v1/policies/{name}", tag = "policies",
    params(("name" = String, Path, description = "policy name")),
    responses((status = 200, description = "the policy, as its TOML reads, in JSON", body = Object),
        (status = "4XX", body = ErrorBody)))]
pub async fn get_policy(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiPath(name): param::ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let policy = s
        .engine
        .policies
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("policy `{name}`")))?;
    Ok(Json(
        serde_json::to_value(policy).map_err(ApiError::internal)?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyValid {
    pub valid: bool,
    pub name: String,
    pub version: u32,
}

/// Check a policy (TOML body) exactly as `repayd policy check` does. Problems come back as
/// 422 with `problems: [{line, column, field, message}]`, the message one `LINE:COLUMN: FIELD:
/// MESSAGE` per line.
#[utoipa::path(post, path = "/api/v1/policies/validate", tag = "policies",
    request_body(content = String, content_type = "application/toml"),
    params(("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    responses((status = 200, body = PolicyValid), (status = "4XX", body = ErrorBody)))]
pub async fn validate_policy(Admin(_p): Admin, body: Bytes) -> Result<Json<PolicyValid>, ApiError> {
    let src = std::str::from_utf8(&body).map_err(|_| ApiError::bad("(body)", "not UTF-8"))?;
    match crate::domain::policy::parse_policy(src, "policy") {
        Ok(p) => Ok(Json(PolicyValid {
            valid: true,
            name: p.name,
            version: p.version,
        })),
        Err(errs) => {
            let problems: Vec<serde_json::Value> = errs
                .0
                .iter()
                .map(|p| serde_json::json!({ "line": p.line, "column": p.column, "field": p.field, "message": p.message }))
                .collect();
            let mut e = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_policy",
                errs.to_string(),
            );
            e.body.field = errs.0.first().map(|p| p.field.clone());
            e.body.problems = Some(serde_json::Value::Array(problems));
            Err(e)
        }
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DelinquencyQuery {
    /// Today (each loan's local date) when absent.
    #[param(schema_with = param::date)]
    pub as_of: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/delinquency", tag = "loans", params(DelinquencyQuery),
    responses((status = 200, body = DelinquencyReport), (status = "4XX", body = ErrorBody)))]
pub async fn delinquency(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiQuery(q): param::ApiQuery<DelinquencyQuery>,
) -> Result<Json<DelinquencyReport>, ApiError> {
    let as_of = param::day_of("as_of", &q.as_of)?;
    let mut conn = s.engine.db.pool.acquire().await?;
    Ok(Json(
        reports::delinquency(&mut conn, &s.engine.policies, as_of, now()).await?,
    ))
}
