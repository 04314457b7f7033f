//! Allocation: split a received amount over what is owed, in a configurable order.
//! The default is penalty → fee → interest → principal, oldest installment first
//! (Civil Code art. 561). Whatever exceeds everything owed is an overpayment.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::types::{Component, InstallmentOrder};

/// What is still owed on one installment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outstanding {
    pub seq: u32,
    pub penalty: Decimal,
    pub fee: Decimal,
    pub interest: Decimal,
    pub principal: Decimal,
}

impl Outstanding {
    /// Amount owed for one component.
    pub fn get(&self, component: Component) -> Decimal {
        match component {
            Component::Penalty => self.penalty,
            Component::Fee => self.fee,
            Component::Interest => self.interest,
            Component::Principal => self.principal,
        }
    }

    /// Everything owed on this installment.
    pub fn total(&self) -> Decimal {
        self.penalty + self.fee + self.interest + self.principal
    }
}

/// Part of a payment applied to one component of one installment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    pub seq: u32,
    pub component: Component,
    pub amount: Decimal,
}

/// Allocate `amount` over `outstanding` (oldest first). Returns the allocations, in the order
/// they were applied, and the overpayment (what is left when everything is paid).
///
/// Components missing from `order` are appended in the default order, so money never becomes
/// an overpayment while something is still owed. A non-positive amount pays nothing.
pub fn allocate(
    amount: Decimal,
    outstanding: &[Outstanding],
    order: &[Component],
    walk: InstallmentOrder,
) -> (Vec<Allocation>, Decimal) {
    let mut left = amount.max(Decimal::ZERO);
    let mut out = Vec::new();
    for (idx, component) in walk_order(outstanding.len(), &full_order(order), walk) {
        if left.is_zero() {
            break;
        }
        let item = &outstanding[idx];
        let paid = left.min(item.get(component).max(Decimal::ZERO));
        if paid > Decimal::ZERO {
            out.push(Allocation {
                seq: item.seq,
                component,
                amount: paid,
            });
            left -= paid;
        }
    }
    (out, left)
}

/// The given order without repeats, followed by any component it left out.
fn full_order(order: &[Component]) -> Vec<Component> {
    let mut full: Vec<Component> = Vec::with_capacity(Component::ALL.len());
    for c in order.iter().chain(Component::DEFAULT_ORDER.iter()) {
        if !full.contains(c) {
            full.push(*c);
        }
    }
    full
}

