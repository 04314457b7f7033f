//! The ledger: chart of accounts, append-only journal and trial balance.
//!
//! Accounting is cash-basis for income: interest, fees and penalties are recognised when
//! collected. Principal is receivable from import (an opening entry against lender funding).
//! Every entry is checked balanced before it is written; the tables refuse UPDATE and DELETE.

use crate::domain::{from_minor, to_minor, Allocation, Component};
use crate::store::{Rows, Val};
use rust_decimal::Decimal;
use sqlx::{AnyConnection, Row};
use thiserror::Error;

pub const CLEARING: &str = "1100";
pub const PRINCIPAL_RECEIVABLE: &str = "1310";
pub const OVERPAYMENTS: &str = "2100";
pub const FUNDING: &str = "3100";
pub const INTEREST_INCOME: &str = "4100";
pub const FEE_INCOME: &str = "4200";
pub const PENALTY_INCOME: &str = "4300";
pub const BANK: &str = "1200";
pub const CHANNEL_FEES: &str = "5100";
pub const WRITE_OFFS: &str = "5200";

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("unbalanced entry for {memo}: debits {debits} != credits {credits}")]
    Unbalanced {
        memo: String,
        debits: Decimal,
        credits: Decimal,
    },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Money(#[from] crate::domain::MoneyError),
}

/// The clearing sub-account that holds money a channel collected for us.
pub fn clearing_account(channel: &str) -> String {
    format!("{CLEARING}.{channel}")
}

/// The account a collected component is credited to.
pub fn credit_account(c: Component) -> &'static str {
    match c {
        Component::Principal => PRINCIPAL_RECEIVABLE,
        Component::Interest => INTEREST_INCOME,
        Component::Fee => FEE_INCOME,
        Component::Penalty => PENALTY_INCOME,
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub account: String,
    pub seq: Option<u32>,
    pub component: Option<Component>,
    pub debit: Decimal,
    pub credit: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub kind: &'static str,
    pub loan_id: Option<String>,
    pub attempt_id: Option<i64>,
    pub posted_at: i64,
    pub memo: String,
    pub lines: Vec<Line>,
}

impl Entry {
    pub fn check_balanced(&self) -> Result<(), LedgerError> {
        let debits: Decimal = self.lines.iter().map(|l| l.debit).sum();
        let credits: Decimal = self.lines.iter().map(|l| l.credit).sum();
        if debits != credits {
            return Err(LedgerError::Unbalanced {
                memo: self.memo.clone(),
                debits,
                credits,
            });
        }
        Ok(())
    }
}

fn debit(account: impl Into<String>, amount: Decimal) -> Line {
    Line {
        account: account.into(),
        seq: None,
        component: None,
        debit: amount,
        credit: Decimal::ZERO,
    }
}

fn credit(account: impl Into<String>, amount: Decimal) -> Line {
    Line {
        account: account.into(),
        seq: None,
        component: None,
        debit: Decimal::ZERO,
        credit: amount,
    }
}

/// Lines of a repayment: debit the channel's clearing, credit what the allocation paid.
pub fn repayment_lines(
    channel: &str,
    amount: Decimal,
    allocations: &[Allocation],
    overpayment: Decimal,
) -> Vec<Line> {
    let mut lines = vec![debit(clearing_account(channel), amount)];
    for a in allocations {
        let mut l = credit(credit_account(a.component), a.amount);
        l.seq = Some(a.seq);
        l.component = Some(a.component);
        lines.push(l);
    }
    if overpayment > Decimal::ZERO {
        lines.push(credit(OVERPAYMENTS, overpayment));
    }
    lines
}

/// Lines of a settlement: the channel pays `gross − fees` into the bank and keeps its fees;
/// its clearing account goes down by the gross it collected.
pub fn settlement_lines(channel: &str, gross: Decimal, fees: Decimal) -> Vec<Line> {
    let mut lines = vec![debit(BANK, gross - fees)];
    if fees > Decimal::ZERO {
        lines.push(debit(CHANNEL_FEES, fees));
    }
    lines.push(credit(clearing_account(channel), gross));
    lines
}

/// Lines of an overpayment refund: the overpayment liability is paid out from `paid_from`.
pub fn overpayment_refund_lines(amount: Decimal, paid_from: &str) -> Vec<Line> {
    vec![debit(OVERPAYMENTS, amount), credit(paid_from, amount)]
}

/// One component of one installment, reversed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reversed {
    pub seq: u32,
    pub component: Component,
    pub amount: Decimal,
}

/// Lines of a reversal (erroneous debit refunded): the overpayment part and the reversed
/// components are debited back (the same accounts, `seq` and `component` the repayment
/// credited), the total paid out from `paid_from`.
pub fn reversal_lines(overpayment: Decimal, parts: &[Reversed], paid_from: &str) -> Vec<Line> {
    let mut lines = Vec::new();
    if overpayment > Decimal::ZERO {
        lines.push(debit(OVERPAYMENTS, overpayment));
    }
    for p in parts {
        let mut l = debit(credit_account(p.component), p.amount);
        l.seq = Some(p.seq);
        l.component = Some(p.component);
        lines.push(l);
    }
    let total = overpayment + parts.iter().map(|p| p.amount).sum::<Decimal>();
    lines.push(credit(paid_from, total));
    lines
}

