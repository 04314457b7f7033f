//! The one definition of what an installment still owes, for every query that needs it: its
//! principal, interest, fee and penalty, less what was paid and what was written off. The loan
//! view, the loan lists, the dashboard, delinquency, the daily report and `verify` all build
//! their SQL from here, so they cannot disagree.

/// What installment `i` (a table alias) still owes, in minor units.
pub fn owed(i: &str) -> String {
    format!(
        "({i}.principal + {i}.interest + {i}.fee + {i}.penalty \
         - {i}.paid_principal - {i}.paid_interest - {i}.paid_fee - {i}.paid_penalty \
         - {i}.wo_principal - {i}.wo_interest - {i}.wo_fee - {i}.wo_penalty)"
    )
}

/// What installment `i` owed before any payment: everything but what was written off.
pub fn billed(i: &str) -> String {
    format!(
        "({i}.principal + {i}.interest + {i}.fee + {i}.penalty \
         - {i}.wo_principal - {i}.wo_interest - {i}.wo_fee - {i}.wo_penalty)"
    )
}

/// Installment `i` is still open: neither paid nor written off.
pub fn open(i: &str) -> String {
    format!("{i}.status NOT IN ('paid', 'written_off')")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owed_subtracts_payments_and_write_offs() {
        let o = owed("i");
        for col in [
            "i.paid_penalty",
            "i.wo_principal",
            "i.wo_penalty",
            "i.penalty",
        ] {
            assert!(o.contains(col), "{o}");
        }
        assert!(!billed("x").contains("paid"));
    }
}
