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
pub mod writer;

pub use model::*;

use crate::clock::DynClock;
use crate::domain::{AccountId, Amount, AssetKey, AssetSpec, HoldId};
use crate::metrics::LedgerMetrics;
use crate::store::{ConflictKind, LedgerStore, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
pub use writer::WriterConfig;
use writer::{Reply, Submission};

/// Accounts a hot wallet owns are named `wallet:<EIP-55 address>`: its gas (operating, native
/// asset) and its custody of each token (external).
pub const WALLET_OWNER_PREFIX: &str = "wallet:";

/// The ledger as the rest of the daemon sees it: the store plus the configured assets and the
/// system accounts each asset gets.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    assets: HashMap<AssetKey, AssetSpec>,
    system: HashMap<(AssetKey, AccountKind), AccountId>,
    metrics: Option<LedgerMetrics>,
    clock: DynClock,
    /// Group-commit queue for single commands (see `writer`).
    submit: mpsc::Sender<Submission>,
}

impl Ledger {
    /// Registers the configured assets, makes sure each has its system accounts, and starts
    /// the group-commit writers with default settings and no metrics.
    pub async fn open(
        store: Arc<dyn LedgerStore>,
        assets: &[AssetSpec],
    ) -> Result<Self, StoreError> {
        let clock = crate::clock::SystemClock::shared();
        Self::open_with(store, assets, None, WriterConfig::default(), clock).await
    }

    pub async fn open_with(
        store: Arc<dyn LedgerStore>,
        assets: &[AssetSpec],
        metrics: Option<LedgerMetrics>,
        writer: WriterConfig,
        clock: DynClock,
    ) -> Result<Self, StoreError> {
        let mut system = HashMap::new();
        for spec in assets {
            store.register_asset(spec).await?;
            for kind in AccountKind::SYSTEM {
                let account = store.ensure_system_account(&spec.key, kind).await?;
                system.insert((spec.key.clone(), kind), account.id);
            }
        }
        let assets = assets.iter().map(|a| (a.key.clone(), a.clone())).collect();
        let (recorder, panics) = (metrics.clone(), metrics.clone());
        let submit = writer::spawn(
            store.clone(),
            writer,
            Arc::new(move |results: &[Reply], took: Duration| {
                if let Some(m) = &recorder {
                    m.record(results.iter().filter_map(|r| r.as_ref().ok()), took);
                }
            }),
            Arc::new(move || {
                if let Some(m) = &panics {
                    m.writer_panics.inc();
                }
            }),
        );
        Ok(Self {
            store,
            assets,
            system,
            metrics,
            clock,
            submit,
        })
    }

