//! Trust pairs between two companies and their end-of-day sessions: intraday obligations under
//! credit limits, netting at the pair's local cut-off, settlement with partial and T+1 when
//! liquidity is short.

pub mod cutoff;
pub mod netting;

use serde::{Deserialize, Serialize};

/// One of the pair's two companies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Side {
    A,
    B,
}

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

/// What a session may do when the net debtor cannot pay in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettlementMode {
    /// All or nothing: a short session stays unsettled (and counts as such).
    Full,
    /// Pay what is available, carry the rest into the next session as a T+1 obligation.
    Partial,
    /// Pay in full or carry the whole amount into the next session.
    TPlus1,
}

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

/// A company's size class, which the launch plan seeds one of each of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Tier {
    S,
    M,
    L,
    XL,
}

impl Tier {
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
