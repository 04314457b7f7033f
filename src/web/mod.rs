//! The collections workspace: the JSON API (`api`), the server-rendered dashboard
//! (`dashboard`), and the bearer-token auth both use (`auth`).

pub mod api;
pub mod auth;
pub mod dashboard;

use crate::api::ApiState;
use axum::Router;

/// Every workspace route; merged into the daemon's router by [`crate::api::router`].
pub fn router() -> Router<ApiState> {
    api::routes().merge(dashboard::routes())
}
