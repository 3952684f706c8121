//! The append-only double-entry ledger: accounts, journal transactions, two-phase holds.
//!
//! Each journal transaction is one asset, its postings sum to zero, and it carries an
//! idempotency key kept unique by the database. Balances are cached on the account rows in the
//! same database transaction as the postings; `verify` recomputes them from the journal.
//!
//! Every account has two buckets. `available` is what may be spent; `held` is what open holds
//! reserve. A hold moves funds from available to held on the same account (like TigerBeetle's
//! pending transfers), a release moves them from held to a destination, and a void returns the
//! remainder to available. A hold therefore never needs a shared suspense account, which would
//! be one hot row for every hold in the system.

pub mod batch;
pub mod model;
pub mod verify;

pub use model::*;

use crate::domain::{AccountId, Amount, AssetKey, AssetSpec, HoldId};
use crate::metrics::LedgerMetrics;
use crate::store::{AuditRecord, DynStore, StoreError};
use std::collections::HashMap;
use std::time::Instant;

/// The ledger as the rest of the daemon sees it: the store plus the configured assets and the
/// system accounts each asset gets.
#[derive(Clone)]
pub struct Ledger {
    store: DynStore,
    assets: HashMap<AssetKey, AssetSpec>,
    system: HashMap<(AssetKey, AccountKind), AccountId>,
    metrics: Option<LedgerMetrics>,
}

impl Ledger {
    /// Registers the configured assets and makes sure each has its system accounts.
    pub async fn open(store: DynStore, assets: &[AssetSpec]) -> Result<Self, StoreError> {
        let mut system = HashMap::new();
        for spec in assets {
            store.register_asset(spec).await?;
            for kind in AccountKind::SYSTEM {
                let account = store.ensure_system_account(&spec.key, kind).await?;
                system.insert((spec.key.clone(), kind), account.id);
            }
        }
        let assets = assets.iter().map(|a| (a.key.clone(), a.clone())).collect();
        Ok(Self {
            store,
            assets,
            system,
            metrics: None,
        })
    }

    pub fn with_metrics(mut self, metrics: LedgerMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn store(&self) -> &DynStore {
        &self.store
    }

    pub fn asset(&self, key: &AssetKey) -> Option<&AssetSpec> {
        self.assets.get(key)
    }

    pub fn assets(&self) -> impl Iterator<Item = &AssetSpec> {
        self.assets.values()
    }

    /// The system account of `kind` for `asset`: the counterparty of deposits, payouts, fees
    /// and adjustments.
    pub fn system_account(&self, asset: &AssetKey, kind: AccountKind) -> Option<AccountId> {
        self.system.get(&(asset.clone(), kind)).copied()
    }

    /// Builds the command that moves `amount` into `account` from outside (an on-chain deposit
    /// or a manual credit).
    pub fn deposit(&self, account: &Account, amount: Amount) -> Result<Operation, LedgerError> {
        Ok(Operation::Deposit {
            account: account.id,
            source: self.system_of(&account.asset, AccountKind::External)?,
            amount,
        })
    }

    pub fn adjustment(
        &self,
        account: &Account,
        amount: Amount,
        direction: Direction,
    ) -> Result<Operation, LedgerError> {
        Ok(Operation::Adjustment {
            account: account.id,
            counterparty: self.system_of(&account.asset, AccountKind::Adjustments)?,
            amount,
            direction,
        })
    }

    /// A release of `hold`: to a partner/operating account for RELEASE and OFFSET, to the
    /// outside world for PAYOUT, to the fee account for FEE.
    pub fn release(
        &self,
        hold: &Hold,
        amount: Amount,
        kind: ReleaseKind,
        destination: Option<AccountId>,
    ) -> Result<Operation, LedgerError> {
        let destination = match (kind, destination) {
            (ReleaseKind::Release | ReleaseKind::Offset, Some(d)) => d,
            (ReleaseKind::Release | ReleaseKind::Offset, None) => {
                return Err(LedgerError::DestinationRequired);
            }
            (ReleaseKind::Payout, _) => self.system_of(&hold.asset, AccountKind::External)?,
            (ReleaseKind::Fee, _) => self.system_of(&hold.asset, AccountKind::Fees)?,
        };
        Ok(Operation::Release {
            hold: hold.id,
            amount,
            kind,
            destination,
        })
    }

    fn system_of(&self, asset: &AssetKey, kind: AccountKind) -> Result<AccountId, LedgerError> {
        self.system_account(asset, kind)
            .ok_or_else(|| LedgerError::UnknownAsset(asset.clone()))
    }

    /// Posts commands atomically as one database transaction. Each command succeeds or is
    /// rejected on its own; a rejected command writes nothing.
    pub async fn post(
        &self,
        commands: Vec<Command>,
        audit: Option<AuditRecord>,
    ) -> Result<Vec<Result<Posted, LedgerError>>, StoreError> {
        let started = Instant::now();
        let results = self.store.post_batch(&commands, audit.as_ref()).await?;
        if let Some(m) = &self.metrics {
            m.commit_duration_seconds
                .observe(started.elapsed().as_secs_f64());
            for r in &results {
                match r {
                    Ok(p) if !p.replayed => m
                        .transactions_total
                        .with_label_values(&[p.tx.kind.as_str()])
                        .inc(),
                    Ok(_) => {}
                    Err(e) => m.rejections_total.with_label_values(&[e.code()]).inc(),
                }
            }
        }
        Ok(results)
    }

    /// Posts one command.
    pub async fn post_one(
        &self,
        command: Command,
        audit: Option<AuditRecord>,
    ) -> Result<Result<Posted, LedgerError>, StoreError> {
        let mut results = self.post(vec![command], audit).await?;
        results
            .pop()
            .ok_or_else(|| StoreError::Invariant("a batch of one returned no result".into()))
    }

    pub async fn hold(&self, id: HoldId) -> Result<Hold, StoreError> {
        self.store.get_hold(id).await
    }
}
