//! `repayd recon report --date D`: outcomes per channel and the open cases of a day.

use crate::domain::from_minor;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Case {
    pub id: i64,
    pub channel: String,
    pub order_no: String,
    pub outcome: String,
    pub our_status: Option<String>,
    pub our_amount: Option<Decimal>,
    pub their_status: Option<String>,
    pub their_amount: Option<Decimal>,
    pub evidence: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ReconReport {
    pub date: String,
    /// channel → outcome → count.
    pub counts: BTreeMap<String, BTreeMap<String, u64>>,
    pub auto_fixed: BTreeMap<String, u64>,
    pub open_cases: Vec<Case>,
}

pub async fn recon_report(
    conn: &mut AnyConnection,
    date: &str,
) -> Result<ReconReport, sqlx::Error> {
    let mut r = ReconReport {
        date: date.into(),
        ..Default::default()
    };
    let rows = sqlx::query(
        "SELECT channel, outcome, CAST(COUNT(*) AS BIGINT) AS n, \
         CAST(SUM(CASE WHEN auto_fix IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS fixed \
         FROM recon_items WHERE recon_date = $1 GROUP BY channel, outcome ORDER BY channel, outcome",
    )
    .bind(date)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let channel: String = row.get("channel");
        let n = row.get::<i64, _>("n") as u64;
        r.counts
            .entry(channel.clone())
            .or_default()
            .insert(row.get("outcome"), n);
        *r.auto_fixed.entry(channel).or_default() += row.get::<i64, _>("fixed") as u64;
    }
    let cases = sqlx::query(
        "SELECT id, channel, order_no, outcome, our_status, our_amount, their_status, their_amount, evidence \
         FROM recon_items WHERE recon_date = $1 AND case_status = 'open' ORDER BY channel, order_no",
    )
    .bind(date)
    .fetch_all(&mut *conn)
    .await?;
    for c in cases {
        r.open_cases.push(Case {
            id: c.get("id"),
            channel: c.get("channel"),
            order_no: c.get("order_no"),
            outcome: c.get("outcome"),
            our_status: c.get("our_status"),
            our_amount: c.get::<Option<i64>, _>("our_amount").map(from_minor),
            their_status: c.get("their_status"),
            their_amount: c.get::<Option<i64>, _>("their_amount").map(from_minor),
            evidence: serde_json::from_str(&c.get::<String, _>("evidence")).unwrap_or_default(),
        });
    }
    Ok(r)
}

impl ReconReport {
    /// A plain table for the terminal.
    pub fn table(&self) -> String {
        let mut out = format!("reconciliation {}\n", self.date);
        out.push_str(&format!(
            "{:<10} {:<16} {:>6}\n",
            "channel", "outcome", "count"
        ));
        for (ch, outcomes) in &self.counts {
            for (o, n) in outcomes {
                out.push_str(&format!("{ch:<10} {o:<16} {n:>6}\n"));
            }
            let fixed = self.auto_fixed.get(ch).copied().unwrap_or(0);
            out.push_str(&format!("{ch:<10} {:<16} {fixed:>6}\n", "(auto-fixed)"));
        }
        out.push_str(&format!("\nopen cases: {}\n", self.open_cases.len()));
        let show = |v: &Option<Decimal>| v.map_or("-".to_string(), |d| d.to_string());
        for c in &self.open_cases {
            out.push_str(&format!(
                "#{} {} {} {}: ours {} {} / theirs {} {}\n  evidence {}\n",
                c.id,
                c.channel,
                c.order_no,
                c.outcome,
                c.our_status.as_deref().unwrap_or("-"),
                show(&c.our_amount),
                c.their_status.as_deref().unwrap_or("-"),
                show(&c.their_amount),
                c.evidence
            ));
        }
        out
    }
}

/// Reconciliation cases still waiting for a person, over every day.
pub async fn open_case_count(conn: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "SELECT COUNT(*) FROM recon_items WHERE case_status = '{}'",
        crate::domain::status::CaseStatus::Open.as_str()
    );
    sqlx::query_scalar(&sql).fetch_one(&mut *conn).await
}
