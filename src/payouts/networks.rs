//! The networks payouts can go to, resolved once from the configuration: each token's contract,
//! decimals and per-transaction cap in base units, and the approval threshold.

use crate::config::Config;
use crate::domain::{Amount, AssetKey, AssetSpec};
use alloy::primitives::Address;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct PayoutToken {
    pub spec: AssetSpec,
    pub contract: Address,
    /// Largest transfer in base units.
    pub cap: i128,
    /// Payouts of at least this many base units need an approval.
    pub approval_threshold: Option<i128>,
}

#[derive(Debug, Clone)]
pub struct PayoutNetwork {
    pub name: String,
    pub chain_id: u64,
    pub tokens: HashMap<String, PayoutToken>,
    /// The native coin gas is paid in.
    pub native: AssetKey,
    pub rollout: crate::config::RolloutConfig,
}

#[derive(Debug, Clone, Default)]
pub struct PayoutNetworks {
    by_name: HashMap<String, PayoutNetwork>,
}

impl PayoutNetworks {
    /// Builds from a validated config (validation has already parsed every amount).
    pub fn from_config(config: &Config) -> Self {
        let mut by_name = HashMap::new();
        for n in &config.networks {
            let mut tokens = HashMap::new();
            for t in &n.tokens {
                let spec = AssetSpec {
                    key: AssetKey::new(n.name.clone(), t.code.clone()),
                    decimals: t.decimals,
                };
                let units = |text: &str| Amount::parse_decimal(text, &spec).map(Amount::units).ok();
                let (Some(cap), Ok(contract)) = (
                    units(&t.per_tx_cap),
                    Address::parse_checksummed(&t.address, None),
                ) else {
                    continue;
                };
                let approval_threshold = n.approval_threshold.as_deref().and_then(units);
                tokens.insert(
                    t.code.clone(),
                    PayoutToken {
                        spec,
                        contract,
                        cap,
                        approval_threshold,
                    },
                );
            }
            by_name.insert(
                n.name.clone(),
                PayoutNetwork {
                    name: n.name.clone(),
                    chain_id: n.chain_id,
                    tokens,
                    native: AssetKey::new(n.name.clone(), n.native.code.clone()),
                    rollout: n.rollout.clone(),
                },
            );
        }
        Self { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&PayoutNetwork> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
