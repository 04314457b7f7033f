//! Decreasing-amount ladder (逐步减金额扣款): when the full amount fails for insufficient
//! balance, try smaller amounts (e.g. 100% → 75% → 50% → 25%), never below a floor.
//! The remainder is pursued in later slots, so a ladder only has to list what to try now.

use rust_decimal::Decimal;

use super::money::round_down;

/// What bounds the amounts of one ladder.
#[derive(Debug, Clone, PartialEq)]
pub struct LadderInput<'a> {
    /// Still owed on the loan; never ask for more.
    pub owed: Decimal,
    /// The mandate's single-debit limit, if the channel has one.
    pub per_debit_limit: Option<Decimal>,
    /// What is left of the mandate's daily limit today, if it has one.
    pub daily_remaining: Option<Decimal>,
    /// Fractions of the target in (0, 1], e.g. 1, 0.75, 0.5, 0.25. Others are ignored.
    pub steps: &'a [Decimal],
    /// Floor: smaller debits cost more than they collect.
    pub min_amount: Decimal,
}

/// The most one debit may ask for now: the smallest of owed and the limits, rounded down.
pub fn target_amount(input: &LadderInput) -> Decimal {
    let limits = [input.per_debit_limit, input.daily_remaining];
    let target = limits.iter().flatten().fold(input.owed, |t, &l| t.min(l));
    round_down(target)
}

/// Amounts to try, largest first, strictly decreasing, each > 0 and within owed and limits.
///
/// If the whole amount owed is below the floor, the ladder is just that amount: a small
/// remainder is collected in full rather than never. If only a limit pushes the target below
/// the floor, the ladder is empty.
pub fn ladder_amounts(input: &LadderInput) -> Vec<Decimal> {
    let target = target_amount(input);
    if target <= Decimal::ZERO {
        return Vec::new();
    }
    if target < input.min_amount {
        // Below the floor: collect a small remaining debt in full, but never chip at a larger
        // debt in crumbs just because a limit is nearly used up.
        return if target == round_down(input.owed) {
            vec![target]
        } else {
            Vec::new()
        };
    }
    let mut amounts: Vec<Decimal> = input
        .steps
        .iter()
        .filter(|s| valid_step(**s))
        .map(|s| round_down(target * s))
        .filter(|a| *a > Decimal::ZERO && *a >= input.min_amount)
        .collect();
    amounts.sort_by(|a, b| b.cmp(a));
    amounts.dedup();
    amounts
}

/// A step outside (0, 1] would ask for nothing or for more than the target.
fn valid_step(step: Decimal) -> bool {
    step > Decimal::ZERO && step <= Decimal::ONE
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    const STEPS: [Decimal; 4] = [dec!(1), dec!(0.75), dec!(0.5), dec!(0.25)];

    fn input(owed: Decimal, min_amount: Decimal) -> LadderInput<'static> {
        LadderInput {
            owed,
            per_debit_limit: None,
            daily_remaining: None,
            steps: &STEPS,
            min_amount,
        }
    }

    #[test]
    fn full_ladder() {
        let got = ladder_amounts(&input(dec!(1000.00), dec!(50)));
        assert_eq!(
            got,
            [dec!(1000.00), dec!(750.00), dec!(500.00), dec!(250.00)]
        );
    }

    #[test]
    fn rounds_each_step_down() {
        let got = ladder_amounts(&input(dec!(100.03), dec!(1)));
        assert_eq!(got, [dec!(100.03), dec!(75.02), dec!(50.01), dec!(25.00)]);
    }

    #[test]
    fn limits_cap_the_target() {
        let i = LadderInput {
            per_debit_limit: Some(dec!(500)),
            daily_remaining: Some(dec!(800)),
            ..input(dec!(1000), dec!(100))
        };
        assert_eq!(target_amount(&i), dec!(500));
        assert_eq!(
            ladder_amounts(&i),
            [dec!(500), dec!(375), dec!(250), dec!(125)]
        );
        let i = LadderInput {
            daily_remaining: Some(dec!(300)),
            ..i
        };
        assert_eq!(ladder_amounts(&i), [dec!(300), dec!(225), dec!(150)]);
    }

    #[test]
    fn floor_drops_small_steps() {
        assert_eq!(
            ladder_amounts(&input(dec!(100), dec!(60))),
            [dec!(100), dec!(75)]
        );
    }

    #[test]
    fn small_remainder_collected_in_full() {
        assert_eq!(ladder_amounts(&input(dec!(12.34), dec!(50))), [dec!(12.34)]);
    }

    #[test]
    fn a_nearly_used_limit_does_not_chip_below_the_floor() {
        let i = LadderInput {
            daily_remaining: Some(dec!(5)),
            ..input(dec!(1000), dec!(50))
        };
        assert!(ladder_amounts(&i).is_empty());
    }

    #[test]
    fn nothing_to_collect() {
        assert!(ladder_amounts(&input(dec!(0), dec!(1))).is_empty());
        assert!(ladder_amounts(&input(dec!(-5), dec!(1))).is_empty());
        let exhausted = LadderInput {
            daily_remaining: Some(dec!(0)),
            ..input(dec!(100), dec!(1))
        };
        assert!(ladder_amounts(&exhausted).is_empty());
    }

    #[test]
    fn duplicates_and_bad_steps_are_dropped() {
        let steps = [
            dec!(0.5),
            dec!(1),
            dec!(0.5),
            dec!(1.5),
            dec!(0),
            dec!(-1),
            dec!(0.001),
        ];
        let i = LadderInput {
            steps: &steps,
            ..input(dec!(1.00), dec!(0))
        };
        assert_eq!(ladder_amounts(&i), [dec!(1.00), dec!(0.50)]);
    }

    fn opt_amount() -> impl Strategy<Value = Option<Decimal>> {
        proptest::option::of((-100i64..100_000_000).prop_map(|c| Decimal::new(c, 2)))
    }

    proptest! {
        #[test]
        fn ladder_invariants(
            owed in (-100i64..100_000_000).prop_map(|c| Decimal::new(c, 2)),
            per_debit_limit in opt_amount(),
            daily_remaining in opt_amount(),
            min_amount in (0i64..1_000_000).prop_map(|c| Decimal::new(c, 2)),
            steps in proptest::collection::vec((1i64..=100).prop_map(|p| Decimal::new(p, 2)), 1..6),
            starts_with_one in any::<bool>(),
        ) {
            let mut steps = steps;
            if starts_with_one {
                steps.insert(0, Decimal::ONE);
            }
            let i = LadderInput { owed, per_debit_limit, daily_remaining, steps: &steps, min_amount };
            let got = ladder_amounts(&i);
            for a in &got {
                prop_assert!(*a > Decimal::ZERO && *a <= owed);
                prop_assert!(per_debit_limit.is_none_or(|l| *a <= l));
                prop_assert!(daily_remaining.is_none_or(|l| *a <= l));
                prop_assert_eq!(round_down(*a), *a);
            }
            prop_assert!(got.windows(2).all(|w| w[0] > w[1]));
            let target = target_amount(&i);
            let reachable = target >= min_amount || target == round_down(owed);
            if starts_with_one && target > Decimal::ZERO && reachable {
                prop_assert_eq!(got[0], target);
            }
            if !reachable {
                prop_assert!(got.is_empty());
            }
        }
    }
}
