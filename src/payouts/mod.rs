//! The payout engine's requests: validation results, policy decisions, splitting under the
//! per-transaction cap, and the payout and chunk records with their states. A payout is held
//! in the ledger and stored in the same database transaction (see `ledger::Effect`), so a
//! payout never exists without its hold and a hold never without its payout.
pub use crate::domain::payouts::{
    Attempt, AttemptKind, BatchSlot, CancelRequest, Chunk, ChunkState, ChunkWork, InFlight, Mined,
    NewPayout, Payout, PayoutEvent, PayoutState, WalletCall,
};

pub mod engine;
pub mod networks;
pub mod policy;

use crate::domain::{AccountId, PayoutId};

crate::domain::stored_as_text!(PayoutState);

impl PayoutState {
    pub const ALL: [PayoutState; 7] = [
        PayoutState::PendingApproval,
        PayoutState::Queued,
        PayoutState::Broadcast,
        PayoutState::Confirmed,
        PayoutState::Failed,
        PayoutState::Cancelled,
        PayoutState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PayoutState::PendingApproval => "pending_approval",
            PayoutState::Queued => "queued",
            PayoutState::Broadcast => "broadcast",
            PayoutState::Confirmed => "confirmed",
            PayoutState::Failed => "failed",
            PayoutState::Cancelled => "cancelled",
            PayoutState::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

crate::domain::stored_as_text!(ChunkState);

impl ChunkState {
    /// Nothing more will happen to the chunk.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ChunkState::Confirmed | ChunkState::Failed | ChunkState::Cancelled
        )
    }

    pub const ALL: [ChunkState; 7] = [
        ChunkState::Queued,
        ChunkState::Signed,
        ChunkState::Broadcast,
        ChunkState::Mined,
        ChunkState::Confirmed,
        ChunkState::Failed,
        ChunkState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Queued => "queued",
            ChunkState::Signed => "signed",
            ChunkState::Broadcast => "broadcast",
            ChunkState::Mined => "mined",
            ChunkState::Confirmed => "confirmed",
            ChunkState::Failed => "failed",
            ChunkState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// Splits `amount` into chunks of at most `cap`: as many full caps as fit, then the remainder
/// last. Deterministic, so a replayed request splits the same way.
pub fn split(amount: i128, cap: i128) -> Vec<i128> {
    debug_assert!(amount > 0 && cap > 0);
    let full = amount / cap;
    let rest = amount % cap;
    let mut chunks: Vec<i128> = (0..full).map(|_| cap).collect();
    if rest > 0 {
        chunks.push(rest);
    }
    chunks
}

impl Payout {
    pub fn all_chunks_final(&self) -> bool {
        self.chunks.iter().all(|c| c.state.is_final())
    }
}

crate::domain::stored_as_text!(AttemptKind);

impl AttemptKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptKind::Transfer => "transfer",
            AttemptKind::Cancel => "cancel",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "transfer" => Some(AttemptKind::Transfer),
            "cancel" => Some(AttemptKind::Cancel),
            _ => None,
        }
    }
}

/// What a payout request says, for `request_command`.
pub struct PayoutRequest<'a> {
    pub account: AccountId,
    pub destination: &'a str,
    pub amount: crate::domain::Amount,
    pub created_by: &'a str,
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// The account's company, counted against the network's rolling approval total; None for
    /// the operator's own payouts and the daemon's (deals, trust settlement, canaries).
    pub company: Option<uuid::Uuid>,
    /// The per-transaction cap in force (`PayoutNetworks::cap`): configured or set at runtime.
    pub cap: i128,
}

