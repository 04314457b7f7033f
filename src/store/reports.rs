//! Read models for people: a loan's plan and balances, its agenda, attempts, and portfolio
//! summaries. Account and phone numbers come out masked.

use crate::domain::pii::{mask_email, mask_phone};
use crate::domain::policy::PolicySet;
use crate::domain::status::InstallmentStatus;
use crate::domain::{bucket_for, days_past_due, from_minor, Bucket};
use crate::store::ledger::{trial_balance, TrialBalance};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstallmentView {
    pub seq: u32,
    pub due_date: String,
    /// penalty, fee, interest, principal
    #[schema(value_type = Vec<String>)]
    pub due: [Decimal; 4],
    #[schema(value_type = Vec<String>)]
    pub paid: [Decimal; 4],
    /// penalty, fee, interest, principal written off
    #[schema(value_type = Vec<String>)]
    pub written_off: [Decimal; 4],
    #[schema(value_type = String)]
    pub outstanding: Decimal,
    pub status: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MandateView {
    pub id: i64,
    pub priority: u32,
    pub channel: String,
    pub account: String,
    pub status: String,
    pub status_code: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LedgerLineView {
    pub entry_id: i64,
    pub kind: String,
    pub account: String,
    pub seq: Option<u32>,
    pub component: Option<String>,
    #[schema(value_type = String)]
    pub debit: Decimal,
    #[schema(value_type = String)]
    pub credit: Decimal,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

/// The delinquency buckets of `policy` (none if the policy is unknown).
pub fn policy_buckets(policies: &PolicySet, policy: &str) -> Vec<Bucket> {
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
    let tz = crate::store::decode::zone(&l.get::<String, _>("tz"))?;
    let today = crate::domain::local_date(now, tz);
    let installments = installment_views(conn, id).await?;
    let oldest = installments
        .iter()
        .filter(|i| i.status != InstallmentStatus::Paid.as_str())
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
        bucket: bucket_for(dpd, &policy_buckets(policies, &policy)).map(str::to_string),
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
    let sql = format!(
        "SELECT seq, due_date, penalty, fee, interest, principal, paid_penalty, paid_fee, paid_interest, \
         paid_principal, wo_penalty, wo_fee, wo_interest, wo_principal, status, attempts, \
         CAST({owed} AS BIGINT) AS owed FROM installments i WHERE loan_id = $1 ORDER BY seq",
        owed = crate::store::owed::owed("i"),
    );
    let rows = sqlx::query(&sql).bind(id).fetch_all(&mut *conn).await?;
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
            let written_off = [
                m("wo_penalty"),
                m("wo_fee"),
                m("wo_interest"),
                m("wo_principal"),
            ];
            let outstanding = m("owed");
            let stored: String = r.get("status");
            let status = if !matches!(stored.as_str(), "paid" | "written_off")
                && paid.iter().any(|p| !p.is_zero())
            {
                format!("{stored}, partly paid")
            } else {
                stored
            };
            InstallmentView {
                seq: r.get::<i64, _>("seq") as u32,
                due_date: r.get("due_date"),
                due,
                paid,
                written_off,
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
        "SELECT id, priority, channel, account_masked, status, status_code FROM mandates WHERE loan_id = $1 ORDER BY priority",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| MandateView {
            id: r.get("id"),
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    let Some(tz) = tz else {
        return Ok(Vec::new());
    };
    let tz = crate::store::decode::zone(&tz)?;
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    pub id: i64,
    pub loan_id: String,
    pub seq: u32,
    pub channel: String,
    pub account: String,
    pub order_no: String,
    pub kind: String,
    pub ladder_step: u32,
    #[schema(value_type = String)]
    pub amount: Decimal,
    /// The loan's currency: `amount` is in it.
    pub currency: String,
    pub status: String,
    pub code: Option<String>,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// When its status last changed.
    pub updated_at: DateTime<Utc>,
    /// Who asked for it (manual attempts).
    pub requested_by: Option<String>,
}

/// Attempts, newest first, optionally for one loan.
pub async fn attempts(
    conn: &mut AnyConnection,
    loan: Option<&str>,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let filter = AttemptFilter {
        loan_id: loan.map(str::to_string),
        ..Default::default()
    };
    attempts_page(conn, &filter, None, limit).await
}

/// Filters of attempt lists and the live feed. Every value is bound as a parameter.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    pub loan_id: Option<String>,
    pub channel: Option<String>,
    /// early, due, overdue, payday, manual
    pub kind: Option<String>,
    /// submitted, succeeded, failed, unknown
    pub status: Option<String>,
    /// The channel's failure code.
    pub code: Option<String>,
    /// Made at or after (epoch ms).
    pub from_ms: Option<i64>,
    /// Made before (epoch ms).
    pub to_ms: Option<i64>,
}

/// A SQL condition list with its bound values, numbered `$1…` in order.
#[derive(Default)]
struct Where {
    conds: Vec<String>,
    args: Vec<Arg>,
}

enum Arg {
    Text(String),
    Int(i64),
}

impl Where {
    /// Add a condition; `?` in `cond` stands for the next placeholder.
    fn push(&mut self, cond: &str, arg: Arg) {
        self.args.push(arg);
        self.conds
            .push(cond.replace('?', &format!("${}", self.args.len())));
    }

    fn text(&mut self, cond: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.push(cond, Arg::Text(v.clone()));
        }
    }

    fn int(&mut self, cond: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.push(cond, Arg::Int(v));
        }
    }

    fn sql(&self) -> String {
        if self.conds.is_empty() {
            "1 = 1".into()
        } else {
            self.conds.join(" AND ")
        }
    }

    fn next(&self) -> usize {
        self.args.len() + 1
    }

    fn bind<'q>(
        &'q self,
        mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }

    /// `{select} WHERE <the conditions> ORDER BY {order} LIMIT {limit}`, every value bound.
    async fn fetch_page(
        &self,
        conn: &mut AnyConnection,
        select: &str,
        order: &str,
        limit: i64,
    ) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
        let sql = format!(
            "{select} WHERE {} ORDER BY {order} LIMIT ${}",
            self.sql(),
            self.next()
        );
        self.bind(sqlx::query(&sql))
            .bind(limit)
            .fetch_all(&mut *conn)
            .await
    }
}

