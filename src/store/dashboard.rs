//! The dashboard's read-only queries: today's tiles, delinquency buckets, success rates, the
//! re-binding list, loan search, and a loan's notices and audit log. Phones, emails and
//! accounts come out masked.

use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::policy::PolicySet;
use crate::domain::status::InstallmentStatus;
use crate::domain::{days_past_due, from_minor, local_date};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

/// Amounts per currency (a portfolio may hold several).
pub type Amounts = BTreeMap<String, Decimal>;

/// Which local date counts as "today" for a loan: a fixed date, or the clock's date in the
/// loan's own zone.
#[derive(Debug, Clone, Copy)]
pub enum Today {
    Fixed(NaiveDate),
    Clock(DateTime<Utc>),
}

impl Today {
    fn in_zone(self, tz: &str) -> Result<NaiveDate, sqlx::Error> {
        match self {
            Today::Fixed(d) => Ok(d),
            Today::Clock(now) => Ok(local_date(now, crate::store::decode::zone(tz)?)),
        }
    }
}

/// The zones loans live in, each with its "today".
async fn zone_dates(
    conn: &mut AnyConnection,
    today: Today,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let zones: Vec<String> = sqlx::query_scalar("SELECT DISTINCT tz FROM loans ORDER BY tz")
        .fetch_all(&mut *conn)
        .await?;
    zones
        .into_iter()
        .map(|tz| {
            let d = today.in_zone(&tz)?.to_string();
            Ok((tz, d))
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct Tile {
    pub key: &'static str,
    pub label: &'static str,
    /// What the tile counts, in a sentence (the tile's tooltip).
    pub help: &'static str,
    pub count: i64,
    pub amounts: Amounts,
}

impl Tile {
    fn new(key: &'static str, label: &'static str, help: &'static str) -> Self {
        Tile {
            key,
            label,
            help,
            ..Default::default()
        }
    }

    fn add(&mut self, currency: &str, n: i64, minor: i64) {
        self.count += n;
        *self.amounts.entry(currency.to_string()).or_default() += from_minor(minor);
    }
}

/// A query of one zone's day: `$1` is the zone, `$2` the local date.
async fn zone_rows(
    conn: &mut AnyConnection,
    sql: &str,
    tz: &str,
    date: &str,
) -> Result<Vec<AnyRow>, sqlx::Error> {
    sqlx::query(sql)
        .bind(tz)
        .bind(date)
        .fetch_all(&mut *conn)
        .await
}

const DUE_SQL: &str = "SELECT l.currency, COUNT(*) AS n, \
     CAST(SUM(i.principal + i.interest + i.fee + i.penalty) AS BIGINT) AS amt \
     FROM installments i JOIN loans l ON l.id = i.loan_id \
     WHERE l.tz = $1 AND i.due_date = $2 GROUP BY l.currency";

/// Per installment collected that day, the largest ladder step that succeeded.
const COLLECTED_SQL: &str = "SELECT l.currency, MAX(a.ladder_step) AS step, \
     CAST(SUM(a.amount) AS BIGINT) AS amt, i.status \
     FROM attempts a JOIN loans l ON l.id = a.loan_id \
     JOIN installments i ON i.loan_id = a.loan_id AND i.seq = a.seq \
     WHERE a.status = 'succeeded' AND l.tz = $1 AND a.local_date = $2 \
     GROUP BY l.currency, a.loan_id, a.seq, i.status";

/// Per installment that failed that day and was not collected that day, its worst outcome
/// (2 unknown, 1 hard, 0 soft) and the most that was asked of it. One shortfall stepped down
/// the ladder is one installment, not the sum of its steps.
const FAILED_SQL: &str = "SELECT l.currency, \
     MAX(CASE WHEN a.status = 'unknown' THEN 2 WHEN a.class = 'hard' THEN 1 ELSE 0 END) AS worst, \
     CAST(MAX(a.amount) AS BIGINT) AS amt \
     FROM attempts a JOIN loans l ON l.id = a.loan_id \
     WHERE a.status IN ('failed', 'unknown') AND l.tz = $1 AND a.local_date = $2 \
     AND NOT EXISTS (SELECT 1 FROM attempts s WHERE s.loan_id = a.loan_id AND s.seq = a.seq \
       AND s.status = 'succeeded' AND s.local_date = a.local_date) \
     GROUP BY l.currency, a.loan_id, a.seq";

/// The tiles in order: key, label and what each counts (its tooltip).
const TILES: [(&str, &str, &str); 6] = [
    (
        "due",
        "Due",
        "Installments falling due; their full amounts.",
    ),
    (
        "full",
        "Collected in full",
        "Installments paid by one full-amount debit, whatever their due date; what was collected.",
    ),
    (
        "steps",
        "Collected in steps",
        "Installments collected by smaller ladder steps or in part; what was collected.",
    ),
    (
        "soft",
        "Failed soft",
        "Installments whose debits failed softly and were not collected; the most asked of each.",
    ),
    (
        "hard",
        "Failed hard",
        "Installments with a hard failure (the mandate needs re-binding); the most asked of each.",
    ),
    (
        "unknown",
        "Unknown",
        "Installments with a debit awaiting its answer (queried, never resent).",
    ),
];

/// Today's work, every tile counting installments: due, collected in full or in steps, and
/// failed soft, failed hard or unknown (and not collected that day). Attempts count on their
/// loan's local date. Collected tiles include installments collected early or late, so they
/// can exceed "due"; each tile's `help` says what it counts.
pub async fn today_tiles(conn: &mut AnyConnection, today: Today) -> Result<Vec<Tile>, sqlx::Error> {
    let [mut due, mut full, mut steps, mut soft, mut hard, mut unknown] =
        TILES.map(|(key, label, help)| Tile::new(key, label, help));
    let currency = |r: &AnyRow| r.get::<String, _>("currency");
    for (tz, date) in zone_dates(conn, today).await? {
        for r in zone_rows(conn, DUE_SQL, &tz, &date).await? {
            due.add(&currency(&r), r.get("n"), r.get("amt"));
        }
        // In full: paid by full-amount attempts; in steps: a smaller step, or partly paid.
        for r in zone_rows(conn, COLLECTED_SQL, &tz, &date).await? {
            let paid = r.get::<String, _>("status") == InstallmentStatus::Paid.as_str();
            let tile = if paid && r.get::<i64, _>("step") == 0 {
                &mut full
            } else {
                &mut steps
            };
            tile.add(&currency(&r), 1, r.get("amt"));
        }
        for r in zone_rows(conn, FAILED_SQL, &tz, &date).await? {
            let tile = match r.get::<i64, _>("worst") {
                2 => &mut unknown,
                1 => &mut hard,
                _ => &mut soft,
            };
            tile.add(&currency(&r), 1, r.get("amt"));
        }
    }
    Ok(vec![due, full, steps, soft, hard, unknown])
}

#[derive(Debug, Clone, Serialize)]
pub struct BucketTotal {
    pub name: String,
    /// Where the bucket starts (days past due), for ordering.
    pub from: u32,
    pub loans: i64,
    pub amount: Decimal,
}

/// Per loan of a zone, the oldest unpaid due date before the day and what is owed on them.
fn overdue_sql() -> String {
    format!(
        "SELECT l.policy, l.currency, MIN(i.due_date) AS oldest, \
         CAST(SUM({owed}) AS BIGINT) AS owed \
         FROM installments i JOIN loans l ON l.id = i.loan_id \
         WHERE {open} AND l.tz = $1 AND i.due_date < $2 \
         GROUP BY i.loan_id, l.policy, l.currency",
        owed = crate::store::owed::owed("i"),
        open = crate::store::owed::open("i"),
    )
}

/// Overdue loans and amounts per delinquency bucket (each loan's policy's buckets), per
/// currency, buckets in order of days past due.
pub async fn delinquency(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    today: Today,
) -> Result<BTreeMap<String, Vec<BucketTotal>>, sqlx::Error> {
    let mut out: BTreeMap<String, BTreeMap<String, BucketTotal>> = BTreeMap::new();
    for (tz, date) in zone_dates(conn, today).await? {
        let rows = zone_rows(conn, &overdue_sql(), &tz, &date).await?;
        let day = NaiveDate::parse_from_str(&date, "%Y-%m-%d").unwrap_or_default();
        for r in rows {
            let owed: i64 = r.get("owed");
            let oldest = NaiveDate::parse_from_str(&r.get::<String, _>("oldest"), "%Y-%m-%d").ok();
            let dpd = days_past_due(oldest, day);
            if owed <= 0 || dpd == 0 {
                continue;
            }
            let buckets =
                crate::store::reports::policy_buckets(policies, &r.get::<String, _>("policy"));
            // The first bucket that contains it, as `bucket_for` decides.
            let bucket = buckets.iter().find(|b| b.contains(dpd));
            let (name, from) = bucket.map_or(("unbucketed".to_string(), u32::MAX), |b| {
                (b.name.clone(), b.from)
            });
            let e = out
                .entry(r.get("currency"))
                .or_default()
                .entry(name.clone())
                .or_insert(BucketTotal {
                    name,
                    from,
                    loans: 0,
                    amount: Decimal::ZERO,
                });
            e.loans += 1;
            e.amount += from_minor(owed);
        }
    }
    Ok(out
        .into_iter()
        .map(|(cur, m)| {
            let mut v: Vec<BucketTotal> = m.into_values().collect();
            v.sort_by(|a, b| (a.from, &a.name).cmp(&(b.from, &b.name)));
            (cur, v)
        })
        .collect())
}

/// Settled attempts (succeeded or failed) grouped by one attribute: (key, succeeded, total).
#[derive(Debug, Clone, Copy)]
pub enum RateBy {
    Channel,
    Kind,
    LadderStep,
}

/// The day's success rates (the chosen date, or today in each loan's zone), like the tiles.
pub async fn success_rates(
    conn: &mut AnyConnection,
    by: RateBy,
    today: Today,
) -> Result<Vec<(String, i64, i64)>, sqlx::Error> {
    let key = match by {
        RateBy::Channel => "a.channel",
        RateBy::Kind => "a.kind",
        RateBy::LadderStep => "a.ladder_step",
    };
    let sql = format!(
        "SELECT {key} AS k, CAST(SUM(CASE WHEN a.status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS ok, \
         COUNT(*) AS n FROM attempts a JOIN loans l ON l.id = a.loan_id \
         WHERE a.status IN ('succeeded', 'failed') AND l.tz = $1 AND a.local_date = $2 GROUP BY {key}"
    );
    // Ladder steps sort as numbers (step 10 after step 2), the rest by name.
    let mut out: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
    for (tz, date) in zone_dates(conn, today).await? {
        for r in zone_rows(conn, &sql, &tz, &date).await? {
            let k = match by {
                RateBy::LadderStep => {
                    let step: i64 = r.get("k");
                    (step, step.to_string())
                }
                _ => (0, r.get::<String, _>("k")),
            };
            let e = out.entry(k).or_default();
            e.0 += r.get::<i64, _>("ok");
            e.1 += r.get::<i64, _>("n");
        }
    }
    Ok(out
        .into_iter()
        .map(|((_, k), (ok, n))| (k, ok, n))
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct RebindRow {
    pub loan_id: String,
    pub borrower: String,
    pub priority: i64,
    pub channel: String,
    pub account: String,
    pub code: Option<String>,
    pub failed_at: Option<i64>,
    /// Active mandates the loan still has.
    pub active_left: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParkedRow {
    pub loan_id: String,
    pub borrower: String,
    pub parked_at: Option<i64>,
    pub reason: String,
}

/// Loans parked for a person after their pursuit failed, newest first.
pub async fn parked_loans(conn: &mut AnyConnection) -> Result<Vec<ParkedRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.id, b.name, l.parked_at, l.parked_reason FROM loans l \
         JOIN borrowers b ON b.id = l.borrower_id WHERE l.parked_at IS NOT NULL \
         ORDER BY l.parked_at DESC, l.id LIMIT 500",
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ParkedRow {
            loan_id: r.get("id"),
            borrower: r.get("name"),
            parked_at: r.get("parked_at"),
            reason: r
                .get::<Option<String>, _>("parked_reason")
                .unwrap_or_default(),
        })
        .collect())
}

/// Mandates invalidated by a hard failure: the borrower must re-bind them.
pub async fn needs_rebinding(conn: &mut AnyConnection) -> Result<Vec<RebindRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT m.loan_id, b.name, m.priority, m.channel, m.account_masked, m.status_code, \
         (SELECT MAX(a.updated_at) FROM attempts a WHERE a.mandate_id = m.id AND a.class = 'hard') AS failed_at, \
         (SELECT COUNT(*) FROM mandates o WHERE o.loan_id = m.loan_id AND o.status = 'active') AS active_left \
         FROM mandates m JOIN loans l ON l.id = m.loan_id JOIN borrowers b ON b.id = l.borrower_id \
         WHERE m.status = 'invalid' ORDER BY m.loan_id, m.priority LIMIT 500",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<RebindRow> = rows
        .into_iter()
        .map(|r| RebindRow {
            loan_id: r.get("loan_id"),
            borrower: r.get("name"),
            priority: r.get("priority"),
            channel: r.get("channel"),
            account: crate::domain::pii::mask_account(&r.get::<String, _>("account_masked")),
            code: r.get("status_code"),
            failed_at: r.get("failed_at"),
            active_left: r.get("active_left"),
        })
        .collect();
    out.sort_by(|a, b| b.failed_at.cmp(&a.failed_at));
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct LoanRow {
    pub id: String,
    pub borrower: String,
    pub status: String,
    /// The status, except that an active loan past due stands `overdue`.
    pub standing: String,
    pub days_past_due: u32,
    pub policy: String,
    pub currency: String,
    pub outstanding: Decimal,
    pub next_due: Option<String>,
    pub paused_until: Option<i64>,
}

/// Loans whose id or borrower name contains `q` (any case), optionally of one status.
pub async fn search_loans(
    conn: &mut AnyConnection,
    q: &str,
    status: &str,
    limit: i64,
    today: Today,
) -> Result<Vec<LoanRow>, sqlx::Error> {
    let pattern = format!(
        "%{}%",
        q.trim()
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let sql = format!(
        "SELECT l.id, b.name, l.status, l.policy, l.currency, l.tz, l.paused_until, \
         CAST(COALESCE((SELECT SUM({owed}) FROM installments i WHERE i.loan_id = l.id AND {open}), 0) AS BIGINT) AS outstanding, \
         (SELECT MIN(i.due_date) FROM installments i WHERE i.loan_id = l.id AND {open}) AS next_due \
         FROM loans l JOIN borrowers b ON b.id = l.borrower_id \
         WHERE (LOWER(l.id) LIKE $1 ESCAPE '\\' OR LOWER(b.name) LIKE $1 ESCAPE '\\') \
         AND ($2 = '' OR l.status = $2) ORDER BY l.id LIMIT $3",
        owed = crate::store::owed::owed("i"),
        open = crate::store::owed::open("i"),
    );
    let rows = sqlx::query(&sql)
        .bind(pattern)
        .bind(status)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    rows.into_iter().map(|r| loan_row(&r, today)).collect()
}

/// One row of the loan search: its standing and days past due as of its own today.
fn loan_row(r: &AnyRow, today: Today) -> Result<LoanRow, sqlx::Error> {
    let oldest: Option<String> = r.get("next_due");
    let oldest = oldest.as_deref().and_then(|d| d.parse::<NaiveDate>().ok());
    let dpd = days_past_due(oldest, today.in_zone(&r.get::<String, _>("tz"))?);
    let status: String = r.get("status");
    Ok(LoanRow {
        standing: crate::store::reports::standing(&status, dpd).to_string(),
        days_past_due: dpd,
        id: r.get("id"),
        borrower: r.get("name"),
        status,
        policy: r.get("policy"),
        currency: r.get("currency"),
        outstanding: from_minor(r.get("outstanding")),
        next_due: r.get("next_due"),
        paused_until: r.get("paused_until"),
    })
}

/// Loan statuses present, for the search form.
pub async fn loan_statuses(conn: &mut AnyConnection) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT DISTINCT status FROM loans ORDER BY status")
        .fetch_all(&mut *conn)
        .await
}

#[derive(Debug, Clone, Serialize)]
pub struct PauseState {
    pub paused_until: Option<i64>,
    pub reason: Option<String>,
    /// Parked for a person after its pursuit failed.
    pub parked_at: Option<i64>,
    pub parked_reason: Option<String>,
}

pub async fn pause_state(conn: &mut AnyConnection, id: &str) -> Result<PauseState, sqlx::Error> {
    let r = sqlx::query(
        "SELECT paused_until, pause_reason, parked_at, parked_reason FROM loans WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(PauseState {
        paused_until: r.as_ref().and_then(|r| r.get("paused_until")),
        reason: r.as_ref().and_then(|r| r.get("pause_reason")),
        parked_at: r.as_ref().and_then(|r| r.get("parked_at")),
        parked_reason: r.as_ref().and_then(|r| r.get("parked_reason")),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct NoticeRow {
    pub id: i64,
    pub seq: Option<i64>,
    pub kind: String,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub delivery_status: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
    pub body: String,
}

/// A loan's notices, newest first, recipients masked.
pub async fn notices(conn: &mut AnyConnection, loan: &str) -> Result<Vec<NoticeRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, seq, kind, channel, recipient, status, delivery_status, created_at, sent_at, body \
         FROM notices WHERE loan_id = $1 ORDER BY id DESC LIMIT 200",
    )
    .bind(loan)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let to: String = r.get("recipient");
            NoticeRow {
                id: r.get("id"),
                seq: r.get("seq"),
                kind: r.get("kind"),
                channel: r.get("channel"),
                recipient: if to.contains('@') {
                    mask_email(&to)
                } else {
                    mask_phone(&to)
                },
                status: r.get("status"),
                delivery_status: r.get("delivery_status"),
                created_at: r.get("created_at"),
                sent_at: r.get("sent_at"),
                body: r.get("body"),
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub role: String,
    pub action: String,
    pub reason: Option<String>,
    pub detail: String,
}

/// A loan's audit log, newest first.
pub async fn audit_log(conn: &mut AnyConnection, loan: &str) -> Result<Vec<AuditRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, at, actor, role, action, reason, detail FROM audit_log \
         WHERE loan_id = $1 ORDER BY id DESC LIMIT 200",
    )
    .bind(loan)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AuditRow {
            id: r.get("id"),
            at: r.get("at"),
            actor: r.get("actor"),
            role: r.get("role"),
            action: r.get("action"),
            reason: r.get("reason"),
            detail: r.get("detail"),
        })
        .collect())
}

