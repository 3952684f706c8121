//! The sending loop of one EVM network. Each tick it first tracks the chunks in flight that
//! need it (receipts of spent nonces and block hashes, read in parallel; confirmation depth;
//! replacement of stuck transactions; an Operator's cancel), posts what reached its depth
//! (PAYOUT and the gas as FEE) in one ledger batch, then gives queued chunks to hot wallets
//! with room: applies policy (safe-mode, freezes, the rollout guardrail, the allowlist on the
//! signed recipient), signs with the wallet's next nonces, stores the signed transactions with
//! those nonces in one database transaction, and only then broadcasts.
//!
//! Safety rules this loop keeps:
//! - a nonce is assigned only in the database transaction that stores its signed transaction,
//!   and never reassigned: a failed broadcast is retried with the same bytes, never re-signed;
//! - a replacement (speed-up or cancel) reuses the nonce with fees raised by at least the
//!   configured bump, up to the cap; at the cap the last attempt is re-broadcast as it is;
//! - the ledger pays a chunk (PAYOUT from the payout's hold) only at the confirmation depth,
//!   with an idempotency key per chunk, so a crash between steps replays instead of paying
//!   twice; the chunk's state changes in the same database transaction.
//!
//! The chunks in flight live in memory between ticks: this loop is their only writer (the API
//! only flags cancels, read each tick), so a waiting chunk costs no database or RPC work and a
//! tick's cost follows what changed, not how much is in flight. Any failed tick reloads them
//! from the database. Instances sharing a database run a network's engine one at a time under
//! a lease; the others stand by.
//!
//! This file: the loop, the lease, the choice of chunks to look at, safe-mode on the engine's
//! own findings. `tracking`: receipts, replacements, settlement. `sending`: policy, nonces,
//! signing. `broadcasting`: the task new rounds go out from while the loop goes on, and the
//! inline re-sends. `watching`: deposits, wallet inflows and foreign outflows, reorgs of paid
//! transfers, periodic reconciliation.

mod batching;
mod broadcasting;
mod core;
mod sending;
mod tracking;
mod tron;
mod watching;

