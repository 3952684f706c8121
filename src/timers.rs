//! Durable timers: rows in the database with a due time, fired at most once each — across
//! restarts (a timer that came due while the daemon was down fires at start) and across
//! instances (on PostgreSQL a runner claims due timers with `FOR UPDATE SKIP LOCKED`; the
//! firing itself marks the timer fired only if it is still pending, in the same database
//! transaction as its effect, so a second attempt is refused whole).
//!
//! Time comes from the daemon's `Clock` (`crate::clock`), so tests move it instead of waiting
//! days.

use crate::domain::{DealId, TimerId, UnixMicros};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimerKind {
    /// The inspection period of a delivered deal ran out: the deal is approved.
    AutoApprove,
    /// A dispute was not resolved in time: the template decides (default: escalate).
    DisputeTtl,
}

crate::domain::stored_as_text!(TimerKind, TimerState);

impl TimerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerKind::AutoApprove => "AUTO_APPROVE",
            TimerKind::DisputeTtl => "DISPUTE_TTL",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [TimerKind::AutoApprove, TimerKind::DisputeTtl]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TimerState {
    Pending,
    Fired,
    Cancelled,
}

impl TimerState {
    pub fn as_str(self) -> &'static str {
        match self {
            TimerState::Pending => "pending",
            TimerState::Fired => "fired",
            TimerState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            TimerState::Pending,
            TimerState::Fired,
            TimerState::Cancelled,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Timer {
    pub id: TimerId,
    pub kind: TimerKind,
    #[sqlx(rename = "deal_id")]
    pub deal: DealId,
    pub due_at: UnixMicros,
    pub state: TimerState,
    pub fired_at: Option<UnixMicros>,
}

/// How long a runner's claim on due timers keeps other instances away from them.
pub const CLAIM_MICROS: i64 = 30_000_000;