/// The HOLD that reserves a payout's amount on `account`, carrying the new payout: split under
/// the token's per-transaction cap, waiting for an approval at or above the threshold. The
/// caller sets the command's idempotency key, audit and context.
pub fn request_command(
    token: &networks::PayoutToken,
    request: PayoutRequest<'_>,
) -> (PayoutId, crate::ledger::Command) {
    use crate::ledger::{Command, Effect, Operation};
    let PayoutRequest {
        account,
        destination,
        amount,
        created_by,
        reference,
        metadata,
        company,
        cap,
    } = request;
    let spec = &token.spec;
    let chunks = split(amount.units(), cap);
    let mut events = vec![
        PayoutEvent {
            at: 0,
            kind: "accepted".into(),
            detail: format!(
                "{} {} to {destination} requested by {created_by}",
                spec.format(amount.units()),
                spec.key,
            ),
        },
        PayoutEvent {
            at: 0,
            kind: "split".into(),
            detail: format!(
                "{} transfer(s) under the per-transaction cap of {}: {}",
                chunks.len(),
                spec.format(cap),
                chunks
                    .iter()
                    .map(|c| spec.format(*c))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    ];
    let initial = match token.approval_threshold {
        Some(threshold) if amount.units() >= threshold => {
            events.push(PayoutEvent {
                at: 0,
                kind: "approval_required".into(),
                detail: format!(
                    "at or above the approval threshold of {}: waits for an Approver other than {created_by}",
                    spec.format(threshold),
                ),
            });
            PayoutState::PendingApproval
        }
        _ => PayoutState::Queued,
    };
    let id = PayoutId::new();
    let mut cmd = Command::new("", spec.key.clone(), Operation::Hold { account, amount });
    cmd.reference = reference.clone();
    cmd.effects.push(Effect::NewPayout(Box::new(NewPayout {
        id,
        account,
        asset: spec.key.clone(),
        destination: destination.to_owned(),
        amount: amount.units(),
        reference,
        metadata,
        state: initial,
        created_by: created_by.to_owned(),
        chunks,
        events,
        rolling: company
            .zip(token.approval_rolling_total)
            .map(|(company, limit)| crate::domain::payouts::RollingApproval {
                company,
                limit,
                decimals: spec.decimals,
            }),
    })));
    (id, cmd)
}

/// Once every chunk of a payout is final and at least one did not pay, the unpaid remainder
/// of its hold goes back to the account and the payout ends `failed` (a chunk reverted) or
/// `cancelled`. Returns the closed payout when this call closed it; None when it is not final
/// yet, fully paid, or was closed before.
pub async fn close_unpaid(
    ledger: &crate::ledger::Ledger,
    payouts: &dyn crate::store::PayoutStore,
    payout: PayoutId,
) -> Result<Option<Payout>, crate::store::StoreError> {
    use crate::ledger::{Command, Effect, LedgerError, Operation};
    let p = payouts.get_payout(payout).await?;
    if !p.all_chunks_final()
        || p.chunks.iter().all(|c| c.state == ChunkState::Confirmed)
        || !matches!(p.state, PayoutState::Queued | PayoutState::Broadcast)
    {
        return Ok(None);
    }
    let paid: i128 = p
        .chunks
        .iter()
        .filter(|c| c.state == ChunkState::Confirmed)
        .map(|c| c.amount)
        .sum();
    let (state, why) = if p.chunks.iter().any(|c| c.state == ChunkState::Failed) {
        (PayoutState::Failed, "a chunk reverted".to_owned())
    } else {
        let by = p.cancel.as_ref().map_or("an Operator", |c| c.by.as_str());
        (PayoutState::Cancelled, format!("cancelled by {by}"))
    };
    let mut cmd = Command::new(
        format!("payout:{payout}:void"),
        p.asset.clone(),
        Operation::Void { hold: p.hold },
    );
    cmd.memo = Some(format!("payout {payout} {}", state.as_str()));
    cmd.effects.push(Effect::PayoutClosed {
        payout,
        from: vec![PayoutState::Queued, PayoutState::Broadcast],
        state,
        detail: format!(
            "{why}; {paid} of {} base units paid, the rest went back to the account",
            p.amount
        ),
    });
    // Its own database transaction: a conflict here must not fail anyone else's commands.
    match ledger.post(vec![cmd]).await?.pop() {
        Some(Ok(posted)) if !posted.replayed => Ok(Some(Payout { state, ..p })),
        Some(Ok(_)) | Some(Err(LedgerError::HoldResolved(_))) | None => Ok(None),
        Some(Err(e)) => Err(crate::store::StoreError::Invariant(format!(
            "closing payout {payout}: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_under_the_cap_with_the_remainder_last() {
        assert_eq!(split(600_000, 250_000), vec![250_000, 250_000, 100_000]);
        assert_eq!(split(500_000, 250_000), vec![250_000, 250_000]);
        assert_eq!(split(1, 250_000), vec![1]);
        for (amount, cap) in [(7, 3), (1_000_001, 10), (250_000, 250_000)] {
            let parts = split(amount, cap);
            assert_eq!(parts.iter().sum::<i128>(), amount);
            assert!(parts.iter().all(|p| *p > 0 && *p <= cap));
        }
    }
}