fn attempt_where(f: &AttemptFilter) -> Where {
    let mut w = Where::default();
    w.text("a.loan_id = ?", &f.loan_id);
    w.text("a.channel = ?", &f.channel);
    w.text("a.kind = ?", &f.kind);
    w.text("a.status = ?", &f.status);
    w.text("a.code = ?", &f.code);
    w.int("a.created_at >= ?", f.from_ms);
    w.int("a.created_at < ?", f.to_ms);
    w
}

/// The attempts matching `w`, in `order`, at most `limit`.
async fn fetch_attempts(
    conn: &mut AnyConnection,
    w: Where,
    order: &str,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let select = format!("SELECT {ATTEMPT_COLS} FROM {ATTEMPT_FROM}");
    let rows = w.fetch_page(conn, &select, order, limit).await?;
    Ok(rows.iter().map(attempt_view).collect())
}

const ATTEMPT_COLS: &str = "a.id, a.loan_id, a.seq, a.channel, m.account_masked, a.order_no, \
    a.kind, a.ladder_step, a.amount, l.currency, a.status, a.code, a.created_at, a.updated_at, \
    a.requested_by";

/// Attempts with their mandate (the masked account) and loan (the currency).
const ATTEMPT_FROM: &str =
    "attempts a JOIN mandates m ON m.id = a.mandate_id JOIN loans l ON l.id = a.loan_id";

fn attempt_view(r: &sqlx::any::AnyRow) -> AttemptView {
    let ms = |c: &str| DateTime::from_timestamp_millis(r.get(c)).unwrap_or_default();
    AttemptView {
        id: r.get("id"),
        loan_id: r.get("loan_id"),
        seq: r.get::<i64, _>("seq") as u32,
        channel: r.get("channel"),
        account: crate::domain::pii::mask_account(&r.get::<String, _>("account_masked")),
        order_no: r.get("order_no"),
        kind: r.get("kind"),
        ladder_step: r.get::<i64, _>("ladder_step") as u32,
        amount: from_minor(r.get("amount")),
        currency: r.get("currency"),
        status: r.get("status"),
        code: r.get("code"),
        at: ms("created_at"),
        updated_at: ms("updated_at"),
        requested_by: r.get("requested_by"),
    }
}

