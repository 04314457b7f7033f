//! Channel callbacks: recorded as received, never trusted to move money by themselves. An
//! open attempt is queued for an immediate query; a settled one is left alone, so late or
//! duplicate callbacks change nothing.

use super::{Engine, EngineError};
use crate::domain::channel::Callback;
use chrono::{DateTime, Utc};
use sqlx::Row;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// No attempt has this order number.
    UnknownOrder,
    /// The attempt is already settled; nothing changes.
    Unchanged,
    /// The attempt is open; it will be queried on the next run.
    QueryQueued,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::UnknownOrder => "unknown_order",
            Effect::Unchanged => "unchanged",
            Effect::QueryQueued => "query_queued",
        }
    }
}

pub async fn record_callback(
    engine: &Engine,
    channel: &str,
    cb: &Callback,
    body: &[u8],
) -> Result<Effect, EngineError> {
    let mut tx = engine.db.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM attempts WHERE channel = $1 AND order_no = $2")
            .bind(channel)
            .bind(&cb.order_no)
            .fetch_optional(&mut *tx)
            .await?;
    let effect = match status.as_deref() {
        None => Effect::UnknownOrder,
        Some("succeeded") | Some("failed") => Effect::Unchanged,
        Some(_) => {
            sqlx::query("UPDATE attempts SET next_query_at = 0 WHERE channel = $1 AND order_no = $2 AND status = 'unknown'")
                .bind(channel)
                .bind(&cb.order_no)
                .execute(&mut *tx)
                .await?;
            Effect::QueryQueued
        }
    };
    sqlx::query("INSERT INTO channel_callbacks (channel, order_no, body, received_at, effect) VALUES ($1, $2, $3, $4, $5)")
        .bind(channel)
        .bind(&cb.order_no)
        .bind(String::from_utf8_lossy(body).to_string())
        .bind(Utc::now().timestamp_millis())
        .bind(effect.as_str())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(effect)
}

/// How late the oldest pending due action is, in seconds (0 when nothing is late).
pub async fn due_lag_seconds(engine: &Engine, now: DateTime<Utc>) -> Result<f64, EngineError> {
    let row = sqlx::query(
        "SELECT MIN(due_at) AS oldest FROM actions WHERE status = 'pending' AND due_at <= $1",
    )
    .bind(now.timestamp_millis())
    .fetch_one(&engine.db.pool)
    .await?;
    let oldest: Option<i64> = row.get("oldest");
    Ok(oldest.map_or(0.0, |o| (now.timestamp_millis() - o) as f64 / 1000.0))
}
