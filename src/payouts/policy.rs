//! Policy that decides whether a queued chunk may be signed now: the rollout guardrail (a daily
//! volume share per phase, the day counted in the network's time zone) and the per-account
//! destination allowlist. A chunk a policy holds back stays queued; nothing is dropped.
pub use crate::domain::payouts::RolloutPhase;

crate::domain::stored_as_text!(RolloutPhase);

impl RolloutPhase {
    pub const ALL: [RolloutPhase; 3] = [
        RolloutPhase::Pilot,
        RolloutPhase::Canary,
        RolloutPhase::Full,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Pilot => "pilot",
            RolloutPhase::Canary => "canary",
            RolloutPhase::Full => "full",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    pub fn percent(self) -> i128 {
        match self {
            RolloutPhase::Pilot => 10,
            RolloutPhase::Canary => 30,
            RolloutPhase::Full => 100,
        }
    }

    /// What may be sent per day in this phase: the phase's share of `target`, rounded down.
    pub fn allowance(self, target: i128) -> i128 {
        target / 100 * self.percent() + target % 100 * self.percent() / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_is_the_phase_share_rounded_down() {
        assert_eq!(RolloutPhase::Pilot.allowance(1_000_000), 100_000);
        assert_eq!(RolloutPhase::Canary.allowance(1_000_000), 300_000);
        assert_eq!(RolloutPhase::Full.allowance(1_000_000), 1_000_000);
        assert_eq!(RolloutPhase::Pilot.allowance(999), 99);
        assert_eq!(RolloutPhase::Canary.allowance(999), 299);
        // No overflow near the top of the range.
        let big = i128::MAX / 2;
        assert!(RolloutPhase::Canary.allowance(big) <= big / 100 * 30 + 30);
    }
}
