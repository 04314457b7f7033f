//! The JSON API under `/api/v1`, described by `/openapi.json`.

use crate::api::ApiState;
use axum::Router;

pub fn routes() -> Router<ApiState> {
    Router::new()
}