/// Lines of a write-off: only principal was ever booked as a receivable, so only principal
/// moves to the write-off expense (interest, fees and penalties are cash-basis and are
/// recorded on the installments and the write-off row only). Empty when no principal is left.
pub fn write_off_lines(principal: &[(u32, Decimal)]) -> Vec<Line> {
    let total: Decimal = principal.iter().map(|p| p.1).sum();
    if total <= Decimal::ZERO {
        return Vec::new();
    }
    let mut lines = vec![debit(WRITE_OFFS, total)];
    for (seq, amount) in principal.iter().filter(|p| p.1 > Decimal::ZERO) {
        let mut l = credit(PRINCIPAL_RECEIVABLE, *amount);
        l.seq = Some(*seq);
        l.component = Some(Component::Principal);
        lines.push(l);
    }
    lines
}

/// Lines of a loan's opening entry: principal becomes receivable, funded by the lender.
pub fn opening_lines(principal: Decimal) -> Vec<Line> {
    let mut d = debit(PRINCIPAL_RECEIVABLE, principal);
    d.component = Some(Component::Principal);
    vec![d, credit(FUNDING, principal)]
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
    let mut heads = Rows::new(7);
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
            "INSERT INTO journal_entries (id, kind, loan_id, attempt_id, posted_at, memo, corrects_entry)",
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

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TrialBalance {
    /// The account tree in depth-first order; parents include their children's totals.
    pub rows: Vec<BalanceRow>,
    pub total_debit: Decimal,
    pub total_credit: Decimal,
}

impl TrialBalance {
    pub fn difference(&self) -> Decimal {
        self.total_debit - self.total_credit
    }
}

/// Sum the journal per account (in the database) and roll the totals up the tree.
pub async fn trial_balance(conn: &mut AnyConnection) -> Result<TrialBalance, sqlx::Error> {
    let accounts = sqlx::query("SELECT code, parent, name FROM accounts ORDER BY code")
        .fetch_all(&mut *conn)
        .await?;
    let sums = sqlx::query(
        "SELECT account, CAST(COALESCE(SUM(debit),0) AS BIGINT) AS d, \
         CAST(COALESCE(SUM(credit),0) AS BIGINT) AS c FROM journal_lines GROUP BY account",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut own = std::collections::HashMap::new();
    for r in &sums {
        let acct: String = r.get("account");
        own.insert(acct, (r.get::<i64, _>("d"), r.get::<i64, _>("c")));
    }
    let accts: Vec<(String, Option<String>, String)> = accounts
        .iter()
        .map(|r| (r.get("code"), r.get("parent"), r.get("name")))
        .collect();
    let mut rows = Vec::new();
    for (code, parent, _) in accts.iter() {
        if parent.is_none() {
            push_subtree(code, 0, &accts, &own, &mut rows);
        }
    }
    let (td, tc) = own
        .values()
        .fold((0i64, 0i64), |(d, c), (a, b)| (d + a, c + b));
    Ok(TrialBalance {
        rows,
        total_debit: from_minor(td),
        total_credit: from_minor(tc),
    })
}

fn push_subtree(
    code: &str,
    depth: usize,
    accts: &[(String, Option<String>, String)],
    own: &std::collections::HashMap<String, (i64, i64)>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn amount() -> impl Strategy<Value = Decimal> {
        (0i64..10_000_000).prop_map(from_minor)
    }

    proptest! {
        #[test]
        fn repayment_lines_always_balance(
            owed in proptest::collection::vec((amount(), amount(), amount(), amount()), 1..5),
            paid in amount(),
        ) {
            let outstanding: Vec<_> = owed.iter().enumerate().map(|(i, (p, f, n, pr))| {
                crate::domain::Outstanding { seq: i as u32 + 1, penalty: *p, fee: *f, interest: *n, principal: *pr }
            }).collect();
            let (alloc, over) = crate::domain::allocate(
                paid, &outstanding, &Component::DEFAULT_ORDER, crate::domain::InstallmentOrder::OldestFirst);
            let e = Entry { id: 1, kind: "repayment", loan_id: None, attempt_id: None, posted_at: 0,
                memo: "t".into(), lines: repayment_lines("sim", paid, &alloc, over) };
            prop_assert!(e.check_balanced().is_ok());
        }
    }

    #[test]
    fn money_entries_balance() {
        use rust_decimal_macros::dec;
        let check = |lines: Vec<Line>| {
            let e = Entry {
                id: 1,
                kind: "x",
                loan_id: None,
                attempt_id: None,
                posted_at: 0,
                memo: "m".into(),
                lines,
            };
            e.check_balanced().unwrap();
            e.lines
        };
        let s = check(settlement_lines("wechat", dec!(100.00), dec!(0.60)));
        assert_eq!(s[0].debit, dec!(99.40));
        assert_eq!(s[2].account, "1100.wechat");
        check(overpayment_refund_lines(dec!(5), BANK));
        let parts = [Reversed {
            seq: 2,
            component: Component::Interest,
            amount: dec!(3),
        }];
        let r = check(reversal_lines(dec!(1), &parts, BANK));
        assert_eq!((r[1].account.as_str(), r[1].seq), ("4100", Some(2)));
        assert_eq!(r[2].credit, dec!(4));
        let w = check(write_off_lines(&[(1, dec!(2)), (2, dec!(0)), (3, dec!(1))]));
        assert_eq!(w.len(), 3);
        assert!(write_off_lines(&[(1, dec!(0))]).is_empty());
    }

    #[test]
    fn unbalanced_entry_is_refused() {
        let mut lines = opening_lines(Decimal::new(10000, 2));
        lines[1].credit = Decimal::new(9999, 2);
        let e = Entry {
            id: 1,
            kind: "opening",
            loan_id: None,
            attempt_id: None,
            posted_at: 0,
            memo: "x".into(),
            lines,
        };
        assert!(matches!(
            e.check_balanced(),
            Err(LedgerError::Unbalanced { .. })
        ));
    }
}
