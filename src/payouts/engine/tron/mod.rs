//! The sending loop of one Tron network, behind the same queue, policies, ledger, metrics and
//! safe-mode as the EVM loop (`EngineCore`). Tron has no nonces: a transaction names a recent
//! reference block (TAPOS) and an expiration, and a node refuses it after that. So:
//!
//! - each chunk has at most one live transaction. A new one (a *rebuild*) is signed only once
//!   the previous one can never land: it executed and ran out of energy (final: then again with
//!   a raised fee limit, within the cap), or the solidified head's time has passed its
//!   expiration and the solidity node does not know it;
//! - a transaction is signed and stored (with the wallet's local sequence number in the nonce
//!   column, which keeps signing rounds ordered and fenced) before it is broadcast, and a
//!   failed broadcast sends the same bytes again, never new ones;
//! - the chain is read once per solidified block (`gettransactioninfobyblocknum`): our
//!   transactions found there are final, so each is paid (PAYOUT from the hold, the TRX it
//!   burned as FEE) or failed in the ledger in one batch; the same pass credits deposits,
//!   records hot-wallet inflows and spots transfers out of a hot wallet that we never signed.
//!   The block cursor moves only after the postings, so a crash re-reads and replays. A tick
//!   costs one call per new solidified block, however many chunks are in flight.
//!
//! Every broadcast answer has its reaction (`chains::tron::rules::reaction`).

mod sending;

use super::core::{ChainEngine, EngineCore, Forget, TickError, WalletAccounts, run_ticks};
use super::{EngineInstance, PayoutToken, RPC_CONCURRENCY};
use crate::chains::tron::TronAddress;
use crate::chains::tron::client::{BlockRef, Prices, Resources, TronClient, TxInfo};
use crate::chains::tron::deposits::{Inflow, token_transfers};
use crate::chains::tron::rules::{self, Execution, Reaction};
use crate::chains::tron::tx::{self, Envelope, RefBlock, transfer_parts};
use crate::config::NetworkConfig;
use crate::domain::{AccountId, Amount, AssetKey, ChunkId, PayoutId};
use crate::ledger::{AccountKind, Command, Effect, Ledger, Operation, ReleaseKind};
use crate::metrics::{PayoutMetrics, RpcMetrics, WalletMetrics};
use crate::payouts::{Attempt, AttemptKind, ChunkState, ChunkWork, InFlight, Mined};
use crate::store::{ConflictKind, StoreError};
use crate::wallets::{Wallet, WalletRole};
use alloy::primitives::U256;
use secrecy::SecretString;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Solidified blocks read per tick at most: a daemon that was down catches up in steps.
const BLOCKS_PER_TICK: u64 = 100;
/// How often an idle engine refreshes its wallets' resource gauges.
const IDLE_OBSERVE_EVERY: Duration = Duration::from_secs(5);

struct Settings {
    poll: Duration,
    max_in_flight: usize,
    stuck_after_micros: i64,
    rpc_outage_safe_mode: Duration,
    deposits_from_block: Option<u64>,
    fee_limit_factor_bps: i64,
    fee_limit_cap: i64,
    expiration_ms: i64,
    transfer_energy: i64,
    transfer_bandwidth: i64,
}

/// How a chunk's executed transaction ends in the ledger.
enum Outcome {
    /// Paid: the PAYOUT command confirms the chunk.
    Paid,
    /// Did not pay; the chunk is closed in this state once the postings are in.
    Unpaid(ChunkState, String),
    /// Ran out of energy: its fee is posted, then it is rebuilt with this fee limit.
    Again(i64),
    /// An earlier transaction of the chunk, already dealt with: only its fee is posted.
    FeeOnly,
}

/// A chunk whose latest transaction is settled this tick: what to post and what follows.
struct Settlement {
    chunk: ChunkId,
    payout: PayoutId,
    commands: Vec<Command>,
    outcome: Outcome,
}

