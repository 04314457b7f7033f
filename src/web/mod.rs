//! The collections workspace: the JSON API (`api`), the server-rendered dashboard
//! (`dashboard`), the bearer-token auth both use (`auth`), and the limit on failed
//! authentication per client address (`throttle`).

pub mod api;
pub mod auth;
pub mod dashboard;
pub mod health;
pub mod metrics;
pub mod state;
pub mod throttle;
pub mod webhooks;

pub use state::{ApiState, DaemonState};

use axum::routing::{get, post};
use axum::Router;

/// The daemon's whole HTTP surface. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`, so that failed authentication is
/// limited per client address rather than for all clients together.
pub fn app(state: ApiState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route(
            "/webhooks/channels/{name}",
            post(webhooks::channel_callback),
        )
        .route("/webhooks/sms", post(webhooks::sms_delivery_report))
        .merge(router(&state))
        // Outermost, so an address over its limit is refused before its token is looked at.
        .layer(axum::middleware::from_fn_with_state(
            state.auth_throttle.clone(),
            throttle::layer,
        ))
        // Added after the layer, so outside it: health takes no credential to fail.
        .route("/healthz", get(health::healthz))
        // Outermost of all, so refused and unmatched requests are counted too.
        .layer(axum::middleware::from_fn(metrics::count_requests))
        .with_state(state)
}

/// Every workspace route; merged into the daemon's router by [`app`]. The
/// API's POSTs take `Idempotency-Key` ([`api::idempotency`]); the dashboard's (login,
/// logout) carry no token to keep keys under.
pub fn router(state: &ApiState) -> Router<ApiState> {
    let idempotency = axum::middleware::from_fn_with_state(state.clone(), api::idempotency::layer);
    api::routes().layer(idempotency).merge(dashboard::routes())
}
