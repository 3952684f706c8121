//! Ledger types and the pure rules that turn a command into postings. No I/O: the same rules
//! run inside the SQLite and the PostgreSQL transaction, on rows both have locked.

use crate::domain::{AccountId, Amount, AssetKey, HoldId, TxId, UnixMicros};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// What a journal transaction records. Stored as the upper-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EntryKind {
    Deposit,
    Hold,
    Release,
    Offset,
    Refund,
    Payout,
    Fee,
    Adjustment,
}

crate::domain::stored_as_text!(EntryKind);

impl EntryKind {
    pub const ALL: [EntryKind; 8] = [
        EntryKind::Deposit,
        EntryKind::Hold,
        EntryKind::Release,
        EntryKind::Offset,
        EntryKind::Refund,
        EntryKind::Payout,
        EntryKind::Fee,
        EntryKind::Adjustment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "DEPOSIT",
            EntryKind::Hold => "HOLD",
            EntryKind::Release => "RELEASE",
            EntryKind::Offset => "OFFSET",
            EntryKind::Refund => "REFUND",
            EntryKind::Payout => "PAYOUT",
            EntryKind::Fee => "FEE",
            EntryKind::Adjustment => "ADJUSTMENT",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// The two balances every account keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Available,
    Held,
}

crate::domain::stored_as_text!(Bucket);

impl Bucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Available => "available",
            Bucket::Held => "held",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "available" => Some(Bucket::Available),
            "held" => Some(Bucket::Held),
            _ => None,
        }
    }
}

/// What an account is for. System kinds exist once per asset and are created at start-up.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    /// A club member's funds.
    Partner,
    /// The operator's own funds (treasury, escrow operations).
    Operating,
    /// System: money outside the ledger (chains, banks). Deposits come from it, payouts go to it;
    /// it runs negative by design.
    External,
    /// System: fees collected; for a chain's native asset, the gas our transactions burned.
    Fees,
    /// System: the counterparty of manual adjustments; may run negative.
    Adjustments,
}

crate::domain::stored_as_text!(AccountKind);

impl AccountKind {
    pub const SYSTEM: [AccountKind; 3] = [
        AccountKind::External,
        AccountKind::Fees,
        AccountKind::Adjustments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Partner => "partner",
            AccountKind::Operating => "operating",
            AccountKind::External => "external",
            AccountKind::Fees => "fees",
            AccountKind::Adjustments => "adjustments",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            AccountKind::Partner,
            AccountKind::Operating,
            AccountKind::External,
            AccountKind::Fees,
            AccountKind::Adjustments,
        ]
        .into_iter()
        .find(|k| k.as_str() == text)
    }

    pub fn is_system(self) -> bool {
        Self::SYSTEM.contains(&self)
    }

    /// Whether holds may be placed on this account and releases may land in it.
    pub fn holds_customer_funds(self) -> bool {
        matches!(self, AccountKind::Partner | AccountKind::Operating)
    }

    pub fn system_allows_negative(self) -> bool {
        matches!(self, AccountKind::External | AccountKind::Adjustments)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub owner: String,
    /// The partner company it belongs to; None: the operator's (system and wallet accounts).
    pub company: Option<uuid::Uuid>,
    pub asset: AssetKey,
    pub kind: AccountKind,
    pub allow_negative: bool,
    /// Spendable now. Never below zero unless `allow_negative`.
    pub available: i128,
    /// Reserved by open holds placed on this account. Never below zero.
    pub held: i128,
    pub created_at: UnixMicros,
}

impl Account {
    fn bucket_mut(&mut self, bucket: Bucket) -> &mut i128 {
        match bucket {
            Bucket::Available => &mut self.available,
            Bucket::Held => &mut self.held,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub owner: String,
    pub company: Option<uuid::Uuid>,
    pub asset: AssetKey,
    pub kind: AccountKind,
    pub allow_negative: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    Open,
    Resolved,
}

crate::domain::stored_as_text!(HoldState);

impl HoldState {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Open => "open",
            HoldState::Resolved => "resolved",
        }
    }
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "open" => Some(HoldState::Open),
            "resolved" => Some(HoldState::Resolved),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub id: HoldId,
    pub account: AccountId,
    pub asset: AssetKey,
    pub amount: i128,
    pub released: i128,
    pub voided: i128,
    pub state: HoldState,
    pub reference: Option<String>,
    pub created_at: UnixMicros,
    pub resolved_at: Option<UnixMicros>,
}

