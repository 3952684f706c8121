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
pub use crate::domain::escrow::{
    Deal, DealEvent, DealState, DealStep, Evidence, Issue, Resolution,
};

pub mod evidence;
pub mod report;
pub mod service;

use crate::domain::{Role, UnixMicros};
use serde::{Deserialize, Serialize};

crate::domain::stored_as_text!(DealState);

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

impl Deal {
    /// What the hold still reserves: funded and not yet released, offset or refunded.
    pub fn held(&self) -> i128 {
        if self.hold.is_none() {
            return 0;
        }
        self.amount - self.released - self.offset - self.refunded
    }
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