/// One page of attempts, newest first, with ids below `before_id`.
pub async fn attempts_page(
    conn: &mut AnyConnection,
    f: &AttemptFilter,
    before_id: Option<i64>,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let mut w = attempt_where(f);
    w.int("a.id < ?", before_id);
    fetch_attempts(conn, w, "a.id DESC", limit).await
}

/// Attempts changed after `(updated_at, id)`, oldest change first: the live feed.
pub async fn attempts_changed_after(
    conn: &mut AnyConnection,
    f: &AttemptFilter,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let mut w = attempt_where(f);
    w.push("a.updated_at >= ?", Arg::Int(after.0));
    let n = w.next();
    w.push(
        &format!("(a.updated_at > ${} OR a.id > ?)", n - 1),
        Arg::Int(after.1),
    );
    fetch_attempts(conn, w, "a.updated_at, a.id", limit).await
}

/// Attempts whose `updated_at` is within `[from_ms, to_ms]`, newest first (for the feed to
/// find changes committed late, with an `updated_at` behind what it already sent).
pub async fn attempts_changed_within(
    conn: &mut AnyConnection,
    f: &AttemptFilter,
    from_ms: i64,
    to_ms: i64,
    limit: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let mut w = attempt_where(f);
    w.push("a.updated_at >= ?", Arg::Int(from_ms));
    w.push("a.updated_at <= ?", Arg::Int(to_ms));
    fetch_attempts(conn, w, "a.updated_at DESC, a.id DESC", limit).await
}

/// Attempts by id (for the feed to follow attempts it saw open).
pub async fn attempts_by_ids(
    conn: &mut AnyConnection,
    ids: &[i64],
) -> Result<Vec<AttemptView>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {ATTEMPT_COLS} FROM {ATTEMPT_FROM} \
         WHERE a.id IN ({}) ORDER BY a.id",
        crate::store::in_list(conn, 1, ids.len())
    );
    let mut q = sqlx::query(&sql).persistent(false);
    for id in ids {
        q = q.bind(*id);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(attempt_view).collect())
}

/// Attempts still open (submitted or unknown) that changed since `since_ms`.
pub async fn open_attempts_since(
    conn: &mut AnyConnection,
    f: &AttemptFilter,
    since_ms: i64,
) -> Result<Vec<AttemptView>, sqlx::Error> {
    let mut w = attempt_where(f);
    w.push(
        "a.status IN ('submitted', 'unknown') AND a.updated_at >= ?",
        Arg::Int(since_ms),
    );
    let sql = format!(
        "SELECT {ATTEMPT_COLS} FROM {ATTEMPT_FROM} \
         WHERE {} ORDER BY a.id DESC LIMIT 2000",
        w.sql()
    );
    let rows = w.bind(sqlx::query(&sql)).fetch_all(&mut *conn).await?;
    Ok(rows.iter().map(attempt_view).collect())
}

