//! Payout records: requests, their chunks, signed attempts and states, as stored.

use crate::domain::{AccountId, AssetKey, ChunkId, HoldId, PayoutId, UnixMicros};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequest {
    pub reason: String,
    pub by: String,
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
    /// Four eyes over a rolling day, applied when the payout is written (see `RollingApproval`).
    pub rolling: Option<RollingApproval>,
}

/// A company's payouts that needed no approval may total at most `limit` token units in the
/// 24 hours before a new one; past it, the new one waits for an approver too. Checked in the
/// transaction that writes the payout, under a lock on the company, so concurrent payouts
/// cannot pass the total together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingApproval {
    pub company: uuid::Uuid,
    pub limit: i128,
    /// The asset's decimals, to say the figures in token units.
    pub decimals: u8,
}

impl RollingApproval {
    /// Given what the company's payouts without approval came to in the last 24 h (`before`),
    /// whether `payout` must wait for an approver, with the event that says why.
    pub fn decide(&self, before: i128, payout: &NewPayout) -> Option<PayoutEvent> {
        if before + payout.amount <= self.limit {
            return None;
        }
        let spec = crate::domain::AssetSpec {
            key: payout.asset.clone(),
            decimals: self.decimals,
        };
        Some(PayoutEvent {
            at: 0,
            kind: "approval_required".into(),
            detail: format!(
                "the company's payouts without approval in the last 24 h come to {}; with this one \
                 they would pass the rolling total of {}: waits for an Approver other than {}",
                spec.format(before),
                spec.format(self.limit),
                payout.created_by
            ),
        })
    }
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

/// A decision or step in a payout's life, kept for the whole story (`GET /v1/payouts/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PayoutEvent {
    #[serde(skip)]
    pub at: UnixMicros,
    /// e.g. `accepted`, `split`, `approval_required`.
    pub kind: String,
    pub detail: String,
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutPhase {
    /// 10% of the daily volume target.
    Pilot,
    /// 30% of the daily volume target.
    Canary,
    /// The whole daily volume target.
    Full,
}

/// A network in safe-mode: payouts are accepted and queued, nothing new is broadcast.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SafeMode {
    pub reason: String,
    pub actor: String,
    pub since: UnixMicros,
}

/// A rollout phase set through the API.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RolloutSetting {
    pub phase: RolloutPhase,
    pub actor: String,
    pub reason: String,
    pub since: UnixMicros,
}

/// A token frozen on a network: its payouts queue, nothing new is broadcast.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AssetFreeze {
    pub asset: String,
    pub reason: String,
    pub actor: String,
    pub since: UnixMicros,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AllowedDestination {
    pub network: String,
    /// EIP-55 checksummed.
    pub address: String,
    pub label: Option<String>,
    pub added_by: String,
    pub added_at: UnixMicros,
}

/// A partner account's destination allowlist; payouts are checked against it when enforced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Allowlist {
    pub enforced: bool,
    pub entries: Vec<AllowedDestination>,
}

/// For each account among those asked about whose allowlist is enforced: the (network,
/// address) pairs it may pay to.
pub type EnforcedAllowlists =
    std::collections::HashMap<AccountId, std::collections::HashSet<(String, String)>>;

/// An address whose incoming token transfers credit an account.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DepositAddress {
    #[sqlx(rename = "account_id")]
    pub account: AccountId,
    /// The account's asset: only transfers of this token credit it.
    #[sqlx(flatten)]
    pub asset: AssetKey,
    /// EIP-55 checksummed.
    pub address: String,
    pub added_by: String,
    pub added_at: UnixMicros,
}

/// Which payouts to list, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct PayoutFilter {
    pub state: Option<PayoutState>,
    pub account: Option<AccountId>,
    /// Only payouts from this company's accounts.
    pub company: Option<uuid::Uuid>,
    pub network: Option<String>,
    pub after: Option<PayoutId>,
    pub limit: i64,
}
