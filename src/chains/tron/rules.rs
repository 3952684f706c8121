//! The rules the Tron payout engine follows, as pure functions: what each broadcast answer
//! means for the transaction, how high a fee limit goes, when an expired transaction may be
//! rebuilt, and when a result is final. Kept apart so each is tested on its own.

/// What to do after `broadcasthex` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Accepted: track it by txID.
    Track,
    /// The node already has it (our earlier broadcast got through): track it.
    AlreadyKnown,
    /// A passing condition on the node's side: send the same bytes again later.
    RetryLater,
    /// The transaction can never be accepted as built (reference block gone, expired): wait
    /// until the solidified head has passed its expiration, then rebuild with a new reference
    /// block — never while it might still land.
    RebuildAfterExpiry,
    /// The wallet lacks bandwidth/TRX: keep the transaction, take the wallet out of use until
    /// topped up, retry.
    WalletShortOfResources,
    /// Our signature or contract is wrong: stop, fail the attempt for an operator to look at
    /// (nothing was spent).
    Refused,
}

/// The reaction to a broadcast answer (`code` None = success), after `api.proto`'s
/// `Return.response_code`.
pub fn reaction(code: Option<&str>) -> Reaction {
    match code {
        None | Some("SUCCESS") => Reaction::Track,
        Some("DUP_TRANSACTION_ERROR") => Reaction::AlreadyKnown,
        Some(
            "SERVER_BUSY"
            | "NO_CONNECTION"
            | "NOT_ENOUGH_EFFECTIVE_CONNECTION"
            | "BLOCK_UNSOLIDIFIED"
            | "OTHER_ERROR",
        ) => Reaction::RetryLater,
        Some("TAPOS_ERROR" | "TRANSACTION_EXPIRATION_ERROR") => Reaction::RebuildAfterExpiry,
        Some("BANDWITH_ERROR") => Reaction::WalletShortOfResources,
        // SIGERROR, CONTRACT_VALIDATE_ERROR, CONTRACT_EXE_ERROR, TOO_BIG_TRANSACTION_ERROR and
        // anything unknown: the transaction is wrong as it stands.
        Some(_) => Reaction::Refused,
    }
}

/// What an executed transaction's receipt means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Execution {
    /// Paid (final once solidified).
    Success,
    /// Refused by the contract: the chunk fails and its hold is returned.
    Revert,
    /// Ran out of energy under its fee limit: rebuild with a raised limit, within the cap.
    OutOfEnergy,
    /// Any other failure (OUT_OF_TIME, TRANSFER_FAILED, …): the chunk fails for an operator.
    Failed,
}

pub fn execution(receipt_result: &str) -> Execution {
    match receipt_result {
        "SUCCESS" => Execution::Success,
        "REVERT" => Execution::Revert,
        "OUT_OF_ENERGY" => Execution::OutOfEnergy,
        _ => Execution::Failed,
    }
}

/// The fee limit for a call estimated at `energy` units at `price` sun each: raised by
/// `factor_bps` (10,000 = ×1) and capped at `cap` sun. None when even the estimate is above
/// the cap (the wallet must stake energy or the cap be raised).
pub fn fee_limit(energy: i64, price: i64, factor_bps: i64, cap: i64) -> Option<i64> {
    let base = energy.checked_mul(price)?;
    if base > cap {
        return None;
    }
    Some((base.checked_mul(factor_bps)? / 10_000).min(cap))
}

/// After OUT_OF_ENERGY with `previous` fee limit: the next one, doubled, within `cap`; None
/// when the cap was already reached.
pub fn raised_fee_limit(previous: i64, cap: i64) -> Option<i64> {
    (previous < cap).then(|| previous.saturating_mul(2).min(cap))
}

/// Whether an unconfirmed transaction expiring at `expiration` (ms) can no longer land: only
/// when the solidified head's time has passed it. Until then a rebuild could put two live
/// transactions for one chunk on the network.
pub fn expired_for_good(expiration: i64, solid_head_time: i64) -> bool {
    solid_head_time > expiration
}

/// Whether a transaction in `block` is final: at or below the solidified head.
pub fn is_final(block: u64, solid_head: u64) -> bool {
    block <= solid_head
}

/// What one TRC-20 payout costs a wallet, as the engine estimates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayoutCost {
    pub energy: i64,
    /// Bytes of bandwidth (a USDT transfer is about 345).
    pub bandwidth: i64,
    /// Sun per energy unit (`getEnergyFee`).
    pub energy_price: i64,
    /// Sun per byte when free/staked bandwidth is used up.
    pub bandwidth_price: i64,
}

/// The least a wallet keeps before it is used: TRX, energy and bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Buffers {
    pub trx_sun: i64,
    pub energy: i64,
    pub bandwidth: i64,
}

