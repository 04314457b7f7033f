//! Settlement (清算): a statement day's matched successes leave channel clearing for the
//! bank, net of the channel's fees, once the channel's T+N date has come.

use super::ReconError;
use crate::domain::channel::ChannelConfig;
use crate::domain::ledger::{self, Entry};
use crate::domain::{from_minor, local_date, to_minor};
use crate::engine::Engine;
use crate::store::alloc_on;
use chrono::{DateTime, Days, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::Row;

/// One settlement posted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settled {
    pub channel: String,
    pub stmt_date: String,
    pub settle_date: String,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
    /// None for a day with nothing to settle.
    pub entry_id: Option<i64>,
}

/// Settle every reconciled statement day whose settle date (in the channel's zone) has come
/// by `now`. Idempotent: one settlement per (channel, statement day), kept unique by the
/// schema, so several daemons can call this freely.
pub async fn settle_due(engine: &Engine, now: DateTime<Utc>) -> Result<Vec<Settled>, ReconError> {
    let mut names: Vec<&String> = engine.channel_configs.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let cfg = &engine.channel_configs[name];
        let today = local_date(now, cfg.settlement.tz);
        let Some(last_day) = today.checked_sub_days(Days::new(cfg.settlement.days.into())) else {
            continue;
        };
        let days: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT s.stmt_date FROM statements s WHERE s.channel = $1 AND s.stmt_date <= $2 \
             AND NOT EXISTS (SELECT 1 FROM settlements t WHERE t.channel = s.channel AND t.stmt_date = s.stmt_date) \
             ORDER BY s.stmt_date",
        )
        .bind(name.as_str())
        .bind(last_day.to_string())
        .fetch_all(&engine.db.pool)
        .await?;
        for day in days {
            let day = NaiveDate::parse_from_str(&day, "%Y-%m-%d").expect("stored date");
            if let Some(s) = settle_day(engine, cfg, day, now).await? {
                out.push(s);
            }
        }
    }
    Ok(out)
}

async fn settle_day(
    engine: &Engine,
    cfg: &ChannelConfig,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Option<Settled>, ReconError> {
    let mut tx = engine.db.begin().await?;
    let rows = sqlx::query(
        "SELECT r.their_amount, COALESCE(l.fee, 0) AS fee FROM recon_items r \
         LEFT JOIN statement_lines l ON l.statement_id = r.statement_id AND l.line_no = r.line_no \
         WHERE r.channel = $1 AND r.recon_date = $2 AND r.outcome = 'matched' AND r.their_status = 'success'",
    )
    .bind(&cfg.name)
    .bind(day.to_string())
    .fetch_all(&mut *tx)
    .await?;
    let (mut gross, mut fees) = (Decimal::ZERO, Decimal::ZERO);
    for r in &rows {
        let amount = from_minor(r.get("their_amount"));
        gross += amount;
        fees += cfg.settlement.fee_of(amount, from_minor(r.get("fee")));
    }
    let fees = fees.min(gross);
    let settle_date = day + Days::new(cfg.settlement.days.into());
    // A day with nothing to settle still gets its row, so it is not looked at again, but no
    // entry: the journal holds no entry without lines.
    let entry_id = match gross > Decimal::ZERO {
        true => Some(alloc_on(&mut tx, "entry", 1).await?),
        false => None,
    };
    let id = alloc_on(&mut tx, "settlement", 1).await?;
    let inserted = sqlx::query(
        "INSERT INTO settlements (id, channel, stmt_date, settle_date, gross, fees, net, entry_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (channel, stmt_date) DO NOTHING",
    )
    .bind(id)
    .bind(&cfg.name)
    .bind(day.to_string())
    .bind(settle_date.to_string())
    .bind(to_minor(gross)?)
    .bind(to_minor(fees)?)
    .bind(to_minor(gross - fees)?)
    .bind(entry_id)
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    if let Some(id) = entry_id {
        let entry = Entry {
            id,
            kind: "settlement",
            loan_id: None,
            attempt_id: None,
            posted_at: now.timestamp_millis(),
            memo: format!("settlement {} {day} (T+{})", cfg.name, cfg.settlement.days),
            lines: ledger::settlement_lines(&cfg.name, gross, fees),
        };
        crate::store::ledger::post_entries(&mut tx, &[entry]).await?;
    }
    tx.commit().await?;
    tracing::info!(channel = %cfg.name, %day, %gross, %fees, "settled");
    Ok(Some(Settled {
        channel: cfg.name.clone(),
        stmt_date: day.to_string(),
        settle_date: settle_date.to_string(),
        gross,
        fees,
        net: gross - fees,
        entry_id,
    }))
}
