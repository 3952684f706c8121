//! The incident register: an incident is opened, updated along a timeline of notes, and
//! resolved; it names the payouts, deals, networks and wallets it touched. SEV0 and SEV1 are
//! critical: one that is open asks for rollback (seed 004 §10) and fails the Go/No-Go report.

use super::UnixMicros;
use serde::Serialize;

pub const SEVERITIES: [&str; 4] = ["SEV0", "SEV1", "SEV2", "SEV3"];

/// Where an incident stands. `Open`: being handled, rollback asked for if critical.
/// `Mitigated`: the harm is stopped (rolled back, worked around) and the cause is still being
/// fixed. `Resolved`: over; final, though notes may still be added for the postmortem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncidentStatus {
    Open,
    Mitigated,
    Resolved,
}

crate::domain::stored_as_text!(IncidentStatus);

impl IncidentStatus {
    pub const ALL: [IncidentStatus; 3] = [Self::Open, Self::Mitigated, Self::Resolved];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Mitigated => "mitigated",
            Self::Resolved => "resolved",
        }
    }
}

/// What an incident can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkKind {
    Payout,
    Deal,
    Network,
    Wallet,
}

crate::domain::stored_as_text!(LinkKind);

impl LinkKind {
    pub const ALL: [LinkKind; 4] = [Self::Payout, Self::Deal, Self::Network, Self::Wallet];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payout => "payout",
            Self::Deal => "deal",
            Self::Network => "network",
            Self::Wallet => "wallet",
        }
    }
}

/// A payout or deal (its id), a network (its name) or a wallet (its address) the incident
/// touched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
pub struct IncidentLink {
    pub kind: LinkKind,
    pub id: String,
}

/// An incident as the register holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Incident {
    pub id: uuid::Uuid,
    /// SEV0 (worst) … SEV3, as last set.
    pub severity: String,
    pub summary: String,
    pub status: IncidentStatus,
    /// When it began.
    #[serde(skip)]
    pub at: UnixMicros,
    pub recorded_by: String,
    /// When it was last updated, and resolved.
    #[serde(skip)]
    pub updated_at: UnixMicros,
    #[serde(skip)]
    pub resolved_at: Option<UnixMicros>,
}

impl Incident {
    pub fn is_critical(&self) -> bool {
        is_critical(&self.severity)
    }
}

pub fn is_critical(severity: &str) -> bool {
    matches!(severity, "SEV0" | "SEV1")
}

/// One entry of an incident's timeline: a note, with the status or severity it set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct IncidentNote {
    #[serde(skip)]
    pub at: UnixMicros,
    pub author: String,
    pub note: String,
    pub status: Option<IncidentStatus>,
    pub severity: Option<String>,
}

/// An incident with its timeline (oldest first) and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncidentRecord {
    pub incident: Incident,
    pub notes: Vec<IncidentNote>,
    pub links: Vec<IncidentLink>,
}

/// A change to an incident: always a note, optionally a new status or severity.
#[derive(Debug, Clone)]
pub struct IncidentUpdate {
    pub note: String,
    pub status: Option<IncidentStatus>,
    pub severity: Option<String>,
    pub author: String,
    pub at: UnixMicros,
}
