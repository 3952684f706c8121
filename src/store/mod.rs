//! Persistence: one `Store` interface with a SQLite and a PostgreSQL implementation, chosen by
//! the URL scheme. Methods are business operations, not generic CRUD; the invariants they rely
//! on (unique idempotency keys, append-only journal, non-negative balances) are also enforced
//! in SQL as a backstop.

mod bulk;
pub mod postgres;
pub mod sqlite;

use bulk::{BulkRows, Column};

use crate::domain::ChunkId;
use crate::domain::payouts::{
    Attempt, BatchSlot, ChunkState, ChunkWork, InFlight, Mined, Payout, PayoutState, WalletCall,
};
use crate::domain::{AccountId, AssetKey, AssetSpec, HoldId, PayoutId, Role, TxId, UnixMicros};
use crate::ledger::{
    Account, AccountKind, Command, Hold, JournalTx, LedgerError, NewAccount, Posted,
};
use async_trait::async_trait;
use std::sync::Arc;

pub use crate::domain::audit::{AuditRecord, StoredAudit};
pub use crate::domain::escrow::DealFilter;
pub use crate::domain::operations::Lease;
pub use crate::domain::payouts::{
    AllowedDestination, Allowlist, AssetFreeze, DepositAddress, EnforcedAllowlists, PayoutFilter,
    RolloutSetting, SafeMode,
};
/// Implemented by each backend's ledger transaction; the trait is the ledger's.
pub use crate::ledger::batch::LedgerTxn;
pub use crate::ledger::{AccountFilter, JournalFilter};

pub type DynStore = Arc<dyn Store>;
pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The write does not apply to the data as it now is; the kind says why, for callers that
    /// decide by it, and the text says it for people.
    #[error("{1}")]
    Conflict(ConflictKind, String),
    /// A trust obligation would pass the pair's credit limit; `headroom` is what is left.
    #[error("over the credit limit; headroom {headroom}")]
    CreditLimit {
        headroom: i128,
        /// The session's limits, A's debt then B's.
        limits: (i128, i128),
    },
    #[error("asset {asset} is stored with {stored} decimals but configured with {configured}")]
    AssetDecimalsChanged {
        asset: AssetKey,
        stored: u8,
        configured: u8,
    },
    #[error("stored data violates an invariant: {0}")]
    Invariant(String),
    #[error("database error")]
    Database(#[source] sqlx::Error),
    #[error("the batch this request was part of failed: {0}")]
    Batch(std::sync::Arc<StoreError>),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Why a write met a conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictKind {
    /// A unique name is taken (an owner's account for the asset, a company's name).
    Exists,
    /// The object moved on from the state the write applies to (a payout, deal, timer or
    /// session), usually by a concurrent request.
    StateChanged,
    /// A wallet's next nonce moved: another writer signed first.
    NonceMoved,
    /// The engine lease is at another fence: this instance no longer runs the network.
    Fenced,
    /// The network is in safe-mode or the asset is frozen: nothing new is signed.
    Halted,
    /// The trust pair has no open session to record into.
    NoOpenSession,
    /// The trust pair is suspended: no new obligations.
    Suspended,
    /// A count limit is reached (a deal's evidence files).
    LimitReached,
}

impl StoreError {
    /// Worth running the same database transaction again: serialisation failures, deadlocks,
    /// a lost race on a unique idempotency key (the retry replays the winner's result), and
    /// SQLite's busy lock.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => matches!(
                db.code().as_deref(),
                // PostgreSQL: serialization_failure, deadlock_detected, unique_violation.
                Some("40001" | "40P01" | "23505")
                // SQLite: SQLITE_BUSY, SQLITE_LOCKED and their extended codes.
                | Some("5" | "6" | "517" | "261" | "262")
            ),
            StoreError::Database(sqlx::Error::PoolTimedOut) => true,
            StoreError::Batch(inner) => inner.is_retryable(),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            other => StoreError::Database(other),
        }
    }
}

