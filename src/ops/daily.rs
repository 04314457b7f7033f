//! `repayd report daily`: the day's collections, success rates, buckets and recon cases, as
//! CSV and as a chart.
//!
//! Every figure is per channel and overall (`channel = all`), and per currency: amounts of
//! different currencies are never added. Collections and success rates
//! count the attempts whose local date is the day; the delinquency buckets are as of the end
//! of the day (payments posted after it do not count, so a past day's report stays the same;
//! penalties and write-offs are taken as stored now); recon figures are the items of that
//! reconciliation date. Aggregation runs in SQL; the one per-installment pass (buckets)
//! streams its rows and keeps one loan at a time.

use crate::domain::policy::PolicySet;
use crate::domain::status::AttemptStatus;
use crate::domain::{bucket_for, days_past_due, from_minor, local_to_utc};
use crate::store::Db;
use chrono::NaiveDate;
use futures::TryStreamExt;
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DailyError {
    #[error("daily report: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Csv { path: String, source: csv::Error },
}

/// One figure of the report. `count` is attempts, loans or recon items depending on the
/// section; `succeeded` and `rate` only apply to attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyRow {
    pub section: &'static str,
    pub channel: String,
    /// The currency of `amount` (and of the attempts or loans counted). `""` for recon items
    /// of orders we do not know, whose currency the statement does not say.
    pub currency: String,
    pub key: String,
    pub count: i64,
    pub succeeded: Option<i64>,
    pub amount: Option<Decimal>,
    /// Succeeded ÷ decided (succeeded or failed) attempts.
    pub rate: Option<Decimal>,
}

pub const COLLECTIONS: &str = "collections";
pub const BY_KIND: &str = "success_by_kind";
pub const BY_STEP: &str = "success_by_ladder_step";
pub const BUCKETS: &str = "delinquency_bucket";
pub const RECON: &str = "recon";
pub const ALL: &str = "all";

/// Where the report was written.
#[derive(Debug, Clone, Serialize)]
pub struct DailyFiles {
    pub csv: PathBuf,
    pub svg: PathBuf,
    pub rows: usize,
}

/// Compute the day's figures and write `daily-D.csv` and `daily-D.svg` into `out`.
#[tracing::instrument(skip(db, policies))]
pub async fn write_daily(
    db: &Db,
    policies: &PolicySet,
    date: NaiveDate,
    out: &Path,
) -> Result<DailyFiles, DailyError> {
    let mut conn = db.pool.acquire().await?;
    let rows = daily_rows(&mut conn, policies, date).await?;
    std::fs::create_dir_all(out).map_err(|source| DailyError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let csv = out.join(format!("daily-{date}.csv"));
    write_csv(&csv, date, &rows)?;
    let svg = out.join(format!("daily-{date}.svg"));
    std::fs::write(&svg, render_svg(date, &rows)).map_err(|source| DailyError::Io {
        path: svg.display().to_string(),
        source,
    })?;
    Ok(DailyFiles {
        csv,
        svg,
        rows: rows.len(),
    })
}

/// Every figure of the day, sections in a fixed order, channels sorted with `all` last.
pub async fn daily_rows(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    date: NaiveDate,
) -> Result<Vec<DailyRow>, DailyError> {
    let mut rows = attempt_rows(conn, date).await?;
    rows.extend(bucket_rows(conn, policies, date).await?);
    rows.extend(recon_rows(conn, date).await?);
    Ok(rows)
}

/// Attempts of a (channel, key): all, decided, succeeded, collected.
#[derive(Default, Clone, Copy)]
struct Tally {
    attempts: i64,
    decided: i64,
    succeeded: i64,
    collected: i64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.attempts += o.attempts;
        self.decided += o.decided;
        self.succeeded += o.succeeded;
        self.collected += o.collected;
    }

    fn rate(&self) -> Option<Decimal> {
        (self.decided > 0)
            .then(|| (Decimal::from(self.succeeded) / Decimal::from(self.decided)).round_dp(4))
    }
}