impl Hold {
    pub fn remaining(&self) -> i128 {
        self.amount - self.released - self.voided
    }
}

/// Where a release from a hold goes, which is also the journal entry kind it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseKind {
    /// To another customer account (a deal's seller).
    Release,
    /// To another customer account, as a reason-coded deduction (escrow offsets).
    Offset,
    /// Out of the ledger, paid on chain.
    Payout,
    /// To the fee account.
    Fee,
}

impl ReleaseKind {
    pub fn entry_kind(self) -> EntryKind {
        match self {
            ReleaseKind::Release => EntryKind::Release,
            ReleaseKind::Offset => EntryKind::Offset,
            ReleaseKind::Payout => EntryKind::Payout,
            ReleaseKind::Fee => EntryKind::Fee,
        }
    }

    fn destination_kind_ok(self, kind: AccountKind) -> bool {
        match self {
            ReleaseKind::Release | ReleaseKind::Offset => kind.holds_customer_funds(),
            ReleaseKind::Payout => kind == AccountKind::External,
            ReleaseKind::Fee => kind == AccountKind::Fees,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Credit,
    Debit,
}

/// One ledger operation with every account it touches already resolved (see `Ledger`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    Deposit {
        account: AccountId,
        source: AccountId,
        amount: Amount,
    },
    Adjustment {
        account: AccountId,
        counterparty: AccountId,
        amount: Amount,
        direction: Direction,
    },
    Hold {
        account: AccountId,
        amount: Amount,
    },
    Release {
        hold: HoldId,
        amount: Amount,
        kind: ReleaseKind,
        destination: AccountId,
    },
    /// Returns everything a hold still reserves to the account's available balance. Recorded
    /// as REFUND.
    Void {
        hold: HoldId,
    },
    /// Gas a hot wallet's transaction burned, in the chain's native asset: from the wallet's
    /// operating account to the asset's fee account. Recorded as FEE.
    NetworkFee {
        account: AccountId,
        fees: AccountId,
        amount: Amount,
    },
    /// Tokens that reached a hot wallet (or what it held when treasuryd began to watch it):
    /// custody moves from the outside world (`source`, the asset's system external account)
    /// to the wallet's own external account, whose balance is minus what the ledger says the
    /// wallet holds. No customer balance changes. Recorded as DEPOSIT.
    WalletInflow {
        wallet: AccountId,
        source: AccountId,
        amount: Amount,
    },
}

impl Operation {
    pub fn entry_kind(&self) -> EntryKind {
        match self {
            Operation::Deposit { .. } => EntryKind::Deposit,
            Operation::Adjustment { .. } => EntryKind::Adjustment,
            Operation::Hold { .. } => EntryKind::Hold,
            Operation::Release { kind, .. } => kind.entry_kind(),
            Operation::Void { .. } => EntryKind::Refund,
            Operation::NetworkFee { .. } => EntryKind::Fee,
            Operation::WalletInflow { .. } => EntryKind::Deposit,
        }
    }

    pub fn hold(&self) -> Option<HoldId> {
        match self {
            Operation::Release { hold, .. } | Operation::Void { hold } => Some(*hold),
            _ => None,
        }
    }

    /// Accounts named by the operation itself (a hold's own account comes from the hold row).
    pub fn named_accounts(&self) -> Vec<AccountId> {
        match self {
            Operation::Deposit {
                account, source, ..
            } => vec![*account, *source],
            Operation::Adjustment {
                account,
                counterparty,
                ..
            } => vec![*account, *counterparty],
            Operation::Hold { account, .. } => vec![*account],
            Operation::Release { destination, .. } => vec![*destination],
            Operation::Void { .. } => vec![],
            Operation::NetworkFee { account, fees, .. } => vec![*account, *fees],
            Operation::WalletInflow { wallet, source, .. } => vec![*wallet, *source],
        }
    }
}

