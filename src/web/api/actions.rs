//! Collections actions (role collections or admin), each written to the audit log, and the
//! audit log itself.

use super::error::{ApiError, ApiJson, ErrorBody};
use super::param;
use super::{id_cursor_in, id_cursor_out, limit_of, now};
use super::{Collections, Viewer};
use crate::ops::{self, AuditItem, MandateOut, NewMandate, ParkState, PauseState};
use crate::store::reports::{self, AttemptView};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// YYYY-MM-DD: auto-debit resumes at the start of this day in the loan's zone.
    #[schema(schema_with = param::day)]
    pub until: String,
    /// "dispute", "promise to pay", or any text.
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualAttemptRequest {
    /// A decimal string, more than zero and at most what is outstanding, e.g. "123.45".
    #[schema(schema_with = param::amount)]
    pub amount: String,
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMandateRequest {
    #[schema(schema_with = param::name)]
    pub channel: String,
    #[schema(schema_with = param::agreement)]
    pub agreement: String,
    /// The card or account number; only its masked form is stored.
    #[schema(schema_with = param::account)]
    pub account: String,
    #[schema(schema_with = param::optional_amount)]
    pub per_debit_limit: Option<String>,
    #[schema(schema_with = param::optional_amount)]
    pub daily_limit: Option<String>,
    #[schema(schema_with = param::words)]
    pub reason: String,
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/pause", tag = "collections",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = PauseRequest,
    responses((status = 200, body = PauseState), (status = "4XX", body = ErrorBody)))]
pub async fn pause(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<PauseRequest>,
) -> Result<Json<PauseState>, ApiError> {
    let until = NaiveDate::parse_from_str(b.until.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("until", "a date, YYYY-MM-DD"))?;
    Ok(Json(
        ops::pause(&s.engine, &p.actor(), &id, until, &b.reason, now()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/unpark", tag = "collections",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = ReasonRequest,
    responses((status = 200, body = ParkState), (status = "4XX", body = ErrorBody)))]
pub async fn unpark(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<ReasonRequest>,
) -> Result<Json<ParkState>, ApiError> {
    Ok(Json(
        ops::unpark(&s.engine, &p.actor(), &id, &b.reason, now()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/resume", tag = "collections",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = ReasonRequest,
    responses((status = 200, body = PauseState), (status = "4XX", body = ErrorBody)))]
pub async fn resume(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<ReasonRequest>,
) -> Result<Json<PauseState>, ApiError> {
    Ok(Json(
        ops::resume(&s.engine, &p.actor(), &id, &b.reason, now()).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/manual-attempt", tag = "collections",
    description = "Debit now through the engine (recorded before the channel is called, within the mandate's limits, posted to the ledger). Returns the attempt.",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = ManualAttemptRequest,
    responses((status = 200, body = AttemptView), (status = "4XX", body = ErrorBody)))]
pub async fn manual_attempt(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<ManualAttemptRequest>,
) -> Result<Json<AttemptView>, ApiError> {
    let attempt =
        ops::manual_attempt(&s.engine, &p.actor(), &id, &b.amount, &b.reason, now()).await?;
    let mut conn = s.engine.db.pool.acquire().await?;
    let filter = reports::AttemptFilter {
        loan_id: Some(id.clone()),
        ..Default::default()
    };
    let view = reports::attempts_page(&mut conn, &filter, Some(attempt + 1), 1)
        .await?
        .into_iter()
        .find(|a| a.id == attempt)
        .ok_or_else(|| ApiError::internal(format!("attempt {attempt} vanished")))?;
    Ok(Json(view))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/mandates/{mandate_id}/revoke", tag = "collections",
    params(("id" = String, Path, description = "loan id"),
        ("mandate_id" = i64, Path, description = "mandate id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = ReasonRequest,
    responses((status = 200, body = MandateOut), (status = "4XX", body = ErrorBody)))]
pub async fn revoke_mandate(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath((id, mandate_id)): param::ApiPath<(String, i64)>,
    ApiJson(b): ApiJson<ReasonRequest>,
) -> Result<Json<MandateOut>, ApiError> {
    let m = ops::revoke_mandate(&s.engine, &p.actor(), &id, mandate_id, &b.reason, now()).await?;
    Ok(Json(m))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/mandates", tag = "collections",
    description = "Add a mandate after the borrower re-bound a card or account.",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = AddMandateRequest,
    responses((status = 201, body = MandateOut), (status = "4XX", body = ErrorBody)))]
pub async fn add_mandate(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<AddMandateRequest>,
) -> Result<(axum::http::StatusCode, Json<MandateOut>), ApiError> {
    let m = NewMandate {
        channel: b.channel,
        agreement: b.agreement,
        account: b.account,
        per_debit_limit: b.per_debit_limit,
        daily_limit: b.daily_limit,
    };
    let out = ops::add_mandate(&s.engine, &p.actor(), &id, &m, &b.reason, now()).await?;
    Ok((axum::http::StatusCode::CREATED, Json(out)))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[param(schema_with = param::text)]
    pub loan_id: Option<String>,
    #[param(schema_with = param::id_cursor)]
    pub cursor: Option<String>,
    /// Default 50.
    #[param(schema_with = param::limit)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditItem>,
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "collections", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = "4XX", body = ErrorBody)))]
pub async fn audit(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiQuery(q): param::ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = limit_of(&q.limit)?;
    let before = match q.cursor.as_deref() {
        Some(c) => Some(id_cursor_in(c)?),
        None => None,
    };
    let loan = q.loan_id.as_deref().filter(|l| !l.is_empty());
    let mut conn = s.engine.db.pool.acquire().await?;
    let mut items = ops::audit_page(&mut conn, loan, before, limit + 1).await?;
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = more
        .then(|| items.last().map(|a| id_cursor_out(a.id)))
        .flatten();
    Ok(Json(AuditPage { items, next_cursor }))
}
