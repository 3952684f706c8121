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
    /// Set when the transaction pays several chunks at once (a disperse call): where among
    /// its payments this chunk is. Every chunk of the batch has its own attempt row with the
    /// same hash and bytes.
    pub batch: Option<BatchSlot>,
}

/// A hot wallet's transaction that pays no chunk: the approval that lets the disperse
/// contract move the wallet's own balance of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletCall {
    pub hash: [u8; 32],
    /// Checksummed address.
    pub wallet: String,
    pub nonce: u64,
    /// The token contract approved, checksummed.
    pub token: String,
    /// Who may spend: the disperse contract, checksummed.
    pub spender: String,
    pub raw: Vec<u8>,
    pub created_at: UnixMicros,
    pub broadcast_at: Option<UnixMicros>,
}

/// A chunk's place in a batched transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSlot {
    /// 0-based position among the batch's payments.
    pub index: u32,
    /// How many payments (chunks) the transaction carries.
    pub size: u32,
}

impl BatchSlot {
    /// This chunk's share of a fee the whole batch paid: the fee divided evenly, rounded down,
    /// with the remainder handed out one unit each to the lowest positions. The shares add up
    /// to the fee exactly.
    pub fn share_of(self, fee: u128) -> u128 {
        let size = u128::from(self.size.max(1));
        fee / size + u128::from(u128::from(self.index) < fee % size)
    }
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
    /// Its batch reverted once (or a batch-mate's cancel took its nonce): it goes out alone.
    pub single_only: bool,
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

impl InFlight {
    /// The attempt that was mined, when one was.
    pub fn mined_attempt(&self) -> Option<&Attempt> {
        let m = self.mined?;
        self.attempts.iter().find(|a| a.hash == m.hash)
    }

    /// The idempotency key of the FEE posting for the gas of the chunk's mined transaction.
    pub fn gas_key(&self) -> Option<String> {
        let m = self.mined?;
        let batched = self.mined_attempt().is_some_and(|a| a.batch.is_some());
        Some(gas_key(self.chunk, &m.hash, batched))
    }

    /// Notes that `attempt` went out at `at` with the chain at `head`: what the database
    /// marked, kept in memory (a mined chunk stays mined; a first broadcast stays the first).
    pub fn note_broadcast(&mut self, attempt: uuid::Uuid, at: UnixMicros, head: u64) {
        if self.state == ChunkState::Signed {
            self.state = ChunkState::Broadcast;
        }
        if let Some(a) = self
            .attempts
            .iter_mut()
            .find(|a| a.id == attempt && a.broadcast_at.is_none())
        {
            a.broadcast_at = Some(at);
            a.head_at_broadcast = Some(head);
        }
    }
}

/// The idempotency key of a chunk's gas posting. A chunk pays gas for one transaction unless
/// its batch paid nothing and it went out again alone, so a batched transaction's share is
/// keyed by its hash as well; a single transfer keeps the chunk-only key.
pub fn gas_key(chunk: ChunkId, mined_hash: &[u8; 32], batched: bool) -> String {
    if batched {
        format!("payout-chunk:{chunk}:gas:0x{}", hex::encode(mined_hash))
    } else {
        format!("payout-chunk:{chunk}:gas")
    }
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

impl Allowlist {
    /// Whether the account may pay `address` on `network`: anywhere while the list is not
    /// enforced, else only to an entry.
    pub fn allows(&self, network: &str, address: &str) -> bool {
        !self.enforced
            || self
                .entries
                .iter()
                .any(|e| e.network == network && e.address == address)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batchs_gas_shares_add_up_to_the_fee_with_the_remainder_to_the_first_places() {
        for (fee, size) in [
            (0u128, 1u32),
            (10, 3),
            (1_000_003, 7),
            (5, 9),
            (u128::MAX, 500),
        ] {
            let shares: Vec<u128> = (0..size)
                .map(|index| BatchSlot { index, size }.share_of(fee))
                .collect();
            assert_eq!(
                shares.iter().fold(0u128, |a, s| a.checked_add(*s).unwrap()),
                fee,
                "{fee} over {size}"
            );
            // Rounded down, the remainder one unit each to the lowest places.
            let base = fee / u128::from(size);
            for (i, share) in shares.iter().enumerate() {
                let extra = u128::from((i as u128) < fee % u128::from(size));
                assert_eq!(*share, base + extra);
            }
        }
    }
}