/// A request to the ledger. `idempotency_key` is unique across the journal; the request hash
/// covers everything else, so a replay with the same key and content returns the first result
/// and a replay with other content is a conflict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    #[serde(skip)]
    pub idempotency_key: String,
    pub asset: AssetKey,
    pub operation: Operation,
    pub reference: Option<String>,
    pub memo: Option<String>,
    #[serde(skip)]
    pub actor: Option<String>,
    /// Written in the same database transaction when the command takes effect (not on replay).
    #[serde(skip)]
    pub audit: Option<crate::store::AuditRecord>,
    /// Request content beyond the operation that a replay must match too (e.g. a payout's
    /// destination): part of the request hash, not stored otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// Records that commit in the same database transaction when the command takes effect.
    #[serde(skip)]
    pub effects: Vec<Effect>,
    /// A company's tier limits the hold must fit in, judged against what the company has
    /// reserved so far, under a lock on the company (`ledger::batch`).
    #[serde(skip)]
    pub quota: Option<Box<crate::domain::tiers::Quota>>,
}

/// A record written atomically with a ledger command, so the two can never disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The payout a HOLD reserves funds for; it gets the hold's id.
    NewPayout(Box<crate::domain::payouts::NewPayout>),
    /// A chunk's PAYOUT release: the chunk is confirmed, and the payout too once every chunk is.
    ChunkConfirmed {
        chunk: crate::domain::ChunkId,
        payout: crate::domain::PayoutId,
    },
    /// The void of a payout's unpaid remainder: the payout ends in `state` (failed, rejected,
    /// cancelled). Applies only if the payout is still in one of `from`; otherwise the whole
    /// database transaction is refused with a conflict, so the hold is never voided under a
    /// payout that moved on.
    PayoutClosed {
        payout: crate::domain::PayoutId,
        from: Vec<crate::domain::payouts::PayoutState>,
        state: crate::domain::payouts::PayoutState,
        detail: String,
    },
    /// A deal's guarded step (state, money summary, timers, timeline) carried by this posting.
    /// Refused with the whole database transaction if the deal is not in a state the step
    /// starts from, or the timer it fires is no longer pending.
    DealStep(Box<crate::domain::escrow::DealStep>),
    /// A trust session's guarded step (settling, settled, carry) carried by this posting.
    SessionStep(Box<crate::domain::trust::SessionStep>),
}

impl Command {
    pub fn new(key: impl Into<String>, asset: AssetKey, operation: Operation) -> Self {
        Self {
            idempotency_key: key.into(),
            asset,
            operation,
            reference: None,
            memo: None,
            actor: None,
            audit: None,
            context: None,
            effects: Vec::new(),
            quota: None,
        }
    }

    pub fn request_hash(&self) -> [u8; 32] {
        // Serialising our own plain structs cannot fail; an empty hash would still be unique
        // per content class, but keep the invariant loud in debug builds.
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        debug_assert!(!bytes.is_empty());
        Sha256::digest(&bytes).into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountId,
    pub bucket: Bucket,
    /// Signed: positive adds to the bucket, negative takes from it.
    pub amount: i128,
}

/// A committed journal transaction with its postings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalTx {
    /// Gapless position in the journal, from 1.
    pub seq: i64,
    pub id: TxId,
    pub kind: EntryKind,
    pub asset: AssetKey,
    pub hold: Option<HoldId>,
    pub idempotency_key: String,
    pub request_hash: [u8; 32],
    pub reference: Option<String>,
    pub memo: Option<String>,
    pub actor: Option<String>,
    pub created_at: UnixMicros,
    pub postings: Vec<Posting>,
    /// sha256(previous hash || content digest): the hash chain over the journal.
    pub hash: [u8; 32],
}

pub const GENESIS_HASH: [u8; 32] = [0; 32];

