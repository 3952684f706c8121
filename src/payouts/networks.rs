//! The networks payouts can go to, resolved once from the configuration: each token's contract,
//! decimals and per-transaction cap in base units, and the approval threshold; and how an
//! address on each kind of network is written and checked at the API edge.

pub use crate::config::ChainKind;
use crate::config::Config;
use crate::domain::{Amount, AssetKey, AssetSpec};
use alloy::primitives::Address;
use std::collections::HashMap;

/// `text` as the one canonical form an address of `kind` is stored and compared in: EIP-55
/// on EVM, base58check (`T…`) on Tron. The error says what is wrong, for a message that names
/// the field.
pub fn canonical_address(kind: ChainKind, text: &str) -> Result<String, String> {
    match kind {
        ChainKind::Evm => {
            let parsed = Address::parse_checksummed(text, None)
                .map_err(|_| "must be an EIP-55 checksummed 0x address".to_owned())?;
            if parsed.is_zero() {
                return Err("must not be the zero address".into());
            }
            Ok(parsed.to_checksum(None))
        }
        ChainKind::Tron => {
            let parsed = crate::chains::tron::TronAddress::from_base58(text)
                .map_err(|e| format!("must be a base58check Tron address (T...): {e}"))?;
            if parsed.evm_bytes() == [0u8; 20] {
                return Err("must not be the zero address".into());
            }
            Ok(parsed.to_base58())
        }
    }
}

/// The 20 bytes of an address in its canonical form (as `canonical_address` returns it).
pub fn address_bytes(kind: ChainKind, canonical: &str) -> Option<[u8; 20]> {
    match kind {
        ChainKind::Evm => Address::parse_checksummed(canonical, None)
            .ok()
            .map(|a| a.into_array()),
        ChainKind::Tron => crate::chains::tron::TronAddress::from_base58(canonical)
            .ok()
            .map(|a| a.evm_bytes()),
    }
}

/// The canonical text form of 20 address bytes on `kind`.
pub fn address_text(kind: ChainKind, bytes: [u8; 20]) -> String {
    match kind {
        ChainKind::Evm => Address::from(bytes).to_checksum(None),
        ChainKind::Tron => crate::chains::tron::TronAddress::from_evm(bytes).to_base58(),
    }
}

#[derive(Debug, Clone)]
pub struct PayoutToken {
    pub spec: AssetSpec,
    /// The contract's 20 bytes (a Tron contract without its 0x41 prefix).
    pub contract: Address,
    /// Largest transfer in base units.
    pub cap: i128,
    /// Payouts of at least this many base units need an approval.
    pub approval_threshold: Option<i128>,
    /// Smaller payouts are refused (`min_payout`), in base units.
    pub min_payout: Option<i128>,
    /// A company's unapproved payouts in a rolling 24 h, in token units, past which further ones
    /// need approval (`approval_rolling_total`).
    pub approval_rolling_total: Option<i128>,
}

#[derive(Debug, Clone)]
pub struct PayoutNetwork {
    pub name: String,
    pub kind: ChainKind,
    pub chain_id: u64,
    pub tokens: HashMap<String, PayoutToken>,
    /// The native coin gas is paid in.
    pub native: AssetKey,
    pub rollout: crate::config::RolloutConfig,
    /// The configured fee mode (EVM), until one is set at runtime.
    pub fee_mode: crate::chains::evm::FeeMode,
}

#[derive(Clone, Default)]
pub struct PayoutNetworks {
    by_name: HashMap<String, PayoutNetwork>,
    /// Caps, fee modes and wallet pauses set at runtime over the configuration.
    pub controls: crate::operations::controls::Controls,
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
                let (Some(cap), Some(contract)) = (
                    units(&n.per_tx_cap(t)),
                    address_bytes(n.kind, &t.address).map(Address::from),
                ) else {
                    continue;
                };
                let approval_threshold = n.approval_threshold.as_deref().and_then(units);
                let approval_rolling_total = n.approval_rolling_total.as_deref().and_then(units);
                let min_payout = t.min_payout.as_deref().and_then(units);
                tokens.insert(
                    t.code.clone(),
                    PayoutToken {
                        spec,
                        contract,
                        cap,
                        approval_threshold,
                        approval_rolling_total,
                        min_payout,
                    },
                );
            }
            by_name.insert(
                n.name.clone(),
                PayoutNetwork {
                    name: n.name.clone(),
                    kind: n.kind,
                    chain_id: n.chain_id,
                    tokens,
                    native: AssetKey::new(n.name.clone(), n.native().code),
                    rollout: n.rollout.clone(),
                    fee_mode: n.fee_mode,
                },
            );
        }
        Self {
            by_name,
            controls: Default::default(),
        }
    }

    /// The per-transaction cap in force for `token`: set at runtime, else configured.
    pub fn cap(&self, token: &PayoutToken) -> i128 {
        self.controls.cap(&token.spec.key, token.cap)
    }

    /// `text` in its canonical form on network `name`; None when no such network.
    pub fn canonical_address(&self, name: &str, text: &str) -> Option<Result<String, String>> {
        self.get(name).map(|n| canonical_address(n.kind, text))
    }

    pub fn get(&self, name: &str) -> Option<&PayoutNetwork> {
        self.by_name.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}
