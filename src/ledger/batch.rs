//! Applying a batch of commands inside one database transaction, the same way on every backend.
//!
//! Lock order is fixed to rule out deadlocks between concurrent batches: holds first, then
//! accounts, each sorted by id; the journal head last, just before commit, so the global
//! hash-chain lock is held for as short a time as possible.

use super::model::*;
use crate::domain::tiers::{Quota, Used};
use crate::domain::{AccountId, AssetKey, HoldId, TxId, UnixMicros};
use crate::store::StoreResult;
use async_trait::async_trait;
use std::collections::{BTreeSet, HashMap};

/// The primitives `ledger::batch::run_batch` needs inside one open database transaction.
#[async_trait]
pub trait LedgerTxn: Send {
    /// Locks and returns the holds that exist among `ids` (sorted).
    async fn lock_holds(&mut self, ids: &[HoldId]) -> StoreResult<Vec<Hold>>;
    /// Locks and returns the accounts that exist among `ids` (sorted).
    async fn lock_accounts(&mut self, ids: &[AccountId]) -> StoreResult<Vec<Account>>;
    async fn find_idempotency_keys(
        &mut self,
        keys: &[String],
    ) -> StoreResult<Vec<(String, [u8; 32], TxId)>>;
    async fn load_posted(&mut self, tx: TxId) -> StoreResult<Posted>;
    async fn write_balances(&mut self, accounts: &[&Account]) -> StoreResult<()>;
    async fn write_holds(&mut self, holds: &[&Hold]) -> StoreResult<()>;
    /// Locks each quota's company (in id order, after the accounts) and returns what its
    /// payouts in the quota's asset have used of the quota's day and month.
    async fn lock_usage(&mut self, quotas: &[&Quota]) -> StoreResult<Vec<Used>>;
    /// Gives each transaction the next journal sequence number and chain hash, and inserts it
    /// with its postings.
    async fn append_journal(&mut self, txs: &mut [JournalTx]) -> StoreResult<()>;
}