impl JournalTx {
    /// A digest of everything the row says, in a fixed binary layout (length-prefixed fields),
    /// so that the chain is identical whichever database stored it.
    pub fn content_digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(&self.seq.to_be_bytes());
        field(self.id.0.as_bytes());
        field(self.kind.as_str().as_bytes());
        field(self.asset.network.as_bytes());
        field(self.asset.code.as_bytes());
        field(
            self.hold
                .map(|h| *h.0.as_bytes())
                .unwrap_or_default()
                .as_slice(),
        );
        field(self.idempotency_key.as_bytes());
        field(&self.request_hash);
        field(self.reference.as_deref().unwrap_or("").as_bytes());
        field(self.memo.as_deref().unwrap_or("").as_bytes());
        field(self.actor.as_deref().unwrap_or("").as_bytes());
        field(&self.created_at.to_be_bytes());
        for p in &self.postings {
            field(p.account.0.as_bytes());
            field(p.bucket.as_str().as_bytes());
            field(&p.amount.to_be_bytes());
        }
        h.finalize().into()
    }

    pub fn chain_hash(prev: &[u8; 32], content: &[u8; 32]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(prev);
        h.update(content);
        h.finalize().into()
    }
}

/// The outcome of a command that was accepted (now or by an earlier request with its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub tx: JournalTx,
    /// The hold the transaction created or resolved, as it stands after it.
    pub hold: Option<Hold>,
    /// True when this is the result of an earlier request with the same idempotency key.
    pub replayed: bool,
    /// The state a payout written with the command starts in (`Effect::NewPayout`; four-eyes
    /// over a rolling day is decided as it is written), so the caller need not read it back.
    pub payout_state: Option<crate::domain::payouts::PayoutState>,
}

/// Why the ledger refused a command. Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("account {0} does not exist")]
    AccountNotFound(AccountId),
    #[error("hold {0} does not exist")]
    HoldNotFound(HoldId),
    #[error("asset {0} is not configured")]
    UnknownAsset(AssetKey),
    #[error("account {account} holds {actual}, not {expected}")]
    AssetMismatch {
        account: AccountId,
        expected: AssetKey,
        actual: AssetKey,
    },
    #[error("account {account} is a {} account and cannot take part in this operation", kind.as_str())]
    WrongAccountKind {
        account: AccountId,
        kind: AccountKind,
    },
    #[error("a release of kind release or offset needs a destination account")]
    DestinationRequired,
    #[error(
        "amount exceeds what account {account} has available ({available} available, {requested} requested, in base units)"
    )]
    InsufficientFunds {
        account: AccountId,
        available: i128,
        requested: i128,
    },
    #[error(
        "amount exceeds what hold {hold} still reserves ({remaining} remaining, {requested} requested, in base units)"
    )]
    HoldExceeded {
        hold: HoldId,
        remaining: i128,
        requested: i128,
    },
    #[error("hold {0} is already fully resolved")]
    HoldResolved(HoldId),
    #[error("idempotency key {0:?} was used for a different request")]
    IdempotencyConflict(String),
    #[error("account {0}'s balance would pass the largest amount the ledger keeps")]
    BalanceOutOfRange(AccountId),
    #[error("amount is {0}")]
    TierLimit(Box<crate::domain::tiers::TierRefusal>),
}

impl LedgerError {
    /// Stable machine-readable code for API errors and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::AccountNotFound(_) => "account_not_found",
            LedgerError::HoldNotFound(_) => "hold_not_found",
            LedgerError::UnknownAsset(_) => "unknown_asset",
            LedgerError::AssetMismatch { .. } => "asset_mismatch",
            LedgerError::WrongAccountKind { .. } => "wrong_account_kind",
            LedgerError::DestinationRequired => "destination_required",
            LedgerError::InsufficientFunds { .. } => "insufficient_funds",
            LedgerError::HoldExceeded { .. } => "hold_exceeded",
            LedgerError::HoldResolved(_) => "hold_resolved",
            LedgerError::IdempotencyConflict(_) => "idempotency_conflict",
            LedgerError::TierLimit(_) => "tier_limit_exceeded",
            LedgerError::BalanceOutOfRange(_) => "balance_out_of_range",
        }
    }
}

/// What applying one command produced, before it is given its journal position.
#[derive(Debug, Clone)]
pub struct Planned {
    pub kind: EntryKind,
    pub hold: Option<HoldId>,
    pub postings: Vec<Posting>,
}

/// The locked rows of one database transaction. Commands are applied to it in order; a
/// rejected command leaves it exactly as it was.
#[derive(Debug, Default)]
pub struct WorkingSet {
    pub accounts: BTreeMap<AccountId, Account>,
    pub holds: BTreeMap<HoldId, Hold>,
}

