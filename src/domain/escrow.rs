//! Escrow records: deals, their steps, timeline and evidence, as stored.

use crate::domain::{AccountId, AssetKey, DealId, HoldId, TimerId, UnixMicros};
use crate::templates::{DisputeOutcome, Template};
use crate::timers::TimerKind;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deal {
    pub id: DealId,
    /// The template as it was when the deal was created; later versions never change it.
    pub template: Template,
    pub buyer: AccountId,
    pub seller: AccountId,
    pub asset: AssetKey,
    pub amount: i128,
    pub immediate: i128,
    pub holdback: i128,
    pub state: DealState,
    pub hold: Option<HoldId>,
    /// Released to the seller so far.
    pub released: i128,
    /// Returned to the buyer by an offset.
    pub offset: i128,
    /// Returned to the buyer by a refund.
    pub refunded: i128,
    pub issue: Option<Issue>,
    /// DISPUTE_TTL ran out and the template said to escalate.
    pub escalated: bool,
    pub resolution: Option<Resolution>,
    pub reference: Option<String>,
    pub created_by: String,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    pub settled_at: Option<UnixMicros>,
    /// Where the seller's releases are paid out on chain (EIP-55); None: they stay on the
    /// seller's account.
    pub seller_payout: Option<String>,
    /// Where offsets and refunds to the buyer are paid out on chain; None: they stay on the
    /// buyer's account.
    pub buyer_refund: Option<String>,
}

/// A line of a deal's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct DealEvent {
    pub at: UnixMicros,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DealState {
    Created,
    Funded,
    Delivered,
    Inspection,
    Approved,
    Issue,
    Settled,
}

/// One guarded transition of a deal, written in one database transaction with whatever
/// ledger posting carries it (as an effect) or on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealStep {
    pub deal: DealId,
    /// The step applies only while the deal is in one of these; otherwise the whole database
    /// transaction is refused.
    pub from: Vec<DealState>,
    pub to: DealState,
    pub actor: String,
    /// The deal clock's time (timers and the timeline run on it).
    pub at: UnixMicros,
    /// Timeline entries (kind, detail), in order.
    pub events: Vec<(String, String)>,
    /// Take the hold the carrying posting created (funding).
    pub takes_hold: bool,
    pub released: i128,
    pub offset: i128,
    pub refunded: i128,
    /// Cancel the deal's pending timers (other than the one firing).
    pub cancel_timers: bool,
    pub set_timer: Option<(TimerKind, UnixMicros)>,
    /// The timer this step is the firing of: it must still be pending.
    pub fire_timer: Option<TimerId>,
    pub issue: Option<Issue>,
    pub escalate: bool,
    pub resolution: Option<Resolution>,
}

/// The buyer's complaint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issue {
    pub reason_code: String,
    pub detail: String,
    pub raised_at: UnixMicros,
}

/// An Operator's decision on an issue (or the template's, when DISPUTE_TTL says so).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resolution {
    pub outcome: DisputeOutcome,
    /// Base units returned to the buyer by an OFFSET.
    pub offset: i128,
    pub by: String,
    pub reason: String,
    pub at: UnixMicros,
}

/// A piece of evidence: its metadata; the bytes are in the content-addressed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Evidence {
    pub id: uuid::Uuid,
    #[serde(skip)]
    #[sqlx(rename = "deal_id")]
    pub deal: DealId,
    /// One of the template's evidence types.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub kind: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub uploaded_by: String,
    #[serde(skip)]
    pub uploaded_at: UnixMicros,
}

/// What the report needs of one deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DealFacts {
    pub country: String,
    pub category: String,
    pub template_version: u32,
    pub state: DealState,
    pub created_at: UnixMicros,
    pub settled_at: Option<UnixMicros>,
    pub disputed: bool,
    pub issue_at: Option<UnixMicros>,
    pub dispute_ttl_hours: u32,
    pub has_evidence: bool,
    /// Who resolved the dispute ("timer" when the template decided at DISPUTE_TTL).
    pub resolved_by: Option<String>,
    pub resolved_at: Option<UnixMicros>,
}

/// Which deals to list: every field narrows, None matches all.
#[derive(Debug, Clone, Default)]
pub struct DealFilter {
    pub state: Option<DealState>,
    /// Only deals whose buyer or seller account is this company's.
    pub company: Option<uuid::Uuid>,
    pub country: Option<String>,
    pub category: Option<String>,
    pub template_version: Option<u32>,
    pub after: Option<DealId>,
    pub limit: i64,
}