    /// The ledger's own rows: accounts, the journal and holds. Every other area is its own
    /// store trait, handed to the service that uses it.
    pub fn store(&self) -> &dyn LedgerStore {
        self.store.as_ref()
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

    /// Gas burned by a hot wallet's transaction, in the network's native asset.
    pub fn network_fee(
        &self,
        gas_account: AccountId,
        asset: &AssetKey,
        amount: Amount,
    ) -> Result<Operation, LedgerError> {
        Ok(Operation::NetworkFee {
            account: gas_account,
            fees: self.system_of(asset, AccountKind::Fees)?,
            amount,
        })
    }

    /// The operating account that pays `wallet`'s gas in `asset` (a network's native asset),
    /// created on first use. It may run negative: the chain burns gas whether or not treasury
    /// has recorded the wallet's top-up yet, and the ledger must record what the chain did.
    pub async fn wallet_gas_account(
        &self,
        asset: &AssetKey,
        wallet: &str,
    ) -> Result<AccountId, StoreError> {
        self.wallet_account(asset, wallet, AccountKind::Operating)
            .await
    }

    /// The external account standing for what `wallet` holds of `asset` on chain (minus that,
    /// as the outside world's side): payouts from the wallet land in it, inflows leave it.
    /// Created on first use.
    pub async fn wallet_custody_account(
        &self,
        asset: &AssetKey,
        wallet: &str,
    ) -> Result<AccountId, StoreError> {
        self.wallet_account(asset, wallet, AccountKind::External)
            .await
    }

    /// The account canary payouts of `asset`'s network are drawn on, created on first use. It
    /// may run negative: its balance is what canaries have cost (the canary wallet's tokens
    /// are the treasury's, not a partner's).
    pub async fn canary_account(&self, asset: &AssetKey) -> Result<AccountId, StoreError> {
        let owner = crate::operations::canary::account_owner(&asset.network);
        let reason = format!("canary payouts of {asset}");
        self.named_account(owner, asset, AccountKind::Operating, reason)
            .await
    }

    /// The account of `kind` owned by `wallet` in `asset`, created on first use.
    async fn wallet_account(
        &self,
        asset: &AssetKey,
        wallet: &str,
        kind: AccountKind,
    ) -> Result<AccountId, StoreError> {
        let owner = format!("{WALLET_OWNER_PREFIX}{wallet}");
        let reason = match kind {
            AccountKind::Operating => format!("gas account of hot wallet {wallet}"),
            _ => format!("{asset} custody of hot wallet {wallet}"),
        };
        self.named_account(owner, asset, kind, reason).await
    }

    /// The account of `kind` owned by `owner` in `asset` that may go negative, created on
    /// first use (audited as `treasuryd` with `reason`).
    async fn named_account(
        &self,
        owner: String,
        asset: &AssetKey,
        kind: AccountKind,
        reason: String,
    ) -> Result<AccountId, StoreError> {
        let filter = crate::store::AccountFilter {
            owner: Some(owner.clone()),
            company: None,
            asset: Some(asset.clone()),
            kind: Some(kind),
            after: None,
            limit: 1,
        };
        if let Some(a) = self.store.list_accounts(&filter).await?.pop() {
            return Ok(a.id);
        }
        let audit = crate::store::AuditRecord {
            actor: "treasuryd".into(),
            role: crate::domain::Role::Admin,
            action: "account.create".into(),
            target: owner.clone(),
            reason: Some(reason),
            request_id: "engine-start".into(),
            at: self.clock.now(),
            evidence: None,
        };
        let new = NewAccount {
            owner,
            company: None,
            asset: asset.clone(),
            kind,
            allow_negative: true,
        };
        match self.store.create_account(&new, &audit).await {
            Ok(a) => Ok(a.id),
            // Another instance created it first.
            Err(StoreError::Conflict(ConflictKind::Exists, _)) => self
                .store
                .list_accounts(&filter)
                .await?
                .pop()
                .map(|a| a.id)
                .ok_or(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// `amount` of `asset` reached the wallet whose custody account is `wallet`.
    pub fn wallet_inflow(
        &self,
        wallet: AccountId,
        asset: &AssetKey,
        amount: Amount,
    ) -> Result<Operation, LedgerError> {
        Ok(Operation::WalletInflow {
            wallet,
            source: self.system_of(asset, AccountKind::External)?,
            amount,
        })
    }

    fn system_of(&self, asset: &AssetKey, kind: AccountKind) -> Result<AccountId, LedgerError> {
        self.system_account(asset, kind)
            .ok_or_else(|| LedgerError::UnknownAsset(asset.clone()))
    }

    /// Posts `commands` in one database transaction, as the caller batched them. Each command
    /// succeeds or is rejected on its own; a rejected command writes nothing.
    pub async fn post(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<Result<Posted, LedgerError>>, StoreError> {
        let started = Instant::now();
        let results = self
            .store
            .post_batch(&commands, &crate::store::WriteTurn::none())
            .await?;
        if let Some(m) = &self.metrics {
            m.record(results.iter(), started.elapsed());
        }
        Ok(results)
    }

    /// Posts one command through the group-commit writer: it shares a database transaction
    /// with whatever other commands are waiting, and is judged on its own.
    pub async fn post_one(&self, command: Command) -> Reply {
        let (reply, answer) = oneshot::channel();
        self.submit
            .send(Submission { command, reply })
            .await
            .map_err(|_| StoreError::Invariant("the ledger writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Invariant("the ledger writer dropped a command".into()))?
    }

    pub async fn hold(&self, id: HoldId) -> Result<Hold, StoreError> {
        self.store.get_hold(id).await
    }
}
