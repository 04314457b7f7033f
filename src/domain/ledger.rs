//! The ledger: chart of accounts, append-only journal and trial balance.
//!
//! Accounting is cash-basis for income: interest, fees and penalties are recognised when
//! collected. Principal is receivable from import (an opening entry against lender funding).
//! Every entry is checked balanced before it is written; the tables refuse UPDATE and DELETE.

use crate::domain::{Allocation, Component};
use rust_decimal::Decimal;
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

/// An entry whose debits and credits differ: refused before anything is written.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("unbalanced entry for {memo}: debits {debits} != credits {credits}")]
pub struct Unbalanced {
    pub memo: String,
    pub debits: Decimal,
    pub credits: Decimal,
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
    /// Every line of an entry is in this currency: balances are kept per currency.
    pub currency: String,
    pub attempt_id: Option<i64>,
    pub posted_at: i64,
    pub memo: String,
    pub lines: Vec<Line>,
}

impl Entry {
    pub fn check_balanced(&self) -> Result<(), Unbalanced> {
        let debits: Decimal = self.lines.iter().map(|l| l.debit).sum();
        let credits: Decimal = self.lines.iter().map(|l| l.credit).sum();
        if debits != credits {
            return Err(Unbalanced {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::from_minor;
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
            let e = Entry { id: 1, kind: "repayment", loan_id: None, currency: "CNY".into(), attempt_id: None, posted_at: 0,
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
                currency: "CNY".into(),
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
            currency: "CNY".into(),
            attempt_id: None,
            posted_at: 0,
            memo: "x".into(),
            lines,
        };
        assert!(matches!(e.check_balanced(), Err(Unbalanced { .. })));
    }
}
