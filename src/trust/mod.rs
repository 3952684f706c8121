//! Trust pairs between two companies and their end-of-day sessions: intraday obligations under
//! credit limits, netting at the pair's local cut-off, settlement with partial and T+1 when
//! liquidity is short.

pub mod cutoff;
pub mod netting;
pub mod service;

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
    #[serde(rename = "t_plus_1")]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Company {
    pub id: uuid::Uuid,
    pub name: String,
    pub tier: Tier,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
}

/// A user (an API token's name) acting for a company in a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub company: uuid::Uuid,
    pub user: String,
    pub role: crate::domain::Role,
    pub added_by: String,
    pub added_at: crate::domain::UnixMicros,
}

/// Two companies that extend each other credit in one asset, settled at a local cut-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPair {
    pub id: uuid::Uuid,
    pub company_a: uuid::Uuid,
    pub company_b: uuid::Uuid,
    /// Each company's account in the asset (custodial here): settlement moves between them.
    pub account_a: crate::domain::AccountId,
    pub account_b: crate::domain::AccountId,
    pub asset: crate::domain::AssetKey,
    /// The most A may owe B net within a session, and the other way round.
    pub limit_a_to_b: i128,
    pub limit_b_to_a: i128,
    pub timezone: chrono_tz::Tz,
    pub cutoff: chrono::NaiveTime,
    pub mode: SettlementMode,
    /// Where each side's settlements are paid out on chain; None: they stay on its account.
    pub payout_address_a: Option<String>,
    pub payout_address_b: Option<String>,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Taking obligations until its cut-off.
    Open,
    /// Frozen and netted; settlement not done yet (e.g. the network is in safe-mode).
    Closed,
    /// The debtor's funds are held for the creditor; the move is under way.
    Settling,
    /// Done: paid in full, partly with the rest carried, carried whole, or nothing owed.
    Settled,
    /// Short of funds with neither partial nor T+1 allowed: retried until funds arrive.
    Unsettled,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: uuid::Uuid,
    pub pair: uuid::Uuid,
    /// The local date whose cut-off closes it.
    pub business_date: chrono::NaiveDate,
    pub cutoff_at: crate::domain::UnixMicros,
    pub state: SessionState,
    /// The last obligation sequence number it took (set at close).
    pub frozen_seq: Option<i64>,
    pub netted: netting::Netted,
    pub outcome: Option<netting::Outcome>,
    pub settled_amount: i128,
    pub carried_amount: i128,
    pub hold: Option<crate::domain::HoldId>,
    /// The payout that took the creditor's settlement on chain, if its side has an address.
    pub payout: Option<crate::domain::PayoutId>,
    pub closed_by: Option<String>,
    pub closed_at: Option<crate::domain::UnixMicros>,
    pub settled_at: Option<crate::domain::UnixMicros>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ObligationKind {
    /// Recorded by a trader during the session.
    Intraday,
    /// What an earlier session could not pay, carried in.
    #[serde(rename = "t_plus_1")]
    TPlus1,
}

impl ObligationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationKind::Intraday => "intraday",
            ObligationKind::TPlus1 => "t_plus_1",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObligation {
    pub seq: i64,
    pub id: uuid::Uuid,
    pub session: uuid::Uuid,
    pub debtor: Side,
    pub amount: i128,
    pub kind: ObligationKind,
    pub reference: Option<String>,
    pub idempotency_key: Option<String>,
    pub created_by: String,
    pub created_at: crate::domain::UnixMicros,
}

/// A guarded change of a session, written in one database transaction (with the posting that
/// carries it, when money moves). Refused whole if the session is not in one of `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStep {
    pub session: uuid::Uuid,
    pub from: Vec<SessionState>,
    pub to: SessionState,
    pub at: crate::domain::UnixMicros,
    /// Closing: the frozen figures, who closed it, and the next session to open.
    pub close: Option<Closing>,
    /// Settling: take the hold the carrying posting created.
    pub takes_hold: bool,
    /// Settled or unsettled: the result.
    pub outcome: Option<netting::Outcome>,
    pub settled_amount: i128,
    /// A T+1 obligation of this debtor into the next session.
    pub carry: Option<(Side, i128)>,
    /// The payout requested with this step (settled, paying the creditor out on chain).
    pub payout: Option<crate::domain::PayoutId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub frozen_seq: i64,
    pub netted: netting::Netted,
    pub by: String,
    /// The pair's next session (opened if it does not exist yet).
    pub next: NextSession,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextSession {
    pub id: uuid::Uuid,
    pub business_date: chrono::NaiveDate,
    pub cutoff_at: crate::domain::UnixMicros,
}