/// (installment index, component) pairs in the sequence the walk visits them.
fn walk_order(n: usize, order: &[Component], walk: InstallmentOrder) -> Vec<(usize, Component)> {
    match walk {
        InstallmentOrder::OldestFirst => (0..n)
            .flat_map(|i| order.iter().map(move |c| (i, *c)))
            .collect(),
        InstallmentOrder::ComponentFirst => order
            .iter()
            .flat_map(|c| (0..n).map(move |i| (i, *c)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal_macros::dec;

    fn owed(
        seq: u32,
        penalty: Decimal,
        fee: Decimal,
        interest: Decimal,
        principal: Decimal,
    ) -> Outstanding {
        Outstanding {
            seq,
            penalty,
            fee,
            interest,
            principal,
        }
    }

    fn two() -> Vec<Outstanding> {
        vec![
            owed(1, dec!(5), dec!(0), dec!(10), dec!(100)),
            owed(2, dec!(1), dec!(2), dec!(10), dec!(100)),
        ]
    }

    fn alloc(seq: u32, component: Component, amount: Decimal) -> Allocation {
        Allocation {
            seq,
            component,
            amount,
        }
    }

    #[test]
    fn oldest_first_default_order() {
        let (a, over) = allocate(
            dec!(120),
            &two(),
            &Component::DEFAULT_ORDER,
            InstallmentOrder::OldestFirst,
        );
        assert_eq!(
            a,
            [
                alloc(1, Component::Penalty, dec!(5)),
                alloc(1, Component::Interest, dec!(10)),
                alloc(1, Component::Principal, dec!(100)),
                alloc(2, Component::Penalty, dec!(1)),
                alloc(2, Component::Fee, dec!(2)),
                alloc(2, Component::Interest, dec!(2)),
            ]
        );
        assert_eq!(over, Decimal::ZERO);
    }

    #[test]
    fn component_first_walks_components_across_installments() {
        let (a, _) = allocate(
            dec!(30),
            &two(),
            &Component::DEFAULT_ORDER,
            InstallmentOrder::ComponentFirst,
        );
        assert_eq!(
            a,
            [
                alloc(1, Component::Penalty, dec!(5)),
                alloc(2, Component::Penalty, dec!(1)),
                alloc(2, Component::Fee, dec!(2)),
                alloc(1, Component::Interest, dec!(10)),
                alloc(2, Component::Interest, dec!(10)),
                alloc(1, Component::Principal, dec!(2)),
            ]
        );
    }

    #[test]
    fn overpayment_when_everything_is_paid() {
        let total: Decimal = two().iter().map(Outstanding::total).sum();
        assert_eq!(total, dec!(228));
        let (a, over) = allocate(
            dec!(300),
            &two(),
            &Component::DEFAULT_ORDER,
            InstallmentOrder::OldestFirst,
        );
        assert_eq!(over, dec!(72));
        assert_eq!(a.iter().map(|x| x.amount).sum::<Decimal>(), total);
    }

    #[test]
    fn partial_order_is_completed_with_the_rest() {
        let (a, over) = allocate(
            dec!(20),
            &two()[..1],
            &[Component::Principal],
            InstallmentOrder::OldestFirst,
        );
        assert_eq!(a, [alloc(1, Component::Principal, dec!(20))]);
        assert_eq!(over, Decimal::ZERO);
        let (a, over) = allocate(
            dec!(116),
            &two()[..1],
            &[Component::Principal],
            InstallmentOrder::OldestFirst,
        );
        assert_eq!(a.len(), 3);
        assert_eq!(over, dec!(1));
    }

    #[test]
    fn nothing_to_allocate() {
        let (a, over) = allocate(
            dec!(0),
            &two(),
            &Component::DEFAULT_ORDER,
            InstallmentOrder::OldestFirst,
        );
        assert!(a.is_empty() && over.is_zero());
        let (a, over) = allocate(
            dec!(-3),
            &two(),
            &Component::DEFAULT_ORDER,
            InstallmentOrder::OldestFirst,
        );
        assert!(a.is_empty() && over.is_zero());
        let (a, over) = allocate(
            dec!(7),
            &[],
            &Component::DEFAULT_ORDER,
            InstallmentOrder::OldestFirst,
        );
        assert!(a.is_empty());
        assert_eq!(over, dec!(7));
    }

    fn money() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            Just(Decimal::ZERO),
            (0i64..1_000_000).prop_map(|c| Decimal::new(c, 2))
        ]
    }

    fn outstanding() -> impl Strategy<Value = Vec<Outstanding>> {
        proptest::collection::vec((money(), money(), money(), money()), 0..6).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (p, f, r, c))| owed(i as u32 + 1, p, f, r, c))
                .collect()
        })
    }

    fn order() -> impl Strategy<Value = Vec<Component>> {
        Just(Component::ALL.to_vec()).prop_shuffle()
    }

    fn walk() -> impl Strategy<Value = InstallmentOrder> {
        prop_oneof![
            Just(InstallmentOrder::OldestFirst),
            Just(InstallmentOrder::ComponentFirst)
        ]
    }

    proptest! {
        #[test]
        fn allocation_invariants(
            amount in (0i64..5_000_000).prop_map(|c| Decimal::new(c, 2)),
            items in outstanding(),
            order in order(),
            walk in walk(),
        ) {
            let (a, over) = allocate(amount, &items, &order, walk);
            prop_assert_eq!(a.iter().map(|x| x.amount).sum::<Decimal>() + over, amount);
            prop_assert!(a.iter().all(|x| x.amount > Decimal::ZERO));
            for item in &items {
                for c in Component::ALL {
                    let paid: Decimal = a.iter().filter(|x| x.seq == item.seq && x.component == c).map(|x| x.amount).sum();
                    prop_assert!(paid <= item.get(c));
                }
            }
            let total: Decimal = items.iter().map(Outstanding::total).sum();
            prop_assert!(over >= Decimal::ZERO);
            if over > Decimal::ZERO {
                prop_assert_eq!(amount - over, total);
            }
        }
    }
}