use self::core::{ChainEngine, EngineCore, Forget, TickError, WalletAccounts, run_ticks};
pub use self::tron::TronEngine;
use super::networks::PayoutToken;
use super::{Attempt, AttemptKind, BatchSlot, ChunkState, ChunkWork, InFlight, Mined, WalletCall};
use crate::chains::evm::{
    EvmClient, FeeMode, Fees, RpcErrorClass, SignedTransfer, TransferDirection, TransferTx,
    sign_cancel, sign_disperse, sign_transfer, signed_disperse_parts, signed_transfer_parts,
};
use crate::config::NetworkConfig;
use crate::domain::{AccountId, Amount, AssetKey, ChunkId, PayoutId, UnixMicros};
use crate::ledger::{AccountKind, Command, Effect, Ledger, Operation, ReleaseKind};
use crate::metrics::{PayoutMetrics, WalletMetrics};
use crate::store::{ConflictKind, StoreError};
use crate::wallets::{Wallet, WalletRole};
use alloy::primitives::{Address, U256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// RPC calls the engine keeps open at once when it reads receipts and blocks or broadcasts a
/// round: the node answers them in parallel instead of one round trip after another.
const RPC_CONCURRENCY: usize = 16;

/// Steps where `debug.pause_at` can stop the engine (or EOD settlement) for crash tests.
pub const PAUSE_POINTS: [&str; 7] = [
    "engine.after_sign",
    "engine.after_broadcast",
    "engine.after_replacement",
    "engine.before_confirm",
    "deposits.before_cursor",
    "watcher.before_opening",
    "trust.before_release",
];

#[derive(Debug, Clone)]
struct Settings {
    confirmations: u64,
    /// Final once the chain's `finalized` block has reached the transaction's block.
    use_finalized_tag: bool,
    /// How many blocks after payment a paid chunk's block is still checked for reorgs.
    reorg_watch_blocks: u64,
    /// With no healthy RPC endpoint this long, the network enters safe-mode.
    rpc_outage_safe_mode: Duration,
    /// Confirm each inclusion at depth with a second endpoint before paying it.
    cross_check: bool,
    deposits_from_block: Option<u64>,
    fee_mode: FeeMode,
    max_fee: u128,
    min_tip: u128,
    bump_bps: u32,
    stuck_after_blocks: u64,
    stuck_after_micros: i64,
    max_in_flight: usize,
    gas_limit: u64,
    poll: Duration,
    batching: Option<batching::Batching>,
}

/// Who this engine is among the instances sharing the database.
#[derive(Clone)]
pub struct EngineInstance {
    /// Unique per process: the owner named in the engine lease.
    pub id: String,
    /// The database every engine of the process shares.
    pub store: crate::store::DynStore,
    pub clock: crate::clock::DynClock,
    pub rpc_metrics: crate::metrics::RpcMetrics,
    /// `debug.pause_at`, for crash tests.
    pub pause_at: Option<String>,
    /// Caps, fee modes and wallet pauses set at runtime (the API's copy).
    pub controls: crate::operations::controls::Controls,
}

/// A paid chunk watched for a reorg beyond its confirmation depth.
struct Watched {
    chunk: ChunkId,
    payout: PayoutId,
    block: u64,
    block_hash: Option<[u8; 32]>,
    attempt: Attempt,
}

/// How a mined chunk ends once at depth.
enum Outcome {
    /// Paid: the PAYOUT command's effect confirms the chunk.
    Paid,
    /// Did not pay (reverted, or a cancel was mined): closed after its gas is posted.
    Unpaid(ChunkId, ChunkState, String),
    /// Its batch paid nobody (reverted, or a batch-mate's cancel was mined): queued again
    /// after its share of the gas is posted, to go out alone.
    Requeue(String),
}

/// Where a wallet's queue on chain stood when the engine last saw it move.
struct QueueMark {
    /// The chain's nonce for the wallet (its next transaction to be mined).
    nonce: u64,
    /// Head and clock when that nonce was first seen (or, for a queue the engine has just
    /// started to watch, when it started).
    head: u64,
    at: UnixMicros,
}

/// A chunk at depth: the ledger commands that record it, posted with the tick's batch.
struct Settlement {
    chunk: ChunkId,
    /// The nonce it was signed at: a requeue applies only while it is still there.
    nonce: u64,
    /// Where it was mined and the attempt that was, watched for deep reorgs once paid.
    mined: Mined,
    attempt: Option<Attempt>,
    commands: Vec<Command>,
    payout: PayoutId,
    outcome: Outcome,
}

pub struct NetworkEngine {
    core: EngineCore,
    chain_id: u64,
    /// The network's RPC endpoints; `client` is the one chosen for the current tick.
    endpoints: crate::chains::endpoints::Endpoints,
    client: EvmClient,
    wallets: Vec<Arc<Wallet>>,
    settings: Settings,
    /// Next nonce per wallet, loaded from the database and the chain on first use.
    nonces: HashMap<Address, u64>,
    /// Per busy wallet, the chain's nonce when last seen to move: whether its queue is stalled.
    queue_marks: HashMap<String, QueueMark>,
    wallet_metrics: WalletMetrics,
    /// Receipts read this tick (None: not mined), fetched together before chunks are tracked.
    receipts: HashMap<[u8; 32], Option<crate::chains::evm::Inclusion>>,
    /// Block hashes read this tick: each block is checked once, however many chunks it holds.
    block_hashes: HashMap<u64, Option<alloy::primitives::B256>>,
    /// Every chunk between signing and its final state, kept in memory: this loop is the only
    /// writer of their sending state, so a tick reads the database only for what others
    /// change (cancels) and costs no database work per waiting chunk. Reloaded after any
    /// failed tick.
    tracked: HashMap<ChunkId, InFlight>,
    loaded: bool,
    /// When deposits were last read.
    deposits_read_at: Option<std::time::Instant>,
    /// When the wallets' balances were last exported.
    observed_at: Option<Instant>,
    /// Paid chunks whose blocks are watched for `reorg_watch_blocks` after payment. A block
    /// hash of None: its block left the chain and the transaction is being re-sent.
    watched: Vec<Watched>,
    /// Inclusions found this tick (None: its block left the chain), stored in one transaction.
    mined: Vec<(ChunkId, Option<Mined>)>,
    /// A second endpoint's head and block hashes this tick, when inclusions are cross-checked.
    witness_head: Option<u64>,
    witness_hashes: HashMap<u64, Option<alloy::primitives::B256>>,
    /// The chain's `finalized` block this tick, read once when a network waits for it.
    finalized: Option<Option<u64>>,
    /// Chunks at depth whose postings (PAYOUT, FEE) this tick makes, all in one ledger batch.
    settling: Vec<Settlement>,
    /// The network's native asset, in which gas is posted as FEE.
    native: AssetKey,
    /// Each hot wallet's gas and custody accounts, by checksummed address: payouts from the
    /// wallet land in its custody account.
    accounts: WalletAccounts,
    /// Whether this process has made sure every wallet's opening balance is posted.
    opened: bool,
    /// The network's tokens and native coin, as reconciliation compares them.
    reconciled_assets: Vec<crate::reconcile::ReconciledAsset>,
    reconcile_every: Duration,
    reconciled_at: Option<std::time::Instant>,
    /// Balance findings not yet seen on enough reads to act on: see `CONFIRMING_READS`.
    suspect_balances: Suspects<(Address, Address)>,
    suspect_lines: Suspects<(String, String)>,
    /// When a reconciliation that found a mismatch runs again to confirm it.
    recheck_at: Option<std::time::Instant>,
    /// The (wallet, token) pairs whose batches may go now: the disperse contract's allowance
    /// is unlimited, or our approval of it is stored and comes first on chain. Absent: read the
    /// allowance before the next batch.
    approved: std::collections::HashSet<(Address, Address)>,
    /// Approvals stored and not yet final.
    wallet_calls: Vec<WalletCall>,
    /// Approvals whose gas this process has posted.
    wallet_call_fees_posted: std::collections::HashSet<[u8; 32]>,
    /// The task new signing rounds are broadcast from, started on first use.
    broadcaster: Option<broadcasting::Broadcaster>,
}

/// How many consecutive reads, at least a second apart, must find the same balance difference
/// before it puts the network in safe-mode. A node can answer for a block it is still building
/// (anvil does, for the newest block and for the blocks a reorg re-mines), and a difference
/// that vanishes on a re-read is that, not money; one that is real stays, at the cost of a
/// few seconds.
pub(super) const CONFIRMING_READS: u32 = 3;

/// Findings (wallet and asset) seen on consecutive reads of the same thing, with how often.
#[derive(Debug)]
pub(super) struct Suspects<K> {
    /// What was read (the range's first block; 0 for the periodic comparison).
    at: u64,
    seen: HashMap<K, u32>,
}

impl<K: std::hash::Hash + Eq + Clone> Suspects<K> {
    fn new() -> Self {
        Self {
            at: 0,
            seen: HashMap::new(),
        }
    }

    /// Records this read's findings at `at`; returns those seen on `CONFIRMING_READS`
    /// consecutive reads. A finding absent from a read starts over.
    pub(super) fn confirm(&mut self, at: u64, found: &[K]) -> Vec<K> {
        if at != self.at {
            self.seen.clear();
            self.at = at;
        }
        let mut seen = HashMap::new();
        for k in found {
            let n = self.seen.get(k).copied().unwrap_or(0) + 1;
            seen.insert(k.clone(), n);
        }
        self.seen = seen;
        self.seen
            .iter()
            .filter(|(_, n)| **n >= CONFIRMING_READS)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

impl NetworkEngine {
    /// The engine of `network` (its hot and canary wallets), or None when it has no wallet to
    /// send from.
    pub fn new(
        network: &NetworkConfig,
        tokens: HashMap<String, PayoutToken>,
        wallets: &[Arc<Wallet>],
        ledger: Ledger,
        metrics: PayoutMetrics,
        wallet_metrics: WalletMetrics,
        instance: EngineInstance,
    ) -> anyhow::Result<Option<Self>> {
        let wallets: Vec<Arc<Wallet>> = wallets
            .iter()
            .filter(|w| w.network == network.name)
            .cloned()
            .collect();
        if wallets.is_empty() {
            return Ok(None);
        }
        let endpoints = crate::chains::endpoints::Endpoints::new(
            &network.name,
            &network.rpc_urls,
            network.max_head_lag_blocks,
            network.rpc_batch_calls as usize,
            instance.rpc_metrics.clone(),
        )?;
        let client = endpoints
            .clients()
            .next()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("network {} has no RPC URL", network.name))?;
        let core = EngineCore::new(network, tokens, ledger, metrics, &instance)?;
        Ok(Some(Self {
            core,
            chain_id: network.chain_id,
            endpoints,
            client,
            wallets,
            settings: Settings {
                confirmations: network.confirmations,
                use_finalized_tag: network.use_finalized_tag,
                reorg_watch_blocks: network.reorg_watch_blocks,
                rpc_outage_safe_mode: Duration::from_secs(network.rpc_outage_safe_mode_seconds),
                cross_check: network.cross_check_inclusions,
                deposits_from_block: network.deposits_from_block,
                fee_mode: network.fee_mode,
                max_fee: u128::from(network.max_fee_per_gas),
                min_tip: u128::from(network.min_priority_fee_per_gas),
                bump_bps: network.bump_bps,
                stuck_after_blocks: network.stuck_after_blocks,
                stuck_after_micros: i64::try_from(network.stuck_after_seconds)
                    .unwrap_or(i64::MAX / 1_000_000)
                    * 1_000_000,
                max_in_flight: network.max_in_flight as usize,
                gas_limit: network.transfer_gas_limit,
                poll: Duration::from_millis(network.poll_interval_ms),
                batching: network
                    .batching
                    .as_ref()
                    .map(batching::Batching::from_config)
                    .transpose()?,
            },
            nonces: HashMap::new(),
            queue_marks: HashMap::new(),
            wallet_metrics,
            block_hashes: HashMap::new(),
            receipts: HashMap::new(),
            witness_head: None,
            witness_hashes: HashMap::new(),
            finalized: None,
            mined: Vec::new(),
            tracked: HashMap::new(),
            loaded: false,
            watched: Vec::new(),
            deposits_read_at: None,
            observed_at: None,
            settling: Vec::new(),
            native: AssetKey::new(network.name.clone(), network.native().code),
            accounts: WalletAccounts::default(),
            opened: false,
            reconciled_assets: crate::reconcile::configured_assets(network),
            reconcile_every: Duration::from_secs(network.reconcile_interval_seconds),
            reconciled_at: None,
            suspect_balances: Suspects::new(),
            suspect_lines: Suspects::new(),
            recheck_at: None,
            approved: std::collections::HashSet::new(),
            wallet_calls: Vec::new(),
            wallet_call_fees_posted: std::collections::HashSet::new(),
            broadcaster: None,
        }))
    }

    /// Ticks until cancelled. Errors of one tick (a node down, a database hiccup) are logged
    /// and the next tick starts over from the database: every step is safe to repeat.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        for client in self.endpoints.clients() {
            // An endpoint that does not answer now may later; one on another chain never may.
            if let Ok(id) = client.chain_id().await
                && id != self.chain_id
            {
                anyhow::bail!(
                    "network {}: an RPC endpoint is on chain {id}, the config says {}",
                    self.core.name,
                    self.chain_id
                );
            }
        }
        self.accounts = self
            .core
            .wallet_accounts(
                &self.native,
                self.wallets
                    .iter()
                    .map(|w| w.address.to_checksum(None))
                    .collect(),
            )
            .await?;
        self.core
            .prepare(&self.wallets, &self.wallet_metrics)
            .await?;
        let poll = self.settings.poll;
        run_ticks(&mut self, poll, &cancel).await;
        Ok(())
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let mut phase = Instant::now();
        let (client, head) = match self.endpoints.choose().await {
            Ok(chosen) => chosen,
            Err(e) => {
                if let Some(outage) = self.endpoints.outage()
                    && outage >= self.settings.rpc_outage_safe_mode
                {
                    let reason = format!(
                        "automatic: no healthy RPC endpoint for {} s",
                        outage.as_secs()
                    );
                    let evidence = serde_json::json!({
                        "outage_seconds": outage.as_secs(),
                        "last_error": format!("{e:#}"),
                    });
                    self.core
                        .enter_safe_mode("rpc_outage", reason, evidence)
                        .await?;
                }
                return Err(e);
            }
        };
        self.client = client;
        self.take_broadcast_reports();
        self.core.phase_done("choose", &mut phase);
        if !self.loaded {
            self.tracked = self
                .core
                .payouts
                .in_flight(&self.core.name)
                .await?
                .into_iter()
                .map(|f| (f.chunk, f))
                .collect();
            self.wallet_calls = self.core.payouts.wallet_calls(&self.core.name).await?;
            self.approved.clear();
            self.loaded = true;
        }
        for payout in self
            .core
            .payouts
            .cancelling_payouts(&self.core.name)
            .await?
        {
            for f in self.tracked.values_mut().filter(|f| f.payout == payout) {
                f.cancel_requested = true;
            }
        }
        // The chain's nonce per wallet says which of our nonces are spent: only chunks below it
        // can have a receipt, so a tick costs RPC calls for what was mined since the last one,
        // not for everything in flight.
        let mut mined_below: HashMap<String, u64> = HashMap::new();
        for w in &self.wallets {
            let address = w.address.to_checksum(None);
            let count = self.busy(&address);
            self.core
                .metrics
                .in_flight
                .with_label_values(&[self.core.name.as_str(), address.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            let mut gap = 0;
            if count == 0 {
                self.queue_marks.remove(&address);
            } else {
                let chain = self.client.nonce(w.address, false).await?;
                // A queue first seen now (after a restart) counts from now: judging it by its
                // transactions' ages would replace a whole queue that was moving while the
                // daemon was down, at the price of one stuck time's delay for a real stall.
                if self
                    .queue_marks
                    .get(&address)
                    .is_none_or(|seen| seen.nonce != chain)
                {
                    let mark = QueueMark {
                        nonce: chain,
                        head,
                        at: self.core.clock.now(),
                    };
                    self.queue_marks.insert(address.clone(), mark);
                }
                let lowest = self
                    .tracked
                    .values()
                    .filter(|f| f.wallet == address && f.mined.is_none())
                    .map(|f| f.nonce)
                    .min();
                gap = lowest.map_or(0, |l| l.saturating_sub(chain));
                mined_below.insert(address.clone(), chain);
            }
            self.core
                .metrics
                .nonce_gap
                .with_label_values(&[self.core.name.as_str(), address.as_str()])
                .set(i64::try_from(gap).unwrap_or(i64::MAX));
        }
        self.block_hashes.clear();
        self.receipts.clear();
        self.witness_head = None;
        self.witness_hashes.clear();
        self.finalized = None;
        self.mined.clear();
        self.settling.clear();
        let attention = self.needing_attention(head, &mined_below);
        self.prefetch(&attention).await?;
        for (chunk, spent) in attention {
            let Some(f) = self.tracked.get(&chunk).cloned() else {
                continue;
            };
            self.track(head, &f, spent).await?;
        }
        self.follow_wallet_calls(head, &mined_below).await?;
        self.watch_deep_reorgs(head).await?;
        self.observe_stuck(head);
        self.core.count_payouts().await?;
        if !self.mined.is_empty() {
            let mined = std::mem::take(&mut self.mined);
            self.core.payouts.record_mined(&mined).await?;
            for (chunk, m) in mined {
                if let Some(f) = self.tracked.get_mut(&chunk) {
                    f.state = if m.is_some() {
                        ChunkState::Mined
                    } else {
                        ChunkState::Broadcast
                    };
                    f.mined = m;
                }
            }
        }
        self.core.phase_done("track", &mut phase);
        self.settle_batch().await?;
        self.core.phase_done("settle", &mut phase);
        self.observe_balances().await?;
        if self.opened_before_sending(head).await? {
            self.send(head).await?;
        }
        self.core.phase_done("send", &mut phase);
        self.watch_deposits(head).await?;
        self.reconcile_periodically().await?;
        self.core.phase_done("watch", &mut phase);
        Ok(())
    }

    /// Exports every wallet's native and token balances every 15 s, sending or not (the
    /// alerts on low hot balances read them).
    async fn observe_balances(&mut self) -> anyhow::Result<()> {
        if self
            .observed_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(15))
        {
            return Ok(());
        }
        self.observed_at = Some(Instant::now());
        for w in &self.wallets {
            let address = w.address.to_checksum(None);
            let labels = [self.core.name.as_str(), address.as_str()];
            let native = self.client.native_balance(w.address).await?;
            self.wallet_metrics
                .native_balance_wei
                .with_label_values(&labels)
                .set(f64::from(native));
            for (code, t) in &self.core.tokens {
                let units = self.client.token_balance(t.contract, w.address).await?;
                self.wallet_metrics
                    .token_balance
                    .with_label_values(&[labels[0], labels[1], code.as_str()])
                    .set(
                        t.spec
                            .units_as_f64(i128::try_from(units).unwrap_or(i128::MAX)),
                    );
            }
        }
        Ok(())
    }

    /// Chunks of this wallet not yet final.
    fn busy(&self, wallet: &str) -> usize {
        self.tracked.values().filter(|f| f.wallet == wallet).count()
    }

    /// The tracked chunks this tick must look at, lowest nonce first per wallet, with whether
    /// their nonce is spent: mined ones (to settle), spent nonces (to find the receipt), never
    /// sent, to be cancelled, or stuck. The rest wait without any I/O.
    fn needing_attention(
        &self,
        head: u64,
        mined_below: &HashMap<String, u64>,
    ) -> Vec<(ChunkId, bool)> {
        let now = self.core.clock.now();
        let mut out: Vec<(&str, u64, ChunkId, bool)> = self
            .tracked
            .values()
            .filter_map(|f| {
                let spent = mined_below.get(&f.wallet).is_some_and(|n| f.nonce < *n);
                let latest = f.attempts.last()?;
                let due = f.mined.is_some()
                    || spent
                    || latest.broadcast_at.is_none()
                    || (f.cancel_requested && latest.kind == AttemptKind::Transfer)
                    || self.is_stuck(head, now, &f.wallet, latest);
                due.then_some((f.wallet.as_str(), f.nonce, f.chunk, spent))
            })
            .collect();
        out.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out.into_iter().map(|(_, _, c, spent)| (c, spent)).collect()
    }

    /// A transaction is stuck when it has waited the stuck time (blocks or seconds) since its
    /// broadcast *and* its wallet's queue has not moved for as long. One that waits behind its
    /// own wallet's earlier nonces while they are mined is queued, not stuck: a higher fee
    /// would not let it pass them, and replacing it costs a signature, a write and a broadcast.
    fn is_stuck(&self, head: u64, now: UnixMicros, wallet: &str, latest: &Attempt) -> bool {
        let waited = |since_head: Option<u64>, since: Option<UnixMicros>| {
            since.is_some_and(|at| now - at >= self.settings.stuck_after_micros)
                || since_head.is_some_and(|h| head >= h + self.settings.stuck_after_blocks)
        };
        let stalled = self
            .queue_marks
            .get(wallet)
            .is_none_or(|m| waited(Some(m.head), Some(m.at)));
        stalled && waited(latest.head_at_broadcast, latest.broadcast_at)
    }

    /// Stuck count and the age of the oldest stuck transaction, from what this tick loaded.
    fn observe_stuck(&self, head: u64) {
        let now = self.core.clock.now();
        let mut stuck = 0i64;
        let mut oldest: Option<UnixMicros> = None;
        for f in self.tracked.values().filter(|f| f.mined.is_none()) {
            let Some(latest) = f.attempts.last() else {
                continue;
            };
            if self.is_stuck(head, now, &f.wallet, latest) {
                stuck += 1;
                let first = f.attempts.iter().filter_map(|a| a.broadcast_at).min();
                oldest = oldest.min(first).or(first);
            }
        }
        let network = [self.core.name.as_str()];
        self.core
            .metrics
            .stuck
            .with_label_values(&network)
            .set(stuck);
        let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6);
        self.core
            .metrics
            .oldest_stuck_seconds
            .with_label_values(&network)
            .set(age);
    }

    /// Fees for the next block in the network's fee mode, within its tip floor and fee cap.
    async fn market_fees(&self) -> anyhow::Result<Fees> {
        let mode = self
            .core
            .controls
            .fee_mode(&self.core.name, self.settings.fee_mode);
        Ok(self
            .client
            .suggest_fees(mode, self.settings.min_tip, self.settings.max_fee)
            .await?)
    }

    fn wallet(&self, address: &str) -> Option<&Arc<Wallet>> {
        self.wallets
            .iter()
            .find(|w| w.address.to_checksum(None) == address)
    }

    fn transfer(&self, f: &InFlight, nonce: u64, fees: Fees) -> anyhow::Result<TransferTx> {
        let token =
            self.core.tokens.get(&f.asset.code).ok_or_else(|| {
                anyhow::anyhow!("no token {} on {}", f.asset.code, self.core.name)
            })?;
        Ok(TransferTx {
            chain_id: self.chain_id,
            nonce,
            token: token.contract,
            to: Address::parse_checksummed(&f.destination, None)?,
            value: U256::from(u128::try_from(f.amount)?),
            gas_limit: self.settings.gas_limit,
            fees,
        })
    }
}

