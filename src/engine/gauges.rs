//! What `/metrics` reads from the database at each scrape: how late the agenda is, how much
//! of it is pending, parked loans and open reconciliation cases. Every daemon on one
//! database reports the same values, so a dashboard takes their `max`, not their sum.

use super::{Engine, EngineError};
use crate::domain::status::ActionKind;
use crate::store::{agenda, loans, recon_report};
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub struct Gauges {
    /// How late the oldest pending due action is at `now`, in seconds (0 when none is).
    pub due_lag_seconds: f64,
    /// Pending agenda rows per kind; every known kind is present, with 0 when it has none.
    pub pending_actions: Vec<(String, i64)>,
    pub loans_parked: i64,
    pub recon_cases_open: i64,
}

/// Read the gauges as of `now`, the daemon's clock (which a demo may shift or speed up).
pub async fn read_gauges(engine: &Engine, now: DateTime<Utc>) -> Result<Gauges, EngineError> {
    let mut conn = engine.db.pool.acquire().await?;
    let now_ms = now.timestamp_millis();
    let oldest = agenda::oldest_pending_due(&mut conn, now_ms).await?;
    let pending = agenda::pending_by_kind(&mut conn).await?;
    Ok(Gauges {
        due_lag_seconds: oldest.map_or(0.0, |o| (now_ms - o).max(0) as f64 / 1000.0),
        pending_actions: every_kind(pending),
        loans_parked: loans::parked_count(&mut conn).await?,
        recon_cases_open: recon_report::open_case_count(&mut conn).await?,
    })
}

/// A kind with no pending rows still gets its series (at 0), so it falls to 0 on a graph
/// instead of keeping its last value.
fn every_kind(counted: Vec<(String, i64)>) -> Vec<(String, i64)> {
    let mut out: Vec<(String, i64)> = ActionKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), 0))
        .collect();
    for (kind, n) in counted {
        match out.iter_mut().find(|(k, _)| *k == kind) {
            Some(slot) => slot.1 = n,
            None => out.push((kind, n)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_kinds_read_zero() {
        let got = every_kind(vec![("attempt".into(), 3)]);
        assert_eq!(got, vec![("notice".into(), 0), ("attempt".into(), 3)]);
    }
}
