//! Published simulations (`repayd simulate --publish`): the list, and each one's figures as
//! `figures.json` holds them (viewer).

use super::error::{ApiError, ErrorBody};
use super::{param, Viewer};
use crate::web::state::ApiState;
use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct SimulationSummary {
    pub id: i64,
    pub published_at: DateTime<Utc>,
    /// The inputs in words: loans, days, start, seed and the policies compared.
    pub title: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SimulationList {
    pub items: Vec<SimulationSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Simulation {
    pub id: i64,
    pub published_at: DateTime<Utc>,
    pub title: String,
    /// One entry per policy: recovery curve, success rates, money per currency, overdue
    /// buckets, days-past-due distribution, protection counts.
    #[schema(value_type = Vec<Object>)]
    pub figures: serde_json::Value,
    /// The dashboard page with the HTML report.
    pub report_url: String,
}

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/v1/simulations", tag = "simulations",
    responses((status = 200, body = SimulationList), (status = "4XX", body = ErrorBody)))]
pub async fn list_simulations(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
) -> Result<Json<SimulationList>, ApiError> {
    let items = crate::ops::simulation::list(&s.engine.db)
        .await?
        .into_iter()
        .map(|(id, ms, title)| SimulationSummary {
            id,
            published_at: at(ms),
            title,
        })
        .collect();
    Ok(Json(SimulationList { items }))
}

#[utoipa::path(get, path = "/api/v1/simulations/{id}", tag = "simulations",
    params(("id" = i64, Path, description = "simulation id", minimum = 1)),
    responses((status = 200, body = Simulation), (status = "4XX", body = ErrorBody)))]
pub async fn get_simulation(
    Viewer(_who): Viewer,
    State(s): State<ApiState>,
    param::ApiPath(id): param::ApiPath<String>,
) -> Result<Json<Simulation>, ApiError> {
    let id: i64 = id
        .trim()
        .parse()
        .map_err(|_| ApiError::bad("id", "a simulation id (a number)"))?;
    let sim = crate::ops::simulation::get(&s.engine.db, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("simulation {id}")))?;
    let figures = serde_json::from_str(&sim.figures_json).map_err(ApiError::internal)?;
    Ok(Json(Simulation {
        id: sim.id,
        published_at: at(sim.created_at),
        title: sim.title,
        figures,
        report_url: format!("/simulations/{}", sim.id),
    }))
}
