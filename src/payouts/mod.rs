//! The payout engine's requests: validation results, policy decisions, splitting under the
//! per-transaction cap, and the payout and chunk records with their states. A payout is held
//! in the ledger and stored in the same database transaction (see `ledger::Effect`), so a
//! payout never exists without its hold and a hold never without its payout.

pub mod engine;
pub mod networks;
pub mod policy;

use crate::domain::{AccountId, AssetKey, ChunkId, HoldId, PayoutId, UnixMicros};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PayoutState {
    /// At or above the approval threshold: waits for an Approver who is not the creator.
    PendingApproval,
    /// Accepted and held; waits for a wallet (and for safe-mode, freezes and guardrails).
    Queued,
    /// At least one chunk is on the network.
    Broadcast,
    /// Every chunk confirmed at the network's depth.
    Confirmed,
    /// A chunk reverted; whatever was not paid went back to the account.
    Failed,
    Cancelled,
    Rejected,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChunkState {
    Queued,
    /// Signed and stored with its nonce; possibly not yet sent.
    Signed,
    Broadcast,
    /// Included in a block, not yet at the confirmation depth.
    Mined,
    Confirmed,
    Failed,
    Cancelled,
}

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

/// A decision or step in a payout's life, kept for the whole story (`GET /v1/payouts/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayoutEvent {
    #[serde(skip)]
    pub at: UnixMicros,
    /// e.g. `accepted`, `split`, `approval_required`.
    pub kind: String,
    pub detail: String,
}

/// A payout as accepted, before the ledger has given it its hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayout {
    pub id: PayoutId,
    pub account: AccountId,
    pub asset: AssetKey,
    /// EIP-55 checksummed.
    pub destination: String,
    pub amount: i128,
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub state: PayoutState,
    pub created_by: String,
    pub chunks: Vec<i128>,
    pub events: Vec<PayoutEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub id: ChunkId,
    pub index: u32,
    pub amount: i128,
    pub state: ChunkState,
    /// Every signed transaction, oldest first (loaded for a single payout, not for lists).
    pub attempts: Vec<Attempt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payout {
    pub id: PayoutId,
    pub account: AccountId,
    pub asset: AssetKey,
    pub destination: String,
    pub amount: i128,
    pub reference: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub state: PayoutState,
    /// The state it was accepted in: a replayed request answers with it.
    pub initial_state: PayoutState,
    pub created_by: String,
    pub hold: HoldId,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    pub chunks: Vec<Chunk>,
    pub events: Vec<PayoutEvent>,
    /// Set once an Operator asked to cancel what is not yet mined.
    pub cancel: Option<CancelRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub reason: String,
    pub by: String,
}

impl Payout {
    pub fn all_chunks_final(&self) -> bool {
        self.chunks.iter().all(|c| c.state.is_final())
    }
}

/// A queued chunk the sender may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkWork {
    pub chunk: ChunkId,
    pub payout: PayoutId,
    pub account: AccountId,
    pub hold: HoldId,
    /// Position in its payout; 0 is the first to go out.
    pub index: u32,
    /// When the payout was accepted.
    pub accepted_at: UnixMicros,
    pub asset: AssetKey,
    pub destination: String,
    pub amount: i128,
}

/// What a signed transaction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// The token transfer that pays the chunk.
    Transfer,
    /// A zero-value transfer to the wallet itself with the same nonce: mined instead of the
    /// transfer, it cancels the chunk.
    Cancel,
}

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

/// One signed transaction of a chunk, stored before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: uuid::Uuid,
    pub kind: AttemptKind,
    pub hash: [u8; 32],
    pub raw: Vec<u8>,
    pub nonce: u64,
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
    pub gas_limit: u64,
    pub created_at: UnixMicros,
    pub broadcast_at: Option<UnixMicros>,
    /// The chain head when it was first broadcast: stuck detection counts blocks from here.
    pub head_at_broadcast: Option<u64>,
}

/// Where a chunk's transaction was included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub hash: [u8; 32],
    pub block: u64,
    pub block_hash: [u8; 32],
    pub success: bool,
    /// Gas used times the effective gas price, in wei.
    pub fee_wei: u128,
}

/// A chunk between signing and its final state, with every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub chunk: ChunkId,
    pub payout: PayoutId,
    pub hold: HoldId,
    pub asset: AssetKey,
    pub destination: String,
    pub amount: i128,
    pub state: ChunkState,
    pub wallet: String,
    pub nonce: u64,
    pub mined: Option<Mined>,
    /// An Operator asked to cancel this chunk's payout.
    pub cancel_requested: bool,
    /// Oldest first.
    pub attempts: Vec<Attempt>,
}

/// The HOLD that reserves a payout's amount on `account`, carrying the new payout: split under
/// the token's per-transaction cap, waiting for an approval at or above the threshold. The
/// caller sets the command's idempotency key, audit and context.
pub fn request_command(
    token: &networks::PayoutToken,
    account: AccountId,
    destination: &str,
    amount: crate::domain::Amount,
    created_by: &str,
    reference: Option<String>,
    metadata: Option<serde_json::Value>,
) -> (PayoutId, crate::ledger::Command) {
    use crate::ledger::{Command, Effect, Operation};
    let spec = &token.spec;
    let chunks = split(amount.units(), token.cap);
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
                spec.format(token.cap),
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
    })));
    (id, cmd)
}

/// Once every chunk of a payout is final and at least one did not pay, the unpaid remainder
/// of its hold goes back to the account and the payout ends `failed` (a chunk reverted) or
/// `cancelled`. Returns the closed payout when this call closed it; None when it is not final
/// yet, fully paid, or was closed before.
pub async fn close_unpaid(
    ledger: &crate::ledger::Ledger,
    payout: PayoutId,
) -> Result<Option<Payout>, crate::store::StoreError> {
    use crate::ledger::{Command, Effect, LedgerError, Operation};
    let p = ledger.store().get_payout(payout).await?;
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
