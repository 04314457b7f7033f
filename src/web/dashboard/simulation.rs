//! Published simulations: the list, and each report as `repayd simulate` wrote it.

use super::render::{html_response, page, PageError};
use super::session::Session;
use crate::web::state::ApiState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

#[derive(Serialize)]
struct Item {
    id: i64,
    created_at: i64,
    title: String,
}

pub async fn list(session: Session, State(s): State<ApiState>) -> Result<Response, PageError> {
    let sims: Vec<Item> = crate::ops::simulation::list(&s.engine.db)
        .await?
        .into_iter()
        .map(|(id, created_at, title)| Item {
            id,
            created_at,
            title,
        })
        .collect();
    page(
        "simulations.html",
        minijinja::context! { user => session.user(), sims },
    )
}

/// The stored report. It is self-contained (inline style and SVG, no script), so its page
/// allows inline style and nothing else.
pub async fn report(
    _session: Session,
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let id: i64 = id
        .parse()
        .map_err(|_| PageError::BadRequest(format!("simulation `{id}` is not a number")))?;
    let sim = crate::ops::simulation::get(&s.engine.db, id)
        .await?
        .ok_or_else(|| PageError::NotFound(format!("simulation {id}")))?;
    let mut resp = html_response(StatusCode::OK, sim.report_html);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'",
        ),
    );
    Ok(resp)
}