impl WorkingSet {
    pub fn apply(&mut self, cmd: &Command, now: UnixMicros) -> Result<Planned, LedgerError> {
        let (postings, hold_change) = self.postings_for(cmd, now)?;

        let sum: i128 = postings.iter().map(|p| p.amount).sum();
        // Every rule above builds balanced pairs; refuse to commit if that ever stops being true.
        assert_eq!(sum, 0, "unbalanced postings for {:?}", cmd.operation);

        let mut updated: BTreeMap<AccountId, Account> = BTreeMap::new();
        for p in &postings {
            let account = match updated.get_mut(&p.account) {
                Some(a) => a,
                None => {
                    let a = self.account(p.account, &cmd.asset)?.clone();
                    updated.entry(p.account).or_insert(a)
                }
            };
            // Checked, and within what both databases store exactly (a PostgreSQL amount is
            // a `rust_decimal`, whose encoding panics past 2^96): refused, never wrapped.
            let bucket = account.bucket_mut(p.bucket);
            *bucket = bucket
                .checked_add(p.amount)
                .filter(|b| b.abs() <= crate::domain::money::MAX_UNITS)
                .ok_or(LedgerError::BalanceOutOfRange(p.account))?;
        }
        for (id, a) in &updated {
            if a.available < 0 && !a.allow_negative {
                let before = self.accounts[id].available;
                return Err(LedgerError::InsufficientFunds {
                    account: *id,
                    available: before,
                    requested: before - a.available,
                });
            }
            assert!(a.held >= 0, "held balance of {id} would go negative");
        }

        self.accounts.extend(updated);
        let hold = hold_change.map(|h| {
            let id = h.id;
            self.holds.insert(id, h);
            id
        });
        Ok(Planned {
            kind: cmd.operation.entry_kind(),
            hold,
            postings,
        })
    }

    fn account(&self, id: AccountId, asset: &AssetKey) -> Result<&Account, LedgerError> {
        let a = self
            .accounts
            .get(&id)
            .ok_or(LedgerError::AccountNotFound(id))?;
        if &a.asset != asset {
            return Err(LedgerError::AssetMismatch {
                account: id,
                expected: asset.clone(),
                actual: a.asset.clone(),
            });
        }
        Ok(a)
    }

    fn customer_account(&self, id: AccountId, asset: &AssetKey) -> Result<&Account, LedgerError> {
        let a = self.account(id, asset)?;
        if !a.kind.holds_customer_funds() {
            return Err(LedgerError::WrongAccountKind {
                account: id,
                kind: a.kind,
            });
        }
        Ok(a)
    }

    fn system_account(
        &self,
        id: AccountId,
        asset: &AssetKey,
        kind: AccountKind,
    ) -> Result<&Account, LedgerError> {
        let a = self.account(id, asset)?;
        if a.kind != kind {
            return Err(LedgerError::WrongAccountKind {
                account: id,
                kind: a.kind,
            });
        }
        Ok(a)
    }

    fn open_hold(&self, id: HoldId, asset: &AssetKey) -> Result<&Hold, LedgerError> {
        let h = self.holds.get(&id).ok_or(LedgerError::HoldNotFound(id))?;
        if &h.asset != asset {
            return Err(LedgerError::AssetMismatch {
                account: h.account,
                expected: asset.clone(),
                actual: h.asset.clone(),
            });
        }
        if h.state == HoldState::Resolved || h.remaining() == 0 {
            return Err(LedgerError::HoldResolved(id));
        }
        Ok(h)
    }