fn attempt_of(s: &SignedTransfer, kind: AttemptKind, at: UnixMicros) -> Attempt {
    Attempt {
        id: uuid::Uuid::now_v7(),
        kind,
        hash: s.hash.0,
        raw: s.raw.to_vec(),
        nonce: s.nonce,
        max_fee_per_gas: s.fees.max_fee_per_gas,
        max_priority_fee_per_gas: s.fees.max_priority_fee_per_gas,
        gas_limit: s.gas_limit,
        created_at: at,
        broadcast_at: None,
        head_at_broadcast: None,
        batch: None,
    }
}

impl ChainEngine for NetworkEngine {
    fn core(&mut self) -> &mut EngineCore {
        &mut self.core
    }

    async fn tick(&mut self) -> Result<(), TickError> {
        Ok(NetworkEngine::tick(self).await?)
    }

    fn forget(&mut self, after: Forget) {
        match after {
            Forget::FreshLease => {
                self.loaded = false;
                self.nonces.clear();
            }
            Forget::Standby => {
                self.tracked.clear();
                self.loaded = false;
            }
            Forget::FailedTick => {
                // Nonces and tracked chunks come again from the database and the chain.
                self.nonces.clear();
                self.loaded = false;
                self.endpoints.failed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finding_acts_only_once_consecutive_reads_of_the_same_range_agree() {
        let mut s: Suspects<&str> = Suspects::new();
        assert!(s.confirm(10, &["a", "b"]).is_empty());
        assert!(s.confirm(10, &["a"]).is_empty());
        // "a" for the third time in a row; "b" dropped out and starts over.
        assert_eq!(s.confirm(10, &["a", "b"]), vec!["a"]);
        assert!(s.confirm(10, &["b"]).is_empty());
        // A clean read in between starts over.
        assert!(s.confirm(10, &[]).is_empty());
        assert!(s.confirm(10, &["b"]).is_empty());
        // Another range is another question.
        assert!(s.confirm(11, &["b"]).is_empty());
        assert!(s.confirm(11, &["b"]).is_empty());
        assert_eq!(s.confirm(11, &["b"]), vec!["b"]);
    }
}
