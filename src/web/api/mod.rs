//! The JSON API under `/api/v1`, described by `/openapi.json` (generated from the handlers'
//! annotations, so the document and the routes cannot drift apart).
//!
//! Every route needs a token (`Authorization: Bearer` or the dashboard's cookie): viewers
//! read, collections also act on loans, admins also import loans, change policies and manage
//! tokens. Errors are `{"error", "message", "field"?}`. Every POST takes `Idempotency-Key`
//! ([`idempotency`], layered over these routes in [`crate::web::router`]).

pub mod actions;
pub mod admin;
pub mod attempts;
pub mod error;
pub mod idempotency;
pub mod loans;
pub mod notes;
pub mod param;
pub mod recon;
pub mod simulations;

use crate::web::auth::{Principal, Role};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::ApiError;
use std::sync::Arc;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "repayd collections API", description = "Loans, attempts, delinquency and collections actions."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API's routes and their OpenAPI document.
pub fn api() -> (Router<ApiState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(loans::list_loans, loans::import_loans))
        .routes(routes!(loans::get_loan))
        .routes(routes!(loans::get_contact))
        .routes(routes!(loans::put_policy, loans::post_policy))
        .routes(routes!(actions::pause))
        .routes(routes!(actions::resume))
        .routes(routes!(actions::manual_attempt))
        .routes(routes!(actions::unpark))
        .routes(routes!(actions::add_mandate))
        .routes(routes!(actions::revoke_mandate))
        .routes(routes!(actions::audit))
        .routes(routes!(notes::list_notes, notes::add_note))
        .routes(routes!(notes::add_promise))
        .routes(routes!(attempts::list_attempts))
        .routes(routes!(attempts::stream_attempts))
        .routes(routes!(admin::delinquency))
        .routes(routes!(admin::list_policies))
        .routes(routes!(admin::get_policy))
        .routes(routes!(admin::validate_policy))
        .routes(routes!(admin::create_token, admin::list_tokens))
        .routes(routes!(admin::revoke_token))
        .routes(routes!(recon::report))
        .routes(routes!(recon::cases))
        .routes(routes!(recon::resolve))
        .routes(routes!(recon::refund))
        .routes(routes!(recon::write_off))
        .routes(routes!(simulations::list_simulations))
        .routes(routes!(simulations::get_simulation))
        .split_for_parts()
}

pub fn routes() -> Router<ApiState> {
    let (router, mut doc) = api();
    add_openapi_path(&mut doc);
    let mut doc = serde_json::to_value(&doc).expect("the document serialises");
    headers_not_null(&mut doc);
    let doc = Arc::new(doc);
    router
        .route(
            "/openapi.json",
            get(move |p: Principal, State(s): State<ApiState>| {
                let doc = doc.clone();
                async move { openapi(p, &s, &doc) }
            }),
        )
        // Loan imports can be large files.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// The largest request body (a loan import file).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

fn openapi(p: Principal, s: &ApiState, doc: &serde_json::Value) -> Response {
    if let Err(e) = p.require(Role::Viewer) {
        return ApiError::from(e).into_response();
    }
    let policies = s.engine.policies.names();
    let channels: Vec<&str> = s.engine.channels.keys().map(String::as_str).collect();
    Json(with_names(doc, &policies, &channels)).into_response()
}

/// Optional headers are strings when given (utoipa describes an `Option` header as nullable,
/// and a header cannot carry a JSON null).
fn headers_not_null(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let ops = paths.values_mut().filter_map(|item| item.as_object_mut());
    for op in ops.flat_map(|item| item.values_mut()) {
        let Some(params) = op.get_mut("parameters").and_then(|p| p.as_array_mut()) else {
            continue;
        };
        for p in params.iter_mut().filter(|p| p["in"] == "header") {
            if let Some(schema) = p.get_mut("schema").and_then(|s| s.as_object_mut()) {
                if schema.get("type").is_some_and(|t| t.is_array()) {
                    schema.insert("type".into(), "string".into());
                }
            }
        }
    }
}

/// The document with the names this server knows (its loaded policies and channels) as the
/// enums of the fields that take them, so that clients see what a request may name.
fn with_names(doc: &serde_json::Value, policies: &[&str], channels: &[&str]) -> serde_json::Value {
    let mut doc = doc.clone();
    let mut set = |schema: &str, field: &str, names: &[&str]| {
        let mut names = names.to_vec();
        names.sort_unstable();
        let at = format!("/components/schemas/{schema}/properties/{field}");
        if let Some(obj) = doc.pointer_mut(&at).and_then(|v| v.as_object_mut()) {
            obj.remove("pattern");
            obj.insert("enum".into(), serde_json::json!(names));
        }
    };
    set("PolicyChange", "policy", policies);
    set("AddMandateRequest", "channel", channels);
    doc
}

/// `/openapi.json` itself, so the document lists every route the API serves.
fn add_openapi_path(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::ResponseBuilder;
    let op = OperationBuilder::new()
        .tag("meta")
        .summary(Some("This document"))
        .response(
            "200",
            ResponseBuilder::new().description("the OpenAPI document"),
        )
        .build();
    doc.paths
        .paths
        .insert("/openapi.json".into(), PathItem::new(HttpMethod::Get, op));
}

/// Callers with at least a role, established before the body is read (so a caller without
/// the role gets 403 whatever the body).
macro_rules! role_extractor {
    ($name:ident, $role:expr) => {
        pub struct $name(pub Principal);

        impl axum::extract::FromRequestParts<ApiState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut axum::http::request::Parts,
                s: &ApiState,
            ) -> Result<Self, ApiError> {
                let p = Principal::from_request_parts(parts, s).await?;
                p.require($role)?;
                Ok($name(p))
            }
        }
    };
}

role_extractor!(Viewer, Role::Viewer);
role_extractor!(Collections, Role::Collections);
role_extractor!(Admin, Role::Admin);

/// The process clock (the daemon's, with its demo offset and speed): API actions happen now.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    crate::engine::clock::now()
}

/// Page size from `limit`: 1 to 500, default 50.
pub fn limit_of(v: &Option<String>) -> Result<i64, ApiError> {
    match v.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(50),
        Some(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::bad("limit", "a number from 1 to 500")),
    }
}

/// Cursors are opaque to clients: a loan list's position (a loan id), hex-encoded.
pub fn cursor_out(position: &str) -> String {
    hex::encode(position)
}

/// Any hex the schema allows is a position (non-UTF-8 bytes are replaced): a page after a
/// position that matches no loan is simply the loans after it.
pub fn cursor_in(cursor: &str) -> Result<String, ApiError> {
    hex::decode(cursor.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|_| ApiError::bad("cursor", "not a cursor this API gave"))
}

/// The cursor of a list ordered by id (attempts, audit, recon cases): the last id, in hex.
pub fn id_cursor_out(id: i64) -> String {
    format!("{id:x}")
}

pub fn id_cursor_in(cursor: &str) -> Result<i64, ApiError> {
    let c = cursor.trim();
    (1..=15)
        .contains(&c.len())
        .then(|| i64::from_str_radix(c, 16).ok())
        .flatten()
        .ok_or_else(|| ApiError::bad("cursor", "not a cursor this API gave"))
}