/// (channel, currency, key): every figure is kept per currency.
type Key = (String, String, String);
type Tallies = BTreeMap<Key, Tally>;

/// Per (channel, currency, key) and per (all, currency, key).
fn tally(t: &mut Tallies, channel: &str, currency: &str, key: &str, x: &Tally) {
    for c in [channel, ALL] {
        t.entry((c.to_string(), currency.to_string(), key.to_string()))
            .or_default()
            .add(x);
    }
}

async fn attempt_rows(
    conn: &mut AnyConnection,
    date: NaiveDate,
) -> Result<Vec<DailyRow>, DailyError> {
    let groups = sqlx::query(
        "SELECT a.channel, l.currency, a.kind, a.ladder_step, a.status, COUNT(*) AS n, \
         CAST(SUM(a.amount) AS BIGINT) AS amount FROM attempts a JOIN loans l ON l.id = a.loan_id \
         WHERE a.local_date = $1 GROUP BY a.channel, l.currency, a.kind, a.ladder_step, a.status",
    )
    .bind(date.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let (mut total, mut kinds, mut steps) = (Tallies::new(), Tallies::new(), Tallies::new());
    for g in groups {
        let status: String = g.get("status");
        let n: i64 = g.get("n");
        let ok = status == AttemptStatus::Succeeded.as_str();
        let t = Tally {
            attempts: n,
            decided: if ok || status == AttemptStatus::Failed.as_str() {
                n
            } else {
                0
            },
            succeeded: if ok { n } else { 0 },
            collected: if ok { g.get("amount") } else { 0 },
        };
        let (channel, cur): (String, String) = (g.get("channel"), g.get("currency"));
        tally(&mut total, &channel, &cur, "succeeded", &t);
        tally(&mut kinds, &channel, &cur, &g.get::<String, _>("kind"), &t);
        let step = format!("step {}", g.get::<i64, _>("ladder_step") + 1);
        tally(&mut steps, &channel, &cur, &step, &t);
    }
    let mut rows: Vec<DailyRow> = ordered(total)
        .map(|((channel, currency, key), t)| DailyRow {
            section: COLLECTIONS,
            channel,
            currency,
            key,
            count: t.succeeded,
            succeeded: Some(t.succeeded),
            amount: Some(from_minor(t.collected)),
            rate: None,
        })
        .collect();
    for (section, t) in [(BY_KIND, kinds), (BY_STEP, steps)] {
        rows.extend(ordered(t).map(|((channel, currency, key), t)| DailyRow {
            section,
            channel,
            currency,
            key,
            count: t.attempts,
            succeeded: Some(t.succeeded),
            amount: Some(from_minor(t.collected)),
            rate: t.rate(),
        }));
    }
    Ok(rows)
}

/// Channels in name order with `all` last.
fn ordered<T>(m: BTreeMap<Key, T>) -> impl Iterator<Item = (Key, T)> {
    let (all, mut each): (Vec<_>, Vec<_>) = m.into_iter().partition(|((c, _, _), _)| c == ALL);
    each.extend(all);
    each.into_iter()
}

/// One loan's installments due by the day, as the stream brings them.
struct LoanAcc {
    id: String,
    policy: String,
    channel: String,
    currency: String,
    oldest_unpaid: Option<NaiveDate>,
    owed: i64,
}

/// Loans past due at the end of `date` and what they owed then, by bucket and channel.
async fn bucket_rows(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    date: NaiveDate,
) -> Result<Vec<DailyRow>, DailyError> {
    let zones: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tz FROM loans")
        .fetch_all(&mut *conn)
        .await?;
    let mut out: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    let next_day = date.succ_opt().unwrap_or(date);
    for zone in zones {
        let tz = crate::store::decode::zone(&zone)?;
        let end = local_to_utc(next_day, chrono::NaiveTime::MIN, tz).timestamp_millis();
        let mut stream = sqlx::query(
            "SELECT i.loan_id, l.policy, l.currency, \
               (SELECT m.channel FROM mandates m WHERE m.loan_id = l.id ORDER BY m.priority LIMIT 1) AS channel, \
               i.due_date, CAST(i.principal + i.interest + i.fee + i.penalty - i.wo_principal - i.wo_interest \
                 - i.wo_fee - i.wo_penalty AS BIGINT) AS due, \
               CAST(COALESCE(SUM(CASE WHEN e.posted_at < $2 AND e.kind IN ('repayment','reversal') \
                 AND jl.account IN ('1310','4100','4200','4300') THEN jl.credit - jl.debit ELSE 0 END),0) AS BIGINT) AS paid \
             FROM installments i JOIN loans l ON l.id = i.loan_id \
             LEFT JOIN journal_lines jl ON jl.loan_id = i.loan_id AND jl.seq = i.seq \
             LEFT JOIN journal_entries e ON e.id = jl.entry_id \
             WHERE l.tz = $1 AND i.due_date <= $3 \
             GROUP BY i.loan_id, i.seq, l.id, l.policy, l.currency, i.due_date, i.principal, i.interest, i.fee, i.penalty, \
               i.wo_principal, i.wo_interest, i.wo_fee, i.wo_penalty \
             ORDER BY i.loan_id",
        )
        .bind(&zone)
        .bind(end)
        .bind(date.to_string())
        .persistent(false)
        .fetch(&mut *conn);
        let mut acc: Option<LoanAcc> = None;
        while let Some(r) = stream.try_next().await? {
            let id: String = r.get("loan_id");
            if acc.as_ref().map(|a| &a.id) != Some(&id) {
                close_loan(acc.take(), policies, date, &mut out);
                acc = Some(LoanAcc {
                    id,
                    policy: r.get("policy"),
                    channel: r
                        .get::<Option<String>, _>("channel")
                        .unwrap_or_else(|| "none".into()),
                    currency: r.get("currency"),
                    oldest_unpaid: None,
                    owed: 0,
                });
            }
            let a = acc.as_mut().expect("set above");
            let owed = r.get::<i64, _>("due") - r.get::<i64, _>("paid");
            if owed > 0 {
                a.owed += owed;
                let due =
                    NaiveDate::parse_from_str(&r.get::<String, _>("due_date"), "%Y-%m-%d").ok();
                a.oldest_unpaid = a.oldest_unpaid.min(due).or(due);
            }
        }
        close_loan(acc, policies, date, &mut out);
    }
    Ok(ordered(out)
        .map(|((channel, currency, key), (loans, owed))| DailyRow {
            section: BUCKETS,
            channel,
            currency,
            key,
            count: loans,
            succeeded: None,
            amount: Some(from_minor(owed)),
            rate: None,
        })
        .collect())
}

fn close_loan(
    acc: Option<LoanAcc>,
    policies: &PolicySet,
    date: NaiveDate,
    out: &mut BTreeMap<Key, (i64, i64)>,
) {
    let Some(a) = acc else { return };
    let dpd = days_past_due(a.oldest_unpaid, date);
    if dpd == 0 {
        return;
    }
    let bucket = bucket_for(
        dpd,
        &crate::store::reports::policy_buckets(policies, &a.policy),
    )
    .unwrap_or("unbucketed")
    .to_string();
    for channel in [a.channel, ALL.to_string()] {
        let e = out
            .entry((channel, a.currency.clone(), bucket.clone()))
            .or_default();
        e.0 += 1;
        e.1 += a.owed;
    }
}

/// Recon items of the day by outcome, and the cases still open.
async fn recon_rows(
    conn: &mut AnyConnection,
    date: NaiveDate,
) -> Result<Vec<DailyRow>, DailyError> {
    let groups = sqlx::query(
        "SELECT r.channel, COALESCE(l.currency, '') AS currency, r.outcome, COUNT(*) AS n, \
           CAST(SUM(CASE WHEN r.case_status = 'open' THEN 1 ELSE 0 END) AS BIGINT) AS open, \
           CAST(COALESCE(SUM(COALESCE(r.their_amount, r.our_amount, 0)),0) AS BIGINT) AS amount \
         FROM recon_items r LEFT JOIN attempts a ON a.id = r.attempt_id \
         LEFT JOIN loans l ON l.id = a.loan_id \
         WHERE r.recon_date = $1 GROUP BY r.channel, COALESCE(l.currency, ''), r.outcome",
    )
    .bind(date.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut t: BTreeMap<Key, (i64, i64)> = BTreeMap::new();
    for g in groups {
        let (channel, cur): (String, String) = (g.get("channel"), g.get("currency"));
        let (n, open, amount): (i64, i64, i64) = (g.get("n"), g.get("open"), g.get("amount"));
        for c in [channel.clone(), ALL.to_string()] {
            let e = t
                .entry((c.clone(), cur.clone(), g.get("outcome")))
                .or_default();
            e.0 += n;
            e.1 += amount;
            let o = t.entry((c, cur.clone(), "open cases".into())).or_default();
            o.0 += open;
        }
    }
    Ok(ordered(t)
        .map(|((channel, currency, key), (n, amount))| DailyRow {
            section: RECON,
            channel,
            currency,
            amount: (key != "open cases").then(|| from_minor(amount)),
            key,
            count: n,
            succeeded: None,
            rate: None,
        })
        .collect())
}

fn write_csv(path: &Path, date: NaiveDate, rows: &[DailyRow]) -> Result<(), DailyError> {
    let err = |source| DailyError::Csv {
        path: path.display().to_string(),
        source,
    };
    let mut w = csv::Writer::from_path(path).map_err(err)?;
    w.write_record([
        "date",
        "section",
        "channel",
        "currency",
        "key",
        "count",
        "succeeded",
        "amount",
        "rate",
    ])
    .map_err(err)?;
    let opt = |v: Option<String>| v.unwrap_or_default();
    for r in rows {
        w.write_record([
            date.to_string(),
            r.section.to_string(),
            r.channel.clone(),
            r.currency.clone(),
            r.key.clone(),
            r.count.to_string(),
            opt(r.succeeded.map(|s| s.to_string())),
            opt(r.amount.map(|a| a.to_string())),
            opt(r.rate.map(|x| format!("{x:.4}"))),
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|source| DailyError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One bar of a panel: its label, its length as a share of the panel's longest, and the
/// value written after it.
struct Bar {
    label: String,
    share: f64,
    value: String,
}

const WIDTH: f64 = 900.0;
const LABEL_W: f64 = 230.0;
const BAR_W: f64 = 420.0;
const ROW_H: f64 = 22.0;
const COLORS: [&str; 5] = ["#2f6db5", "#3a9a5b", "#c98a1b", "#b5412f", "#7a4fb0"];

/// Bars sized by `value` relative to the largest of their group (`(group, label, value,
/// text)`): amounts are grouped by currency, so a CNY bar is never measured against GBP.
fn scaled(items: Vec<(String, String, Decimal, String)>) -> Vec<Bar> {
    let mut max: BTreeMap<String, Decimal> = BTreeMap::new();
    for (group, _, v, _) in &items {
        let m = max.entry(group.clone()).or_default();
        *m = (*m).max(*v);
    }
    items
        .into_iter()
        .map(|(group, label, v, value)| (max[&group], label, v, value))
        .map(|(max, label, v, value)| Bar {
            label,
            share: if max > Decimal::ZERO {
                (v / max).round_dp(4).to_string().parse().unwrap_or(0.0)
            } else {
                0.0
            },
            value,
        })
        .collect()
}

fn pct(rate: Option<Decimal>) -> String {
    rate.map_or("–".into(), |r| {
        format!("{}%", (r * Decimal::from(100)).round_dp(1))
    })
}

/// The panels of the chart, built from the rows.
fn panels(rows: &[DailyRow]) -> Vec<(String, Vec<Bar>)> {
    let of = |s: &'static str| rows.iter().filter(move |r| r.section == s);
    let cur = |r: &DailyRow| {
        if r.currency.is_empty() {
            "?".to_string()
        } else {
            r.currency.clone()
        }
    };
    let label = |r: &DailyRow| {
        if r.channel == ALL {
            format!("{} (all) {}", r.key, cur(r))
        } else {
            format!("{} · {} {}", r.key, r.channel, cur(r))
        }
    };
    let collections = scaled(
        of(COLLECTIONS)
            .map(|r| {
                let amount = r.amount.unwrap_or_default();
                let channel = if r.channel == ALL {
                    "all channels"
                } else {
                    &r.channel
                };
                (
                    cur(r),
                    format!("{channel} {}", cur(r)),
                    amount,
                    format!("{} {amount} ({} debits)", cur(r), r.count),
                )
            })
            .collect(),
    );
    let rates = |s: &'static str| {
        of(s)
            .map(|r| Bar {
                label: label(r),
                share: r.rate.map_or(0.0, |x| x.to_string().parse().unwrap_or(0.0)),
                value: format!(
                    "{} · {} succeeded of {} tried",
                    pct(r.rate),
                    r.succeeded.unwrap_or(0),
                    r.count
                ),
            })
            .collect::<Vec<_>>()
    };
    let buckets = scaled(
        of(BUCKETS)
            .map(|r| {
                let a = r.amount.unwrap_or_default();
                (
                    cur(r),
                    label(r),
                    a,
                    format!("{} {a} ({} loans)", cur(r), r.count),
                )
            })
            .collect(),
    );
    let recon = scaled(
        of(RECON)
            .map(|r| {
                let n = Decimal::from(r.count);
                (String::new(), label(r), n, r.count.to_string())
            })
            .collect(),
    );
    vec![
        (
            "Collections of the day (succeeded debits)".into(),
            collections,
        ),
        ("Success rate by attempt kind".into(), rates(BY_KIND)),
        ("Success rate by ladder step".into(), rates(BY_STEP)),
        ("Owed by delinquency bucket, end of day".into(), buckets),
        (
            "Reconciliation of the day: items by outcome, open cases".into(),
            recon,
        ),
    ]
}

/// A readable bar chart of the day as a standalone SVG (no fonts or scripts needed).
pub fn render_svg(date: NaiveDate, rows: &[DailyRow]) -> String {
    let panels = panels(rows);
    let mut body = String::new();
    let mut y = 56.0;
    for (i, (title, bars)) in panels.iter().enumerate() {
        let _ = writeln!(
            body,
            r#"<text x="20" y="{y}" font-size="16" font-weight="bold">{}</text>"#,
            esc(title)
        );
        y += 16.0;
        if bars.is_empty() {
            y += ROW_H;
            let _ = writeln!(
                body,
                r##"<text x="{LABEL_W}" y="{}" font-size="13" fill="#777">nothing this day</text>"##,
                y - 6.0
            );
        }
        let track = title.starts_with("Success rate");
        for b in bars {
            y += ROW_H;
            if track {
                let _ = writeln!(
                    body,
                    r##"<rect x="{LABEL_W}" y="{}" width="{BAR_W}" height="{}" fill="#eeeeee"/>"##,
                    y - ROW_H + 4.0,
                    ROW_H - 6.0
                );
            }
            let w = (b.share.clamp(0.0, 1.0) * BAR_W).max(1.0);
            let _ = writeln!(
                body,
                r#"<text x="{}" y="{}" font-size="13" text-anchor="end">{}</text><rect x="{LABEL_W}" y="{}" width="{w:.1}" height="{}" fill="{}"/><text x="{}" y="{}" font-size="12">{}</text>"#,
                LABEL_W - 8.0,
                y - 6.0,
                esc(&b.label),
                y - ROW_H + 4.0,
                ROW_H - 6.0,
                COLORS[i % COLORS.len()],
                LABEL_W + if track { BAR_W } else { w } + 6.0,
                y - 6.0,
                esc(&b.value)
            );
        }
        y += 30.0;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" font-family="DejaVu Sans, Arial, Helvetica, sans-serif">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="20" y="30" font-size="20" font-weight="bold">repayd daily report {date}</text>
{body}</svg>
"##,
        h = y
    )
}