/// The newest `(updated_at, id)` of any attempt: where a live feed starts.
pub async fn attempts_feed_head(conn: &mut AnyConnection) -> Result<(i64, i64), sqlx::Error> {
    let row = sqlx::query(
        "SELECT updated_at, id FROM attempts ORDER BY updated_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map_or((0, 0), |r| (r.get("updated_at"), r.get("id"))))
}

/// A notice, with its recipient masked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NoticeView {
    pub id: i64,
    pub loan_id: String,
    pub seq: Option<u32>,
    pub kind: String,
    pub channel: String,
    pub recipient: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub send_after: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

fn mask_recipient(r: &str) -> String {
    if r.contains('@') {
        mask_email(r)
    } else {
        mask_phone(r)
    }
}

/// A loan's notices, newest first.
pub async fn notices_of(
    conn: &mut AnyConnection,
    id: &str,
) -> Result<Vec<NoticeView>, sqlx::Error> {
    let f = NoticeFilter {
        loan_id: Some(id.to_string()),
        ..NoticeFilter::default()
    };
    notices_page(conn, &f, None, i64::MAX).await
}

/// Filters of the notice list (`repayd notices list`). Every value is bound.
#[derive(Debug, Clone, Default)]
pub struct NoticeFilter {
    pub loan_id: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
}

/// Notices newest first, before the notice id `before` when given, at most `limit`.
pub async fn notices_page(
    conn: &mut AnyConnection,
    f: &NoticeFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<NoticeView>, sqlx::Error> {
    let mut w = Where::default();
    w.text("loan_id = ?", &f.loan_id);
    w.text("status = ?", &f.status);
    w.text("kind = ?", &f.kind);
    w.int("id < ?", before);
    let select = "SELECT id, loan_id, seq, kind, channel, recipient, status, created_at, \
                  send_after, sent_at FROM notices";
    let rows = w.fetch_page(conn, select, "id DESC", limit).await?;
    let ms = |v: i64| DateTime::from_timestamp_millis(v).unwrap_or_default();
    Ok(rows
        .into_iter()
        .map(|r| NoticeView {
            id: r.get("id"),
            loan_id: r.get("loan_id"),
            seq: r.get::<Option<i64>, _>("seq").map(|s| s as u32),
            kind: r.get("kind"),
            channel: r.get("channel"),
            recipient: mask_recipient(&r.get::<String, _>("recipient")),
            status: r.get("status"),
            created_at: ms(r.get("created_at")),
            send_after: ms(r.get("send_after")),
            sent_at: r.get::<Option<i64>, _>("sent_at").map(ms),
        })
        .collect())
}

/// Filters of the loan list. Every value is bound as a parameter.
#[derive(Debug, Clone, Default)]
pub struct LoanFilter {
    pub status: Option<String>,
    pub bucket: Option<String>,
    pub policy: Option<String>,
    /// Loans with a mandate on this channel.
    pub channel: Option<String>,
    pub dpd_min: Option<u32>,
    pub dpd_max: Option<u32>,
    /// Part of the loan id or borrower id.
    pub q: Option<String>,
    /// Only loans parked for a person (`true`), or only those that are not.
    pub parked: Option<bool>,
    /// Only loans with a mandate that failed hard and must be re-bound (`true`), or only
    /// those without one.
    pub needs_rebinding: Option<bool>,
}

/// How the worklist is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkOrder {
    /// Most days past due first (then most overdue, then id).
    #[default]
    DaysPastDue,
    /// Largest overdue amount first (amounts compare within a currency, then by currency).
    Overdue,
    /// Soonest next due date first.
    NextDue,
    Id,
}

/// The most loans the worklist reads for one view: it sorts in memory, so it is bounded; a
/// narrower filter shows the rest.
pub const WORKLIST_MAX: usize = 5_000;

/// The loans matching `f`, ordered by `order`, at most [`WORKLIST_MAX`]; `true` when more
/// matched than that.
pub async fn worklist(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    f: &LoanFilter,
    order: WorkOrder,
    now: DateTime<Utc>,
) -> Result<(Vec<LoanSummary>, bool), sqlx::Error> {
    let (mut rows, more) = loans_page(conn, policies, f, None, WORKLIST_MAX, now).await?;
    sort_worklist(&mut rows, order);
    Ok((rows, more))
}

/// The order of the worklist; ties fall back to the loan id, so pages are stable.
pub fn sort_worklist(rows: &mut [LoanSummary], order: WorkOrder) {
    use std::cmp::Reverse;
    match order {
        WorkOrder::DaysPastDue => rows.sort_by(|a, b| {
            (
                Reverse(a.days_past_due),
                &a.currency,
                Reverse(a.overdue),
                &a.id,
            )
                .cmp(&(
                    Reverse(b.days_past_due),
                    &b.currency,
                    Reverse(b.overdue),
                    &b.id,
                ))
        }),
        WorkOrder::Overdue => rows.sort_by(|a, b| {
            (&a.currency, Reverse(a.overdue), &a.id).cmp(&(&b.currency, Reverse(b.overdue), &b.id))
        }),
        WorkOrder::NextDue => rows.sort_by(|a, b| {
            (a.next_due.is_none(), a.next_due, &a.id).cmp(&(
                b.next_due.is_none(),
                b.next_due,
                &b.id,
            ))
        }),
        WorkOrder::Id => rows.sort_by(|a, b| a.id.cmp(&b.id)),
    }
}

/// A row of the loan list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LoanSummary {
    pub id: String,
    pub borrower_id: String,
    pub policy: String,
    pub status: String,
    /// How the loan stands today: its status, except that an active loan past due is
    /// `overdue` (so an overdue loan never reads as plain "active").
    pub standing: String,
    pub currency: String,
    pub days_past_due: u32,
    pub bucket: Option<String>,
    /// The earliest unpaid installment due today or later, in the loan's zone.
    pub next_due: Option<NaiveDate>,
    /// What is owed on installments due before today (in `currency`).
    #[schema(value_type = String)]
    pub overdue: Decimal,
    /// What is owed on every unpaid installment (in `currency`).
    #[schema(value_type = String)]
    pub outstanding: Decimal,
    pub paused_until: Option<DateTime<Utc>>,
    /// Parked for a person after its pursuit failed (see `engine::guard`).
    pub parked: bool,
    /// The state of the loan's latest promise to pay, if it has one.
    pub promise: Option<crate::domain::promise::PromiseState>,
}

