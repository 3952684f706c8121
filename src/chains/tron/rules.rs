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
}
