//! In-memory state of the loans a batch works on, loaded with a few set-based queries.

use crate::domain::{from_minor, Outstanding};
use crate::store::{in_list, stored_date, stored_tz};
use chrono::NaiveDate;
use chrono_tz::Tz;
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct InstState {
    pub seq: u32,
    pub due: NaiveDate,
    pub principal: Decimal,
    pub interest: Decimal,
    pub fee: Decimal,
    pub penalty: Decimal,
    pub paid: Outstanding,
    pub status: String,
    pub attempts: u32,
    pub paid_at: Option<i64>,
    /// Changed in memory; must be written back.
    pub dirty: bool,
}

impl InstState {
    /// What is still owed, per component.
    pub fn outstanding(&self) -> Outstanding {
        Outstanding {
            seq: self.seq,
            penalty: self.penalty - self.paid.penalty,
            fee: self.fee - self.paid.fee,
            interest: self.interest - self.paid.interest,
            principal: self.principal - self.paid.principal,
        }
    }

    pub fn owed(&self) -> Decimal {
        self.outstanding().total()
    }
}

#[derive(Debug, Clone)]
pub struct MandateState {
    pub id: i64,
    pub channel: String,
    pub agreement: String,
    pub account_masked: String,
    pub per_debit_limit: Option<Decimal>,
    pub daily_limit: Option<Decimal>,
    pub status: String,
    pub status_code: Option<String>,
    pub dirty: bool,
}

impl MandateState {
    pub fn usable(&self) -> bool {
        self.status == "active"
    }
}

#[derive(Debug, Clone)]
pub struct LoanState {
    pub id: String,
    pub borrower_id: String,
    pub borrower_name: String,
    pub phone: String,
    pub email: String,
    pub payday: Option<u32>,
    pub currency: String,
    pub tz: Tz,
    pub policy: String,
    pub allow_early: bool,
    pub status: String,
    pub ladder_pos: u32,
    /// Unpaid installments, oldest first.
    pub insts: Vec<InstState>,
    /// Mandates in priority order.
    pub mandates: Vec<MandateState>,
    /// An attempt is submitted or unknown: no new debit until it is resolved.
    pub open_attempt: bool,
    /// Amount debited or in flight per (mandate, local date), for daily limits.
    pub used: HashMap<(i64, NaiveDate), Decimal>,
    pub dirty: bool,
    /// A stored value of the loan did not decode: it cannot be pursued, only parked.
    pub broken: Option<String>,
}

impl LoanState {
    /// Owed now: every installment due on or before `today` (plus `also` for early attempts).
    pub fn owed_through(&self, today: NaiveDate, also: Option<u32>) -> Decimal {
        self.insts
            .iter()
            .filter(|i| i.due <= today || Some(i.seq) == also)
            .map(|i| i.owed())
            .sum()
    }

    pub fn inst_mut(&mut self, seq: u32) -> Option<&mut InstState> {
        self.insts.iter_mut().find(|i| i.seq == seq)
    }

    pub fn used_on(&self, mandate: i64, day: NaiveDate) -> Decimal {
        self.used.get(&(mandate, day)).copied().unwrap_or_default()
    }

    /// Whether what would be written back fits the database (minor units in `i64`).
    pub fn check_storable(&self) -> Result<(), String> {
        for i in self.insts.iter().filter(|i| i.dirty) {
            let p = &i.paid;
            for amount in [p.principal, p.interest, p.fee, p.penalty] {
                crate::domain::to_minor(amount)
                    .map_err(|e| format!("installment {}: {e}", i.seq))?;
            }
        }
        Ok(())
    }

    pub fn fully_paid(&self) -> bool {
        self.insts.iter().all(|i| i.owed() <= Decimal::ZERO)
    }
}

fn bind_ids<'q>(
    sql: &'q str,
    ids: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    // IN lists vary in length: not worth a cached prepared statement each.
    let mut q = sqlx::query(sql).persistent(false);
    for id in ids {
        q = q.bind(id.as_str());
    }
    q
}

/// Note the first value of a loan that did not decode.
fn mark_broken(loan: &mut LoanState, e: crate::store::DecodeError) {
    loan.broken.get_or_insert_with(|| e.to_string());
}

/// Load loans, their unpaid installments, mandates and open attempts.
pub async fn load_loans(
    conn: &mut AnyConnection,
    ids: &[String],
    since_date: NaiveDate,
) -> Result<HashMap<String, LoanState>, sqlx::Error> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(5000) {
        load_chunk(conn, chunk, since_date, &mut out).await?;
    }
    Ok(out)
}

