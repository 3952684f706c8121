//! Escrow deals: a buyer's money held while a seller delivers, released on the template's
//! rules and timers.
//!
//! States: CREATED → FUNDED (the amount is held on the buyer's account) → DELIVERED (the
//! immediate part is released to the seller) → INSPECTION (AUTO_APPROVE set for
//! `inspectionTtlDays`) → APPROVED (the buyer approves, or the timer fires) → SETTLED (the
//! holdback is released to the seller). From INSPECTION the buyer may raise an ISSUE (DISPUTE_TTL
//! set for `disputeTtlHours`), which an Operator resolves with one of the template's outcomes:
//! release in full, refund in full, or an offset to the buyer up to the reason code's cap with
//! the rest released; then SETTLED.
//!
//! Funding takes one HOLD for the whole amount; the immediate/holdback split is the template's
//! (the holdback rounded down, the immediate part taking the remainder), and each release draws
//! on that one hold, so a deal can never pay out more than was held and funding is one atomic
//! posting. Every step is a guarded transition: it applies only from the states it names, in
//! the same database transaction as its postings, timers and timeline events, so a step that
//! lost a race (an approval against the AUTO_APPROVE timer) is refused whole.

pub mod evidence;
pub mod report;
pub mod service;

use crate::domain::{AccountId, AssetKey, DealId, HoldId, Role, TimerId, UnixMicros};
use crate::templates::{DisputeOutcome, Template};
use crate::timers::TimerKind;
use serde::{Deserialize, Serialize};

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

impl DealState {
    pub const ALL: [DealState; 7] = [
        DealState::Created,
        DealState::Funded,
        DealState::Delivered,
        DealState::Inspection,
        DealState::Approved,
        DealState::Issue,
        DealState::Settled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DealState::Created => "CREATED",
            DealState::Funded => "FUNDED",
            DealState::Delivered => "DELIVERED",
            DealState::Inspection => "INSPECTION",
            DealState::Approved => "APPROVED",
            DealState::Issue => "ISSUE",
            DealState::Settled => "SETTLED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a caller can do to a deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DealAction {
    Fund,
    Deliver,
    Approve,
    RaiseIssue,
    Resolve,
}

impl DealAction {
    pub const ALL: [DealAction; 5] = [
        DealAction::Fund,
        DealAction::Deliver,
        DealAction::Approve,
        DealAction::RaiseIssue,
        DealAction::Resolve,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DealAction::Fund => "fund",
            DealAction::Deliver => "deliver",
            DealAction::Approve => "approve",
            DealAction::RaiseIssue => "raise_issue",
            DealAction::Resolve => "resolve",
        }
    }

    /// The state the action applies in and the role that may take it: the parties act through
    /// a Trader (the partner platform), disputes are an Operator's.
    fn rule(self) -> (DealState, Role) {
        match self {
            DealAction::Fund => (DealState::Created, Role::Trader),
            DealAction::Deliver => (DealState::Funded, Role::Trader),
            DealAction::Approve | DealAction::RaiseIssue => (DealState::Inspection, Role::Trader),
            DealAction::Resolve => (DealState::Issue, Role::Operator),
        }
    }
}

/// The actions `role` may take on a deal in `state`.
pub fn allowed_actions(state: DealState, role: Role) -> Vec<DealAction> {
    DealAction::ALL
        .into_iter()
        .filter(|a| a.rule() == (state, role))
        .collect()
}

/// Whether the action exists for some role in `state` (refusals by role are 403, by state 409).
pub fn action_fits_state(action: DealAction, state: DealState) -> bool {
    action.rule().0 == state
}

pub fn action_role(action: DealAction) -> Role {
    action.rule().1
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

impl Deal {
    /// What the hold still reserves: funded and not yet released, offset or refunded.
    pub fn held(&self) -> i128 {
        if self.hold.is_none() {
            return 0;
        }
        self.amount - self.released - self.offset - self.refunded
    }
}

/// A piece of evidence: its metadata; the bytes are in the content-addressed store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Evidence {
    pub id: uuid::Uuid,
    #[serde(skip)]
    pub deal: DealId,
    /// One of the template's evidence types.
    #[serde(rename = "type")]
    pub kind: String,
    pub sha256: String,
    pub size: i64,
    pub content_type: String,
    pub uploaded_by: String,
    #[serde(skip)]
    pub uploaded_at: UnixMicros,
}

/// A line of a deal's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DealEvent {
    pub at: UnixMicros,
    pub kind: String,
    pub actor: String,
    pub detail: String,
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

impl DealStep {
    pub fn new(deal: &Deal, to: DealState, actor: &str, at: UnixMicros) -> Self {
        Self {
            deal: deal.id,
            from: vec![deal.state],
            to,
            actor: actor.to_owned(),
            at,
            events: Vec::new(),
            takes_hold: false,
            released: 0,
            offset: 0,
            refunded: 0,
            cancel_timers: false,
            set_timer: None,
            fire_timer: None,
            issue: None,
            escalate: false,
            resolution: None,
        }
    }

    pub fn event(mut self, kind: &str, detail: impl Into<String>) -> Self {
        self.events.push((kind.to_owned(), detail.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_belongs_to_one_state_and_one_role() {
        assert_eq!(
            allowed_actions(DealState::Inspection, Role::Trader),
            vec![DealAction::Approve, DealAction::RaiseIssue]
        );
        assert_eq!(
            allowed_actions(DealState::Issue, Role::Operator),
            vec![DealAction::Resolve]
        );
        assert!(allowed_actions(DealState::Issue, Role::Admin).is_empty());
        assert!(allowed_actions(DealState::Settled, Role::Trader).is_empty());
        for role in [Role::Admin, Role::Approver] {
            for state in DealState::ALL {
                assert!(allowed_actions(state, role).is_empty());
            }
        }
    }
}
