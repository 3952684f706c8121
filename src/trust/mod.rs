//! Trust pairs between two companies and their end-of-day sessions: intraday obligations under
//! credit limits, netting at the pair's local cut-off, settlement with partial and T+1 when
//! liquidity is short.
pub use crate::domain::trust::{
    Closing, Company, Member, NextSession, ObligationKind, Session, SessionState, SessionStep,
    SettlementMode, Side, StoredObligation, Tier, TrustPair,
};

pub mod cutoff;
pub mod netting;
pub mod service;

impl Side {
    pub fn other(self) -> Self {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Side::A => "A",
            Side::B => "B",
        }
    }
}

crate::domain::stored_as_text!(SettlementMode);

impl SettlementMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementMode::Full => "full",
            SettlementMode::Partial => "partial",
            SettlementMode::TPlus1 => "t_plus_1",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(SettlementMode::Full),
            "partial" => Some(SettlementMode::Partial),
            "t_plus_1" => Some(SettlementMode::TPlus1),
            _ => None,
        }
    }
}

crate::domain::stored_as_text!(Tier);

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::S, Tier::M, Tier::L, Tier::XL];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::S => "S",
            Tier::M => "M",
            Tier::L => "L",
            Tier::XL => "XL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "S" => Some(Tier::S),
            "M" => Some(Tier::M),
            "L" => Some(Tier::L),
            "XL" => Some(Tier::XL),
            _ => None,
        }
    }
}

impl TrustPair {
    pub fn payout_address(&self, side: Side) -> Option<&str> {
        match side {
            Side::A => self.payout_address_a.as_deref(),
            Side::B => self.payout_address_b.as_deref(),
        }
    }

    pub fn limit(&self, debtor: Side) -> i128 {
        match debtor {
            Side::A => self.limit_a_to_b,
            Side::B => self.limit_b_to_a,
        }
    }

    pub fn account(&self, side: Side) -> crate::domain::AccountId {
        match side {
            Side::A => self.account_a,
            Side::B => self.account_b,
        }
    }

    pub fn company(&self, side: Side) -> uuid::Uuid {
        match side {
            Side::A => self.company_a,
            Side::B => self.company_b,
        }
    }
}

crate::domain::stored_as_text!(SessionState);

impl SessionState {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::Closed => "closed",
            SessionState::Settling => "settling",
            SessionState::Settled => "settled",
            SessionState::Unsettled => "unsettled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(SessionState::Open),
            "closed" => Some(SessionState::Closed),
            "settling" => Some(SessionState::Settling),
            "settled" => Some(SessionState::Settled),
            "unsettled" => Some(SessionState::Unsettled),
            _ => None,
        }
    }
}

impl ObligationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationKind::Intraday => "intraday",
            ObligationKind::TPlus1 => "t_plus_1",
        }
    }
}
