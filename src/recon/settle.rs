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
use std::collections::BTreeMap;

/// One settlement posted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settled {
    pub channel: String,
    pub currency: String,
    pub stmt_date: String,
    pub settle_date: String,
    pub gross: Decimal,
    pub fees: Decimal,
    pub net: Decimal,
    /// None for a day with nothing to settle.
    pub entry_id: Option<i64>,
}

/// Settle every reconciled statement day whose settle date (in the channel's zone) has come
/// by `now`. Idempotent: one settlement per (channel, statement day, currency), kept unique
/// by the schema, so several daemons can call this freely.
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
            out.extend(settle_day(engine, cfg, day, now).await?);
        }
    }
    Ok(out)
}

/// One statement day of one channel, settled per currency in one transaction. Another
/// daemon that settled the day first makes every insert here a no-op: nothing is posted.
async fn settle_day(
    engine: &Engine,
    cfg: &ChannelConfig,
    day: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<Settled>, ReconError> {
    let mut tx = engine.db.begin().await?;
    let rows = sqlx::query(
        "SELECT lo.currency, r.their_amount, COALESCE(l.fee, 0) AS fee FROM recon_items r \
         LEFT JOIN statement_lines l ON l.statement_id = r.statement_id AND l.line_no = r.line_no \
         JOIN attempts a ON a.id = r.attempt_id JOIN loans lo ON lo.id = a.loan_id \
         WHERE r.channel = $1 AND r.recon_date = $2 AND r.outcome = 'matched' AND r.their_status = 'success'",
    )
    .bind(&cfg.name)
    .bind(day.to_string())
    .fetch_all(&mut *tx)
    .await?;
    let lines = rows.iter().map(|r| {
        (
            r.get("currency"),
            from_minor(r.get("their_amount")),
            from_minor(r.get("fee")),
        )
    });
    let settle_date = day + Days::new(cfg.settlement.days.into());
    let mut out = Vec::new();
    for (currency, (gross, fees)) in day_totals(cfg, lines) {
        let s = Settled {
            channel: cfg.name.clone(),
            currency,
            stmt_date: day.to_string(),
            settle_date: settle_date.to_string(),
            gross,
            fees,
            net: gross - fees,
            entry_id: None,
        };
        match record(&mut tx, cfg, s, now).await? {
            Some(s) => out.push(s),
            None => {
                tx.rollback().await?;
                return Ok(Vec::new());
            }
        }
    }
    tx.commit().await?;
    Ok(out)
}

/// Gross and fees per currency of a day's matched successes `(currency, amount, line fee)`.
/// A day without any still gets one total (currency `""`, zero), whose row marks it done.
fn day_totals(
    cfg: &ChannelConfig,
    lines: impl Iterator<Item = (String, Decimal, Decimal)>,
) -> BTreeMap<String, (Decimal, Decimal)> {
    let mut out: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for (currency, amount, fee) in lines {
        let t = out.entry(currency).or_default();
        t.0 += amount;
        t.1 += cfg.settlement.fee_of(amount, fee);
    }
    for t in out.values_mut() {
        t.1 = t.1.min(t.0);
    }
    if out.is_empty() {
        out.insert(String::new(), (Decimal::ZERO, Decimal::ZERO));
    }
    out
}

/// Insert one settlement row and, when it moves money, its entry. `None` when the row was
/// already there (another daemon settled the day).
async fn record(
    tx: &mut sqlx::AnyConnection,
    cfg: &ChannelConfig,
    mut s: Settled,
    now: DateTime<Utc>,
) -> Result<Option<Settled>, ReconError> {
    // A day with nothing to settle gets its row, so it is not looked at again, but no entry:
    // the journal holds no entry without lines.
    if s.gross > Decimal::ZERO {
        s.entry_id = Some(alloc_on(&mut *tx, "entry", 1).await?);
    }
    let id = alloc_on(&mut *tx, "settlement", 1).await?;
    let inserted = sqlx::query(
        "INSERT INTO settlements (id, channel, currency, stmt_date, settle_date, gross, fees, net, entry_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (channel, stmt_date, currency) DO NOTHING",
    )
    .bind(id)
    .bind(&s.channel)
    .bind(&s.currency)
    .bind(&s.stmt_date)
    .bind(&s.settle_date)
    .bind(to_minor(s.gross)?)
    .bind(to_minor(s.fees)?)
    .bind(to_minor(s.net)?)
    .bind(s.entry_id)
    .bind(now.timestamp_millis())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(None);
    }
    if let Some(id) = s.entry_id {
        let entry = Entry {
            id,
            kind: "settlement",
            loan_id: None,
            currency: s.currency.clone(),
            attempt_id: None,
            posted_at: now.timestamp_millis(),
            memo: format!(
                "settlement {} {} {} (T+{})",
                cfg.name, s.currency, s.stmt_date, cfg.settlement.days
            ),
            lines: ledger::settlement_lines(&cfg.name, s.gross, s.fees),
        };
        crate::store::ledger::post_entries(&mut *tx, &[entry]).await?;
        tracing::info!(channel = %cfg.name, currency = %s.currency, day = %s.stmt_date,
            gross = %s.gross, fees = %s.fees, "settled");
    }
    Ok(Some(s))
}
