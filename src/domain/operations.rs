//! Operations records: canary runs and the configuration freeze, as stored.

use crate::domain::{PayoutId, UnixMicros};
use serde::Serialize;

/// One canary payout and how it ended (result None while it runs).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CanaryRun {
    pub id: uuid::Uuid,
    pub network: String,
    #[sqlx(rename = "payout_id")]
    pub payout: PayoutId,
    pub started_by: String,
    pub started_at: UnixMicros,
    pub result: Option<CanaryResult>,
    pub reason: Option<String>,
    pub finished_at: Option<UnixMicros>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CanaryResult {
    /// The 1-unit payout confirmed within the timeout.
    Green,
    /// It failed, was not confirmed within the timeout, or could not be sent.
    Red,
}

/// The configuration freeze an Admin set: configuration-changing calls are refused while it
/// is active. Safe-mode, token freezes and day-to-day operations stay available.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ConfigFreeze {
    pub reason: String,
    pub actor: String,
    pub since: UnixMicros,
    /// None: until an Admin lifts it.
    pub until: Option<UnixMicros>,
}

/// Who runs a network's engine, under which fence, until when.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    pub owner: String,
    #[sqlx(try_from = "i64")]
    pub fence: u64,
    pub expires_at: UnixMicros,
}

/// What a runtime treasury control sets on a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ControlKind {
    /// A token's per-transaction cap, in base units (target: the token's code).
    PerTxCap,
    /// The network's fee mode (target: empty).
    FeeMode,
    /// A wallet that signs nothing new (target: its address).
    WalletPause,
}

crate::domain::stored_as_text!(ControlKind);

impl ControlKind {
    pub fn parse(text: &str) -> Option<Self> {
        [Self::PerTxCap, Self::FeeMode, Self::WalletPause]
            .into_iter()
            .find(|k| k.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerTxCap => "per_tx_cap",
            Self::FeeMode => "fee_mode",
            Self::WalletPause => "wallet_pause",
        }
    }
}

/// A control set at runtime, in force over the configuration until cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreasuryControl {
    pub network: String,
    pub kind: ControlKind,
    pub target: String,
    /// The cap in base units, the fee mode's name, or "paused".
    pub value: String,
    pub actor: String,
    pub reason: String,
    /// The open incident that allowed it during the configuration freeze.
    pub incident: Option<uuid::Uuid>,
    pub at: UnixMicros,
}