/// What the database says about one network's hot wallets, read in one snapshot so that a
/// chunk settling meanwhile is counted once: either still in flight or in the ledger.
#[derive(Debug, Clone, Default)]
pub struct CustodySnapshot {
    /// The first block the watcher has not read yet: inflows below it are in the ledger.
    pub next_block: Option<u64>,
    /// The accounts of the network's hot wallets (`wallet:<address>`): gas and custody.
    pub accounts: Vec<Account>,
    /// Chunks signed, broadcast or mined, with their attempts.
    pub in_flight: Vec<InFlight>,
    /// Chunks settled (paid, failed or cancelled in the ledger) from a transaction mined after
    /// the last block the watcher has read: the ledger has them, that block does not yet.
    pub settled_ahead: Vec<InFlight>,
    /// Of both, the mined chunks whose gas is already posted as FEE.
    pub fee_posted: std::collections::HashSet<ChunkId>,
    /// The wallets' own calls (approvals of the disperse contract) whose gas is posted as FEE.
    pub wallet_call_fees: Vec<WalletCallFee>,
}

/// A wallet call's gas as posted, and where the chain has the call (filled in by
/// reconciliation from its receipt: the ledger has the FEE from the moment it is mined).
#[derive(Debug, Clone)]
pub struct WalletCallFee {
    /// Checksummed address.
    pub wallet: String,
    pub hash: [u8; 32],
    pub fee: i128,
    pub mined_block: Option<u64>,
}

/// A turn to write, from `LedgerStore::write_turn`: while it is held no other writer of this
/// process starts; dropping it gives the turn on.
pub struct WriteTurn(Option<tokio::sync::OwnedMutexGuard<()>>);

impl WriteTurn {
    /// No turn held: the store waits for its own when it writes.
    pub fn none() -> Self {
        Self(None)
    }

    pub(crate) fn held(guard: tokio::sync::OwnedMutexGuard<()>) -> Self {
        Self(Some(guard))
    }

    pub(crate) fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The ledger's rows: assets, accounts, the journal and holds.
#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Records a configured asset; refuses a change of decimals for one already stored.
    async fn register_asset(&self, spec: &AssetSpec) -> StoreResult<()>;

    async fn ensure_system_account(
        &self,
        asset: &AssetKey,
        kind: AccountKind,
    ) -> StoreResult<Account>;
    async fn create_account(&self, new: &NewAccount, audit: &AuditRecord) -> StoreResult<Account>;
    async fn get_account(&self, id: AccountId) -> StoreResult<Account>;
    async fn list_accounts(&self, filter: &AccountFilter) -> StoreResult<Vec<Account>>;

    /// Waits for this process's turn to write where its writers queue in-process (SQLite has
    /// one writer at a time); at once where they do not. The group-commit writer takes its turn
    /// before gathering a batch, so what arrives while it waits goes into that batch.
    async fn write_turn(&self) -> WriteTurn {
        WriteTurn::none()
    }

    /// Applies `commands` in one database transaction (see `ledger::batch`), retrying it on
    /// transient failures, within `turn` if it holds one. Each command's audit record is
    /// written with it when it takes effect.
    async fn post_batch(
        &self,
        commands: &[Command],
        turn: &WriteTurn,
    ) -> StoreResult<Vec<Result<Posted, LedgerError>>>;
    async fn get_transaction(&self, id: TxId) -> StoreResult<JournalTx>;
    async fn list_journal(&self, filter: &JournalFilter) -> StoreResult<Vec<JournalTx>>;
    async fn get_hold(&self, id: HoldId) -> StoreResult<Hold>;

    /// Every hold, in id order after `after`; for verification.
    async fn list_holds(&self, after: Option<HoldId>, limit: i64) -> StoreResult<Vec<Hold>>;

    /// The stored head of the hash chain: last sequence number and its hash.
    async fn journal_head(&self) -> StoreResult<(i64, [u8; 32])>;
}

/// Payouts, their chunks and attempts, the signing state of each wallet, and the controls that
/// stop signing (safe-mode, rollout phase, asset freezes).
#[async_trait]
pub trait PayoutStore: Send + Sync {
    /// A payout with its chunks and events.
    async fn get_payout(&self, id: PayoutId) -> StoreResult<Payout>;

    /// The payout a hold was placed for.
    async fn payout_for_hold(&self, hold: HoldId) -> StoreResult<Payout>;

    /// These payouts with their chunks (events and attempts left out), in no particular order.
    async fn payouts_by_id(&self, ids: &[PayoutId]) -> StoreResult<Vec<Payout>>;

