//! The dashboard: server-rendered HTML behind a token login.

use crate::api::ApiState;
use axum::Router;

pub fn routes() -> Router<ApiState> {
    Router::new()
}
