//! End-of-day netting of one trust pair's session and what to settle when liquidity is short.
//! Pure functions over base units: the session service freezes the obligations, calls these,
//! and posts the result.
pub use crate::domain::trust::{Netted, Outcome};

use super::{SettlementMode, Side};

/// One obligation: `debtor` owes the other side `amount` (base units, > 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obligation {
    pub debtor: Side,
    pub amount: i128,
}

impl Netted {
    /// Signed net: positive when A owes B.
    pub fn net(&self) -> i128 {
        self.gross_a_to_b - self.gross_b_to_a
    }

    /// Who pays, and how much; None when the directions cancel.
    pub fn debtor(&self) -> Option<(Side, i128)> {
        match self.net() {
            0 => None,
            n if n > 0 => Some((Side::A, n)),
            n => Some((Side::B, -n)),
        }
    }

    /// What `side` owes net (negative when it is owed).
    pub fn exposure(&self, side: Side) -> i128 {
        match side {
            Side::A => self.net(),
            Side::B => -self.net(),
        }
    }
}

pub fn net(obligations: &[Obligation]) -> Netted {
    obligations.iter().fold(Netted::default(), |mut n, o| {
        match o.debtor {
            Side::A => n.gross_a_to_b += o.amount,
            Side::B => n.gross_b_to_a += o.amount,
        }
        n.obligations += 1;
        n
    })
}

/// How much more `debtor` may owe under `limit` (net exposure), given the session so far.
pub fn headroom(netted: &Netted, debtor: Side, limit: i128) -> i128 {
    limit - netted.exposure(debtor)
}

/// The credit-limit rule as the store applies it, under the session's lock, to the obligations
/// recorded so far.
pub fn headroom_rule(
    debtor: Side,
) -> impl Fn(&[crate::domain::trust::StoredObligation], (i128, i128)) -> i128 + Send + Sync {
    move |so_far, (limit_a, limit_b)| {
        let limit = match debtor {
            Side::A => limit_a,
            Side::B => limit_b,
        };
        let obligations: Vec<Obligation> = so_far
            .iter()
            .map(|s| Obligation {
                debtor: s.debtor,
                amount: s.amount,
            })
            .collect();
        headroom(&net(&obligations), debtor, limit)
    }
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Nothing => "nothing",
            Outcome::Full => "full",
            Outcome::Partial => "partial",
            Outcome::Carried => "carried",
            Outcome::Unsettled => "unsettled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub outcome: Outcome,
    /// Moved to the creditor now.
    pub settle: i128,
    /// Owed in the next session as an explicit T+1 obligation of the same debtor.
    pub carry: i128,
}

