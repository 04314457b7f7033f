//! Read models for people: a loan's plan and balances, its agenda, attempts, and portfolio
//! summaries. Account and phone numbers come out masked.

use crate::domain::{bucket_for, days_past_due, from_minor, Bucket};
use crate::ledger::{trial_balance, TrialBalance};
use crate::pii::{mask_email, mask_phone};
use crate::policy::PolicySet;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct InstallmentView {
    pub seq: u32,
    pub due_date: String,
    pub due: [Decimal; 4],
    pub paid: [Decimal; 4],
    pub outstanding: Decimal,
    pub status: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct MandateView {
    pub priority: u32,
    pub channel: String,
    pub account: String,
    pub status: String,
    pub status_code: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LedgerLineView {
    pub entry_id: i64,
    pub kind: String,
    pub account: String,
    pub seq: Option<u32>,
    pub component: Option<String>,
    pub debit: Decimal,
    pub credit: Decimal,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoanView {
    pub id: String,
    pub borrower: String,
    pub phone: String,
    pub email: String,
    pub currency: String,
    pub timezone: String,
    pub policy: String,
    pub status: String,
    pub days_past_due: u32,
    pub bucket: Option<String>,
    pub mandates: Vec<MandateView>,
    pub installments: Vec<InstallmentView>,
    pub ledger: Vec<LedgerLineView>,
}

fn buckets(policies: &PolicySet, policy: &str) -> Vec<Bucket> {
    policies
        .get(policy)
        .map(|p| {
            p.delinquency
                .buckets
                .iter()
                .map(|b| Bucket {
                    name: b.name.clone(),
                    from: b.from,
                    to: b.to,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A loan with its plan (due, paid, outstanding per installment), mandates and ledger lines.
pub async fn loan_view(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    id: &str,
    now: DateTime<Utc>,
) -> Result<Option<LoanView>, sqlx::Error> {
    let Some(l) = sqlx::query(
        "SELECT l.id, l.currency, l.tz, l.policy, l.status, b.name, b.phone, b.email \
         FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let tz: chrono_tz::Tz = l.get::<String, _>("tz").parse().unwrap_or(chrono_tz::UTC);
    let today = crate::domain::local_date(now, tz);
    let installments = installment_views(conn, id).await?;
    let oldest = installments
        .iter()
        .filter(|i| i.status != "paid")
        .filter_map(|i| NaiveDate::parse_from_str(&i.due_date, "%Y-%m-%d").ok())
        .min();
    let dpd = days_past_due(oldest, today);
    let policy: String = l.get("policy");
    Ok(Some(LoanView {
        id: l.get("id"),
        borrower: l.get("name"),
        phone: mask_phone(&l.get::<String, _>("phone")),
        email: mask_email(&l.get::<String, _>("email")),
        currency: l.get("currency"),
        timezone: tz.name().into(),
        bucket: bucket_for(dpd, &buckets(policies, &policy)).map(str::to_string),
        policy,
        status: l.get("status"),
        days_past_due: dpd,
        mandates: mandate_views(conn, id).await?,
        installments,
        ledger: ledger_lines(conn, id).await?,
    }))
}

async fn installment_views(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<InstallmentView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, due_date, penalty, fee, interest, principal, paid_penalty, paid_fee, paid_interest, \
         paid_principal, status, attempts FROM installments WHERE loan_id = $1 ORDER BY seq",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let m = |c: &str| from_minor(r.get::<i64, _>(c));
            let due = [m("penalty"), m("fee"), m("interest"), m("principal")];
            let paid = [
                m("paid_penalty"),
                m("paid_fee"),
                m("paid_interest"),
                m("paid_principal"),
            ];
            let outstanding = due.iter().sum::<Decimal>() - paid.iter().sum::<Decimal>();
            let stored: String = r.get("status");
            let status = if stored != "paid" && paid.iter().any(|p| !p.is_zero()) {
                format!("{stored}, partly paid")
            } else {
                stored
            };
            InstallmentView {
                seq: r.get::<i64, _>("seq") as u32,
                due_date: r.get("due_date"),
                due,
                paid,
                outstanding,
                status,
                attempts: r.get::<i64, _>("attempts") as u32,
            }
        })
        .collect())
}

async fn mandate_views(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<MandateView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT priority, channel, account_masked, status, status_code FROM mandates WHERE loan_id = $1 ORDER BY priority",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MandateView {
            priority: r.get::<i64, _>("priority") as u32,
            channel: r.get("channel"),
            account: r.get("account_masked"),
            status: r.get("status"),
            status_code: r.get("status_code"),
        })
        .collect())
}

async fn ledger_lines(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<LedgerLineView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT e.id, e.kind, jl.account, jl.seq, jl.component, jl.debit, jl.credit \
         FROM journal_lines jl JOIN journal_entries e ON e.id = jl.entry_id \
         WHERE jl.loan_id = $1 ORDER BY e.id, jl.line_no",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| LedgerLineView {
            entry_id: r.get("id"),
            kind: r.get("kind"),
            account: r.get("account"),
            seq: r.get::<Option<i64>, _>("seq").map(|s| s as u32),
            component: r.get("component"),
            debit: from_minor(r.get("debit")),
            credit: from_minor(r.get("credit")),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionView {
    pub seq: u32,
    pub kind: String,
    pub slot: String,
    pub due_at: DateTime<Utc>,
    pub local: String,
    pub status: String,
    pub note: Option<String>,
}

/// A loan's agenda, in time order, with local times in the loan's zone.
pub async fn plan_view(conn: &mut AnyConnection, id: &str) -> Result<Vec<ActionView>, sqlx::Error> {
    let tz: Option<String> = sqlx::query_scalar("SELECT tz FROM loans WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let tz: chrono_tz::Tz = tz.and_then(|t| t.parse().ok()).unwrap_or(chrono_tz::UTC);
    let rows = sqlx::query(
        "SELECT seq, kind, slot, due_at, status, note FROM actions WHERE loan_id = $1 ORDER BY due_at, id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let at = DateTime::from_timestamp_millis(r.get("due_at")).unwrap_or_default();
            ActionView {
                seq: r.get::<i64, _>("seq") as u32,
                kind: r.get("kind"),
                slot: r.get("slot"),
                due_at: at,
                local: at
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string(),
                status: r.get("status"),
                note: r.get("note"),
            }
        })
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct AttemptView {
    pub id: i64,
    pub loan_id: String,
    pub seq: u32,
    pub channel: String,
    pub account: String,
    pub order_no: String,
    pub kind: String,
    pub ladder_step: u32,
    pub amount: Decimal,
    pub status: String,
    pub code: Option<String>,
    pub at: DateTime<Utc>,
}

/// Attempts, newest first, optionally for one loan.
pub async fn attempts(
    conn: &mut AnyConnection,
    loan: Option<&str>,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT a.id, a.loan_id, a.seq, a.channel, m.account_masked, a.order_no, a.kind, a.ladder_step, \
         a.amount, a.status, a.code, a.created_at FROM attempts a JOIN mandates m ON m.id = a.mandate_id \
         WHERE ($1 = '' OR a.loan_id = $1) ORDER BY a.id DESC LIMIT $2",
    )
    .bind(loan.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| AttemptView {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            seq: r.get::<i64, _>("seq") as u32,
            channel: r.get("channel"),
            account: r.get("account_masked"),
            order_no: r.get("order_no"),
            kind: r.get("kind"),
            ladder_step: r.get::<i64, _>("ladder_step") as u32,
            amount: from_minor(r.get("amount")),
            status: r.get("status"),
            code: r.get("code"),
            at: DateTime::from_timestamp_millis(r.get("created_at")).unwrap_or_default(),
        })
        .collect())
}

/// Portfolio figures as of an instant, for the demo and operators.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PortfolioSummary {
    pub loans: i64,
    pub installments_due: i64,
    pub collected_in_full: i64,
    pub collected_in_steps: i64,
    pub overdue_by_bucket: BTreeMap<String, (i64, Decimal)>,
    pub loans_in_collections: i64,
    pub attempts: BTreeMap<String, i64>,
    pub notices: BTreeMap<String, i64>,
    pub collected: Decimal,
    pub trial_balance: Option<TrialBalance>,
}

pub async fn portfolio_summary(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> Result<PortfolioSummary, sqlx::Error> {
    let today = now.date_naive().to_string();
    let mut s = PortfolioSummary {
        loans: sqlx::query_scalar("SELECT COUNT(*) FROM loans").fetch_one(&mut *conn).await?,
        installments_due: count(conn, "SELECT COUNT(*) FROM installments WHERE due_date <= $1", &today).await?,
        collected_in_full: count(conn, "SELECT COUNT(*) FROM installments WHERE status = 'paid' AND due_date <= $1", &today).await?,
        collected_in_steps: count(
            conn,
            "SELECT COUNT(*) FROM installments i WHERE i.status = 'paid' AND i.due_date <= $1 AND \
             (SELECT COUNT(*) FROM attempts a WHERE a.loan_id = i.loan_id AND a.seq = i.seq AND a.status = 'succeeded') >= 2",
            &today,
        )
        .await?,
        loans_in_collections: sqlx::query_scalar("SELECT COUNT(*) FROM loans WHERE status = 'collections'")
            .fetch_one(&mut *conn)
            .await?,
        ..Default::default()
    };
    s.overdue_by_bucket = overdue_buckets(conn, policies, now).await?;
    s.attempts = counts_by_kind_status(conn, "attempts").await?;
    s.notices = counts_by_kind_status(conn, "notices").await?;
    let collected: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(amount),0) AS BIGINT) FROM attempts WHERE status = 'succeeded'",
    )
    .fetch_one(&mut *conn)
    .await?;
    s.collected = from_minor(collected);
    s.trial_balance = Some(trial_balance(conn).await?);
    Ok(s)
}

