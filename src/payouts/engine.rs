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
//! from the database. One loop per network and one process per wallet for now; leases for
//! several instances are the next step (issue 4).

use super::networks::PayoutToken;
use super::policy::{RolloutPhase, day_start};
use super::{Attempt, AttemptKind, ChunkState, InFlight, Mined, PayoutState, close_unpaid};
use crate::chains::evm::{
    EvmClient, FeeMode, Fees, RpcErrorClass, SignedTransfer, TransferDirection, TransferTx,
    sign_cancel, sign_transfer, signed_transfer_parts,
};
use crate::config::NetworkConfig;
use crate::domain::{AccountId, Amount, AssetKey, ChunkId, PayoutId, UnixMicros};
use crate::ledger::{AccountKind, Command, Effect, Ledger, Operation, ReleaseKind};
use crate::metrics::{PayoutMetrics, WalletMetrics};
use crate::store::{DynStore, StoreError, now_micros};
use crate::wallets::{Wallet, WalletRole};
use alloy::primitives::{Address, U256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// RPC calls the engine keeps open at once when it reads receipts and blocks or broadcasts a
/// round: the node answers them in parallel instead of one round trip after another.
const RPC_CONCURRENCY: usize = 16;

/// Steps where `debug.pause_at` can stop the engine for crash tests.
pub const PAUSE_POINTS: [&str; 3] = [
    "engine.after_sign",
    "engine.after_broadcast",
    "engine.before_confirm",
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
    pause_at: Option<String>,
    /// How long the engine lease lasts without renewal: the takeover time when an owner dies.
    lease_ttl: Duration,
    /// The phase until one is set through the API.
    rollout_phase: RolloutPhase,
    /// Token units per asset per day at 100%, by asset code.
    daily_targets: HashMap<String, i128>,
    timezone: chrono_tz::Tz,
}

/// Who this engine is among the instances sharing the database.
#[derive(Clone)]
pub struct EngineInstance {
    /// Unique per process: the owner named in the engine lease.
    pub id: String,
    pub rpc_metrics: crate::metrics::RpcMetrics,
    /// `debug.pause_at`, for crash tests.
    pub pause_at: Option<String>,
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
}

/// A chunk at depth: the ledger commands that record it, posted with the tick's batch.
struct Settlement {
    chunk: ChunkId,
    /// Where it was mined and the attempt that was, watched for deep reorgs once paid.
    mined: Mined,
    attempt: Option<Attempt>,
    commands: Vec<Command>,
    payout: PayoutId,
    outcome: Outcome,
}

pub struct NetworkEngine {
    name: String,
    chain_id: u64,
    /// The network's RPC endpoints; `client` is the one chosen for the current tick.
    endpoints: crate::chains::endpoints::Endpoints,
    client: EvmClient,
    ledger: Ledger,
    store: DynStore,
    wallets: Vec<Arc<Wallet>>,
    tokens: HashMap<String, PayoutToken>,
    settings: Settings,
    /// Next nonce per wallet, loaded from the database and the chain on first use.
    nonces: HashMap<Address, u64>,
    metrics: PayoutMetrics,
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
    /// This instance's name in the engine lease.
    owner: String,
    /// The lease fence while this instance runs the network's engine; None on standby.
    fence: Option<u64>,
    renewed_at: Option<std::time::Instant>,
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
    /// Each hot wallet's gas account in the native asset, by checksummed address.
    gas_accounts: HashMap<String, AccountId>,
    /// Payouts whose wait on the rollout guardrail is already recorded (once per process).
    guardrail_noted: std::collections::HashSet<PayoutId>,
    /// When the payouts-by-state gauge was last refreshed.
    counted_at: Option<std::time::Instant>,
}

impl NetworkEngine {
    /// The engine of `network`, or None when it has no hot wallet to send from.
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
            .filter(|w| w.network == network.name && w.role == WalletRole::Hot)
            .cloned()
            .collect();
        if wallets.is_empty() {
            return Ok(None);
        }
        let endpoints = crate::chains::endpoints::Endpoints::new(
            &network.name,
            &network.rpc_urls,
            network.max_head_lag_blocks,
            instance.rpc_metrics.clone(),
        )?;
        let client = endpoints
            .clients()
            .next()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("network {} has no RPC URL", network.name))?;
        Ok(Some(Self {
            name: network.name.clone(),
            chain_id: network.chain_id,
            endpoints,
            client,
            store: ledger.store().clone(),
            ledger,
            wallets,
            tokens: tokens.clone(),
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
                pause_at: instance.pause_at,
                lease_ttl: Duration::from_secs(network.lease_seconds),
                rollout_phase: network.rollout.phase,
                daily_targets: tokens
                    .iter()
                    .filter_map(|(code, t)| {
                        let target = network.rollout.daily_volume_target.as_deref()?;
                        let units = Amount::parse_decimal(target, &t.spec).ok()?.units();
                        Some((code.clone(), units))
                    })
                    .collect(),
                timezone: network.rollout.timezone.parse().map_err(|_| {
                    anyhow::anyhow!("network {}: bad rollout.timezone", network.name)
                })?,
            },
            nonces: HashMap::new(),
            metrics,
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
            owner: instance.id,
            deposits_read_at: None,
            fence: None,
            renewed_at: None,
            settling: Vec::new(),
            native: AssetKey::new(network.name.clone(), network.native.code.clone()),
            gas_accounts: HashMap::new(),
            guardrail_noted: Default::default(),
            counted_at: None,
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
                    self.name,
                    self.chain_id
                );
            }
        }
        for w in &self.wallets {
            let address = w.address.to_checksum(None);
            let account = self
                .ledger
                .wallet_gas_account(&self.native, &address)
                .await?;
            self.gas_accounts.insert(address, account);
        }
        loop {
            let started = std::time::Instant::now();
            let ticked = match self.hold_lease().await {
                Ok(true) => self.tick().await,
                Ok(false) => Ok(()),
                Err(e) => Err(e),
            };
            self.metrics
                .tick_seconds
                .with_label_values(&[self.name.as_str()])
                .observe(started.elapsed().as_secs_f64());
            if let Err(e) = ticked {
                tracing::warn!(network = %self.name, error = format!("{e:#}"), "payout engine tick failed; retrying");
                // Reload nonces and tracked chunks from the database and the chain after any
                // trouble.
                self.nonces.clear();
                self.loaded = false;
                self.renewed_at = None;
                self.endpoints.failed();
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    if self.fence.is_some()
                        && let Err(e) = self.store.release_lease(&self.name, &self.owner).await
                    {
                        tracing::warn!(network = %self.name, error = %e, "could not release the engine lease; it expires on its own");
                    }
                    return Ok(());
                }
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    /// Takes or renews the network's engine lease; false while another instance holds it (this
    /// one stands by). Renewed when a third of its time has passed. A new fence means another
    /// instance may have run the network meanwhile: everything is reloaded from the database.
    async fn hold_lease(&mut self) -> anyhow::Result<bool> {
        let ttl = self.settings.lease_ttl;
        if self.fence.is_some() && self.renewed_at.is_some_and(|at| at.elapsed() < ttl / 3) {
            return Ok(true);
        }
        let ttl_micros = i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX);
        let lease = self
            .store
            .acquire_lease(&self.name, &self.owner, now_micros(), ttl_micros)
            .await?;
        let gauge = self
            .metrics
            .engine_lease
            .with_label_values(&[self.name.as_str()]);
        match lease {
            Some(l) => {
                if self.fence != Some(l.fence) {
                    tracing::info!(network = %self.name, owner = %self.owner, fence = l.fence, "running the payout engine");
                    self.loaded = false;
                    self.nonces.clear();
                }
                self.fence = Some(l.fence);
                self.renewed_at = Some(std::time::Instant::now());
                gauge.set(1);
                Ok(true)
            }
            None => {
                if self.fence.take().is_some() {
                    tracing::warn!(network = %self.name, owner = %self.owner, "engine lease lost to another instance; standing by");
                }
                self.tracked.clear();
                self.loaded = false;
                gauge.set(0);
                Ok(false)
            }
        }
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
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
                    self.enter_safe_mode("rpc_outage", reason).await?;
                }
                return Err(e);
            }
        };
        self.client = client;
        if !self.loaded {
            self.tracked = self
                .store
                .in_flight(&self.name)
                .await?
                .into_iter()
                .map(|f| (f.chunk, f))
                .collect();
            self.loaded = true;
        }
        for payout in self.store.cancelling_payouts(&self.name).await? {
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
            self.metrics
                .in_flight
                .with_label_values(&[self.name.as_str(), address.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            if count > 0 {
                mined_below.insert(address, self.client.nonce(w.address, false).await?);
            }
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
        self.watch_deep_reorgs(head).await?;
        self.observe_stuck(head);
        self.count_payouts().await?;
        if !self.mined.is_empty() {
            let mined = std::mem::take(&mut self.mined);
            self.store.record_mined(&mined).await?;
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
        self.settle_batch().await?;
        self.send(head).await?;
        self.watch_deposits(head).await
    }

    /// Every token transfer out of a hot wallet must be one of ours (a stored attempt). One that
    /// is not means the key is used elsewhere: the network enters safe-mode at once.
    async fn check_outflows(
        &mut self,
        contracts: &[Address],
        from: u64,
        to: u64,
    ) -> anyhow::Result<()> {
        let wallets: Vec<Address> = self.wallets.iter().map(|w| w.address).collect();
        let logs = self
            .client
            .transfer_logs(contracts, &wallets, TransferDirection::Outgoing, from..=to)
            .await?;
        if logs.is_empty() {
            return Ok(());
        }
        let hashes: Vec<[u8; 32]> = logs.iter().map(|l| l.tx_hash.0).collect();
        let ours = self.store.known_attempts(&hashes).await?;
        for log in logs.iter().filter(|l| !ours.contains(&l.tx_hash.0)) {
            let wallet = log.from.to_checksum(None);
            self.wallet_metrics
                .unexpected_outflows_total
                .with_label_values(&[self.name.as_str(), wallet.as_str()])
                .inc();
            let reason = format!(
                "automatic: hot wallet {wallet} sent {} base units of {} in tx 0x{} (block {}), which treasuryd never signed",
                log.value,
                log.token.to_checksum(None),
                hex::encode(log.tx_hash),
                log.block
            );
            self.enter_safe_mode("unexpected_outflow", reason).await?;
        }
        Ok(())
    }

    /// Credits token transfers to deposit addresses from blocks at the confirmation depth, at
    /// most once a second and 2,000 blocks per call. Each is a DEPOSIT keyed by chain, tx hash
    /// and log index, so a re-read range (after a crash, before the cursor moved) replays
    /// instead of crediting twice. Blocks below the depth are never read, so a reorg within
    /// it cannot credit a transfer that did not stay.
    async fn watch_deposits(&mut self, head: u64) -> anyhow::Result<()> {
        if self
            .deposits_read_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.deposits_read_at = Some(std::time::Instant::now());
        let addresses = self.store.deposit_addresses(&self.name, None).await?;
        let Some(safe) = (head + 1).checked_sub(self.settings.confirmations) else {
            return Ok(());
        };
        let from = match self.store.deposit_cursor(&self.name).await? {
            Some(next) => next,
            // First start: from the configured block, or from here on.
            None => {
                let start = self.settings.deposits_from_block.unwrap_or(safe + 1);
                self.store.set_deposit_cursor(&self.name, start).await?;
                return Ok(());
            }
        };
        if from > safe {
            return Ok(());
        }
        let to = safe.min(from + 1_999);
        let contracts: Vec<Address> = self.tokens.values().map(|t| t.contract).collect();
        self.check_outflows(&contracts, from, to).await?;
        let recipients: Vec<Address> = addresses
            .iter()
            .filter_map(|d| Address::parse_checksummed(&d.address, None).ok())
            .collect();
        let logs = if recipients.is_empty() {
            Vec::new()
        } else {
            self.client
                .transfer_logs(
                    &contracts,
                    &recipients,
                    TransferDirection::Incoming,
                    from..=to,
                )
                .await?
        };
        let mut commands = Vec::new();
        for log in logs {
            let Some((code, _)) = self.tokens.iter().find(|(_, t)| t.contract == log.token) else {
                continue;
            };
            let to_address = log.to.to_checksum(None);
            let Some(target) = addresses
                .iter()
                .find(|d| d.address == to_address && &d.asset.code == code)
            else {
                tracing::warn!(network = %self.name, token = %code, to = %to_address, "a transfer to a deposit address of no account in that token; not credited");
                continue;
            };
            let (Ok(units), Some(source)) = (
                i128::try_from(log.value),
                self.ledger
                    .system_account(&target.asset, AccountKind::External),
            ) else {
                continue;
            };
            let Ok(amount) = Amount::new(units) else {
                continue;
            };
            let tx = format!("0x{}", hex::encode(log.tx_hash));
            let mut cmd = Command::new(
                format!("deposit:{}:{tx}:{}", self.chain_id, log.log_index),
                target.asset.clone(),
                Operation::Deposit {
                    account: target.account,
                    source,
                    amount,
                },
            );
            cmd.reference = Some(tx);
            cmd.memo = Some(format!(
                "on-chain deposit from {} in block {}",
                log.from.to_checksum(None),
                log.block
            ));
            commands.push(cmd);
        }
        if !commands.is_empty() {
            for (result, cmd) in self
                .ledger
                .post(commands.clone())
                .await?
                .into_iter()
                .zip(&commands)
            {
                match result {
                    Ok(posted) if !posted.replayed => self
                        .metrics
                        .deposits_total
                        .with_label_values(&[self.name.as_str(), cmd.asset.code.as_str()])
                        .inc(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(key = %cmd.idempotency_key, error = %e, "the ledger refused a deposit; it will be read again");
                        return Ok(());
                    }
                }
            }
        }
        self.store.set_deposit_cursor(&self.name, to + 1).await?;
        Ok(())
    }

    /// Reads, all at once, the receipts of every attempt whose nonce is spent and the hashes
    /// of the blocks that hold mined chunks, so that tracking costs one round of parallel
    /// calls rather than two sequential calls per chunk.
    async fn prefetch(&mut self, attention: &[(ChunkId, bool)]) -> anyhow::Result<()> {
        use futures::StreamExt;
        let hashes: Vec<alloy::primitives::B256> = attention
            .iter()
            .filter(|(_, spent)| *spent)
            .filter_map(|(chunk, _)| self.tracked.get(chunk))
            .filter(|f| f.mined.is_none())
            .flat_map(|f| f.attempts.iter().map(|a| a.hash.into()))
            .collect();
        let receipts: Vec<_> = futures::stream::iter(hashes)
            .map(|h| {
                let client = self.client.clone();
                async move { (h, client.inclusion(h).await) }
            })
            .buffer_unordered(RPC_CONCURRENCY)
            .collect()
            .await;
        for (hash, receipt) in receipts {
            self.receipts.insert(hash.0, receipt?);
        }
        let mut blocks: Vec<u64> = attention
            .iter()
            .filter_map(|(chunk, _)| self.tracked.get(chunk)?.mined.map(|m| m.block))
            .chain(self.receipts.values().flatten().map(|i| i.block_number))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        let read: Vec<_> = futures::stream::iter(blocks)
            .map(|b| {
                let client = self.client.clone();
                async move { (b, client.block_hash(b).await) }
            })
            .buffer_unordered(RPC_CONCURRENCY)
            .collect()
            .await;
        for (block, hash) in read {
            self.block_hashes.insert(block, hash?);
        }
        Ok(())
    }

    /// Checks that paid chunks are still on the chain. The hash of the highest watched block
    /// vouches for every block below it, so a quiet chain costs one call per tick. A paid
    /// chunk whose block left the chain puts the network in safe-mode (an Admin leaves it),
    /// counts in `deep_reorgs_total`, and its stored transaction is re-sent until it is
    /// included again (same nonce: it cannot pay twice).
    async fn watch_deep_reorgs(&mut self, head: u64) -> anyhow::Result<()> {
        let window = self.settings.reorg_watch_blocks;
        self.watched
            .retain(|w| w.block_hash.is_none() || w.block + window >= head);
        let Some(highest) = self
            .watched
            .iter()
            .filter(|w| w.block_hash.is_some())
            .max_by_key(|w| w.block)
        else {
            return self.reland().await;
        };
        let (block, expected) = (highest.block, highest.block_hash);
        if self.client.block_hash(block).await?.map(|h| h.0) == expected {
            return self.reland().await;
        }
        for i in 0..self.watched.len() {
            let Some(expected) = self.watched[i].block_hash else {
                continue;
            };
            let block = self.watched[i].block;
            if self.client.block_hash(block).await?.map(|h| h.0) == Some(expected) {
                continue;
            }
            self.watched[i].block_hash = None;
            let (chunk, payout) = (self.watched[i].chunk, self.watched[i].payout);
            self.metrics
                .deep_reorgs_total
                .with_label_values(&[self.name.as_str()])
                .inc();
            let reason = format!(
                "automatic: chunk {chunk} of payout {payout}, paid at block {block}, left the chain after its confirmation depth"
            );
            tracing::error!(network = %self.name, %chunk, %payout, block, "a paid transaction was reorged out; entering safe-mode");
            self.store
                .add_payout_event(payout, "reorged_after_confirmation", &reason)
                .await?;
            self.enter_safe_mode("deep_reorg", reason).await?;
        }
        self.reland().await
    }

    /// Whether a second healthy endpoint has the same block at `m.block` and a head at the
    /// confirmation depth: a money-deciding read is not taken from one node alone. Read once
    /// per tick and block.
    async fn witnessed(&mut self, m: &Mined) -> anyhow::Result<bool> {
        let Some(witness) = self.endpoints.witness() else {
            return Ok(false);
        };
        let witness_head = match self.witness_head {
            Some(h) => h,
            None => {
                let h = witness.head().await?;
                self.witness_head = Some(h);
                h
            }
        };
        let depth_ok = if self.settings.use_finalized_tag {
            true
        } else {
            witness_head + 1 >= m.block + self.settings.confirmations
        };
        let hash = match self.witness_hashes.get(&m.block) {
            Some(h) => *h,
            None => {
                let h = witness.block_hash(m.block).await?;
                self.witness_hashes.insert(m.block, h);
                h
            }
        };
        Ok(depth_ok && hash == Some(m.block_hash.into()))
    }

    /// Puts the network in safe-mode on the engine's own finding (recorded with the reason and
    /// audited as `treasuryd`); an Admin leaves it. Nothing if it is in safe-mode already.
    async fn enter_safe_mode(&self, cause: &str, reason: String) -> anyhow::Result<()> {
        if self.store.safe_mode(&self.name).await?.is_some() {
            return Ok(());
        }
        tracing::error!(network = %self.name, cause, %reason, "entering safe-mode");
        let at = now_micros();
        let audit = crate::store::AuditRecord {
            actor: "treasuryd".into(),
            role: crate::domain::Role::Admin,
            action: "safe_mode.enter".into(),
            target: format!("network:{}", self.name),
            reason: Some(reason.clone()),
            request_id: "engine".into(),
            at,
        };
        let mode = crate::store::SafeMode {
            reason,
            actor: "treasuryd".into(),
            since: at,
        };
        self.store
            .set_safe_mode(&self.name, Some(&mode), &audit)
            .await?;
        self.metrics
            .auto_safe_mode_total
            .with_label_values(&[self.name.as_str(), cause])
            .inc();
        Ok(())
    }

    /// Re-sends the paid transactions a reorg took off the chain, and records where each lands
    /// again.
    async fn reland(&mut self) -> anyhow::Result<()> {
        for i in 0..self.watched.len() {
            if self.watched[i].block_hash.is_some() {
                continue;
            }
            let (chunk, attempt) = (self.watched[i].chunk, self.watched[i].attempt.clone());
            match self.client.inclusion(attempt.hash.into()).await? {
                Some(inc) => {
                    self.watched[i].block = inc.block_number;
                    self.watched[i].block_hash = Some(inc.block_hash.0);
                    self.store
                        .add_payout_event(
                            self.watched[i].payout,
                            "reincluded",
                            &format!(
                                "chunk {chunk}: tx 0x{} included again in block {}",
                                hex::encode(attempt.hash),
                                inc.block_number
                            ),
                        )
                        .await?;
                }
                None => {
                    if let Err(e) = self.client.broadcast(&attempt.raw).await
                        && e.class != RpcErrorClass::AlreadyKnown
                    {
                        tracing::warn!(%chunk, class = e.class.as_str(), error = %e.message, "re-sending a reorged payout failed; will retry");
                    }
                }
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
        let now = now_micros();
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
                    || self.is_stuck(head, now, latest);
                due.then_some((f.wallet.as_str(), f.nonce, f.chunk, spent))
            })
            .collect();
        out.sort_unstable_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out.into_iter().map(|(_, _, c, spent)| (c, spent)).collect()
    }

    fn is_stuck(&self, head: u64, now: UnixMicros, latest: &Attempt) -> bool {
        latest
            .broadcast_at
            .is_some_and(|at| now - at >= self.settings.stuck_after_micros)
            || latest
                .head_at_broadcast
                .is_some_and(|h| head >= h + self.settings.stuck_after_blocks)
    }

    /// Stuck count and the age of the oldest stuck transaction, from what this tick loaded.
    fn observe_stuck(&self, head: u64) {
        let now = now_micros();
        let mut stuck = 0i64;
        let mut oldest: Option<UnixMicros> = None;
        for f in self.tracked.values().filter(|f| f.mined.is_none()) {
            let Some(latest) = f.attempts.last() else {
                continue;
            };
            if self.is_stuck(head, now, latest) {
                stuck += 1;
                let first = f.attempts.iter().filter_map(|a| a.broadcast_at).min();
                oldest = oldest.min(first).or(first);
            }
        }
        let network = [self.name.as_str()];
        self.metrics.stuck.with_label_values(&network).set(stuck);
        let age = oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6);
        self.metrics
            .oldest_stuck_seconds
            .with_label_values(&network)
            .set(age);
    }

    /// Refreshes the payouts-by-state and freeze gauges at most once a second: one grouped
    /// count over the payouts not yet final.
    async fn count_payouts(&mut self) -> anyhow::Result<()> {
        if self
            .counted_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.counted_at = Some(std::time::Instant::now());
        let frozen = self.store.freezes(&self.name).await?;
        for code in self.tokens.keys() {
            let on = frozen.iter().any(|f| &f.asset == code);
            self.metrics
                .frozen
                .with_label_values(&[self.name.as_str(), code.as_str()])
                .set(i64::from(on));
        }
        let counts = self.store.active_payouts(&self.name).await?;
        for state in [
            PayoutState::PendingApproval,
            PayoutState::Queued,
            PayoutState::Broadcast,
        ] {
            let n = counts
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n);
            self.metrics
                .by_state
                .with_label_values(&[self.name.as_str(), state.as_str()])
                .set(n);
        }
        Ok(())
    }

    /// Stops here for good when configured to (crash tests kill the process at this point).
    async fn pause_point(&self, name: &str) {
        if self.settings.pause_at.as_deref() == Some(name) {
            tracing::warn!(point = name, "pause point reached");
            std::future::pending::<()>().await;
        }
    }

    fn wallet(&self, address: &str) -> Option<&Arc<Wallet>> {
        self.wallets
            .iter()
            .find(|w| w.address.to_checksum(None) == address)
    }

    fn transfer(&self, f: &InFlight, nonce: u64, fees: Fees) -> anyhow::Result<TransferTx> {
        let token = self
            .tokens
            .get(&f.asset.code)
            .ok_or_else(|| anyhow::anyhow!("no token {} on {}", f.asset.code, self.name))?;
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

    async fn track(&mut self, head: u64, f: &InFlight, nonce_spent: bool) -> anyhow::Result<()> {
        match (f.state, f.mined) {
            (ChunkState::Mined, Some(m)) => self.settle(head, f, m).await,
            _ => self.follow(head, f, nonce_spent).await,
        }
    }

    /// A chunk not yet mined: look for a receipt of any attempt, re-send what was never sent,
    /// and replace what is stuck.
    async fn follow(&mut self, head: u64, f: &InFlight, nonce_spent: bool) -> anyhow::Result<()> {
        let candidates = if nonce_spent {
            f.attempts.as_slice()
        } else {
            &[]
        };
        for a in candidates.iter().rev() {
            let inclusion = match self.receipts.get(&a.hash) {
                Some(known) => known.clone(),
                None => self.client.inclusion(a.hash.into()).await?,
            };
            if let Some(i) = inclusion {
                let mined = Mined {
                    hash: a.hash,
                    block: i.block_number,
                    block_hash: i.block_hash.0,
                    success: i.success,
                    fee_wei: u128::from(i.gas_used).saturating_mul(i.effective_gas_price),
                };
                self.mined.push((f.chunk, Some(mined)));
                // Stored with the tick's other inclusions before the settlement batch, so a
                // chunk already at depth settles in this tick.
                return self.settle(head, f, mined).await;
            }
        }
        let Some(latest) = f.attempts.last() else {
            return Ok(());
        };
        if nonce_spent {
            // The nonce is used but by none of our attempts that the node knows: wait for the
            // receipt to appear (a lagging node) rather than re-signing anything.
            tracing::warn!(chunk = %f.chunk, nonce = f.nonce, "nonce spent without a receipt of ours yet");
            return Ok(());
        }
        if f.cancel_requested && latest.kind == AttemptKind::Transfer {
            // An Operator's cancel: replace the transfer now, whether or not it is stuck.
            return self.replace(head, f, latest, AttemptKind::Cancel).await;
        }
        let stuck = self.is_stuck(head, now_micros(), latest);
        if latest.broadcast_at.is_none() {
            // Stored but never sent (a crash or a node error in between): send the same bytes.
            self.broadcast(&[(f.chunk, latest.clone())], head).await?;
        } else if stuck {
            self.replace(head, f, latest, latest.kind).await?;
        }
        Ok(())
    }

    /// Re-signs the chunk's nonce as `kind` with fees raised by at least the bump: a speed-up
    /// of a stuck transaction, or the cancel of a transfer.
    async fn replace(
        &mut self,
        head: u64,
        f: &InFlight,
        latest: &Attempt,
        kind: AttemptKind,
    ) -> anyhow::Result<()> {
        let Some(wallet) = self.wallet(&f.wallet).cloned() else {
            anyhow::bail!(
                "chunk {} was sent from {}, which is no longer configured",
                f.chunk,
                f.wallet
            );
        };
        let old = Fees {
            max_fee_per_gas: latest.max_fee_per_gas,
            max_priority_fee_per_gas: latest.max_priority_fee_per_gas,
        };
        let market = self
            .client
            .suggest_fees(
                self.settings.fee_mode,
                self.settings.min_tip,
                self.settings.max_fee,
            )
            .await?;
        let fees = old.bumped(self.settings.bump_bps, market, self.settings.max_fee);
        if fees.max_fee_per_gas <= old.max_fee_per_gas {
            // At the fee cap: keep the transaction alive as it is; never drop it.
            tracing::warn!(chunk = %f.chunk, nonce = f.nonce, "stuck at the fee cap; re-broadcasting as is");
            self.metrics
                .fee_cap_rebroadcasts_total
                .with_label_values(&[self.name.as_str()])
                .inc();
            self.broadcast(&[(f.chunk, latest.clone())], head).await?;
            return Ok(());
        }
        let signed = match kind {
            AttemptKind::Transfer => {
                sign_transfer(wallet.signer(), &self.transfer(f, f.nonce, fees)?)?
            }
            AttemptKind::Cancel => sign_cancel(wallet.signer(), self.chain_id, f.nonce, fees)?,
        };
        let attempt = attempt_of(&signed, kind);
        self.store.record_replacement(f.chunk, &attempt).await?;
        if let Some(t) = self.tracked.get_mut(&f.chunk) {
            t.attempts.push(attempt.clone());
        }
        let counter = if kind == AttemptKind::Cancel && latest.kind == AttemptKind::Transfer {
            &self.metrics.cancels_total
        } else {
            &self.metrics.speedups_total
        };
        counter.with_label_values(&[self.name.as_str()]).inc();
        self.broadcast(&[(f.chunk, attempt)], head).await?;
        Ok(())
    }

    /// A mined chunk: once at depth (and still on the canonical chain) queue its payment for
    /// this tick's ledger batch, or fail it if it reverted.
    async fn settle(&mut self, head: u64, f: &InFlight, m: Mined) -> anyhow::Result<()> {
        let canonical = match self.block_hashes.get(&m.block) {
            Some(hash) => *hash,
            None => {
                let hash = self.client.block_hash(m.block).await?;
                self.block_hashes.insert(m.block, hash);
                hash
            }
        };
        if canonical != Some(m.block_hash.into()) {
            // Back to tracking; the node may have lost the transaction with its block, so the
            // stored bytes go out again (same nonce: it can land once at most).
            self.mined.push((f.chunk, None));
            self.metrics
                .reorgs_total
                .with_label_values(&[self.name.as_str()])
                .inc();
            if let Some(a) = f.attempts.iter().find(|a| a.hash == m.hash) {
                self.broadcast(&[(f.chunk, a.clone())], head).await?;
            }
            return Ok(());
        }
        let at_depth = if self.settings.use_finalized_tag {
            let finalized = match self.finalized {
                Some(f) => f,
                None => {
                    let f = self.client.finalized_head().await?;
                    self.finalized = Some(f);
                    f
                }
            };
            finalized.is_some_and(|f| m.block <= f)
        } else {
            head + 1 >= m.block + self.settings.confirmations
        };
        if !at_depth {
            return Ok(());
        }
        if self.settings.cross_check && !self.witnessed(&m).await? {
            tracing::info!(network = %self.name, chunk = %f.chunk, block = m.block, "waiting for a second endpoint to confirm the inclusion");
            return Ok(());
        }
        self.pause_point("engine.before_confirm").await;
        let kind = f
            .attempts
            .iter()
            .find(|a| a.hash == m.hash)
            .map_or(AttemptKind::Transfer, |a| a.kind);
        let tx = format!("0x{}", hex::encode(m.hash));
        let mut commands = Vec::new();
        let outcome = match (kind, m.success) {
            (AttemptKind::Transfer, true) => {
                let destination = self
                    .ledger
                    .system_account(&f.asset, AccountKind::External)
                    .ok_or_else(|| anyhow::anyhow!("asset {} has no external account", f.asset))?;
                let release = Operation::Release {
                    hold: f.hold,
                    amount: Amount::new(f.amount)?,
                    kind: ReleaseKind::Payout,
                    destination,
                };
                let mut cmd = Command::new(
                    format!("payout-chunk:{}:paid", f.chunk),
                    f.asset.clone(),
                    release,
                );
                cmd.reference = Some(tx.clone());
                cmd.memo = Some(format!("payout {} chunk {}", f.payout, f.chunk));
                cmd.effects.push(Effect::ChunkConfirmed {
                    chunk: f.chunk,
                    payout: f.payout,
                });
                commands.push(cmd);
                Outcome::Paid
            }
            (AttemptKind::Transfer, false) => Outcome::Unpaid(
                f.chunk,
                ChunkState::Failed,
                format!("the transfer {tx} reverted at confirmation depth"),
            ),
            (AttemptKind::Cancel, _) => Outcome::Unpaid(
                f.chunk,
                ChunkState::Cancelled,
                format!("the cancel {tx} was mined instead of the transfer"),
            ),
        };
        if let Some(fee) = self.gas_fee(f, &m, &tx)? {
            commands.push(fee);
        }
        self.settling.push(Settlement {
            chunk: f.chunk,
            mined: m,
            attempt: f.attempts.iter().find(|a| a.hash == m.hash).cloned(),
            commands,
            payout: f.payout,
            outcome,
        });
        Ok(())
    }

    /// The FEE posting of the gas a mined transaction burned, from the sending wallet's gas
    /// account. None when it burned nothing.
    fn gas_fee(&self, f: &InFlight, m: &Mined, tx: &str) -> anyhow::Result<Option<Command>> {
        let Ok(fee) = i128::try_from(m.fee_wei) else {
            anyhow::bail!("gas fee of {tx} out of range");
        };
        if fee == 0 {
            return Ok(None);
        }
        let account = *self
            .gas_accounts
            .get(&f.wallet)
            .ok_or_else(|| anyhow::anyhow!("wallet {} has no gas account", f.wallet))?;
        let op = self
            .ledger
            .network_fee(account, &self.native, Amount::new(fee)?)?;
        let mut cmd = Command::new(
            format!("payout-chunk:{}:gas", f.chunk),
            self.native.clone(),
            op,
        );
        cmd.reference = Some(tx.to_owned());
        cmd.memo = Some(format!("gas of payout {} chunk {}", f.payout, f.chunk));
        Ok(Some(cmd))
    }

    /// Posts this tick's settlements as one ledger batch, then closes the chunks that did not
    /// pay and the payouts that are done. Every command is keyed by its chunk, so a batch that
    /// fails, or a crash after it, is simply posted again next tick.
    async fn settle_batch(&mut self) -> anyhow::Result<()> {
        if self.settling.is_empty() {
            return Ok(());
        }
        let settling = std::mem::take(&mut self.settling);
        let commands: Vec<Command> = settling
            .iter()
            .flat_map(|s| s.commands.iter().cloned())
            .collect();
        let mut results = self.ledger.post(commands).await?.into_iter();
        // Several chunks of one payout can settle in the same batch: look at each payout once.
        let mut touched: Vec<PayoutId> = Vec::new();
        let mut paid_now: Vec<PayoutId> = Vec::new();
        for s in settling {
            let mut ok = true;
            for (i, result) in results.by_ref().take(s.commands.len()).enumerate() {
                match result {
                    Ok(posted) => {
                        if i == 0 && matches!(s.outcome, Outcome::Paid) && !posted.replayed {
                            paid_now.push(s.payout);
                        }
                    }
                    Err(e) => {
                        ok = false;
                        tracing::error!(payout = %s.payout, error = %e, "the ledger refused a settlement posting");
                    }
                }
            }
            if let (true, Outcome::Unpaid(chunk, state, detail)) = (ok, &s.outcome) {
                self.store.close_chunk(*chunk, *state, detail).await?;
            }
            if ok {
                self.tracked.remove(&s.chunk);
                if let (Outcome::Paid, Some(attempt)) = (&s.outcome, &s.attempt) {
                    self.watched.push(Watched {
                        chunk: s.chunk,
                        payout: s.payout,
                        block: s.mined.block,
                        block_hash: Some(s.mined.block_hash),
                        attempt: attempt.clone(),
                    });
                }
            }
            if !touched.contains(&s.payout) {
                touched.push(s.payout);
            }
        }
        for p in self.store.payouts_by_id(&touched).await? {
            if p.state == PayoutState::Confirmed {
                if paid_now.contains(&p.id) {
                    self.finished(PayoutState::Confirmed, p.created_at);
                }
                continue;
            }
            // A sibling may have failed or been cancelled: once all are final, the unpaid
            // remainder goes back.
            let all_final = p.chunks.iter().all(|c| {
                matches!(
                    c.state,
                    ChunkState::Confirmed | ChunkState::Failed | ChunkState::Cancelled
                )
            });
            if all_final && let Some(closed) = close_unpaid(&self.ledger, p.id).await? {
                self.finished(closed.state, closed.created_at);
            }
        }
        Ok(())
    }

    fn finished(&self, state: PayoutState, created_at: crate::domain::UnixMicros) {
        let network = self.name.as_str();
        self.metrics
            .finished_total
            .with_label_values(&[network, state.as_str()])
            .inc();
        if state == PayoutState::Confirmed {
            let seconds = (now_micros() - created_at).max(0) as f64 / 1e6;
            self.metrics
                .pass_through_seconds
                .with_label_values(&[network])
                .observe(seconds);
        }
    }

    /// Gives queued chunks to wallets with room, signs and stores them, then broadcasts.
    /// Nothing new goes out while the network is in safe-mode.
    async fn send(&mut self, head: u64) -> anyhow::Result<()> {
        let safe = self.store.safe_mode(&self.name).await?.is_some();
        self.metrics
            .safe_mode
            .with_label_values(&[self.name.as_str()])
            .set(i64::from(safe));
        if safe {
            return Ok(());
        }
        let mut room: Vec<(Arc<Wallet>, usize)> = self
            .wallets
            .iter()
            .map(|w| {
                let address = w.address.to_checksum(None);
                (
                    w.clone(),
                    self.settings
                        .max_in_flight
                        .saturating_sub(self.busy(&address)),
                )
            })
            .filter(|(_, r)| *r > 0)
            .collect();
        let total: usize = room.iter().map(|(_, r)| r).sum();
        if total == 0 {
            return Ok(());
        }
        let queued = self.store.queued_chunks(&self.name, total as i64).await?;
        if queued.is_empty() {
            return Ok(());
        }
        let mut allowance = self.rollout_allowance().await?;
        let mut accounts: Vec<AccountId> = queued.iter().map(|w| w.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let allowlists = self.store.enforced_allowlists(&accounts).await?;
        let fees = self
            .client
            .suggest_fees(
                self.settings.fee_mode,
                self.settings.min_tip,
                self.settings.max_fee,
            )
            .await?;
        let mut queue = queued.into_iter().peekable();
        for (wallet, free) in room.iter_mut() {
            if queue.peek().is_none() {
                break;
            }
            let native = self.client.native_balance(wallet.address).await?;
            let labels = [self.name.clone(), wallet.address.to_checksum(None)];
            let labels = [labels[0].as_str(), labels[1].as_str()];
            let wm = &self.wallet_metrics;
            wm.native_balance_wei
                .with_label_values(&labels)
                .set(f64::from(native));
            let per_transfer =
                U256::from(self.settings.gas_limit) * U256::from(fees.max_fee_per_gas.max(1));
            let spare = native.saturating_sub(wallet.min_gas_wei);
            wm.runway_payouts
                .with_label_values(&labels)
                .set(f64::from(spare / per_transfer));
            let below = native < wallet.min_gas_wei;
            wm.below_gas_buffer
                .with_label_values(&labels)
                .set(i64::from(below));
            if below {
                tracing::warn!(wallet = %wallet.address, %native, "below its gas buffer: not sending");
                continue;
            }
            let nonce = self.next_nonce(wallet).await?;
            let mut signed = Vec::new();
            let mut works = Vec::new();
            let mut firsts: HashMap<uuid::Uuid, crate::domain::UnixMicros> = HashMap::new();
            let mut token_room: HashMap<String, i128> = HashMap::new();
            while *free > 0 {
                let Some(work) = queue.peek() else { break };
                let Some(token) = self.tokens.get(&work.asset.code) else {
                    queue.next();
                    continue;
                };
                if let Some(left) = allowance.get_mut(&work.asset.code) {
                    if *left < work.amount {
                        // Over today's rollout share: this chunk and every later one of the
                        // asset wait for tomorrow (or a wider phase), in order.
                        *left = -1;
                        let (payout, code) = (work.payout, work.asset.code.clone());
                        queue.next();
                        self.note_guardrail_wait(payout, &code).await?;
                        continue;
                    }
                    *left -= work.amount;
                }
                if !token_room.contains_key(&work.asset.code) {
                    let balance = self
                        .client
                        .token_balance(token.contract, wallet.address)
                        .await?;
                    let keep = wallet
                        .min_token_units
                        .get(&work.asset.code)
                        .copied()
                        .unwrap_or(0);
                    let balance = i128::try_from(balance).unwrap_or(i128::MAX);
                    token_room.insert(work.asset.code.clone(), balance - keep);
                }
                let left = token_room.get_mut(&work.asset.code).map_or(0, |r| {
                    *r -= work.amount;
                    *r
                });
                if left < 0 {
                    tracing::warn!(wallet = %wallet.address, asset = %work.asset, "token balance cannot cover the next chunk");
                    break;
                }
                let Some(work) = queue.next() else { break };
                let tx = TransferTx {
                    chain_id: self.chain_id,
                    nonce: nonce + signed.len() as u64,
                    token: token.contract,
                    to: Address::parse_checksummed(&work.destination, None)?,
                    value: U256::from(u128::try_from(work.amount)?),
                    gas_limit: self.settings.gas_limit,
                    fees,
                };
                let s = sign_transfer(wallet.signer(), &tx)?;
                // Policy looks at what was signed: the token, recipient and amount decoded
                // from the raw transaction, not the request they came from.
                let parts = signed_transfer_parts(&s.raw);
                let allowed = allowlists.get(&work.account).is_none_or(|list| {
                    parts.is_some_and(|(_, to, _)| {
                        list.contains(&(self.name.clone(), to.to_checksum(None)))
                    })
                });
                if parts != Some((tx.token, tx.to, tx.value)) || !allowed {
                    tracing::error!(payout = %work.payout, chunk = %work.chunk, "the signed transfer fails policy; not sending it");
                    continue;
                }
                let attempt = attempt_of(&s, AttemptKind::Transfer);
                if work.index == 0 {
                    firsts.insert(attempt.id, work.accepted_at);
                }
                signed.push((work.chunk, attempt));
                works.push(work);
                *free -= 1;
            }
            if signed.is_empty() {
                continue;
            }
            let address = wallet.address.to_checksum(None);
            match self
                .store
                .record_signed(
                    &self.name,
                    &address,
                    self.fence.unwrap_or_default(),
                    nonce,
                    &signed,
                )
                .await
            {
                Ok(()) => {
                    self.nonces
                        .insert(wallet.address, nonce + signed.len() as u64);
                    for (work, (chunk, attempt)) in works.iter().zip(&signed) {
                        self.tracked.insert(
                            *chunk,
                            InFlight {
                                chunk: *chunk,
                                payout: work.payout,
                                hold: work.hold,
                                asset: work.asset.clone(),
                                destination: work.destination.clone(),
                                amount: work.amount,
                                state: ChunkState::Signed,
                                wallet: address.clone(),
                                nonce: attempt.nonce,
                                mined: None,
                                cancel_requested: false,
                                attempts: vec![attempt.clone()],
                            },
                        );
                    }
                }
                Err(StoreError::Conflict(reason)) => {
                    // Someone else moved the nonce or took the chunk: nothing was stored, so
                    // these signatures are discarded unsent.
                    tracing::warn!(wallet = %address, %reason, "signing round discarded");
                    self.nonces.remove(&wallet.address);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.pause_point("engine.after_sign").await;
            let sent = self.broadcast(&signed, head).await?;
            let now = now_micros();
            for id in sent {
                if let Some(accepted) = firsts.get(&id) {
                    let seconds = (now - accepted).max(0) as f64 / 1e6;
                    self.metrics
                        .first_broadcast_seconds
                        .with_label_values(&[self.name.as_str()])
                        .observe(seconds);
                }
            }
            self.pause_point("engine.after_broadcast").await;
        }
        Ok(())
    }

    /// What the rollout guardrail still lets out today, per asset with a daily target.
    async fn rollout_allowance(&self) -> anyhow::Result<HashMap<String, i128>> {
        let phase = self
            .store
            .rollout_phase(&self.name)
            .await?
            .map_or(self.settings.rollout_phase, |s| s.phase);
        self.metrics
            .rollout_percent
            .with_label_values(&[self.name.as_str()])
            .set(i64::try_from(phase.percent()).unwrap_or(100));
        if self.settings.daily_targets.is_empty() {
            return Ok(HashMap::new());
        }
        let since = day_start(now_micros(), self.settings.timezone);
        let used: HashMap<String, i128> = self
            .store
            .signed_volume_since(&self.name, since)
            .await?
            .into_iter()
            .collect();
        let mut left = HashMap::new();
        for (code, target) in &self.settings.daily_targets {
            let remaining =
                (phase.allowance(*target) - used.get(code).copied().unwrap_or(0)).max(0);
            if let Some(t) = self.tokens.get(code) {
                self.metrics
                    .rollout_remaining_units
                    .with_label_values(&[self.name.as_str(), code.as_str()])
                    .set(remaining as f64 / 10f64.powi(i32::from(t.spec.decimals)));
            }
            left.insert(code.clone(), remaining);
        }
        Ok(left)
    }

    async fn note_guardrail_wait(&mut self, payout: PayoutId, asset: &str) -> anyhow::Result<()> {
        if self.guardrail_noted.insert(payout) {
            self.store
                .add_payout_event(
                    payout,
                    "rollout_wait",
                    &format!(
                        "waits: today's rollout share of {asset} on {} is used up",
                        self.name
                    ),
                )
                .await?;
        }
        Ok(())
    }

    async fn next_nonce(&mut self, wallet: &Wallet) -> anyhow::Result<u64> {
        if let Some(n) = self.nonces.get(&wallet.address) {
            return Ok(*n);
        }
        let stored = self
            .store
            .next_nonce(&self.name, &wallet.address.to_checksum(None))
            .await?;
        let chain = self.client.nonce(wallet.address, false).await?;
        let next = match stored {
            Some(s) if s >= chain => s,
            Some(s) => {
                tracing::warn!(wallet = %wallet.address, stored = s, chain, "the chain is ahead of our nonces: the key was used elsewhere");
                chain
            }
            None => chain,
        };
        self.nonces.insert(wallet.address, next);
        Ok(next)
    }

    /// Sends stored attempts in order. Transient failures and "already known" leave them for
    /// the next tick; a spent nonce means one of our attempts was mined, which tracking finds.
    async fn broadcast(
        &mut self,
        attempts: &[(ChunkId, Attempt)],
        head: u64,
    ) -> anyhow::Result<Vec<uuid::Uuid>> {
        use futures::StreamExt;
        let mut sent = Vec::new();
        let mut sent_chunks = Vec::new();
        // Sent in parallel but answered in nonce order; a node pools a nonce that arrives
        // before its predecessor until the gap is filled.
        let results: Vec<_> = futures::stream::iter(attempts.to_vec())
            .map(|(chunk, a)| {
                let client = self.client.clone();
                async move {
                    let result = client.broadcast(&a.raw).await;
                    (chunk, a, result)
                }
            })
            .buffered(RPC_CONCURRENCY)
            .collect()
            .await;
        for (chunk, a, result) in results {
            if result.is_ok()
                || result
                    .as_ref()
                    .is_err_and(|e| e.class == RpcErrorClass::AlreadyKnown)
            {
                sent.push(a.id);
                sent_chunks.push((chunk, a.id));
            }
            match result {
                Ok(_) => {}
                Err(e) if e.class == RpcErrorClass::AlreadyKnown => {}
                Err(e) => {
                    self.metrics
                        .rpc_errors_total
                        .with_label_values(&[self.name.as_str(), e.class.as_str()])
                        .inc();
                    tracing::warn!(nonce = a.nonce, class = e.class.as_str(), error = %e.message, "broadcast failed; will retry");
                }
            }
        }
        if !sent.is_empty() {
            let at = now_micros();
            self.store.mark_broadcast(&sent, head, at).await?;
            for (chunk, id) in sent_chunks {
                let Some(f) = self.tracked.get_mut(&chunk) else {
                    continue;
                };
                if f.state == ChunkState::Signed {
                    f.state = ChunkState::Broadcast;
                }
                if let Some(a) = f
                    .attempts
                    .iter_mut()
                    .find(|a| a.id == id && a.broadcast_at.is_none())
                {
                    a.broadcast_at = Some(at);
                    a.head_at_broadcast = Some(head);
                }
            }
        }
        Ok(sent)
    }
}

fn attempt_of(s: &SignedTransfer, kind: AttemptKind) -> Attempt {
    Attempt {
        id: uuid::Uuid::now_v7(),
        kind,
        hash: s.hash.0,
        raw: s.raw.to_vec(),
        nonce: s.nonce,
        max_fee_per_gas: s.fees.max_fee_per_gas,
        max_priority_fee_per_gas: s.fees.max_priority_fee_per_gas,
        gas_limit: s.gas_limit,
        created_at: now_micros(),
        broadcast_at: None,
        head_at_broadcast: None,
    }
}