/// `q` as a LIKE pattern matching it anywhere, its wildcards taken literally.
fn like_pattern(q: &str) -> String {
    let mut out = String::from("%");
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One page of loans in id order after `after_id`. Days past due and buckets depend on each
/// loan's zone and policy, so they are filtered here, reading on until the page is full.
pub async fn loans_page(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    f: &LoanFilter,
    after_id: Option<&str>,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<LoanSummary>, bool), sqlx::Error> {
    let mut out = Vec::new();
    let mut cursor = after_id.map(str::to_string);
    loop {
        let batch = (limit * 4).clamp(50, 1000) as i64;
        let rows = loan_rows(conn, f, cursor.as_deref(), batch).await?;
        let exhausted = (rows.len() as i64) < batch;
        for r in &rows {
            cursor = Some(r.get("id"));
            let s = loan_summary(r, policies, now)?;
            if keep(&s, f) {
                if out.len() == limit {
                    due_dates(conn, &mut out, now).await?;
                    promises(conn, &mut out, now).await?;
                    return Ok((out, true));
                }
                out.push(s);
            }
        }
        if exhausted {
            due_dates(conn, &mut out, now).await?;
            promises(conn, &mut out, now).await?;
            return Ok((out, false));
        }
    }
}

/// The rows of `sql(ids)`, where `ids` is the placeholder list of the page's loan ids.
async fn page_rows(
    conn: &mut AnyConnection,
    page: &[LoanSummary],
    sql: impl FnOnce(&str) -> String,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    if page.is_empty() {
        return Ok(Vec::new());
    }
    let sql = sql(&crate::store::in_list(conn, 1, page.len()));
    let mut q = sqlx::query(&sql).persistent(false);
    for l in page {
        q = q.bind(l.id.clone());
    }
    q.fetch_all(&mut *conn).await
}

fn by_id(page: &mut [LoanSummary]) -> HashMap<String, &mut LoanSummary> {
    page.iter_mut().map(|l| (l.id.clone(), l)).collect()
}

/// The state of each loan's latest promise to pay (kept, open or broken), for the page.
async fn promises(
    conn: &mut AnyConnection,
    page: &mut [LoanSummary],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let rows = page_rows(conn, page, |ids| {
        format!(
            "SELECT n.loan_id, l.tz, n.amount, n.promised_on, {paid} AS paid \
             FROM loan_notes n JOIN loans l ON l.id = n.loan_id \
             WHERE n.kind = 'promise' AND n.loan_id IN ({ids}) \
             AND n.id = (SELECT MAX(m.id) FROM loan_notes m WHERE m.loan_id = n.loan_id AND m.kind = 'promise')",
            paid = crate::store::notes::PAID_SINCE,
        )
    })
    .await?;
    let mut by_id = by_id(page);
    for r in rows {
        let (Some(l), Ok(on)) = (
            by_id.get_mut(&r.get::<String, _>("loan_id")),
            r.get::<String, _>("promised_on").parse::<NaiveDate>(),
        ) else {
            continue;
        };
        let today =
            crate::domain::local_date(now, crate::store::decode::zone(&r.get::<String, _>("tz"))?);
        let (amount, paid) = (from_minor(r.get("amount")), from_minor(r.get("paid")));
        l.promise = Some(crate::domain::promise::promise_state(
            amount, paid, on, today,
        ));
    }
    Ok(())
}

/// The page's next due dates and overdue amounts, from its loans' unpaid installments (one
/// query for the page; "today" is each loan's own local date).
async fn due_dates(
    conn: &mut AnyConnection,
    page: &mut [LoanSummary],
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let rows = page_rows(conn, page, |ids| {
        format!(
            "SELECT i.loan_id, l.tz, i.due_date, CAST({owed} AS BIGINT) AS owed \
             FROM installments i JOIN loans l ON l.id = i.loan_id \
             WHERE {open} AND i.loan_id IN ({ids})",
            owed = crate::store::owed::owed("i"),
            open = crate::store::owed::open("i"),
        )
    })
    .await?;
    let mut by_id = by_id(page);
    for r in rows {
        let Some(l) = by_id.get_mut(&r.get::<String, _>("loan_id")) else {
            continue;
        };
        let today =
            crate::domain::local_date(now, crate::store::decode::zone(&r.get::<String, _>("tz"))?);
        // A date that does not decode belongs to a loan the engine parked for it; the list
        // still shows that loan (marked parked), without a next due date from that row.
        let Ok(due) =
            crate::store::decode::stored_date("due_date", &r.get::<String, _>("due_date"))
        else {
            continue;
        };
        if due < today {
            l.overdue += from_minor(r.get("owed"));
        } else if l.next_due.is_none_or(|d| due < d) {
            l.next_due = Some(due);
        }
    }
    Ok(())
}

/// An active loan past due stands `overdue`; any other keeps its status.
pub fn standing(status: &str, days_past_due: u32) -> &str {
    if status == crate::domain::status::LoanStatus::Active.as_str() && days_past_due > 0 {
        "overdue"
    } else {
        status
    }
}

fn keep(s: &LoanSummary, f: &LoanFilter) -> bool {
    f.bucket
        .as_ref()
        .is_none_or(|b| s.bucket.as_ref() == Some(b))
        && f.dpd_min.is_none_or(|d| s.days_past_due >= d)
        && f.dpd_max.is_none_or(|d| s.days_past_due <= d)
}

async fn loan_rows(
    conn: &mut AnyConnection,
    f: &LoanFilter,
    after: Option<&str>,
    batch: i64,
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let mut w = Where::default();
    w.text("l.id > ?", &after.map(str::to_string));
    w.text("l.status = ?", &f.status);
    w.text("l.policy = ?", &f.policy);
    w.int(
        "(CASE WHEN l.parked_at IS NULL THEN 0 ELSE 1 END) = ?",
        f.parked.map(i64::from),
    );
    w.int(
        "(CASE WHEN EXISTS (SELECT 1 FROM mandates m WHERE m.loan_id = l.id \
         AND m.status = 'invalid') THEN 1 ELSE 0 END) = ?",
        f.needs_rebinding.map(i64::from),
    );
    w.text(
        "EXISTS (SELECT 1 FROM mandates m WHERE m.loan_id = l.id AND m.channel = ?)",
        &f.channel,
    );
    if let Some(q) = &f.q {
        w.push(
            "(LOWER(l.id) LIKE ? ESCAPE '\\' OR LOWER(l.borrower_id) LIKE ? ESCAPE '\\')",
            Arg::Text(like_pattern(q)),
        );
    }
    let sql = format!(
        "SELECT l.id, l.borrower_id, l.policy, l.status, l.tz, l.currency, l.paused_until, l.parked_at, \
         (SELECT MIN(i.due_date) FROM installments i WHERE i.loan_id = l.id AND {open}) AS oldest, \
         (SELECT CAST(COALESCE(SUM({owed}), 0) AS BIGINT) FROM installments i \
           WHERE i.loan_id = l.id AND {open}) AS owed \
         FROM loans l WHERE {} ORDER BY l.id LIMIT ${}",
        w.sql(),
        w.next(),
        owed = crate::store::owed::owed("i"),
        open = crate::store::owed::open("i"),
    );
    w.bind(sqlx::query(&sql))
        .bind(batch)
        .fetch_all(&mut *conn)
        .await
}

fn loan_summary(
    r: &sqlx::any::AnyRow,
    policies: &PolicySet,
    now: DateTime<Utc>,
) -> Result<LoanSummary, sqlx::Error> {
    let tz = crate::store::decode::zone(&r.get::<String, _>("tz"))?;
    let oldest = r
        .get::<Option<String>, _>("oldest")
        .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok());
    let dpd = days_past_due(oldest, crate::domain::local_date(now, tz));
    let policy: String = r.get("policy");
    let status: String = r.get("status");
    Ok(LoanSummary {
        id: r.get("id"),
        borrower_id: r.get("borrower_id"),
        bucket: bucket_for(dpd, &policy_buckets(policies, &policy)).map(str::to_string),
        policy,
        standing: standing(&status, dpd).to_string(),
        status,
        currency: r.get("currency"),
        days_past_due: dpd,
        next_due: None,
        overdue: Decimal::ZERO,
        outstanding: from_minor(r.get("owed")),
        paused_until: r
            .get::<Option<i64>, _>("paused_until")
            .and_then(DateTime::from_timestamp_millis)
            .filter(|t| *t > now),
        parked: r.get::<Option<i64>, _>("parked_at").is_some(),
        promise: None,
    })
}

