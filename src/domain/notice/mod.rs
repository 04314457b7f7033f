//! Notices: rendered into an outbox (`store::notices`) in the same transaction as the fact
//! they announce, then delivered at most once (`engine::dispatch`), outside quiet hours and
//! under a per-borrower daily cap, both in the borrower's own time zone. Here: what a notice
//! says, which rows it makes, when a claimed notice may go, and the sink port providers
//! implement.

pub mod templates;

pub use templates::{NoticeContext, TemplateError, Templates};

use crate::domain::loan::LoanState;
use crate::domain::policy::{NoticeChannel, Policy};
use crate::domain::{local_date, local_to_utc, quiet_release, QuietWindow};
use async_trait::async_trait;
use chrono::{DateTime, Days, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use std::collections::HashMap;
use std::sync::Arc;

/// Why a notice is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// Before the due date (T-3, T-1).
    PreDue,
    /// Overdue reminder.
    Overdue,
    /// Collected in full.
    Paid,
    /// Collected in part; the rest will be pursued.
    Partial,
    /// Attempts today failed (soft).
    Failed,
    /// The mandate failed hard: re-bind.
    Rebind,
}

impl NoticeKind {
    pub const ALL: &'static [NoticeKind] = &[
        NoticeKind::PreDue,
        NoticeKind::Overdue,
        NoticeKind::Paid,
        NoticeKind::Partial,
        NoticeKind::Failed,
        NoticeKind::Rebind,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::PreDue => "pre_due",
            NoticeKind::Overdue => "overdue",
            NoticeKind::Paid => "paid",
            NoticeKind::Partial => "partial",
            NoticeKind::Failed => "failed",
            NoticeKind::Rebind => "rebind",
        }
    }
}

/// Facts a notice states.
#[derive(Debug, Clone)]
pub struct NoticeFacts {
    pub seq: Option<u32>,
    pub amount: Decimal,
    pub remaining: Decimal,
    pub due: Option<NaiveDate>,
    pub account_masked: String,
}

/// How notices are worded: the lender's name, the templates and the locale.
#[derive(Clone)]
pub struct NoticeRender {
    pub lender: String,
    pub locale: String,
    pub templates: Arc<Templates>,
}

impl std::fmt::Debug for NoticeRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoticeRender({}, {})", self.lender, self.locale)
    }
}

impl NoticeRender {
    pub fn builtin(lender: &str, locale: &str) -> Self {
        NoticeRender {
            lender: lender.to_string(),
            locale: locale.to_string(),
            templates: Arc::new(Templates::builtin()),
        }
    }

    /// Subject and body of a notice. Every notice names the lender, amount, due date and
    /// masked account (the templates are checked for that when loaded).
    pub fn render(&self, kind: NoticeKind, loan: &LoanState, f: &NoticeFacts) -> (String, String) {
        let ctx = NoticeContext {
            lender: self.lender.clone(),
            borrower_name: loan.borrower_name.clone(),
            loan_id: loan.id.clone(),
            installment: f.seq,
            amount: f.amount.to_string(),
            currency: loan.currency.clone(),
            due_date: f.due.map(|d| d.to_string()).unwrap_or_default(),
            account_masked: f.account_masked.clone(),
            remaining: f.remaining.to_string(),
        };
        self.templates
            .render(kind.as_str(), &self.locale, &ctx)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "template failed; plain text used");
                let body = format!(
                    "[{}] {} {} {} {}, {}",
                    ctx.lender,
                    ctx.loan_id,
                    ctx.amount,
                    ctx.currency,
                    ctx.due_date,
                    ctx.account_masked
                );
                (kind.as_str().to_string(), body)
            })
    }
}

/// The policy's quiet windows.
pub fn quiet_windows(policy: &Policy) -> Vec<QuietWindow> {
    policy
        .notices
        .quiet_hours
        .iter()
        .map(|q| QuietWindow {
            start: q.start,
            end: q.end,
        })
        .collect()
}

/// One outbox row.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub dedupe_key: String,
    pub loan_id: String,
    pub seq: Option<u32>,
    pub borrower_id: String,
    pub kind: NoticeKind,
    pub channel: &'static str,
    pub recipient: String,
    pub tz: Tz,
    pub subject: String,
    pub body: String,
    pub send_after: DateTime<Utc>,
}

/// Outbox rows for one notice, one per channel the policy lists. `key` makes the notice
/// unique: the same key never produces a second notice, whatever restarts happen.
pub fn notice_rows(
    kind: NoticeKind,
    key: &str,
    loan: &LoanState,
    policy: &Policy,
    facts: &NoticeFacts,
    render: &NoticeRender,
    now: DateTime<Utc>,
) -> Vec<NoticeRow> {
    let (subject, body) = render.render(kind, loan, facts);
    let send_after = quiet_release(now, loan.tz, &quiet_windows(policy));
    policy
        .notices
        .channels
        .iter()
        .map(|c| {
            let (channel, recipient) = match c {
                NoticeChannel::Sms => ("sms", loan.phone.clone()),
                NoticeChannel::Email => ("email", loan.email.clone()),
            };
            NoticeRow {
                dedupe_key: format!("{}:{key}:{channel}", kind.as_str()),
                loan_id: loan.id.clone(),
                seq: facts.seq,
                borrower_id: loan.borrower_id.clone(),
                kind,
                channel,
                recipient,
                tz: loan.tz,
                subject: subject.clone(),
                body: body.clone(),
                send_after,
            }
        })
        .collect()
}

