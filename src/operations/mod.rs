//! Operating the daemon: canary payouts per network, the configuration freeze of a launch
//! window, treasury controls set at runtime, and online backups of the embedded database.

pub use crate::domain::operations::{CanaryResult, CanaryRun, ConfigFreeze};
pub mod backup;
pub mod canary;
pub mod controls;
pub mod freeze;

use crate::domain::UnixMicros;

impl ConfigFreeze {
    pub fn active_at(&self, now: UnixMicros) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

crate::domain::stored_as_text!(CanaryResult);

impl CanaryResult {
    pub fn as_str(self) -> &'static str {
        match self {
            CanaryResult::Green => "green",
            CanaryResult::Red => "red",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "green" => Some(CanaryResult::Green),
            "red" => Some(CanaryResult::Red),
            _ => None,
        }
    }
}