pub struct TronEngine {
    core: EngineCore,
    client: TronClient,
    wallets: Vec<Arc<Wallet>>,
    settings: Settings,
    wallet_metrics: WalletMetrics,
    rpc_metrics: RpcMetrics,
    /// Chunks between signing and their final state (this loop is their only writer).
    tracked: HashMap<ChunkId, InFlight>,
    loaded: bool,
    /// Next local sequence number per wallet (the nonce column of its signing rounds).
    sequences: HashMap<String, u64>,
    /// Attempts a node refused as built (SIGERROR, CONTRACT_VALIDATE_ERROR, …): not sent again;
    /// the chunk fails once they have expired for good.
    refused: HashSet<uuid::Uuid>,
    /// Wallets a node found short of bandwidth this tick: they sign nothing new.
    short: HashSet<String>,
    native: AssetKey,
    /// Each hot wallet's gas (TRX) and custody accounts, by base58 address.
    accounts: WalletAccounts,
    /// (wallet, asset) → the block its opening balance was read at: inflows up to it are in it.
    openings: HashMap<(String, String), u64>,
    opened: bool,
    /// Token contract → asset code.
    contracts: HashMap<TronAddress, String>,
    /// Since when no endpoint has answered.
    outage_since: Option<Instant>,
    failovers_seen: u64,
    settling: Vec<Settlement>,
    /// The last `timestamp` given to a transaction (ms): strictly increasing, so that two
    /// transfers alike in all else (two chunks to one address, on one head block) are two
    /// transactions, not one txID twice.
    last_timestamp: i64,
    /// When the wallets' resource gauges were last refreshed.
    observed_at: Option<Instant>,
}

fn tron_address(a: &alloy::primitives::Address) -> TronAddress {
    TronAddress::from_evm(a.into_array())
}