/// The latest statement day reconciled, if any.
pub async fn latest_recon_date(conn: &mut AnyConnection) -> Result<Option<NaiveDate>, sqlx::Error> {
    let d: Option<String> = sqlx::query_scalar("SELECT MAX(recon_date) FROM recon_items")
        .fetch_one(&mut *conn)
        .await?;
    Ok(d.and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()))
}

/// One loan-local day of one currency: what succeeded attempts collected, and how many of
/// the day's finished attempts (succeeded or failed) succeeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendDay {
    pub day: NaiveDate,
    pub currency: String,
    pub collected: Decimal,
    pub ok: i64,
    pub n: i64,
}

const TREND_SQL: &str = "SELECT a.local_date AS d, l.currency AS c, \
     CAST(SUM(CASE WHEN a.status = 'succeeded' THEN a.amount ELSE 0 END) AS BIGINT) AS paid, \
     CAST(SUM(CASE WHEN a.status = 'succeeded' THEN 1 ELSE 0 END) AS BIGINT) AS ok, \
     COUNT(*) AS n FROM attempts a JOIN loans l ON l.id = a.loan_id \
     WHERE a.status IN ('succeeded', 'failed') AND l.tz = $1 \
     AND a.local_date >= $2 AND a.local_date <= $3 GROUP BY a.local_date, l.currency";