/// `kind/status` → count over a table with those two columns.
async fn counts_by_kind_status(
    conn: &mut AnyConnection,
    table: &str,
) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let sql = format!("SELECT kind, status, COUNT(*) AS n FROM {table} GROUP BY kind, status");
    let rows = sqlx::query(&sql).fetch_all(&mut *conn).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let key = format!(
                "{}/{}",
                r.get::<String, _>("kind"),
                r.get::<String, _>("status")
            );
            (key, r.get("n"))
        })
        .collect())
}

async fn count(conn: &mut AnyConnection, sql: &str, arg: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(&mut *conn)
        .await
}

/// Overdue loans and amounts per delinquency bucket (each loan's own policy's buckets).
async fn overdue_buckets(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, (i64, Decimal)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT i.loan_id, l.policy, l.tz, MIN(i.due_date) AS oldest, \
         CAST(SUM(i.principal + i.interest + i.fee + i.penalty - i.paid_principal - i.paid_interest - i.paid_fee - i.paid_penalty) AS BIGINT) AS owed \
         FROM installments i JOIN loans l ON l.id = i.loan_id \
         WHERE i.status <> 'paid' AND i.due_date < $1 GROUP BY i.loan_id, l.policy, l.tz",
    )
    .bind((now.date_naive() + chrono::Days::new(1)).to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut out: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    for r in rows {
        let tz: chrono_tz::Tz = r.get::<String, _>("tz").parse().unwrap_or(chrono_tz::UTC);
        let oldest = NaiveDate::parse_from_str(&r.get::<String, _>("oldest"), "%Y-%m-%d").ok();
        let dpd = days_past_due(oldest, crate::domain::local_date(now, tz));
        if dpd == 0 {
            continue;
        }
        let name = bucket_for(dpd, &buckets(policies, &r.get::<String, _>("policy")))
            .unwrap_or("unbucketed")
            .to_string();
        let e = out.entry(name).or_default();
        e.0 += 1;
        e.1 += from_minor(r.get("owed"));
    }
    Ok(out)
}