/// Overdue loans and amounts in one delinquency bucket.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BucketFigures {
    pub bucket: String,
    pub loans: i64,
    #[schema(value_type = String)]
    pub amount: Decimal,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DelinquencyReport {
    /// The date counted; absent means each loan's own today.
    pub as_of: Option<String>,
    pub buckets: Vec<BucketFigures>,
    pub loans: i64,
    #[schema(value_type = String)]
    pub amount: Decimal,
}

/// Loans past due per bucket, today (each loan's local date) or as of the end of a date:
/// installments due before it and not paid by then (paid later counts as unpaid then, for
/// its full amount; partial payments are taken as they are now).
pub async fn delinquency(
    conn: &mut AnyConnection,
    policies: &PolicySet,
    as_of: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> Result<DelinquencyReport, sqlx::Error> {
    let cutoff = as_of.map_or(i64::MAX, |d| {
        (d + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_millis()
    });
    let before = as_of.unwrap_or(now.date_naive()) + chrono::Days::new(1);
    // Paid after the day: it was owed in full then (partial payments are taken as they
    // are now); written off counts as it stands.
    let sql = format!(
        "SELECT i.loan_id, l.policy, l.tz, MIN(i.due_date) AS oldest, \
         CAST(SUM(CASE WHEN i.status = 'paid' THEN {billed} ELSE {owed} END) AS BIGINT) AS owed \
         FROM installments i JOIN loans l ON l.id = i.loan_id \
         WHERE i.due_date < $1 AND ({open} OR i.paid_at >= $2) \
         GROUP BY i.loan_id, l.policy, l.tz",
        billed = crate::store::owed::billed("i"),
        owed = crate::store::owed::owed("i"),
        open = crate::store::owed::open("i"),
    );
    let rows = sqlx::query(&sql)
        .bind(before.to_string())
        .bind(cutoff)
        .fetch_all(&mut *conn)
        .await?;
    let mut by: BTreeMap<String, (i64, Decimal)> = BTreeMap::new();
    for r in rows {
        let tz = crate::store::decode::zone(&r.get::<String, _>("tz"))?;
        let oldest = NaiveDate::parse_from_str(&r.get::<String, _>("oldest"), "%Y-%m-%d").ok();
        let day = as_of.unwrap_or_else(|| crate::domain::local_date(now, tz));
        let dpd = days_past_due(oldest, day);
        if dpd == 0 {
            continue;
        }
        let name = bucket_for(
            dpd,
            &policy_buckets(policies, &r.get::<String, _>("policy")),
        )
        .unwrap_or("unbucketed")
        .to_string();
        let e = by.entry(name).or_default();
        e.0 += 1;
        e.1 += from_minor(r.get("owed"));
    }
    Ok(DelinquencyReport {
        as_of: as_of.map(|d| d.to_string()),
        loans: by.values().map(|v| v.0).sum(),
        amount: by.values().map(|v| v.1).sum(),
        buckets: by
            .into_iter()
            .map(|(bucket, (loans, amount))| BucketFigures {
                bucket,
                loans,
                amount,
            })
            .collect(),
    })
}

/// Portfolio figures as of an instant, for the demo and operators.
#[derive(Debug, Clone, Serialize, Default)]
pub struct PortfolioSummary {
    pub loans: i64,
    pub installments_due: i64,
    pub collected_in_full: i64,
    pub collected_in_steps: i64,
    /// bucket → currency → (loans, amount overdue).
    pub overdue_by_bucket: BTreeMap<String, BTreeMap<String, (i64, Decimal)>>,
    pub loans_in_collections: i64,
    pub attempts: BTreeMap<String, i64>,
    pub notices: BTreeMap<String, i64>,
    /// Money collected by succeeded attempts, per currency.
    pub collected: BTreeMap<String, Decimal>,
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
    let collected = sqlx::query(
        "SELECT l.currency, CAST(COALESCE(SUM(a.amount),0) AS BIGINT) AS amt FROM attempts a \
         JOIN loans l ON l.id = a.loan_id WHERE a.status = 'succeeded' GROUP BY l.currency",
    )
    .fetch_all(&mut *conn)
    .await?;
    s.collected = collected
        .iter()
        .map(|r| (r.get("currency"), from_minor(r.get("amt"))))
        .collect();
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
) -> Result<BTreeMap<String, BTreeMap<String, (i64, Decimal)>>, sqlx::Error> {
    let sql = format!(
        "SELECT i.loan_id, l.policy, l.tz, l.currency, MIN(i.due_date) AS oldest, \
         CAST(SUM({owed}) AS BIGINT) AS owed \
         FROM installments i JOIN loans l ON l.id = i.loan_id \
         WHERE {open} AND i.due_date < $1 GROUP BY i.loan_id, l.policy, l.tz, l.currency",
        owed = crate::store::owed::owed("i"),
        open = crate::store::owed::open("i"),
    );
    let rows = sqlx::query(&sql)
        .bind((now.date_naive() + chrono::Days::new(1)).to_string())
        .fetch_all(&mut *conn)
        .await?;
    let mut out: BTreeMap<String, BTreeMap<String, (i64, Decimal)>> = BTreeMap::new();
    for r in rows {
        let tz = crate::store::decode::zone(&r.get::<String, _>("tz"))?;
        let oldest = NaiveDate::parse_from_str(&r.get::<String, _>("oldest"), "%Y-%m-%d").ok();
        let dpd = days_past_due(oldest, crate::domain::local_date(now, tz));
        if dpd == 0 {
            continue;
        }
        let name = bucket_for(
            dpd,
            &policy_buckets(policies, &r.get::<String, _>("policy")),
        )
        .unwrap_or("unbucketed")
        .to_string();
        let e = out
            .entry(name)
            .or_default()
            .entry(r.get("currency"))
            .or_default();
        e.0 += 1;
        e.1 += from_minor(r.get("owed"));
    }
    Ok(out)
}