/// The last `days` days up to "today" (each zone's own), day by day and currency by
/// currency, with the last day. Days of several zones with the same date are added up.
pub async fn daily_trend(
    conn: &mut AnyConnection,
    today: Today,
    days: u32,
) -> Result<(NaiveDate, Vec<TrendDay>), sqlx::Error> {
    let mut out: BTreeMap<(NaiveDate, String), TrendDay> = BTreeMap::new();
    let mut last = None;
    for (tz, date) in zone_dates(conn, today).await? {
        let end = trend_date("today", &date)?;
        let start = end - chrono::Days::new(u64::from(days.max(1)) - 1);
        last = last.max(Some(end));
        let rows = sqlx::query(TREND_SQL)
            .bind(tz.as_str())
            .bind(start.to_string())
            .bind(end.to_string())
            .fetch_all(&mut *conn)
            .await?;
        for r in rows {
            let day = trend_date("local_date", &r.get::<String, _>("d"))?;
            let currency: String = r.get("c");
            let e = out.entry((day, currency.clone())).or_insert(TrendDay {
                day,
                currency,
                collected: from_minor(0),
                ok: 0,
                n: 0,
            });
            e.collected += from_minor(r.get("paid"));
            e.ok += r.get::<i64, _>("ok");
            e.n += r.get::<i64, _>("n");
        }
    }
    let last = last.unwrap_or_else(|| match today {
        Today::Fixed(d) => d,
        Today::Clock(now) => now.date_naive(),
    });
    Ok((last, out.into_values().collect()))
}

fn trend_date(column: &'static str, v: &str) -> Result<NaiveDate, sqlx::Error> {
    crate::store::stored_date(column, v).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}
