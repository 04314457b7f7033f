//! Published simulations: a lender stores a simulation's report so a collections lead can
//! open it in the dashboard (`/simulations`) or read its figures through the API. Publishing
//! is audited like every other change a person makes.

use crate::domain::actor::Actor;
use crate::store::simulation::{self as store, Published};
use crate::store::Db;
use chrono::{DateTime, Utc};
use serde_json::json;

/// The most simulations one list shows.
pub const LIST_LIMIT: i64 = 200;

/// Store a simulation and its audit row in one transaction; returns its id.
pub async fn publish(
    db: &Db,
    who: &Actor,
    title: &str,
    figures_json: &str,
    report_html: &str,
    now: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    let mut tx = db.begin().await?;
    let at = now.timestamp_millis();
    let id = store::publish(&mut tx, at, title, figures_json, report_html).await?;
    let detail = json!({ "simulation": id, "title": title });
    super::audit(
        &mut tx,
        who,
        super::action::PUBLISH_SIMULATION,
        None,
        None,
        &detail,
        at,
    )
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Published simulations, newest first: (id, created_at ms, title).
pub async fn list(db: &Db) -> Result<Vec<(i64, i64, String)>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    store::list_published(&mut conn, LIST_LIMIT).await
}

pub async fn get(db: &Db, id: i64) -> Result<Option<Published>, sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    store::get_published(&mut conn, id).await
}
