//! Durable timers: rows in the database with a due time, fired at most once each — across
//! restarts (a timer that came due while the daemon was down fires at start) and across
//! instances (on PostgreSQL a runner claims due timers with `FOR UPDATE SKIP LOCKED`; the
//! firing itself marks the timer fired only if it is still pending, in the same database
//! transaction as its effect, so a second attempt is refused whole).
//!
//! Time comes from a `Clock`, so tests move it instead of waiting days.

use crate::domain::{DealId, TimerId, UnixMicros};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Where "now" comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> UnixMicros;
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> UnixMicros {
        crate::store::now_micros()
    }
}

/// A clock that stands still until moved: for tests.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn starting_at(at: UnixMicros) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(at)))
    }

    pub fn advance(&self, by: std::time::Duration) {
        let micros = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.0.fetch_add(micros, Ordering::SeqCst);
    }

    pub fn set(&self, at: UnixMicros) {
        self.0.store(at, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixMicros {
        self.0.load(Ordering::SeqCst)
    }
}

pub type DynClock = Arc<dyn Clock>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TimerKind {
    /// The inspection period of a delivered deal ran out: the deal is approved.
    AutoApprove,
    /// A dispute was not resolved in time: the template decides (default: escalate).
    DisputeTtl,
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub id: TimerId,
    pub kind: TimerKind,
    pub deal: DealId,
    pub due_at: UnixMicros,
    pub state: TimerState,
    pub fired_at: Option<UnixMicros>,
}

/// How long a runner's claim on due timers keeps other instances away from them.
pub const CLAIM_MICROS: i64 = 30_000_000;

/// A clock that runs `factor` times faster than the system clock from the moment it is made:
/// `treasuryd demo`'s, so that deal timers and EOD cut-offs come within seconds.
#[derive(Debug)]
pub struct FastClock {
    origin: UnixMicros,
    started: std::time::Instant,
    factor: i64,
}

impl FastClock {
    pub fn new(factor: i64) -> Arc<Self> {
        Arc::new(Self {
            origin: crate::store::now_micros(),
            started: std::time::Instant::now(),
            factor,
        })
    }
}

impl Clock for FastClock {
    fn now(&self) -> UnixMicros {
        let elapsed = i64::try_from(self.started.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.origin
            .saturating_add(elapsed.saturating_mul(self.factor))
    }
}
