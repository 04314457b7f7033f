//! The dashboard: server-rendered HTML behind a token login.
//!
//! Pages are minijinja templates compiled into the binary (`templates/dashboard/`), with every
//! value escaped; charts are inline SVG laid out here. The only script (`assets/dashboard.js`)
//! prepends attempts from the API's event stream to the live feed and sends the loan page's
//! actions to the JSON API. The session is the API token in an HttpOnly, SameSite=Strict
//! cookie, which the API's `Principal` extractor reads as well.

mod charts;
mod export;
mod pages;
mod render;
mod session;
mod simulation;
mod slots;
mod trends;

use crate::web::state::ApiState;
use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

pub use session::Session;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(pages::home))
        .route("/loans", get(pages::loans))
        .route("/worklist", get(pages::worklist))
        .route("/worklist.csv", get(export::worklist_export))
        .route("/attempts.csv", get(export::attempts_export))
        .route("/loans/{id}", get(pages::loan))
        .route("/recon", get(pages::recon))
        .route("/simulations", get(simulation::list))
        .route("/simulations/{id}", get(simulation::report))
        .route(
            "/login",
            get(session::login_form).post(session::login_submit),
        )
        .route("/logout", post(session::logout))
        .route("/assets/{name}", get(asset))
}

const ASSETS: [(&str, &str, &str); 2] = [
    (
        "dashboard.css",
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    ),
    (
        "dashboard.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    ),
];

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}