    /// Payouts with their chunks (events left out), oldest first.
    async fn list_payouts(&self, filter: &PayoutFilter) -> StoreResult<Vec<Payout>>;

    /// The next nonce the daemon will use for `wallet`, if it has used it before.
    async fn next_nonce(&self, network: &str, wallet: &str) -> StoreResult<Option<u64>>;

    /// Queued chunks of payouts that may be sent, oldest first: none of a frozen asset, none
    /// to a destination its account's enforced allowlist lacks.
    async fn queued_chunks(&self, network: &str, limit: i64) -> StoreResult<Vec<ChunkWork>>;

    /// Stores signed transfers for queued chunks, nonces `first_nonce..`, and advances the
    /// wallet's next nonce past them, in one database transaction. `first_nonce` must be the
    /// stored next nonce (or the wallet new), `fence` the network's current lease fence, the
    /// network not in safe-mode, no chunk's asset frozen and every chunk still queued:
    /// otherwise `Conflict` (of its kind) and nothing is written.
    async fn record_signed(
        &self,
        network: &str,
        wallet: &str,
        fence: u64,
        first_nonce: u64,
        signed: &[(ChunkId, Attempt)],
    ) -> StoreResult<()>;

    /// Stores new attempts for chunks in flight (an EVM replacement with the same nonce and
    /// higher fees; a Tron rebuild), each with the payout event `event` and its detail, in one
    /// database transaction: a batched transaction's chunks get its replacement together or
    /// not at all, so they never disagree about which transactions are theirs.
    async fn record_replacements(
        &self,
        attempts: &[(ChunkId, Attempt, String)],
        event: &str,
    ) -> StoreResult<()>;

    /// Puts chunks whose batched transaction paid nothing (it reverted, or a batch-mate's
    /// cancel took its nonce) back in the queue, to go out alone from now on. Each is given
    /// with the nonce it was signed at and the reason; a chunk no longer at that nonce and in
    /// flight is left as it is (a replay), all in one database transaction.
    async fn requeue_alone(&self, chunks: &[(ChunkId, u64, String)]) -> StoreResult<()>;

    /// Stores a signed wallet transaction that pays no chunk (the disperse contract's
    /// approval) at the wallet's next nonce, advancing it, under the same nonce lock and
    /// fence check as `record_signed`; `Conflict` otherwise and nothing is written.
    async fn record_wallet_call(
        &self,
        network: &str,
        fence: u64,
        call: &WalletCall,
    ) -> StoreResult<()>;

    /// Every wallet call stored on `network`, by wallet and nonce.
    async fn wallet_calls(&self, network: &str) -> StoreResult<Vec<WalletCall>>;

    async fn mark_wallet_call_broadcast(&self, hash: [u8; 32], at: i64) -> StoreResult<()>;

    /// Marks attempts as sent (first time only) and their chunks as broadcast.
    async fn mark_broadcast(
        &self,
        attempts: &[uuid::Uuid],
        head: u64,
        at: UnixMicros,
    ) -> StoreResult<()>;

    /// Chunks signed, broadcast or mined on `network`, with their attempts.
    async fn in_flight(&self, network: &str) -> StoreResult<Vec<InFlight>>;

    /// Records where each chunk was mined, or (None) that its block left the chain, in one
    /// database transaction; the last word on a chunk wins, every word goes into its payout's
    /// events.
    async fn record_mined(&self, chunks: &[(ChunkId, Option<Mined>)]) -> StoreResult<()>;

    /// Ends a chunk that did not pay: `Failed` (its transfer reverted; queued siblings are
    /// cancelled so the payout stops there) or `Cancelled` (a cancel was mined instead).
    async fn close_chunk(&self, chunk: ChunkId, state: ChunkState, detail: &str)
    -> StoreResult<()>;

    /// Records an Operator's cancel of a payout on the network: queued chunks are cancelled
    /// at once, signed and broadcast ones are left for the engine to cancel on chain.
    /// `Conflict` when the payout is final or nothing of it can be cancelled any more.
    async fn request_cancel(&self, payout: PayoutId, audit: &AuditRecord) -> StoreResult<()>;

    async fn add_payout_event(&self, payout: PayoutId, kind: &str, detail: &str)
    -> StoreResult<()>;

