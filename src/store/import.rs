//! Writing validated loans: borrowers, loans, mandates (account masked), installments and
//! one opening ledger entry per loan, in the caller's transaction. A loan id already present
//! with the same content is skipped; with other content the import is refused. The book's
//! ceiling and one contact per borrower id are checked against what is stored.

use crate::domain::import::{BorrowerInput, ImportError, ImportProblem, ImportReport, LoanInput};
use crate::domain::ledger::{self, Entry};
use crate::domain::{to_minor, MoneyError, MAX_BOOK_MINOR};
use crate::store::ledger::LedgerError;
use crate::store::{alloc_on, Rows, Val};
use sqlx::{AnyConnection, Row};
use std::collections::{HashMap, HashSet};
use thiserror::Error;

/// Why loans were not stored: refused (located problems), or the database failed.
#[derive(Debug, Error)]
pub enum StoreLoansError {
    #[error(transparent)]
    Refused(#[from] ImportError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Write validated loans inside the caller's transaction. Identical loans already present are
/// skipped; a known id with different content is rejected (the caller rolls back).
pub async fn store_loans(
    conn: &mut AnyConnection,
    loans: &[LoanInput],
    now_ms: i64,
) -> Result<ImportReport, StoreLoansError> {
    let mut report = ImportReport::default();
    let existing = existing_hashes(conn, loans).await?;
    let mut conflicts = Vec::new();
    let new: Vec<&LoanInput> = loans
        .iter()
        .filter(|l| match existing.get(&l.id) {
            None => true,
            Some(h) if *h == l.content_hash() => {
                report.loans_unchanged += 1;
                false
            }
            Some(_) => {
                conflicts.push(ImportProblem {
                    file: "-".into(),
                    location: format!("loan {}", l.id),
                    field: "id".into(),
                    message: "already imported with different content; nothing was changed".into(),
                });
                false
            }
        })
        .collect();
    if !conflicts.is_empty() {
        return Err(ImportError::Invalid(conflicts).into());
    }
    if new.is_empty() {
        return Ok(report);
    }
    check_book(conn, &new).await?;
    check_stored_borrowers(conn, &new).await?;
    insert_new(conn, &new, now_ms).await?;
    report.loans_added = new.len();
    report.installments_added = new.iter().map(|l| l.installments.len()).sum();
    Ok(report)
}

/// The book after this import stays within [`MAX_BOOK_MINOR`], so no sum over it overflows.
async fn check_book(conn: &mut AnyConnection, new: &[&LoanInput]) -> Result<(), StoreLoansError> {
    let stored: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(principal + interest + fee), 0) AS BIGINT) FROM installments",
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut book = stored;
    for l in new {
        for i in &l.installments {
            for part in [i.principal, i.interest, i.fee] {
                book = crate::domain::add_minor(book, to_minor(part)?)?;
            }
        }
        if book > MAX_BOOK_MINOR {
            return Err(StoreLoansError::Refused(ImportError::Invalid(vec![
                ImportProblem {
                    file: "-".into(),
                    location: format!("loan {}", l.id),
                    field: "installments".into(),
                    message: format!(
                        "the book would pass {} (the most repayd holds); nothing was written",
                        crate::domain::from_minor(MAX_BOOK_MINOR)
                    ),
                },
            ])));
        }
    }
    Ok(())
}

/// A borrower id already stored with another contact is refused, naming the stored record,
/// unless the record says it is an update (`borrower.update = true`).
async fn check_stored_borrowers(
    conn: &mut AnyConnection,
    new: &[&LoanInput],
) -> Result<(), StoreLoansError> {
    let mut ids: Vec<String> = new.iter().map(|l| l.borrower.id.clone()).collect();
    ids.sort();
    ids.dedup();
    let stored = stored_borrowers(conn, &ids).await?;
    let problems: Vec<ImportProblem> = new
        .iter()
        .filter(|l| !l.borrower.update)
        .filter_map(|l| {
            let (s, loan) = stored.get(&l.borrower.id)?;
            (!s.same_contact(&l.borrower)).then(|| ImportProblem {
                file: "-".into(),
                location: format!("loan {}", l.id),
                field: "borrower".into(),
                message: format!(
                    "borrower `{}` is stored with other contact details ({} {}, loan {loan}); \
                     give borrower.update = true to change them",
                    s.id,
                    s.name,
                    crate::domain::pii::mask_phone(&s.phone)
                ),
            })
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ImportError::Invalid(problems).into())
    }
}

