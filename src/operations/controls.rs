//! Treasury controls set at runtime over the configuration (launch plan §6 and §10): a token's
//! per-transaction cap, a network's fee mode, a paused wallet. The database holds them; every
//! part of the process reads this shared copy, which the API updates on each change and the
//! engines re-read at most once a second, so another instance's change applies within a
//! second and the payout path pays no database read for them.

use crate::chains::evm::FeeMode;
use crate::domain::AssetKey;
pub use crate::domain::operations::{ControlKind, TreasuryControl};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

#[derive(Default)]
struct InForce {
    caps: HashMap<AssetKey, i128>,
    fee_modes: HashMap<String, FeeMode>,
    /// (network, wallet address as the network writes it).
    paused: HashSet<(String, String)>,
    rows: Vec<TreasuryControl>,
    read_at: Option<Instant>,
}

#[derive(Clone, Default)]
pub struct Controls(Arc<RwLock<InForce>>);

pub fn fee_mode_name(mode: FeeMode) -> &'static str {
    match mode {
        FeeMode::Economy => "economy",
        FeeMode::Normal => "normal",
        FeeMode::Urgent => "urgent",
    }
}

pub fn parse_fee_mode(text: &str) -> Option<FeeMode> {
    [FeeMode::Economy, FeeMode::Normal, FeeMode::Urgent]
        .into_iter()
        .find(|m| fee_mode_name(*m) == text)
}

impl Controls {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, InForce> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The per-transaction cap in force for `asset`: set at runtime, else `configured`.
    pub fn cap(&self, asset: &AssetKey, configured: i128) -> i128 {
        self.read().caps.get(asset).copied().unwrap_or(configured)
    }

    /// The fee mode in force on `network`: set at runtime, else `configured`.
    pub fn fee_mode(&self, network: &str, configured: FeeMode) -> FeeMode {
        self.read()
            .fee_modes
            .get(network)
            .copied()
            .unwrap_or(configured)
    }

    pub fn is_paused(&self, network: &str, wallet: &str) -> bool {
        self.read()
            .paused
            .contains(&(network.to_owned(), wallet.to_owned()))
    }

    /// Every control in force, as stored.
    pub fn rows(&self) -> Vec<TreasuryControl> {
        self.read().rows.clone()
    }

    /// Replaces what is in force with `rows` (the database's). A row that does not parse (a
    /// cap or mode written by a newer version) is skipped with a warning.
    pub fn replace(&self, rows: Vec<TreasuryControl>) {
        let mut next = InForce {
            read_at: Some(Instant::now()),
            ..InForce::default()
        };
        for r in &rows {
            match r.kind {
                ControlKind::PerTxCap => match r.value.parse::<i128>() {
                    Ok(cap) if cap > 0 => {
                        next.caps
                            .insert(AssetKey::new(r.network.clone(), r.target.clone()), cap);
                    }
                    _ => {
                        tracing::warn!(network = %r.network, value = %r.value, "stored cap not understood; ignored")
                    }
                },
                ControlKind::FeeMode => match parse_fee_mode(&r.value) {
                    Some(mode) => {
                        next.fee_modes.insert(r.network.clone(), mode);
                    }
                    None => {
                        tracing::warn!(network = %r.network, value = %r.value, "stored fee mode not understood; ignored")
                    }
                },
                ControlKind::WalletPause => {
                    next.paused.insert((r.network.clone(), r.target.clone()));
                }
            }
        }
        next.rows = rows;
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
    }

    /// Reads the controls from the database.
    pub async fn refresh(
        &self,
        store: &dyn crate::store::OperationsStore,
    ) -> Result<(), crate::store::StoreError> {
        let rows = store.treasury_controls().await?;
        self.replace(rows);
        Ok(())
    }

    /// Reads them again when the copy is older than `max_age` (another instance's change).
    pub async fn refresh_if_older(
        &self,
        store: &dyn crate::store::OperationsStore,
        max_age: Duration,
    ) -> Result<(), crate::store::StoreError> {
        if self.read().read_at.is_some_and(|at| at.elapsed() < max_age) {
            return Ok(());
        }
        self.refresh(store).await
    }
}
