//! Notes and promises to pay on a loan: collections records them (audited), viewers read
//! them with each promise's state (open, kept, broken).

use super::error::{ApiError, ApiJson, ErrorBody};
use super::{now, param, Collections, Viewer};
use crate::ops::notes::{self, NoteView};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    #[schema(schema_with = param::words)]
    pub text: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PromiseRequest {
    /// A decimal string in the loan's currency, e.g. "500.00".
    #[schema(schema_with = param::amount)]
    pub amount: String,
    /// YYYY-MM-DD, the loan's local date by which it is paid (at most 60 days ahead).
    #[schema(schema_with = param::day)]
    pub date: String,
    /// What the borrower said.
    #[schema(schema_with = param::words)]
    pub text: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoteCreated {
    pub id: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoteList {
    pub items: Vec<NoteView>,
}

#[utoipa::path(get, path = "/api/v1/loans/{id}/notes", tag = "collections",
    params(("id" = String, Path, description = "loan id")),
    responses((status = 200, body = NoteList), (status = "4XX", body = ErrorBody)))]
pub async fn list_notes(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
) -> Result<Json<NoteList>, ApiError> {
    let items = notes::notes(&s.engine, &id, now()).await?;
    Ok(Json(NoteList { items }))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/notes", tag = "collections",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = NoteRequest,
    responses((status = 201, body = NoteCreated), (status = "4XX", body = ErrorBody)))]
pub async fn add_note(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<NoteRequest>,
) -> Result<(StatusCode, Json<NoteCreated>), ApiError> {
    let note = notes::add_note(&s.engine, &p.actor(), &id, &b.text, now()).await?;
    Ok((StatusCode::CREATED, Json(NoteCreated { id: note })))
}

#[utoipa::path(post, path = "/api/v1/loans/{id}/promises", tag = "collections",
    description = "A promise to pay: automatic attempts pause until the end of its date; afterwards it reads kept or broken.",
    params(("id" = String, Path, description = "loan id"),
        ("Idempotency-Key" = Option<String>, Header, description = "repeat-safe key: 1 to 255 visible ASCII characters", pattern = r"^[!-~]{1,255}$", max_length = 255)),
    request_body = PromiseRequest,
    responses((status = 201, body = NoteCreated), (status = "4XX", body = ErrorBody)))]
pub async fn add_promise(
    Collections(p): Collections,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
    ApiJson(b): ApiJson<PromiseRequest>,
) -> Result<(StatusCode, Json<NoteCreated>), ApiError> {
    let on = NaiveDate::parse_from_str(b.date.trim(), "%Y-%m-%d")
        .map_err(|_| ApiError::invalid("date", "a date, YYYY-MM-DD"))?;
    let note =
        notes::promise_to_pay(&s.engine, &p.actor(), &id, &b.amount, on, &b.text, now()).await?;
    Ok((StatusCode::CREATED, Json(NoteCreated { id: note })))
}
