//! The journal and the chart of accounts in the database: entries written in a few
//! multi-row statements (each checked balanced first), channel clearing accounts, and the
//! trial balance rolled up the account tree, per currency.

use crate::domain::ledger::{clearing_account, Entry, Unbalanced, CLEARING};
use crate::domain::{from_minor, to_minor, MoneyError};
use crate::store::{Rows, Val};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use std::collections::{BTreeMap, HashMap};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Unbalanced(#[from] Unbalanced),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Write entries in a few multi-row statements. Every entry must balance.
pub async fn post_entries(conn: &mut AnyConnection, entries: &[Entry]) -> Result<(), LedgerError> {
    post_linked(conn, entries, &vec![None; entries.len()]).await
}

/// Write correcting entries (refunds, reversals): each points at the entry it corrects.
pub async fn post_corrections(
    conn: &mut AnyConnection,
    entries: &[(Entry, i64)],
) -> Result<(), LedgerError> {
    let (list, links): (Vec<Entry>, Vec<Option<i64>>) =
        entries.iter().map(|(e, c)| (e.clone(), Some(*c))).unzip();
    post_linked(conn, &list, &links).await
}

async fn post_linked(
    conn: &mut AnyConnection,
    entries: &[Entry],
    corrects: &[Option<i64>],
) -> Result<(), LedgerError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut heads = Rows::new(8);
    let mut lines = Rows::new(8);
    for (e, c) in entries.iter().zip(corrects) {
        e.check_balanced()?;
        heads.push(vec![
            e.id.into(),
            e.kind.into(),
            e.loan_id.clone().into(),
            e.attempt_id.into(),
            e.posted_at.into(),
            e.memo.clone().into(),
            (*c).into(),
            e.currency.clone().into(),
        ]);
        for (i, l) in e.lines.iter().enumerate() {
            lines.push(vec![
                e.id.into(),
                Val::Int(i as i64 + 1),
                l.account.clone().into(),
                e.loan_id.clone().into(),
                l.seq.map(|s| s as i64).into(),
                l.component.map(|c| c.as_str().to_string()).into(),
                to_minor(l.debit)?.into(),
                to_minor(l.credit)?.into(),
            ]);
        }
    }
    heads
        .insert(
            conn,
            "INSERT INTO journal_entries (id, kind, loan_id, attempt_id, posted_at, memo, corrects_entry, currency)",
            "",
        )
        .await?;
    lines
        .insert(
            conn,
            "INSERT INTO journal_lines (entry_id, line_no, account, loan_id, seq, component, debit, credit)",
            "",
        )
        .await?;
    Ok(())
}

/// Create the clearing sub-account for each channel (idempotent).
pub async fn ensure_channel_accounts(
    conn: &mut AnyConnection,
    channels: &[String],
) -> Result<(), sqlx::Error> {
    if channels.is_empty() {
        return Ok(());
    }
    let mut rows = Rows::new(4);
    for c in channels {
        rows.push(vec![
            clearing_account(c).into(),
            CLEARING.into(),
            format!("Channel clearing: {c}").into(),
            "asset".into(),
        ]);
    }
    rows.insert(
        conn,
        "INSERT INTO accounts (code, parent, name, kind)",
        "ON CONFLICT (code) DO NOTHING",
    )
    .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BalanceRow {
    pub code: String,
    pub name: String,
    pub depth: usize,
    pub debit: Decimal,
    pub credit: Decimal,
}

impl BalanceRow {
    /// Debit-positive balance.
    pub fn balance(&self) -> Decimal {
        self.debit - self.credit
    }
}

/// The trial balance of one currency.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CurrencyBalance {
    /// `""` for entries made before entries had a currency that could not be given one
    /// (a settlement that summed several currencies); `repayd verify` names them.
    pub currency: String,
    /// The account tree in depth-first order; parents include their children's totals.
    pub rows: Vec<BalanceRow>,
    pub total_debit: Decimal,
    pub total_credit: Decimal,
}

impl CurrencyBalance {
    pub fn difference(&self) -> Decimal {
        self.total_debit - self.total_credit
    }
}

/// The trial balance, one per currency: amounts in different currencies are never added.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Default)]
pub struct TrialBalance {
    pub currencies: Vec<CurrencyBalance>,
}

impl TrialBalance {
    /// The sum of each currency's |debits − credits|: zero exactly when every currency
    /// balances on its own.
    pub fn difference(&self) -> Decimal {
        self.currencies.iter().map(|c| c.difference().abs()).sum()
    }
}

/// Sum the journal per currency and account (in the database) and roll the totals up the
/// tree, once per currency.
pub async fn trial_balance(conn: &mut AnyConnection) -> Result<TrialBalance, sqlx::Error> {
    let accounts = sqlx::query("SELECT code, parent, name FROM accounts ORDER BY code")
        .fetch_all(&mut *conn)
        .await?;
    let sums = sqlx::query(
        "SELECT COALESCE(e.currency, '') AS currency, l.account, \
         CAST(COALESCE(SUM(l.debit),0) AS BIGINT) AS d, CAST(COALESCE(SUM(l.credit),0) AS BIGINT) AS c \
         FROM journal_lines l JOIN journal_entries e ON e.id = l.entry_id \
         GROUP BY COALESCE(e.currency, ''), l.account",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut own: BTreeMap<String, HashMap<String, (i64, i64)>> = BTreeMap::new();
    for r in &sums {
        own.entry(r.get("currency")).or_default().insert(
            r.get("account"),
            (r.get::<i64, _>("d"), r.get::<i64, _>("c")),
        );
    }
    let accts: Vec<(String, Option<String>, String)> = accounts
        .iter()
        .map(|r| (r.get("code"), r.get("parent"), r.get("name")))
        .collect();
    let currencies = own
        .into_iter()
        .map(|(currency, own)| one_currency(currency, &accts, &own))
        .collect();
    Ok(TrialBalance { currencies })
}

fn one_currency(
    currency: String,
    accts: &[(String, Option<String>, String)],
    own: &HashMap<String, (i64, i64)>,
) -> CurrencyBalance {
    let mut rows = Vec::new();
    for (code, parent, _) in accts {
        if parent.is_none() {
            push_subtree(code, 0, accts, own, &mut rows);
        }
    }
    let (td, tc) = own
        .values()
        .fold((0i64, 0i64), |(d, c), (a, b)| (d + a, c + b));
    CurrencyBalance {
        currency,
        rows,
        total_debit: from_minor(td),
        total_credit: from_minor(tc),
    }
}

fn push_subtree(
    code: &str,
    depth: usize,
    accts: &[(String, Option<String>, String)],
    own: &HashMap<String, (i64, i64)>,
    out: &mut Vec<BalanceRow>,
) -> (i64, i64) {
    let idx = out.len();
    let name = accts
        .iter()
        .find(|a| a.0 == code)
        .map(|a| a.2.clone())
        .unwrap_or_default();
    out.push(BalanceRow {
        code: code.to_string(),
        name,
        depth,
        debit: Decimal::ZERO,
        credit: Decimal::ZERO,
    });
    let (mut d, mut c) = own.get(code).copied().unwrap_or((0, 0));
    for (child, parent, _) in accts {
        if parent.as_deref() == Some(code) {
            let (cd, cc) = push_subtree(child, depth + 1, accts, own, out);
            d += cd;
            c += cc;
        }
    }
    out[idx].debit = from_minor(d);
    out[idx].credit = from_minor(c);
    (d, c)
}