    fn postings_for(
        &self,
        cmd: &Command,
        now: UnixMicros,
    ) -> Result<(Vec<Posting>, Option<Hold>), LedgerError> {
        let pair = |from: AccountId, from_bucket, to: AccountId, to_bucket, units: i128| {
            vec![
                Posting {
                    account: from,
                    bucket: from_bucket,
                    amount: -units,
                },
                Posting {
                    account: to,
                    bucket: to_bucket,
                    amount: units,
                },
            ]
        };
        use Bucket::{Available, Held};
        let asset = &cmd.asset;
        Ok(match &cmd.operation {
            Operation::Deposit {
                account,
                source,
                amount,
            } => {
                self.customer_account(*account, asset)?;
                self.system_account(*source, asset, AccountKind::External)?;
                (
                    pair(*source, Available, *account, Available, amount.units()),
                    None,
                )
            }
            Operation::Adjustment {
                account,
                counterparty,
                amount,
                direction,
            } => {
                self.customer_account(*account, asset)?;
                self.system_account(*counterparty, asset, AccountKind::Adjustments)?;
                let (from, to) = match direction {
                    Direction::Credit => (*counterparty, *account),
                    Direction::Debit => (*account, *counterparty),
                };
                (pair(from, Available, to, Available, amount.units()), None)
            }
            Operation::Hold { account, amount } => {
                self.customer_account(*account, asset)?;
                let hold = Hold {
                    id: HoldId::new(),
                    account: *account,
                    asset: asset.clone(),
                    amount: amount.units(),
                    released: 0,
                    voided: 0,
                    state: HoldState::Open,
                    reference: cmd.reference.clone(),
                    created_at: now,
                    resolved_at: None,
                };
                (
                    pair(*account, Available, *account, Held, amount.units()),
                    Some(hold),
                )
            }
            Operation::Release {
                hold,
                amount,
                kind,
                destination,
            } => {
                let h = self.open_hold(*hold, asset)?;
                let dest = self.account(*destination, asset)?;
                if !kind.destination_kind_ok(dest.kind) {
                    return Err(LedgerError::WrongAccountKind {
                        account: dest.id,
                        kind: dest.kind,
                    });
                }
                let units = amount.units();
                if units > h.remaining() {
                    return Err(LedgerError::HoldExceeded {
                        hold: h.id,
                        remaining: h.remaining(),
                        requested: units,
                    });
                }
                let mut after = h.clone();
                after.released += units;
                after.settle_if_done(now);
                (
                    pair(h.account, Held, *destination, Available, units),
                    Some(after),
                )
            }
            Operation::Void { hold } => {
                let h = self.open_hold(*hold, asset)?;
                let units = h.remaining();
                let mut after = h.clone();
                after.voided += units;
                after.settle_if_done(now);
                (
                    pair(h.account, Held, h.account, Available, units),
                    Some(after),
                )
            }
            Operation::NetworkFee {
                account,
                fees,
                amount,
            } => {
                self.customer_account(*account, asset)?;
                self.system_account(*fees, asset, AccountKind::Fees)?;
                (
                    pair(*account, Available, *fees, Available, amount.units()),
                    None,
                )
            }
            Operation::WalletInflow {
                wallet,
                source,
                amount,
            } => {
                let w = self.system_account(*wallet, asset, AccountKind::External)?;
                if !w.owner.starts_with(crate::ledger::WALLET_OWNER_PREFIX) {
                    return Err(LedgerError::WrongAccountKind {
                        account: w.id,
                        kind: w.kind,
                    });
                }
                let s = self.system_account(*source, asset, AccountKind::External)?;
                if s.owner != "system" {
                    return Err(LedgerError::WrongAccountKind {
                        account: s.id,
                        kind: s.kind,
                    });
                }
                (
                    pair(*wallet, Available, *source, Available, amount.units()),
                    None,
                )
            }
        })
    }
}

impl Hold {
    fn settle_if_done(&mut self, now: UnixMicros) {
        if self.remaining() == 0 {
            self.state = HoldState::Resolved;
            self.resolved_at = Some(now);
        }
    }
}

/// Which accounts to list, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    pub owner: Option<String>,
    /// Only this company's accounts.
    pub company: Option<uuid::Uuid>,
    pub asset: Option<AssetKey>,
    pub kind: Option<AccountKind>,
    pub after: Option<AccountId>,
    pub limit: i64,
}

/// Which journal transactions to list, a page at a time.
#[derive(Debug, Clone, Default)]
pub struct JournalFilter {
    pub account: Option<AccountId>,
    /// Only transactions touching one of this company's accounts.
    pub company: Option<uuid::Uuid>,
    pub kind: Option<EntryKind>,
    pub from: Option<UnixMicros>,
    pub to: Option<UnixMicros>,
    pub after_seq: i64,
    pub limit: i64,
}