    /// Moves a payout from pending_approval to queued on behalf of `approver`, who must not
    /// be its creator (`Conflict` otherwise, or when it is no longer pending). Audited with it.
    async fn approve_payout(
        &self,
        payout: PayoutId,
        approver: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Whether new transactions on `network` are held back, with the reason.
    async fn safe_mode(&self, network: &str) -> StoreResult<Option<SafeMode>>;

    /// Enters (Some) or leaves (None) safe-mode on `network`. Audited with it.
    async fn set_safe_mode(
        &self,
        network: &str,
        mode: Option<&SafeMode>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Payouts on `network` an Operator asked to cancel that still have chunks on the way.
    async fn cancelling_payouts(&self, network: &str) -> StoreResult<Vec<PayoutId>>;

    /// How many payouts on `network` are pending approval, queued and broadcast.
    async fn active_payouts(&self, network: &str) -> StoreResult<Vec<(PayoutState, i64)>>;
    async fn rollout_phase(&self, network: &str) -> StoreResult<Option<RolloutSetting>>;

    async fn set_rollout_phase(
        &self,
        network: &str,
        setting: &RolloutSetting,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    async fn freezes(&self, network: &str) -> StoreResult<Vec<AssetFreeze>>;

    /// Freezes (Some) or unfreezes (None) `asset` on `network`. Audited with it.
    async fn set_freeze(
        &self,
        network: &str,
        asset: &str,
        freeze: Option<&AssetFreeze>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Token units per asset of the chunks first signed on `network` at or after `since`.
    async fn signed_volume_since(
        &self,
        network: &str,
        since: UnixMicros,
    ) -> StoreResult<Vec<(String, i128)>>;

    /// What `company`'s payouts in `asset` used of the tier quota's day and month.
    async fn tier_usage(
        &self,
        company: uuid::Uuid,
        asset: &AssetKey,
        day_start: UnixMicros,
        month_start: UnixMicros,
    ) -> StoreResult<crate::domain::tiers::Used>;
}

/// Per-account destination allowlists.
#[async_trait]
pub trait AllowlistStore: Send + Sync {
    async fn allowlist(&self, account: AccountId) -> StoreResult<Allowlist>;

    /// The account, and whether its allowlist lets it pay `address` on `network` (always when
    /// not enforced), in one read: what a single payout request needs. `NotFound` without it.
    async fn account_paying(
        &self,
        account: AccountId,
        network: &str,
        address: &str,
    ) -> StoreResult<(crate::ledger::Account, bool)>;

    async fn set_allowlist_enforced(
        &self,
        account: AccountId,
        enforced: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Adds (`allowed`) or removes a destination. Audited with it.
    async fn set_allowed_destination(
        &self,
        account: AccountId,
        entry: &AllowedDestination,
        allowed: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    async fn enforced_allowlists(&self, accounts: &[AccountId]) -> StoreResult<EnforcedAllowlists>;
}

/// What the watcher needs to hold the ledger against the chain: deposit addresses, its cursor,
/// wallet openings and the custody snapshot.
#[async_trait]
pub trait CustodyStore: Send + Sync {
    /// Declares `entry.address` a deposit address of `entry.account`. Audited with it.
    async fn add_deposit_address(
        &self,
        entry: &DepositAddress,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Deposit addresses on `network` (all accounts), or of one account.
    async fn deposit_addresses(
        &self,
        network: &str,
        account: Option<AccountId>,
    ) -> StoreResult<Vec<DepositAddress>>;

    /// Which of these transaction hashes are attempts treasuryd signed.
    async fn known_attempts(
        &self,
        hashes: &[[u8; 32]],
    ) -> StoreResult<std::collections::HashSet<[u8; 32]>>;

    /// The first block of `network` not yet read for deposits.
    async fn deposit_cursor(&self, network: &str) -> StoreResult<Option<u64>>;
    async fn set_deposit_cursor(&self, network: &str, next_block: u64) -> StoreResult<()>;

    /// (wallet, asset) pairs of `network` whose opening balance is posted, with the block it
    /// was read at.
    async fn wallet_openings(
        &self,
        network: &str,
    ) -> StoreResult<std::collections::HashMap<(String, String), u64>>;

    async fn record_wallet_opening(
        &self,
        network: &str,
        wallet: &str,
        asset: &str,
        block: u64,
    ) -> StoreResult<()>;

    /// The deposit cursor, the hot wallets' accounts and the chunks in flight on `network`,
    /// as of one moment.
    async fn custody_snapshot(&self, network: &str) -> StoreResult<CustodySnapshot>;
}

/// Escrow deals, their timeline, evidence and timers.
#[async_trait]
pub trait EscrowStore: Send + Sync {
    /// Stores a new deal (CREATED) with the first line of its timeline (`detail`), audited.
    async fn create_deal(
        &self,
        deal: &crate::domain::escrow::Deal,
        detail: &str,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    async fn get_deal(&self, id: crate::domain::DealId)
    -> StoreResult<crate::domain::escrow::Deal>;

    /// Deals in id order matching `filter`.
    async fn list_deals(
        &self,
        filter: &DealFilter,
    ) -> StoreResult<Vec<crate::domain::escrow::Deal>>;

    async fn deal_events(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::DealEvent>>;

    async fn deal_timers(
        &self,
        id: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::timers::Timer>>;

    /// The report's facts about every deal created in `[from, to)`.
    async fn deal_facts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::escrow::DealFacts>>;

    /// Records evidence metadata (and a timeline line), audited.
    /// Adds a file to its deal, audited; refused (`LimitReached`) when the deal already
    /// carries `max_per_deal`, counted under a lock on the deal.
    async fn add_evidence(
        &self,
        evidence: &crate::domain::escrow::Evidence,
        max_per_deal: usize,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    async fn evidence(
        &self,
        deal: crate::domain::DealId,
    ) -> StoreResult<Vec<crate::domain::escrow::Evidence>>;

    /// A deal step that moves no money, in its own transaction (audited when `audit` is
    /// given). `Conflict` when the deal is not in a state the step starts from.
    async fn apply_deal_step(
        &self,
        step: &crate::domain::escrow::DealStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()>;

    /// Claims up to `limit` pending timers due at `now` that no other runner holds a live
    /// claim on (PostgreSQL: `FOR UPDATE SKIP LOCKED`), for `claimer`, for
    /// `timers::CLAIM_MICROS`.
    async fn claim_due_timers(
        &self,
        now: UnixMicros,
        claimer: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::timers::Timer>>;

    /// Deal timers still pending and trust sessions still open whose moment was before
    /// `before`: how many, and the earliest moment.
    async fn overdue_timers(&self, before: UnixMicros) -> StoreResult<(i64, Option<UnixMicros>)>;
}

/// Webhook endpoints, the outbox and its deliveries.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    async fn create_endpoint(
        &self,
        endpoint: &crate::domain::webhooks::Endpoint,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    async fn endpoints(&self) -> StoreResult<Vec<crate::domain::webhooks::Endpoint>>;
    async fn endpoint(&self, id: uuid::Uuid) -> StoreResult<crate::domain::webhooks::Endpoint>;

    /// A new signing secret; the old one keeps signing until `previous_until`. Audited.
    async fn rotate_endpoint_secret(
        &self,
        id: uuid::Uuid,
        secret: &secrecy::SecretString,
        previous_until: UnixMicros,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    async fn set_endpoint_active(
        &self,
        id: uuid::Uuid,
        active: bool,
        reason: Option<&str>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Outbox events not yet rendered and fanned out, oldest first.
    async fn undispatched_webhook_events(
        &self,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>>;

    /// Stores the rendered bodies `(seq, body)` and queues `(endpoint, seq)` deliveries, in one
    /// transaction; events already dispatched are left alone.
    async fn dispatch_webhook_events(
        &self,
        bodies: &[(i64, String)],
        deliveries: &[(uuid::Uuid, i64)],
        at: UnixMicros,
    ) -> StoreResult<()>;

    async fn webhook_event(
        &self,
        id: uuid::Uuid,
    ) -> StoreResult<crate::domain::webhooks::OutboxEvent>;

    /// Dispatched events written to the outbox in `[from, to)`, oldest first.
    async fn webhook_events_between(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::OutboxEvent>>;

    /// An endpoint's deliveries in event order after `after_seq`, optionally in one state.
    async fn webhook_deliveries(
        &self,
        endpoint: uuid::Uuid,
        state: Option<crate::domain::webhooks::DeliveryState>,
        after_seq: i64,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::webhooks::Delivery>>;

    /// Records attempts on pending deliveries, in one transaction.
    async fn record_webhook_attempts(
        &self,
        outcomes: &[crate::domain::webhooks::AttemptOutcome],
    ) -> StoreResult<()>;

    /// Makes these events due again for `endpoint` (pending ones stay as they are), audited.
    /// Returns how many became due.
    async fn replay_webhook_events(
        &self,
        endpoint: uuid::Uuid,
        seqs: &[i64],
        audit: &AuditRecord,
    ) -> StoreResult<u64>;
    async fn webhook_backlog(&self) -> StoreResult<crate::domain::webhooks::Backlog>;

    /// Retention: deletes what was delivered before `before`, and events left with no delivery
    /// dispatched before it. Returns (events, deliveries) deleted.
    async fn prune_webhooks(&self, before: UnixMicros) -> StoreResult<(u64, u64)>;
}

/// Companies, trust pairs, their sessions and obligations.
#[async_trait]
pub trait TrustStore: Send + Sync {
    async fn create_company(
        &self,
        company: &crate::domain::trust::Company,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    async fn companies(&self) -> StoreResult<Vec<crate::domain::trust::Company>>;
    /// Sets whether a company's users need a second factor in the console, audited.
    async fn set_company_second_factor(
        &self,
        company: uuid::Uuid,
        required: bool,
        audit: &AuditRecord,
    ) -> StoreResult<()>;
    /// Moves a company to `tier`, audited; refused (`StateChanged`) when it is no longer in
    /// `from`, so two Admins cannot overwrite each other unseen.
    async fn set_company_tier(
        &self,
        company: uuid::Uuid,
        from: crate::domain::trust::Tier,
        tier: crate::domain::trust::Tier,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Adds (or changes the role of) a company member, audited.
    async fn set_company_member(
        &self,
        member: &crate::domain::trust::Member,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Members of a company, or the memberships of a user.
    async fn company_members(
        &self,
        company: Option<uuid::Uuid>,
        user: Option<&str>,
    ) -> StoreResult<Vec<crate::domain::trust::Member>>;

    /// Stores a pair with its first open session, audited.
    async fn create_trust_pair(
        &self,
        pair: &crate::domain::trust::TrustPair,
        first: &crate::domain::trust::NextSession,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Changes a pair's terms (each given one), audited. The open session keeps its own.
    async fn update_trust_pair_terms(
        &self,
        pair: uuid::Uuid,
        terms: &crate::domain::trust::PairTerms,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Suspends a pair (`Some`) or resumes it, audited.
    async fn set_trust_pair_suspension(
        &self,
        pair: uuid::Uuid,
        suspension: Option<&crate::domain::trust::Suspension>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Every pair, or one.
    async fn trust_pairs(
        &self,
        id: Option<uuid::Uuid>,
    ) -> StoreResult<Vec<crate::domain::trust::TrustPair>>;
    async fn trust_session(&self, id: uuid::Uuid) -> StoreResult<crate::domain::trust::Session>;

    async fn trust_sessions(
        &self,
        pair: Option<uuid::Uuid>,
        state: Option<crate::domain::trust::SessionState>,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>>;

    /// Open sessions whose cut-off has come.
    async fn due_trust_sessions(
        &self,
        now: UnixMicros,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::trust::Session>>;

    /// Sessions past cut-off and not settled, oldest first.
    async fn unsettled_trust_sessions(&self) -> StoreResult<Vec<crate::domain::trust::Session>>;

    /// A session's obligations in sequence order (up to `through`).
    async fn trust_obligations(
        &self,
        session: uuid::Uuid,
        through: Option<i64>,
    ) -> StoreResult<Vec<crate::domain::trust::StoredObligation>>;

    /// Records an obligation in the pair's open session under `limit` (`CreditLimit` past it).
    async fn record_trust_obligation(
        &self,
        pair: uuid::Uuid,
        obligation: &crate::domain::trust::StoredObligation,
        headroom: &Headroom,
        audit: &AuditRecord,
    ) -> StoreResult<crate::domain::trust::StoredObligation>;

    /// A session step that moves no money, in its own transaction (audited when given).
    async fn apply_session_step(
        &self,
        step: &crate::domain::trust::SessionStep,
        audit: Option<&AuditRecord>,
    ) -> StoreResult<()>;
}

/// What operators run the daemon with: canary runs, the configuration freeze,
/// the pilot scope, incidents and the audit log.
#[async_trait]
pub trait OperationsStore: Send + Sync {
    /// Opens an incident with what it touched.
    async fn record_incident(
        &self,
        incident: &crate::domain::incidents::Incident,
        links: &[crate::domain::incidents::IncidentLink],
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Incidents that began in `[from, to)`, oldest first.
    async fn incidents(
        &self,
        from: UnixMicros,
        to: UnixMicros,
    ) -> StoreResult<Vec<crate::domain::incidents::Incident>>;

    /// A page of incidents, newest first, optionally of one status, after the incident
    /// `before` (the previous page's last).
    async fn list_incidents(
        &self,
        status: Option<crate::domain::incidents::IncidentStatus>,
        before: Option<uuid::Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::incidents::Incident>>;

    /// An incident with its timeline and links; `NotFound` when there is none.
    async fn incident(
        &self,
        id: uuid::Uuid,
    ) -> StoreResult<crate::domain::incidents::IncidentRecord>;

    /// Adds a note to an incident's timeline with the status or severity it sets, and more
    /// links. `NotFound` for no such incident; a conflict when it is resolved and the update
    /// would change it.
    async fn update_incident(
        &self,
        id: uuid::Uuid,
        update: &crate::domain::incidents::IncidentUpdate,
        links: &[crate::domain::incidents::IncidentLink],
        audit: &AuditRecord,
    ) -> StoreResult<crate::domain::incidents::IncidentRecord>;

    /// The treasury controls in force (runtime caps, fee modes, paused wallets).
    async fn treasury_controls(
        &self,
    ) -> StoreResult<Vec<crate::domain::operations::TreasuryControl>>;

    /// Puts a control in force (`control` Some) or clears it, audited. With `incident`, the
    /// change is tied to that incident and noted on its timeline in the same transaction; a
    /// conflict when the incident is resolved, `NotFound` when there is none.
    async fn set_treasury_control(
        &self,
        network: &str,
        kind: crate::domain::operations::ControlKind,
        target: &str,
        control: Option<&crate::domain::operations::TreasuryControl>,
        incident: Option<(uuid::Uuid, &crate::domain::incidents::IncidentUpdate)>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Incidents not yet resolved: (severity, status, count).
    async fn unresolved_incidents(
        &self,
    ) -> StoreResult<Vec<(String, crate::domain::incidents::IncidentStatus, i64)>>;

    /// The pilot's scope flags as last set; None before anyone set them.
    /// Records a canary payout as started (no result yet).
    async fn record_canary_start(
        &self,
        run: &crate::domain::operations::CanaryRun,
    ) -> StoreResult<()>;

    /// Records a canary's result once; false when it already had one.
    async fn finish_canary(
        &self,
        id: uuid::Uuid,
        result: crate::domain::operations::CanaryResult,
        reason: &str,
        at: UnixMicros,
    ) -> StoreResult<bool>;

    /// A network's canary runs, newest first.
    async fn canary_runs(
        &self,
        network: &str,
        limit: i64,
    ) -> StoreResult<Vec<crate::domain::operations::CanaryRun>>;

    /// The configuration freeze, if one was set (it may have run out: see `active_at`).
    async fn config_freeze(&self) -> StoreResult<Option<crate::domain::operations::ConfigFreeze>>;

    /// Sets (Some) or lifts (None) the configuration freeze, audited with it.
    async fn set_config_freeze(
        &self,
        freeze: Option<&crate::domain::operations::ConfigFreeze>,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    async fn pilot_scope(&self) -> StoreResult<Option<crate::scope::ScopeSetting>>;

    /// Replaces the scope flags, audited with them.
    async fn set_pilot_scope(
        &self,
        setting: &crate::scope::ScopeSetting,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// The audit log in order, `limit` records after `after`.
    async fn list_audit(
        &self,
        after: Option<uuid::Uuid>,
        limit: i64,
    ) -> StoreResult<Vec<StoredAudit>>;
}

/// Leases that let one instance of several run a loop (an engine, the canary scheduler, the
/// webhook dispatcher). PostgreSQL expires them on its own clock, shared by every instance;
/// SQLite (one daemon per file) on the `now` it is given.
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Takes or renews the lease on `network`'s engine for `owner` until `now + ttl`: granted
    /// when free, expired, or already `owner`'s (a new owner gets the next fence). None while
    /// another owner holds it. PostgreSQL uses its own clock rather than `now`, so instances on
    /// different machines agree on expiry.
    async fn acquire_lease(
        &self,
        network: &str,
        owner: &str,
        now: UnixMicros,
        ttl_micros: i64,
    ) -> StoreResult<Option<Lease>>;

    /// Gives the lease up (graceful shutdown), so another instance takes over at once.
    async fn release_lease(&self, network: &str, owner: &str) -> StoreResult<()>;

    async fn lease(&self, network: &str) -> StoreResult<Option<Lease>>;
}

/// Console sessions and second factors.
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// A console session by the SHA-256 of its cookie.
    async fn console_session(
        &self,
        id_hash: &[u8; 32],
    ) -> StoreResult<Option<crate::domain::console::SessionRecord>>;

    /// Stores a session, or updates its second-factor flag and expiry.
    async fn put_console_session(
        &self,
        session: &crate::domain::console::SessionRecord,
    ) -> StoreResult<()>;

    /// Ends a session (and any expired ones).
    async fn delete_console_session(&self, id_hash: &[u8; 32], now: UnixMicros) -> StoreResult<()>;

    async fn console_mfa(
        &self,
        user: &str,
    ) -> StoreResult<Option<crate::domain::console::MfaEnrolment>>;
    async fn put_console_mfa(&self, mfa: &crate::domain::console::MfaEnrolment) -> StoreResult<()>;

    /// Records the TOTP time step just used if it is later than the last: false for a replay.
    async fn advance_totp_step(&self, user: &str, step: i64) -> StoreResult<bool>;

    /// Spends a recovery code by its hash: false when it is not (or no longer) valid.
    async fn spend_recovery_code(&self, user: &str, hash: &str) -> StoreResult<bool>;

    /// Ends a session locked for too many wrong codes, audited.
    async fn lock_console_session(
        &self,
        id_hash: &[u8; 32],
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Records a minted deeplink, audited.
    async fn mint_deeplink(
        &self,
        link: &crate::domain::console::Deeplink,
        audit: &AuditRecord,
    ) -> StoreResult<()>;

    /// Uses deeplink `jti` once, at `audit.at` by `audit.actor`, audited: false when it is
    /// unknown, used before or expired.
    async fn use_deeplink(&self, jti: &str, audit: &AuditRecord) -> StoreResult<bool>;
}

/// The whole store: every area over one database. A service takes the area traits it uses;
/// an `Arc<dyn Store>` coerces to any of them.
#[async_trait]
pub trait Store:
    LedgerStore
    + PayoutStore
    + AllowlistStore
    + CustodyStore
    + EscrowStore
    + WebhookStore
    + TrustStore
    + OperationsStore
    + LeaseStore
    + ConsoleStore
    + Send
    + Sync
    + 'static
{
    fn backend(&self) -> Backend;
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    async fn close(&self);
}

/// The trust rule the store applies under the session lock: how much more the obligation's
/// debtor may owe, given the session's obligations so far (`trust::netting` writes it).
/// What the debtor may still owe given the session's obligations so far and its limits (A's
/// debt, B's debt).
pub type Headroom =
    dyn Fn(&[crate::domain::trust::StoredObligation], (i128, i128)) -> i128 + Send + Sync;

/// Opens the store named by `url` (`sqlite:…` or `postgres:…`); rows are stamped with `clock`'s
/// time.
pub async fn open(
    url: &str,
    max_connections: u32,
    clock: crate::clock::DynClock,
) -> StoreResult<DynStore> {
    if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            postgres::PgStore::connect(url, max_connections, clock).await?,
        ))
    } else {
        Ok(Arc::new(
            sqlite::SqliteStore::connect(url, max_connections, clock).await?,
        ))
    }
}

/// How many times a batch is retried on transient failures before the error is returned.
pub(crate) const MAX_ATTEMPTS: usize = 12;

pub(crate) fn retry_policy() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(2))
        .with_max_delay(std::time::Duration::from_millis(200))
        .with_max_times(MAX_ATTEMPTS)
        .with_jitter()
}

pub(crate) fn hash32(bytes: &[u8]) -> StoreResult<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Invariant(format!("stored hash has {} bytes", bytes.len())))
}