/// Settles `amount` owed by a debtor with `available` under `mode`.
pub fn plan(amount: i128, available: i128, mode: SettlementMode) -> Plan {
    let available = available.max(0);
    if amount <= 0 {
        return Plan {
            outcome: Outcome::Nothing,
            settle: 0,
            carry: 0,
        };
    }
    if available >= amount {
        return Plan {
            outcome: Outcome::Full,
            settle: amount,
            carry: 0,
        };
    }
    match mode {
        SettlementMode::Full => Plan {
            outcome: Outcome::Unsettled,
            settle: 0,
            carry: 0,
        },
        SettlementMode::Partial if available > 0 => Plan {
            outcome: Outcome::Partial,
            settle: available,
            carry: amount - available,
        },
        SettlementMode::Partial | SettlementMode::TPlus1 => Plan {
            outcome: Outcome::Carried,
            settle: 0,
            carry: amount,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn side(a: bool) -> Side {
        if a { Side::A } else { Side::B }
    }

    /// Brute force: move each obligation between two balances, one unit at a time in spirit,
    /// and read who ends up owing whom.
    fn reference(obligations: &[(bool, u32)]) -> (i128, i128, i128) {
        let (mut a, mut b) = (0i128, 0i128);
        let (mut ab, mut ba) = (0i128, 0i128);
        for (a_owes, amount) in obligations {
            let amount = i128::from(*amount);
            if *a_owes {
                a -= amount;
                b += amount;
                ab += amount;
            } else {
                b -= amount;
                a += amount;
                ba += amount;
            }
        }
        assert_eq!(a + b, 0);
        (ab, ba, -a)
    }

    proptest! {
        #[test]
        fn netting_equals_the_brute_force_reference(
            list in proptest::collection::vec((any::<bool>(), 1u32..1_000_000), 0..200)
        ) {
            let obligations: Vec<Obligation> = list
                .iter()
                .map(|(a, amount)| Obligation { debtor: side(*a), amount: i128::from(*amount) })
                .collect();
            let n = net(&obligations);
            let (ab, ba, a_owes) = reference(&list);
            prop_assert_eq!((n.gross_a_to_b, n.gross_b_to_a, n.net()), (ab, ba, a_owes));
            prop_assert_eq!(n.obligations, list.len());
            match n.debtor() {
                None => prop_assert_eq!(a_owes, 0),
                Some((Side::A, x)) => prop_assert_eq!(x, a_owes),
                Some((Side::B, x)) => prop_assert_eq!(x, -a_owes),
            }
        }

        /// Several sessions in a row with carry-forward: what was settled plus what is still
        /// carried equals everything owed net; no session settles more than was available;
        /// a carry is never negative and never kept in full mode.
        #[test]
        fn carry_forward_sums_across_sessions(
            sessions in proptest::collection::vec(
                (proptest::collection::vec((any::<bool>(), 1u32..10_000), 0..20), 0u32..30_000),
                1..12,
            ),
            mode in prop_oneof![Just(SettlementMode::Partial), Just(SettlementMode::TPlus1), Just(SettlementMode::Full)],
        ) {
            // carry: (debtor, amount) brought in as an obligation of the next session.
            let mut carry: Option<(Side, i128)> = None;
            let mut unsettled: Vec<(Side, i128)> = Vec::new();
            let (mut settled_a, mut settled_b) = (0i128, 0i128);
            let mut owed_net = 0i128; // what A owes B over all sessions' own obligations
            for (list, available) in &sessions {
                let mut obligations: Vec<Obligation> = list
                    .iter()
                    .map(|(a, amount)| Obligation { debtor: side(*a), amount: i128::from(*amount) })
                    .collect();
                owed_net += net(&obligations).net();
                if let Some((debtor, amount)) = carry.take() {
                    obligations.push(Obligation { debtor, amount });
                }
                let n = net(&obligations);
                let Some((debtor, amount)) = n.debtor() else { continue };
                let p = plan(amount, i128::from(*available), mode);
                prop_assert!(p.settle >= 0 && p.carry >= 0);
                prop_assert!(p.settle <= i128::from(*available));
                prop_assert_eq!(p.settle + p.carry + if p.outcome == Outcome::Unsettled { amount } else { 0 }, amount);
                if mode == SettlementMode::Full {
                    prop_assert_eq!(p.carry, 0);
                }
                match debtor {
                    Side::A => settled_a += p.settle,
                    Side::B => settled_b += p.settle,
                }
                if p.carry > 0 {
                    carry = Some((debtor, p.carry));
                }
                if p.outcome == Outcome::Unsettled {
                    unsettled.push((debtor, amount));
                }
            }
            let still = |s: Side| {
                carry.filter(|(d, _)| *d == s).map_or(0, |(_, a)| a)
                    + unsettled.iter().filter(|(d, _)| *d == s).map(|(_, a)| a).sum::<i128>()
            };
            // Everything A owed B net = what A paid − what B paid + what is still owed.
            prop_assert_eq!(owed_net, settled_a - settled_b + still(Side::A) - still(Side::B));
        }
    }

    #[test]
    fn plans_by_mode() {
        use SettlementMode::*;
        assert_eq!(plan(100, 150, Full).outcome, Outcome::Full);
        assert_eq!(
            plan(100, 60, Full),
            Plan {
                outcome: Outcome::Unsettled,
                settle: 0,
                carry: 0
            }
        );
        assert_eq!(
            plan(100, 60, Partial),
            Plan {
                outcome: Outcome::Partial,
                settle: 60,
                carry: 40
            }
        );
        assert_eq!(
            plan(100, 0, Partial),
            Plan {
                outcome: Outcome::Carried,
                settle: 0,
                carry: 100
            }
        );
        assert_eq!(
            plan(100, 60, TPlus1),
            Plan {
                outcome: Outcome::Carried,
                settle: 0,
                carry: 100
            }
        );
        assert_eq!(plan(0, 0, Full).outcome, Outcome::Nothing);
        assert_eq!(plan(100, -5, Partial).outcome, Outcome::Carried);
    }

    #[test]
    fn headroom_is_limit_minus_net_exposure() {
        let n = net(&[
            Obligation {
                debtor: Side::A,
                amount: 700,
            },
            Obligation {
                debtor: Side::B,
                amount: 200,
            },
        ]);
        assert_eq!(headroom(&n, Side::A, 1000), 500);
        assert_eq!(headroom(&n, Side::B, 1000), 1500);
    }
}