async fn load_chunk(
    conn: &mut AnyConnection,
    ids: &[String],
    since_date: NaiveDate,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let list = in_list(conn, 1, ids.len());
    let sql = format!(
        "SELECT l.id, l.borrower_id, b.name, b.phone, b.email, b.payday, l.currency, l.tz, \
         l.policy, l.allow_early, l.status, l.ladder_pos \
         FROM loans l JOIN borrowers b ON b.id = l.borrower_id WHERE l.id IN ({list})"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let tz = stored_tz("tz", &r.get::<String, _>("tz"));
        let mut loan = LoanState {
            id: r.get("id"),
            borrower_id: r.get("borrower_id"),
            borrower_name: r.get("name"),
            phone: r.get("phone"),
            email: r.get("email"),
            payday: r.get::<Option<i64>, _>("payday").map(|d| d as u32),
            currency: r.get("currency"),
            tz: *tz.as_ref().unwrap_or(&chrono_tz::UTC),
            policy: r.get("policy"),
            allow_early: r.get::<i64, _>("allow_early") != 0,
            status: r.get("status"),
            ladder_pos: r.get::<i64, _>("ladder_pos") as u32,
            insts: Vec::new(),
            mandates: Vec::new(),
            open_attempt: false,
            used: HashMap::new(),
            dirty: false,
            broken: None,
        };
        if let Err(e) = tz {
            mark_broken(&mut loan, e);
        }
        out.insert(loan.id.clone(), loan);
    }
    load_installments(conn, ids, &list, out).await?;
    load_mandates(conn, ids, &list, out).await?;
    load_attempt_facts(conn, ids, &list, since_date, out).await?;
    Ok(())
}

async fn load_installments(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT loan_id, seq, due_date, principal, interest, fee, penalty, paid_principal, \
         paid_interest, paid_fee, paid_penalty, status, attempts, paid_at FROM installments \
         WHERE loan_id IN ({list}) AND status <> 'paid' ORDER BY loan_id, seq"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let m = |c: &str| from_minor(r.get::<i64, _>(c));
        let seq = r.get::<i64, _>("seq") as u32;
        let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) else {
            continue;
        };
        let due = stored_date("due_date", &r.get::<String, _>("due_date"));
        let inst = InstState {
            seq,
            due: *due.as_ref().unwrap_or(&NaiveDate::MIN),
            principal: m("principal"),
            interest: m("interest"),
            fee: m("fee"),
            penalty: m("penalty"),
            paid: Outstanding {
                seq,
                penalty: m("paid_penalty"),
                fee: m("paid_fee"),
                interest: m("paid_interest"),
                principal: m("paid_principal"),
            },
            status: r.get("status"),
            attempts: r.get::<i64, _>("attempts") as u32,
            paid_at: r.get("paid_at"),
            dirty: false,
        };
        if let Err(e) = due {
            mark_broken(l, e);
        }
        l.insts.push(inst);
    }
    Ok(())
}

async fn load_mandates(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "SELECT id, loan_id, channel, agreement, account_masked, per_debit_limit, daily_limit, \
         status, status_code FROM mandates WHERE loan_id IN ({list}) ORDER BY loan_id, priority"
    );
    for r in bind_ids(&sql, ids).fetch_all(&mut *conn).await? {
        let lim = |c: &str| r.get::<Option<i64>, _>(c).map(from_minor);
        let m = MandateState {
            id: r.get("id"),
            channel: r.get("channel"),
            agreement: r.get("agreement"),
            account_masked: r.get("account_masked"),
            per_debit_limit: lim("per_debit_limit"),
            daily_limit: lim("daily_limit"),
            status: r.get("status"),
            status_code: r.get("status_code"),
            dirty: false,
        };
        if let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) {
            l.mandates.push(m);
        }
    }
    Ok(())
}

async fn load_attempt_facts(
    conn: &mut AnyConnection,
    ids: &[String],
    list: &str,
    since_date: NaiveDate,
    out: &mut HashMap<String, LoanState>,
) -> Result<(), sqlx::Error> {
    let n = ids.len();
    let sql = format!(
        "SELECT loan_id, mandate_id, local_date, status, CAST(SUM(amount) AS BIGINT) AS total \
         FROM attempts WHERE loan_id IN ({list}) AND (status IN ('submitted','unknown') OR \
         (status = 'succeeded' AND local_date >= ${})) \
         GROUP BY loan_id, mandate_id, local_date, status",
        n + 1
    );
    let rows = bind_ids(&sql, ids)
        .bind(since_date.to_string())
        .fetch_all(&mut *conn)
        .await?;
    for r in rows {
        let Some(l) = out.get_mut(&r.get::<String, _>("loan_id")) else {
            continue;
        };
        let status: String = r.get("status");
        if status != "succeeded" {
            l.open_attempt = true;
        }
        let day = match stored_date("local_date", &r.get::<String, _>("local_date")) {
            Ok(d) => d,
            Err(e) => {
                mark_broken(l, e);
                continue;
            }
        };
        let key = (r.get::<i64, _>("mandate_id"), day);
        *l.used.entry(key).or_default() += from_minor(r.get::<i64, _>("total"));
    }
    Ok(())
}