pub async fn run_batch<T: LedgerTxn + ?Sized>(
    txn: &mut T,
    commands: &[Command],
    now: UnixMicros,
) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
    let hold_ids: BTreeSet<HoldId> = commands.iter().filter_map(|c| c.operation.hold()).collect();
    let holds = txn
        .lock_holds(&hold_ids.into_iter().collect::<Vec<_>>())
        .await?;

    let mut account_ids: BTreeSet<AccountId> = commands
        .iter()
        .flat_map(|c| c.operation.named_accounts())
        .collect();
    account_ids.extend(holds.iter().map(|h| h.account));
    let accounts = txn
        .lock_accounts(&account_ids.into_iter().collect::<Vec<_>>())
        .await?;

    // Looked up only after the locks: a concurrent request with the same key has committed by
    // now if it touched the same rows, so its result is replayed instead of being re-judged.
    let keys: Vec<String> = commands.iter().map(|c| c.idempotency_key.clone()).collect();
    let existing: HashMap<String, ([u8; 32], TxId)> = txn
        .find_idempotency_keys(&keys)
        .await?
        .into_iter()
        .map(|(k, hash, id)| (k, (hash, id)))
        .collect();

    // Tier quotas: one reading per company and asset, then what this batch adds.
    let mut usage: HashMap<(uuid::Uuid, AssetKey), Used> = HashMap::new();
    let mut asks: Vec<&Quota> = Vec::new();
    for q in commands.iter().filter_map(|c| c.quota.as_deref()) {
        if !asks
            .iter()
            .any(|a| a.company == q.company && a.spec.key == q.spec.key)
        {
            asks.push(q);
        }
    }
    if !asks.is_empty() {
        asks.sort_by_key(|q| q.company);
        for (q, used) in asks.iter().zip(txn.lock_usage(&asks).await?) {
            usage.insert((q.company, q.spec.key.clone()), used);
        }
    }

    let mut ws = WorkingSet {
        accounts: accounts.into_iter().map(|a| (a.id, a)).collect(),
        holds: holds.into_iter().map(|h| (h.id, h)).collect(),
    };

    enum Slot {
        Rejected(LedgerError),
        Replay(TxId),
        New(usize),
        SameAsEarlier(usize),
    }
    let mut slots = Vec::with_capacity(commands.len());
    let mut fresh: Vec<JournalTx> = Vec::new();
    let mut in_batch: HashMap<&str, ([u8; 32], usize)> = HashMap::new();
    let mut touched_accounts = BTreeSet::new();
    let mut touched_holds = BTreeSet::new();

    for cmd in commands {
        let hash = cmd.request_hash();
        let key = cmd.idempotency_key.as_str();
        if let Some((stored, tx)) = existing.get(key) {
            slots.push(if *stored == hash {
                Slot::Replay(*tx)
            } else {
                Slot::Rejected(LedgerError::IdempotencyConflict(key.to_owned()))
            });
            continue;
        }
        if let Some((stored, idx)) = in_batch.get(key) {
            slots.push(if *stored == hash {
                Slot::SameAsEarlier(*idx)
            } else {
                Slot::Rejected(LedgerError::IdempotencyConflict(key.to_owned()))
            });
            continue;
        }
        let quota = cmd.quota.as_deref().map(|q| {
            let used = usage.get(&(q.company, q.spec.key.clone())).copied();
            (q, used.unwrap_or_default())
        });
        if let Some((q, used)) = quota
            && let Err(refusal) = q.check(used)
        {
            slots.push(Slot::Rejected(LedgerError::TierLimit(refusal)));
            continue;
        }
        match ws.apply(cmd, now) {
            Ok(planned) => {
                if let Some((q, used)) = quota {
                    usage.insert(
                        (q.company, q.spec.key.clone()),
                        Used {
                            day: used.day.saturating_add(q.amount),
                            month: used.month.saturating_add(q.amount),
                        },
                    );
                }
                touched_accounts.extend(planned.postings.iter().map(|p| p.account));
                touched_holds.extend(planned.hold);
                in_batch.insert(key, (hash, fresh.len()));
                slots.push(Slot::New(fresh.len()));
                fresh.push(JournalTx {
                    seq: 0,
                    id: TxId::new(),
                    kind: planned.kind,
                    asset: cmd.asset.clone(),
                    hold: planned.hold,
                    idempotency_key: cmd.idempotency_key.clone(),
                    request_hash: hash,
                    reference: cmd.reference.clone(),
                    memo: cmd.memo.clone(),
                    actor: cmd.actor.clone(),
                    created_at: now,
                    postings: planned.postings,
                    hash: GENESIS_HASH,
                });
            }
            Err(e) => slots.push(Slot::Rejected(e)),
        }
    }

    if !fresh.is_empty() {
        let accounts: Vec<&Account> = touched_accounts.iter().map(|id| &ws.accounts[id]).collect();
        txn.write_balances(&accounts).await?;
        let holds: Vec<&Hold> = touched_holds.iter().map(|id| &ws.holds[id]).collect();
        txn.write_holds(&holds).await?;
        txn.append_journal(&mut fresh).await?;
    }

    let mut results = Vec::with_capacity(slots.len());
    for slot in slots {
        results.push(match slot {
            Slot::Rejected(e) => Err(e),
            Slot::Replay(tx) => Ok(txn.load_posted(tx).await?),
            Slot::New(i) | Slot::SameAsEarlier(i) => {
                let tx = fresh[i].clone();
                let hold = tx.hold.map(|h| ws.holds[&h].clone());
                Ok(Posted {
                    tx,
                    hold,
                    replayed: matches!(slot, Slot::SameAsEarlier(_)),
                    payout_state: None,
                })
            }
        });
    }
    Ok(results)
}