/// A notice ready to deliver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub id: i64,
    pub kind: String,
    pub channel: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryError {
    /// Certainly not delivered (or the provider dedupes by message id): try again later.
    Retry(String),
    /// Refused, or the outcome is unknown: never sent again.
    Failed(String),
}

/// Where notices go: the dev log sink, or SMS and email providers.
#[async_trait]
pub trait NoticeSink: Send + Sync {
    /// Deliver one notice; `Ok` carries the provider's id, if any.
    async fn deliver(&self, n: &Outgoing) -> Result<Option<String>, DeliveryError>;
}

/// A claimed notice, as dispatch sees it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub borrower: String,
    pub tz: Tz,
    /// The loan's policy, whose quiet hours and daily cap apply.
    pub policy: String,
    pub out: Outgoing,
}

/// Delivery counts of one dispatch pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DispatchReport {
    pub sent: u64,
    pub retry_later: u64,
    pub held_quiet: u64,
    pub held_cap: u64,
}

/// Split claimed notices into those to send now (with the borrower's local date, which the
/// daily cap counts) and those to hold until an instant: inside quiet hours, until the window
/// ends; over the day's cap, until the next day's first allowed minute. `sent_today` holds
/// what each borrower was already sent per local date, and is counted up as notices go.
pub fn plan_deliveries(
    batch: Vec<Pending>,
    rules: &dyn Fn(&str) -> Option<(Vec<QuietWindow>, u32)>,
    sent_today: &mut HashMap<(String, NaiveDate), i64>,
    now: DateTime<Utc>,
    report: &mut DispatchReport,
) -> (Vec<(Pending, NaiveDate)>, Vec<(i64, i64)>) {
    let mut send = Vec::new();
    let mut hold = Vec::new();
    for p in batch {
        let (windows, cap) = rules(&p.policy).unwrap_or((Vec::new(), u32::MAX));
        let release = quiet_release(now, p.tz, &windows);
        if release > now {
            report.held_quiet += 1;
            hold.push((p.id, release.timestamp_millis()));
            continue;
        }
        let today = local_date(now, p.tz);
        let count = sent_today.entry((p.borrower.clone(), today)).or_insert(0);
        if *count >= cap as i64 {
            report.held_cap += 1;
            let tomorrow = local_to_utc(today + Days::new(1), NaiveTime::MIN, p.tz);
            hold.push((
                p.id,
                quiet_release(tomorrow, p.tz, &windows).timestamp_millis(),
            ));
            continue;
        }
        *count += 1;
        send.push((p, today));
    }
    (send, hold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: i64, borrower: &str) -> Pending {
        Pending {
            id,
            borrower: borrower.into(),
            tz: chrono_tz::Asia::Shanghai,
            policy: "p".into(),
            out: Outgoing {
                id,
                kind: "failed".into(),
                channel: "sms".into(),
                recipient: "13800000000".into(),
                subject: String::new(),
                body: "b".into(),
            },
        }
    }

    #[test]
    fn quiet_hours_hold_and_the_cap_moves_to_the_next_day() {
        use chrono::TimeZone;
        let quiet = vec![QuietWindow {
            start: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            end: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        }];
        let rules = |_: &str| Some((quiet.clone(), 2));
        let night = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2027, 1, 15, 23, 0, 0)
            .unwrap();
        let mut counts = HashMap::new();
        let mut r = DispatchReport::default();
        let (send, hold) = plan_deliveries(
            vec![pending(1, "b")],
            &rules,
            &mut counts,
            night.with_timezone(&Utc),
            &mut r,
        );
        assert!(send.is_empty() && hold.len() == 1 && r.held_quiet == 1);
        let noon = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2027, 1, 15, 12, 0, 0)
            .unwrap();
        let batch = vec![pending(1, "b"), pending(2, "b"), pending(3, "b")];
        let (send, hold) =
            plan_deliveries(batch, &rules, &mut counts, noon.with_timezone(&Utc), &mut r);
        assert_eq!((send.len(), hold.len(), r.held_cap), (2, 1, 1));
        let next = chrono_tz::Asia::Shanghai
            .with_ymd_and_hms(2027, 1, 16, 8, 0, 0)
            .unwrap();
        assert_eq!(
            hold[0].1,
            next.timestamp_millis(),
            "the next day's first allowed minute"
        );
    }
}
