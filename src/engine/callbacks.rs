//! Channel callbacks: recorded as received, never trusted to move money by themselves. An
//! open attempt is queued for an immediate query; a settled one is left alone, so late or
//! duplicate callbacks change nothing.

use super::{Engine, EngineError};
use crate::domain::channel::Callback;
use crate::domain::status::AttemptStatus;
use crate::store::attempts;
use chrono::Utc;

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
    let status = attempts::status_by_order(&mut tx, channel, &cb.order_no).await?;
    let effect = match status.as_deref().map(str::parse::<AttemptStatus>) {
        None => Effect::UnknownOrder,
        Some(Ok(s)) if !s.is_open() => Effect::Unchanged,
        Some(_) => {
            attempts::query_now(&mut tx, channel, &cb.order_no).await?;
            Effect::QueryQueued
        }
    };
    let row = attempts::CallbackRow {
        channel,
        order_no: &cb.order_no,
        body: String::from_utf8_lossy(body).to_string(),
        received_at: Utc::now().timestamp_millis(),
        effect: effect.as_str(),
    };
    attempts::insert_callback(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(effect)
}