impl TronEngine {
    /// The engine of Tron `network` (its hot and canary wallets), or None when it has no
    /// wallet to send from.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        network: &NetworkConfig,
        tokens: HashMap<String, PayoutToken>,
        wallets: &[Arc<Wallet>],
        ledger: Ledger,
        metrics: PayoutMetrics,
        wallet_metrics: WalletMetrics,
        instance: EngineInstance,
        api_key: Option<SecretString>,
    ) -> anyhow::Result<Option<Self>> {
        let wallets: Vec<Arc<Wallet>> = wallets
            .iter()
            .filter(|w| w.network == network.name)
            .cloned()
            .collect();
        if wallets.is_empty() {
            return Ok(None);
        }
        let urls: Vec<String> = network
            .rpc_urls
            .iter()
            .map(|u| secrecy::ExposeSecret::expose_secret(u).to_owned())
            .collect();
        let client = TronClient::new(&urls, api_key, Duration::from_secs(10))?;
        let contracts = tokens
            .iter()
            .map(|(code, t)| (tron_address(&t.contract), code.clone()))
            .collect();
        let t = &network.tron;
        let settings = Settings {
            poll: Duration::from_millis(network.poll_interval_ms),
            max_in_flight: network.max_in_flight as usize,
            stuck_after_micros: i64::try_from(network.stuck_after_seconds)
                .unwrap_or(i64::MAX / 1_000_000)
                * 1_000_000,
            rpc_outage_safe_mode: Duration::from_secs(network.rpc_outage_safe_mode_seconds),
            deposits_from_block: network.deposits_from_block,
            fee_limit_factor_bps: i64::from(t.fee_limit_factor_bps),
            fee_limit_cap: i64::try_from(t.fee_limit_cap_sun).unwrap_or(i64::MAX),
            expiration_ms: i64::try_from(t.expiration_seconds * 1000).unwrap_or(i64::MAX),
            transfer_energy: i64::try_from(t.transfer_energy).unwrap_or(i64::MAX),
            transfer_bandwidth: i64::try_from(t.transfer_bandwidth_bytes).unwrap_or(i64::MAX),
        };
        let rpc_metrics = instance.rpc_metrics.clone();
        let core = EngineCore::new(network, tokens, ledger, metrics, &instance)?;
        Ok(Some(Self {
            native: AssetKey::new(network.name.clone(), network.native().code),
            core,
            client,
            wallets,
            settings,
            wallet_metrics,
            rpc_metrics,
            tracked: HashMap::new(),
            loaded: false,
            sequences: HashMap::new(),
            refused: HashSet::new(),
            short: HashSet::new(),
            accounts: WalletAccounts::default(),
            openings: HashMap::new(),
            opened: false,
            contracts,
            outage_since: None,
            failovers_seen: 0,
            settling: Vec::new(),
            last_timestamp: 0,
            observed_at: None,
        }))
    }

    /// Ticks until cancelled; a failed tick is logged and the next one starts over from the
    /// database (every step is safe to repeat).
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        self.accounts = self
            .core
            .wallet_accounts(
                &self.native,
                self.wallets.iter().map(|w| w.id.clone()).collect(),
            )
            .await?;
        self.core
            .prepare(&self.wallets, &self.wallet_metrics)
            .await?;
        let poll = self.settings.poll;
        run_ticks(&mut self, poll, &cancel).await;
        Ok(())
    }

    async fn tick(&mut self) -> anyhow::Result<()> {
        let head = match self.client.now_block().await {
            Ok(head) => {
                self.outage_since = None;
                head
            }
            Err(e) => {
                let since = *self.outage_since.get_or_insert_with(Instant::now);
                self.observe_endpoints();
                if since.elapsed() >= self.settings.rpc_outage_safe_mode {
                    let reason = format!(
                        "automatic: no Tron endpoint answered for {} s",
                        since.elapsed().as_secs()
                    );
                    let evidence = serde_json::json!({
                        "outage_seconds": since.elapsed().as_secs(),
                        "last_error": e.to_string(),
                    });
                    self.core
                        .enter_safe_mode("rpc_outage", reason, evidence)
                        .await?;
                }
                return Err(e.into());
            }
        };
        let solid = self.client.solid_block().await?;
        self.observe_endpoints();
        if !self.loaded {
            self.tracked = self
                .core
                .payouts
                .in_flight(&self.core.name)
                .await?
                .into_iter()
                .map(|f| (f.chunk, f))
                .collect();
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
        self.short.clear();
        self.settling.clear();
        if !self.opened {
            self.open_wallets().await?;
        }
        let cursor = match self.core.custody.deposit_cursor(&self.core.name).await? {
            Some(next) => next,
            None => {
                let start = self
                    .settings
                    .deposits_from_block
                    .unwrap_or(solid.number + 1);
                self.core
                    .custody
                    .set_deposit_cursor(&self.core.name, start)
                    .await?;
                start
            }
        };
        let last = solid.number.min(cursor + BLOCKS_PER_TICK - 1);
        let mut inflows = Vec::new();
        // Fetched in parallel (a daemon catching up reads many), handled in block order.
        let blocks: Vec<(u64, Result<Vec<TxInfo>, _>)> = {
            use futures::StreamExt;
            futures::stream::iter(cursor..=last)
                .map(|b| {
                    let client = self.client.clone();
                    async move { (b, client.block_transactions(b).await) }
                })
                .buffered(RPC_CONCURRENCY)
                .collect()
                .await
        };
        let read = blocks.len() as u64;
        for (block, infos) in blocks {
            self.read_block(block, &infos?, &mut inflows).await?;
        }
        self.core
            .metrics
            .deposit_blocks_read_total
            .with_label_values(&[self.core.name.as_str()])
            .inc_by(read);
        self.follow(&head, &solid).await?;
        self.settle_batch(&head).await?;
        if cursor <= last {
            self.credit(&inflows).await?;
            self.core
                .custody
                .set_deposit_cursor(&self.core.name, last + 1)
                .await?;
        }
        self.observe_stuck();
        self.core.count_payouts().await?;
        self.send(&head).await
    }

    /// The engine's view of its endpoints as RPC metrics.
    fn observe_endpoints(&mut self) {
        let health = self.client.health();
        let network = self.core.name.as_str();
        for (i, up) in health.up.iter().enumerate() {
            let endpoint = i.to_string();
            let labels = [network, endpoint.as_str()];
            self.rpc_metrics
                .up
                .with_label_values(&labels)
                .set(i64::from(*up));
            self.rpc_metrics
                .selected
                .with_label_values(&labels)
                .set(i64::from(i == health.current));
        }
        if health.failovers > self.failovers_seen {
            self.rpc_metrics
                .failovers_total
                .with_label_values(&[network])
                .inc_by(health.failovers - self.failovers_seen);
            self.failovers_seen = health.failovers;
        }
    }

    /// Posts each hot wallet's opening balance per token and in TRX, once per (wallet, asset)
    /// for the life of the database, read at one head block (read again if a block came in
    /// between). Inflows in blocks up to it are part of the opening and are not posted again.
    async fn open_wallets(&mut self) -> anyhow::Result<()> {
        self.openings = self.core.custody.wallet_openings(&self.core.name).await?;
        let mut assets: Vec<(String, Option<TronAddress>)> = self
            .contracts
            .iter()
            .map(|(contract, code)| (code.clone(), Some(*contract)))
            .collect();
        assets.push((self.native.code.clone(), None));
        let missing: Vec<(Arc<Wallet>, String, Option<TronAddress>)> = self
            .wallets
            .iter()
            .flat_map(|w| assets.iter().map(move |(c, t)| (w.clone(), c.clone(), *t)))
            .filter(|(w, code, _)| !self.openings.contains_key(&(w.id.clone(), code.clone())))
            .collect();
        if missing.is_empty() {
            self.opened = true;
            return Ok(());
        }
        let (block, balances) = 'read: {
            for _ in 0..10 {
                let before = self.client.now_block().await?;
                let mut balances = Vec::new();
                for (w, _, token) in &missing {
                    let owner = tron_address(&w.address);
                    let units = match token {
                        Some(t) => self.client.token_balance(t, &owner).await?,
                        None => U256::from(self.client.resources(&owner).await?.balance_sun.max(0)),
                    };
                    balances.push(units);
                }
                if self.client.now_block().await?.number == before.number {
                    break 'read (before.number, balances);
                }
            }
            anyhow::bail!("the head kept moving while the opening balances were read");
        };
        for ((w, code, token), units) in missing.iter().zip(balances) {
            let asset = AssetKey::new(self.core.name.clone(), code.clone());
            let units = i128::try_from(units)
                .map_err(|_| anyhow::anyhow!("{}: balance out of range", w.id))?;
            if let Ok(amount) = Amount::new(units) {
                let op = match token {
                    Some(_) => {
                        let custody = self.custody(&w.id, code)?;
                        self.core.ledger.wallet_inflow(custody, &asset, amount)?
                    }
                    None => Operation::Deposit {
                        account: self.gas_account(&w.id)?,
                        source: self
                            .core
                            .ledger
                            .system_account(&asset, AccountKind::External)
                            .ok_or_else(|| anyhow::anyhow!("no external {asset}"))?,
                        amount,
                    },
                };
                let mut cmd = Command::new(
                    format!("wallet-opening:{}:{}:{code}", self.core.name, w.id),
                    asset,
                    op,
                );
                cmd.memo = Some(format!(
                    "opening balance of hot wallet {} at block {block}",
                    w.id
                ));
                if let Some(Err(e)) = self.core.ledger.post(vec![cmd]).await?.pop() {
                    anyhow::bail!("the ledger refused the opening of {}: {e}", w.id);
                }
            }
            self.core
                .custody
                .record_wallet_opening(&self.core.name, &w.id, code, block)
                .await?;
            self.openings.insert((w.id.clone(), code.clone()), block);
        }
        self.opened = true;
        Ok(())
    }

    fn custody(&self, wallet: &str, code: &str) -> anyhow::Result<AccountId> {
        self.accounts
            .custody
            .get(&(wallet.to_owned(), code.to_owned()))
            .copied()
            .ok_or_else(|| anyhow::anyhow!("wallet {wallet} has no {code} custody account"))
    }

    fn gas_account(&self, wallet: &str) -> anyhow::Result<AccountId> {
        self.accounts
            .gas
            .get(wallet)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("wallet {wallet} has no gas account"))
    }

    fn wallet_by_address(&self, address: &TronAddress) -> Option<&Arc<Wallet>> {
        self.wallets
            .iter()
            .find(|w| tron_address(&w.address) == *address)
    }

    /// One solidified block: the outcome of each of our transactions in it, the token
    /// transfers to deposit addresses and hot wallets (gathered into `inflows`), and any
    /// transfer out of a hot wallet that is not ours (safe-mode).
    async fn read_block(
        &mut self,
        block: u64,
        infos: &[TxInfo],
        inflows: &mut Vec<Inflow>,
    ) -> anyhow::Result<()> {
        let ours: HashMap<[u8; 32], ChunkId> = self
            .tracked
            .values()
            .flat_map(|f| f.attempts.iter().map(move |a| (a.hash, f.chunk)))
            .collect();
        let tokens: HashSet<TronAddress> = self.contracts.keys().copied().collect();
        let mut foreign = Vec::new();
        for info in infos {
            if let Some(chunk) = ours.get(&info.txid) {
                self.executed(*chunk, info).await?;
            }
            for t in token_transfers(info, block, &tokens) {
                if self.wallet_by_address(&t.from).is_some() && !ours.contains_key(&t.txid) {
                    foreign.push(t.clone());
                }
                inflows.push(t);
            }
        }
        if foreign.is_empty() {
            return Ok(());
        }
        let hashes: Vec<[u8; 32]> = foreign.iter().map(|t| t.txid).collect();
        let known = self.core.custody.known_attempts(&hashes).await?;
        for t in foreign.iter().filter(|t| !known.contains(&t.txid)) {
            let wallet = t.from.to_base58();
            self.wallet_metrics
                .unexpected_outflows_total
                .with_label_values(&[self.core.name.as_str(), wallet.as_str()])
                .inc();
            let reason = format!(
                "automatic: hot wallet {wallet} sent {} base units of {} in tx {} (block {}), which treasuryd never signed",
                t.amount,
                t.token.to_base58(),
                hex::encode(t.txid),
                t.block
            );
            let evidence = serde_json::json!({
                "wallet": wallet,
                "token": t.token.to_base58(),
                "amount": t.amount.to_string(),
                "tx": hex::encode(t.txid),
                "block": t.block,
                "known_attempt": false,
            });
            self.core
                .enter_safe_mode("unexpected_outflow", reason, evidence)
                .await?;
        }
        Ok(())
    }

    /// A final execution result of one of `chunk`'s transactions: queue what the ledger must
    /// record for it.
    async fn executed(&mut self, chunk: ChunkId, info: &TxInfo) -> anyhow::Result<()> {
        let Some(f) = self.tracked.get(&chunk).cloned() else {
            return Ok(());
        };
        let Some(attempt) = f.attempts.iter().find(|a| a.hash == info.txid).cloned() else {
            return Ok(());
        };
        let latest = f.attempts.last().is_some_and(|a| a.id == attempt.id);
        let tx = hex::encode(info.txid);
        let mut commands = Vec::new();
        if let Some(fee) = self.fee_command(&f, info)? {
            commands.push(fee);
        }
        let execution = rules::execution(&info.result);
        if !latest && execution != Execution::Success {
            // An earlier transaction of the chunk, already dealt with: only its fee matters.
            self.settling.push(Settlement {
                chunk,
                payout: f.payout,
                commands,
                outcome: Outcome::FeeOnly,
            });
            return Ok(());
        }
        if !latest {
            tracing::error!(%chunk, %tx, "an earlier transaction of the chunk paid; this must not happen: the chunk is paid by it");
        }
        let mined = |success| Mined {
            hash: info.txid,
            block: info.block_number,
            block_hash: [0u8; 32],
            success,
            fee_wei: u128::try_from(info.fee.max(0)).unwrap_or(0),
        };
        let outcome = match execution {
            Execution::Success => {
                self.core
                    .payouts
                    .record_mined(&[(chunk, Some(mined(true)))])
                    .await?;
                let release = Operation::Release {
                    hold: f.hold,
                    amount: Amount::new(f.amount)?,
                    kind: ReleaseKind::Payout,
                    destination: self.custody(&f.wallet, &f.asset.code)?,
                };
                let mut cmd = Command::new(
                    format!("payout-chunk:{chunk}:paid"),
                    f.asset.clone(),
                    release,
                );
                cmd.reference = Some(tx.clone());
                cmd.memo = Some(format!("payout {} chunk {chunk}", f.payout));
                cmd.effects.push(Effect::ChunkConfirmed {
                    chunk,
                    payout: f.payout,
                });
                // The PAYOUT first: the batch reads its result as the chunk's.
                commands.insert(0, cmd);
                Outcome::Paid
            }
            Execution::OutOfEnergy => {
                let limit = transfer_parts(&attempt.raw).map_or(0, |p| p.fee_limit);
                match rules::raised_fee_limit(limit, self.settings.fee_limit_cap) {
                    Some(raised) => Outcome::Again(raised),
                    None => {
                        self.core
                            .payouts
                            .record_mined(&[(chunk, Some(mined(false)))])
                            .await?;
                        Outcome::Unpaid(
                            ChunkState::Failed,
                            format!(
                                "the transfer {tx} ran out of energy at the fee limit cap of {} sun",
                                self.settings.fee_limit_cap
                            ),
                        )
                    }
                }
            }
            Execution::Revert | Execution::Failed => {
                self.core
                    .payouts
                    .record_mined(&[(chunk, Some(mined(false)))])
                    .await?;
                Outcome::Unpaid(
                    ChunkState::Failed,
                    format!("the transfer {tx} failed on chain: {}", info.result),
                )
            }
        };
        self.settling.push(Settlement {
            chunk,
            payout: f.payout,
            commands,
            outcome,
        });
        Ok(())
    }

    /// The FEE posting of the TRX a transaction burned (energy and bandwidth beyond the
    /// stake), from the sending wallet's gas account; keyed by transaction, since a chunk's
    /// transactions that ran out of energy burned too. None when it burned nothing.
    fn fee_command(&self, f: &InFlight, info: &TxInfo) -> anyhow::Result<Option<Command>> {
        let Ok(amount) = Amount::new(i128::from(info.fee)) else {
            return Ok(None);
        };
        let tx = hex::encode(info.txid);
        let op =
            self.core
                .ledger
                .network_fee(self.gas_account(&f.wallet)?, &self.native, amount)?;
        let mut cmd = Command::new(format!("tron-fee:{tx}"), self.native.clone(), op);
        cmd.reference = Some(tx);
        cmd.memo = Some(format!(
            "TRX burned by payout {} chunk {} ({})",
            f.payout, f.chunk, info.result
        ));
        Ok(Some(cmd))
    }

    /// Chunks whose latest transaction is not settled this tick: sends what was never sent,
    /// and once a transaction has expired for good (the solidified head is past its
    /// expiration and the solidity node does not know it) rebuilds it, or closes the chunk when
    /// an Operator cancelled it or a node refused it as built.
    async fn follow(&mut self, head: &BlockRef, solid: &BlockRef) -> anyhow::Result<()> {
        let settled: HashSet<ChunkId> = self.settling.iter().map(|s| s.chunk).collect();
        let mut unsent = Vec::new();
        let mut expired = Vec::new();
        for f in self
            .tracked
            .values()
            .filter(|f| !settled.contains(&f.chunk))
        {
            let Some(latest) = f.attempts.last() else {
                continue;
            };
            if latest.broadcast_at.is_none() && !self.refused.contains(&latest.id) {
                unsent.push((f.chunk, latest.clone()));
                continue;
            }
            match transfer_parts(&latest.raw) {
                Some(p) if rules::expired_for_good(p.expiration, solid.timestamp) => {
                    expired.push(f.chunk);
                }
                Some(_) => {}
                None => {
                    tracing::error!(chunk = %f.chunk, "a stored Tron transaction does not decode");
                }
            }
        }
        for chunk in expired {
            let Some(f) = self.tracked.get(&chunk).cloned() else {
                continue;
            };
            let Some(latest) = f.attempts.last().cloned() else {
                continue;
            };
            if let Some(info) = self.client.transaction_info(&latest.hash, true).await? {
                // Executed in a block not read yet: the same outcome as in a block scan.
                self.executed(chunk, &info).await?;
                continue;
            }
            let tx = hex::encode(latest.hash);
            if f.cancel_requested {
                self.settling.push(Settlement {
                    chunk,
                    payout: f.payout,
                    commands: Vec::new(),
                    outcome: Outcome::Unpaid(
                        ChunkState::Cancelled,
                        format!("cancelled: its transaction {tx} expired unexecuted"),
                    ),
                });
            } else if self.refused.contains(&latest.id) {
                self.settling.push(Settlement {
                    chunk,
                    payout: f.payout,
                    commands: Vec::new(),
                    outcome: Outcome::Unpaid(
                        ChunkState::Failed,
                        format!("the node refused its transaction {tx}, which has now expired"),
                    ),
                });
            } else if !self.core.in_safe_mode().await? {
                let limit = transfer_parts(&latest.raw).map_or(0, |p| p.fee_limit);
                self.rebuild(head, &f, limit, "expired").await?;
            }
        }
        if !unsent.is_empty() {
            self.broadcast(&unsent, head).await?;
        }
        Ok(())
    }

    /// Posts this tick's settlements in one ledger batch (every command keyed by chunk or
    /// transaction: a failed batch, or a crash after it, posts the same again), then closes
    /// the chunks that did not pay, rebuilds those that ran out of energy, and ends payouts.
    async fn settle_batch(&mut self, head: &BlockRef) -> anyhow::Result<()> {
        if self.settling.is_empty() {
            return Ok(());
        }
        self.core.pause_point("engine.before_confirm").await;
        let settling = std::mem::take(&mut self.settling);
        let commands: Vec<Command> = settling
            .iter()
            .flat_map(|s| s.commands.iter().cloned())
            .collect();
        let mut results = self.core.ledger.post(commands).await?.into_iter();
        let (mut touched, mut paid_now) = (Vec::new(), Vec::new());
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
            if !ok {
                continue;
            }
            match s.outcome {
                Outcome::Paid => {
                    self.tracked.remove(&s.chunk);
                }
                Outcome::Unpaid(state, detail) => {
                    self.core
                        .payouts
                        .close_chunk(s.chunk, state, &detail)
                        .await?;
                    self.tracked.remove(&s.chunk);
                }
                Outcome::FeeOnly => continue,
                Outcome::Again(limit) => {
                    if let Some(f) = self.tracked.get(&s.chunk).cloned() {
                        self.rebuild(head, &f, limit, "out_of_energy").await?;
                    }
                    continue;
                }
            }
            if !touched.contains(&s.payout) {
                touched.push(s.payout);
            }
        }
        self.core.close_payouts(&touched, &paid_now).await
    }

    /// Credits transfers to deposit addresses and records those into hot wallets (after their
    /// opening), each keyed by network, transaction and log so a re-read block replays.
    async fn credit(&mut self, inflows: &[Inflow]) -> anyhow::Result<()> {
        if inflows.is_empty() {
            return Ok(());
        }
        let addresses = self
            .core
            .custody
            .deposit_addresses(&self.core.name, None)
            .await?;
        let mut commands = Vec::new();
        for t in inflows {
            let Some(code) = self.contracts.get(&t.token).cloned() else {
                continue;
            };
            let Ok(units) = i128::try_from(t.amount) else {
                tracing::warn!(tx = %hex::encode(t.txid), "an inflow out of range; not recorded");
                continue;
            };
            let Ok(amount) = Amount::new(units) else {
                continue;
            };
            let to = t.to.to_base58();
            let tx = hex::encode(t.txid);
            let asset = AssetKey::new(self.core.name.clone(), code.clone());
            if let Some(wallet) = self.wallet_by_address(&t.to).map(|w| w.id.clone()) {
                let opened_at = self.openings.get(&(wallet.clone(), code.clone()));
                if opened_at.is_some_and(|b| t.block > *b) {
                    let custody = self.custody(&wallet, &code)?;
                    let mut cmd = Command::new(
                        t.key("wallet-inflow", &self.core.name),
                        asset.clone(),
                        self.core.ledger.wallet_inflow(custody, &asset, amount)?,
                    );
                    cmd.reference = Some(tx.clone());
                    cmd.memo = Some(format!(
                        "{code} into hot wallet {wallet} from {} in block {}",
                        t.from.to_base58(),
                        t.block
                    ));
                    commands.push(cmd);
                }
                continue;
            }
            let Some(target) = addresses
                .iter()
                .find(|d| d.address == to && d.asset.code == code)
            else {
                continue;
            };
            let source = self
                .core
                .ledger
                .system_account(&target.asset, AccountKind::External)
                .ok_or_else(|| anyhow::anyhow!("no external {}", target.asset))?;
            let mut cmd = Command::new(
                t.key("deposit", &self.core.name),
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
                t.from.to_base58(),
                t.block
            ));
            commands.push(cmd);
        }
        if commands.is_empty() {
            return Ok(());
        }
        for (result, cmd) in self
            .core
            .ledger
            .post(commands.clone())
            .await?
            .into_iter()
            .zip(&commands)
        {
            match result {
                Ok(posted)
                    if !posted.replayed && matches!(cmd.operation, Operation::Deposit { .. }) =>
                {
                    self.core
                        .metrics
                        .deposits_total
                        .with_label_values(&[self.core.name.as_str(), cmd.asset.code.as_str()])
                        .inc();
                }
                Ok(_) => {}
                Err(e) => {
                    // The cursor stays: the block is read again next tick.
                    anyhow::bail!("the ledger refused {}: {e}", cmd.idempotency_key);
                }
            }
        }
        self.core.pause_point("deposits.before_cursor").await;
        Ok(())
    }

    /// Stuck count (not executed `stuck_after_seconds` after the first broadcast) and the age
    /// of the oldest, and the in-flight gauge per wallet.
    fn observe_stuck(&self) {
        let now = self.core.clock.now();
        let network = self.core.name.as_str();
        let mut stuck = 0i64;
        let mut oldest: Option<i64> = None;
        for f in self.tracked.values() {
            let first = f.attempts.iter().filter_map(|a| a.broadcast_at).min();
            if let Some(at) = first
                && now - at >= self.settings.stuck_after_micros
            {
                stuck += 1;
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        self.core
            .metrics
            .stuck
            .with_label_values(&[network])
            .set(stuck);
        self.core
            .metrics
            .oldest_stuck_seconds
            .with_label_values(&[network])
            .set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6));
        for w in &self.wallets {
            let count = self.tracked.values().filter(|f| f.wallet == w.id).count();
            self.core
                .metrics
                .in_flight
                .with_label_values(&[network, w.id.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

impl ChainEngine for TronEngine {
    fn core(&mut self) -> &mut EngineCore {
        &mut self.core
    }

    async fn tick(&mut self) -> Result<(), TickError> {
        Ok(TronEngine::tick(self).await?)
    }

    fn forget(&mut self, after: Forget) {
        match after {
            Forget::FreshLease => {
                self.loaded = false;
                self.sequences.clear();
            }
            Forget::Standby => {
                self.tracked.clear();
                self.loaded = false;
            }
            Forget::FailedTick => {
                self.loaded = false;
                self.sequences.clear();
                self.opened = false;
            }
        }
    }
}
