//! The collections workspace: the JSON API (`api`), the server-rendered dashboard
//! (`dashboard`), the bearer-token auth both use (`auth`), and the limit on failed
//! authentication per client address (`throttle`).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod state;
pub mod throttle;

use crate::web::state::ApiState;
use axum::Router;

/// Every workspace route; merged into the daemon's router by [`crate::web::state::router`]. The
/// API's POSTs take `Idempotency-Key` ([`api::idempotency`]); the dashboard's (login,
/// logout) carry no token to keep keys under.
pub fn router(state: &ApiState) -> Router<ApiState> {
    let idempotency = axum::middleware::from_fn_with_state(state.clone(), api::idempotency::layer);
    api::routes().layer(idempotency).merge(dashboard::routes())
}