/// Stored borrowers by id, each with one of its loans (to name the earlier record).
async fn stored_borrowers(
    conn: &mut AnyConnection,
    ids: &[String],
) -> Result<HashMap<String, (BorrowerInput, String)>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(5000) {
        let sql = format!(
            "SELECT b.id, b.name, b.phone, b.email, b.payday, MIN(l.id) AS loan FROM borrowers b \
             LEFT JOIN loans l ON l.borrower_id = b.id WHERE b.id IN ({}) \
             GROUP BY b.id, b.name, b.phone, b.email, b.payday",
            crate::store::in_list(conn, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for id in chunk {
            q = q.bind(id.as_str());
        }
        for r in q.fetch_all(&mut *conn).await? {
            let b = BorrowerInput {
                id: r.get("id"),
                name: r.get("name"),
                phone: r.get("phone"),
                email: r.get("email"),
                payday: r.get::<Option<i64>, _>("payday").map(|d| d as u32),
                update: false,
            };
            let loan: Option<String> = r.get("loan");
            out.insert(b.id.clone(), (b, loan.unwrap_or_else(|| "-".into())));
        }
    }
    Ok(out)
}

async fn existing_hashes(
    conn: &mut AnyConnection,
    loans: &[LoanInput],
) -> Result<HashMap<String, String>, sqlx::Error> {
    let mut out = HashMap::new();
    for chunk in loans.chunks(5000) {
        let sql = format!(
            "SELECT id, content_hash FROM loans WHERE id IN ({})",
            crate::store::in_list(conn, 1, chunk.len())
        );
        let mut q = sqlx::query(&sql).persistent(false);
        for l in chunk {
            q = q.bind(l.id.clone());
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.insert(r.get("id"), r.get("content_hash"));
        }
    }
    Ok(out)
}

/// Records marked as updates replace the stored contact of their borrower.
async fn update_borrowers(conn: &mut AnyConnection, new: &[&LoanInput]) -> Result<(), sqlx::Error> {
    let mut rows = Rows::new(5);
    for b in new.iter().map(|l| &l.borrower).filter(|b| b.update) {
        rows.push(vec![
            b.id.clone().into(),
            b.name.clone().into(),
            b.phone.clone().into(),
            b.email.clone().into(),
            b.payday.map(i64::from).into(),
        ]);
    }
    if rows.is_empty() {
        return Ok(());
    }
    rows.with_values(
        conn,
        "id, name, phone, email, payday",
        "UPDATE borrowers SET name = v.name, phone = v.phone, email = v.email, payday = v.payday \
         FROM v WHERE borrowers.id = v.id",
    )
    .await?;
    Ok(())
}

async fn insert_new(
    conn: &mut AnyConnection,
    new: &[&LoanInput],
    now_ms: i64,
) -> Result<(), StoreLoansError> {
    let mandate_count: usize = new.iter().map(|l| l.mandates.len()).sum();
    let mut next_mandate = alloc_on(conn, "mandate", mandate_count as i64).await?;
    let mut next_entry = alloc_on(conn, "entry", new.len() as i64).await?;
    let mut borrowers = Rows::new(5);
    let mut loan_rows = Rows::new(8);
    let mut mandate_rows = Rows::new(8);
    let mut inst_rows = Rows::new(6);
    let mut entries = Vec::with_capacity(new.len());
    let mut channels = HashSet::new();
    for l in new {
        let b = &l.borrower;
        borrowers.push(vec![
            b.id.clone().into(),
            b.name.clone().into(),
            b.phone.clone().into(),
            b.email.clone().into(),
            b.payday.map(i64::from).into(),
        ]);
        loan_rows.push(vec![
            l.id.clone().into(),
            b.id.clone().into(),
            l.currency.clone().into(),
            l.tz.name().into(),
            l.policy.clone().into(),
            Val::Int(l.allow_early as i64),
            l.content_hash().into(),
            now_ms.into(),
        ]);
        for (i, m) in l.mandates.iter().enumerate() {
            channels.insert(m.channel.clone());
            mandate_rows.push(vec![
                next_mandate.into(),
                l.id.clone().into(),
                Val::Int(i as i64 + 1),
                m.channel.clone().into(),
                m.agreement.clone().into(),
                m.account_masked.clone().into(),
                m.per_debit_limit.map(to_minor).transpose()?.into(),
                m.daily_limit.map(to_minor).transpose()?.into(),
            ]);
            next_mandate += 1;
        }
        for i in &l.installments {
            inst_rows.push(vec![
                l.id.clone().into(),
                i.seq.into(),
                i.due_date.to_string().into(),
                to_minor(i.principal)?.into(),
                to_minor(i.interest)?.into(),
                to_minor(i.fee)?.into(),
            ]);
        }
        entries.push(Entry {
            id: next_entry,
            kind: "opening",
            loan_id: Some(l.id.clone()),
            currency: l.currency.clone(),
            attempt_id: None,
            posted_at: now_ms,
            memo: format!("opening balance of loan {}", l.id),
            lines: ledger::opening_lines(l.total_principal()),
        });
        next_entry += 1;
    }
    borrowers
        .insert(
            conn,
            "INSERT INTO borrowers (id, name, phone, email, payday)",
            "ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    update_borrowers(conn, new).await?;
    loan_rows
        .insert(conn, "INSERT INTO loans (id, borrower_id, currency, tz, policy, allow_early, content_hash, created_at)", "")
        .await?;
    mandate_rows
        .insert(conn, "INSERT INTO mandates (id, loan_id, priority, channel, agreement, account_masked, per_debit_limit, daily_limit)", "")
        .await?;
    inst_rows
        .insert(
            conn,
            "INSERT INTO installments (loan_id, seq, due_date, principal, interest, fee)",
            "",
        )
        .await?;
    let channels: Vec<String> = channels.into_iter().collect();
    crate::store::ledger::ensure_channel_accounts(conn, &channels).await?;
    crate::store::ledger::post_entries(conn, &entries).await?;
    Ok(())
}