/// How many more payouts `r` can pay: staked energy and bandwidth first, then TRX burned for
/// the rest, payout after payout.
pub fn runway(r: &super::client::Resources, cost: &PayoutCost) -> i64 {
    let full_burn = cost.energy * cost.energy_price + cost.bandwidth * cost.bandwidth_price;
    let (mut energy, mut bandwidth, mut sun) =
        (r.energy_available, r.bandwidth_available, r.balance_sun);
    let mut n = 0;
    // While stake lasts, payout by payout (bounded by the stake); then TRX alone, in one step.
    while energy > 0 || bandwidth > 0 {
        let from_energy = energy.min(cost.energy);
        let from_bandwidth = bandwidth.min(cost.bandwidth);
        if from_energy == 0 && from_bandwidth == 0 {
            break;
        }
        let burn = (cost.energy - from_energy) * cost.energy_price
            + (cost.bandwidth - from_bandwidth) * cost.bandwidth_price;
        if burn > sun {
            return n;
        }
        energy -= from_energy;
        bandwidth -= from_bandwidth;
        sun -= burn;
        n += 1;
    }
    if full_burn <= 0 {
        return i64::MAX;
    }
    n + sun.max(0) / full_burn
}

/// Whether a wallet is below any of its buffers (then it is not used).
pub fn below_buffers(r: &super::client::Resources, b: &Buffers) -> bool {
    r.balance_sun < b.trx_sun
        || r.energy_available < b.energy
        || r.bandwidth_available < b.bandwidth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_broadcast_code_has_a_reaction() {
        for (code, expected) in [
            (None, Reaction::Track),
            (Some("SIGERROR"), Reaction::Refused),
            (Some("CONTRACT_VALIDATE_ERROR"), Reaction::Refused),
            (Some("CONTRACT_EXE_ERROR"), Reaction::Refused),
            (Some("BANDWITH_ERROR"), Reaction::WalletShortOfResources),
            (Some("DUP_TRANSACTION_ERROR"), Reaction::AlreadyKnown),
            (Some("TAPOS_ERROR"), Reaction::RebuildAfterExpiry),
            (Some("TOO_BIG_TRANSACTION_ERROR"), Reaction::Refused),
            (
                Some("TRANSACTION_EXPIRATION_ERROR"),
                Reaction::RebuildAfterExpiry,
            ),
            (Some("SERVER_BUSY"), Reaction::RetryLater),
            (Some("NO_CONNECTION"), Reaction::RetryLater),
            (
                Some("NOT_ENOUGH_EFFECTIVE_CONNECTION"),
                Reaction::RetryLater,
            ),
            (Some("BLOCK_UNSOLIDIFIED"), Reaction::RetryLater),
            (Some("OTHER_ERROR"), Reaction::RetryLater),
            (Some("SOMETHING_NEW"), Reaction::Refused),
        ] {
            assert_eq!(reaction(code), expected, "{code:?}");
        }
    }

    #[test]
    fn receipts_map_to_what_the_chunk_does() {
        assert_eq!(execution("SUCCESS"), Execution::Success);
        assert_eq!(execution("REVERT"), Execution::Revert);
        assert_eq!(execution("OUT_OF_ENERGY"), Execution::OutOfEnergy);
        assert_eq!(execution("OUT_OF_TIME"), Execution::Failed);
    }

    #[test]
    fn fee_limits_are_raised_and_capped() {
        // 29,631 energy at 420 sun, ×1.2, under a 100 TRX cap.
        assert_eq!(
            fee_limit(29_631, 420, 12_000, 100_000_000),
            Some(14_934_024)
        );
        assert_eq!(fee_limit(29_631, 420, 30_000, 20_000_000), Some(20_000_000));
        assert_eq!(fee_limit(29_631, 420, 12_000, 10_000_000), None);
        assert_eq!(raised_fee_limit(14_934_024, 20_000_000), Some(20_000_000));
        assert_eq!(raised_fee_limit(20_000_000, 20_000_000), None);
    }

    #[test]
    fn a_rebuild_waits_for_the_solidified_head_to_pass_the_expiration() {
        assert!(!expired_for_good(1_000_000, 999_999));
        assert!(!expired_for_good(1_000_000, 1_000_000));
        assert!(expired_for_good(1_000_000, 1_000_001));
        assert!(is_final(10, 10));
        assert!(!is_final(11, 10));
    }

    #[test]
    fn runway_counts_stake_first_then_burned_trx() {
        use super::super::client::Resources;
        let cost = PayoutCost {
            energy: 30_000,
            bandwidth: 345,
            energy_price: 420,
            bandwidth_price: 1000,
        };
        // Staked for two payouts, no TRX: two.
        let staked = Resources {
            balance_sun: 0,
            energy_available: 60_000,
            bandwidth_available: 700,
        };
        assert_eq!(runway(&staked, &cost), 2);
        // Only TRX: 100 TRX / (12.6 TRX + 0.345 TRX) = 7.
        let trx = Resources {
            balance_sun: 100_000_000,
            energy_available: 0,
            bandwidth_available: 0,
        };
        assert_eq!(runway(&trx, &cost), 7);
        // Mixed: one staked payout, then TRX for the rest.
        let mixed = Resources {
            balance_sun: 13_000_000,
            energy_available: 30_000,
            bandwidth_available: 345,
        };
        assert_eq!(runway(&mixed, &cost), 2);
        let empty = Resources::default();
        assert_eq!(runway(&empty, &cost), 0);
        let buffers = Buffers {
            trx_sun: 50_000_000,
            energy: 0,
            bandwidth: 0,
        };
        assert!(!below_buffers(&trx, &buffers));
        assert!(below_buffers(&mixed, &buffers));
    }
}
