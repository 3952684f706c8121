//! The configuration freeze of a launch window (the launch plan's "config freeze T-3 → T+1"):
//! while it is active, calls that change configuration (pilot scope, rollout phase,
//! allowlists, deposit addresses, webhook endpoints, companies and trust pairs, the `[pilot]`
//! section on SIGHUP) are refused. Safe-mode, token freezes, canaries, approvals, cancels,
//! replays and the money-moving calls stay available: they are how a launch is run and rolled
//! back.

use super::ConfigFreeze;
use crate::domain::UnixMicros;
use crate::store::{OperationsStore, StoreResult};

/// The freeze in force at `now`, if any (one whose `until` has passed is not).
pub async fn active(
    store: &dyn OperationsStore,
    now: UnixMicros,
) -> StoreResult<Option<ConfigFreeze>> {
    Ok(store.config_freeze().await?.filter(|f| f.active_at(now)))
}

/// How a refusal explains the freeze.
pub fn describe(f: &ConfigFreeze) -> String {
    let until = f.until.map_or_else(
        || "until an Admin lifts it".to_owned(),
        |u| format!("until {}", crate::domain::micros_to_rfc3339(u)),
    );
    format!(
        "configuration is frozen {until} (set by {}: {}); safe-mode, token freezes and operations are still allowed",
        f.actor, f.reason
    )
}
