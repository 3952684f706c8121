//! The sending loop of one EVM network. Each tick it first tracks every chunk in flight
//! (receipts, confirmation depth, replacement of stuck transactions, the ledger postings that
//! finish a payout), then gives queued chunks to hot wallets with room: signs them with the
//! wallet's next nonces, stores the signed transactions with those nonces in one database
//! transaction, and only then broadcasts.
//!
//! Safety rules this loop keeps:
//! - a nonce is assigned only in the database transaction that stores its signed transaction,
//!   and never reassigned: a failed broadcast is retried with the same bytes, never re-signed;
//! - a replacement reuses the nonce with fees raised by at least the configured bump, up to the
//!   cap; at the cap the last attempt is re-broadcast as it is;
//! - the ledger pays a chunk (PAYOUT from the payout's hold) only at the confirmation depth,
//!   with an idempotency key per chunk, so a crash between steps replays instead of paying
//!   twice; the chunk's state changes in the same database transaction.
//!
//! One loop per network and one process per wallet for now; leases for several instances are
//! the next step (issue 4).

use super::networks::PayoutToken;
use super::{Attempt, ChunkState, InFlight, Mined, PayoutState};
use crate::chains::evm::{
    EvmClient, FeeMode, Fees, RpcErrorClass, SignedTransfer, TransferTx, sign_transfer,
};
use crate::config::NetworkConfig;
use crate::domain::{Amount, PayoutId};
use crate::ledger::{AccountKind, Command, Effect, Ledger, LedgerError, Operation, ReleaseKind};
use crate::metrics::{PayoutMetrics, WalletMetrics};
use crate::store::{DynStore, StoreError, now_micros};
use crate::wallets::{Wallet, WalletRole};
use alloy::primitives::{Address, U256};
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Steps where `debug.pause_at` can stop the engine for crash tests.
pub const PAUSE_POINTS: [&str; 3] = [
    "engine.after_sign",
    "engine.after_broadcast",
    "engine.before_confirm",
];

#[derive(Debug, Clone)]
struct Settings {
    confirmations: u64,
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
}

pub struct NetworkEngine {
    name: String,
    chain_id: u64,
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
    /// Block hashes read this tick: each block is checked once, however many chunks it holds.
    block_hashes: HashMap<u64, Option<alloy::primitives::B256>>,
    /// Chunks at depth whose PAYOUT this tick posts, all in one ledger batch.
    paying: Vec<(Command, PayoutId)>,
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
        pause_at: Option<String>,
    ) -> anyhow::Result<Option<Self>> {
        let wallets: Vec<Arc<Wallet>> = wallets
            .iter()
            .filter(|w| w.network == network.name && w.role == WalletRole::Hot)
            .cloned()
            .collect();
        if wallets.is_empty() {
            return Ok(None);
        }
        let url = network
            .rpc_urls
            .first()
            .ok_or_else(|| anyhow::anyhow!("network {} has no RPC URL", network.name))?;
        let client = EvmClient::new(url.expose_secret())?;
        Ok(Some(Self {
            name: network.name.clone(),
            chain_id: network.chain_id,
            client,
            store: ledger.store().clone(),
            ledger,
            wallets,
            tokens,
            settings: Settings {
                confirmations: network.confirmations,
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
                pause_at,
            },
            nonces: HashMap::new(),
            metrics,
            wallet_metrics,
            block_hashes: HashMap::new(),
            paying: Vec::new(),
        }))
    }

    /// Ticks until cancelled. Errors of one tick (a node down, a database hiccup) are logged
    /// and the next tick starts over from the database: every step is safe to repeat.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let chain_id = self.client.chain_id().await;
        if let Ok(id) = chain_id
            && id != self.chain_id
        {
            anyhow::bail!(
                "network {}: the node is on chain {id}, the config says {}",
                self.name,
                self.chain_id
            );
        }
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(network = %self.name, error = %e, "payout engine tick failed; retrying");
                // Reload nonces from the database and the chain after any trouble.
                self.nonces.clear();
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
    }

    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let head = self.client.head().await?;
        let in_flight = self.store.in_flight(&self.name).await?;
        // The chain's nonce per wallet says which of our nonces are spent: only chunks below it
        // can have a receipt, so a tick costs RPC calls for what was mined since the last one,
        // not for everything in flight.
        let mut mined_below: HashMap<String, u64> = HashMap::new();
        for w in &self.wallets {
            let address = w.address.to_checksum(None);
            let count = in_flight.iter().filter(|f| f.wallet == address).count();
            self.metrics
                .in_flight
                .with_label_values(&[self.name.as_str(), address.as_str()])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            if count > 0 {
                mined_below.insert(address, self.client.nonce(w.address, false).await?);
            }
        }
        self.block_hashes.clear();
        for f in &in_flight {
            let spent = mined_below.get(&f.wallet).is_some_and(|n| f.nonce < *n);
            self.track(head, f, spent).await?;
        }
        self.pay().await?;
        self.send(head, &in_flight).await
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
            if let Some(i) = self.client.inclusion(a.hash.into()).await? {
                let mined = Mined {
                    hash: a.hash,
                    block: i.block_number,
                    block_hash: i.block_hash.0,
                    success: i.success,
                };
                self.store.record_mined(f.chunk, Some(&mined)).await?;
                return Ok(());
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
        let now = now_micros();
        let stuck = latest
            .broadcast_at
            .is_some_and(|at| now - at >= self.settings.stuck_after_micros)
            || latest
                .head_at_broadcast
                .is_some_and(|h| head >= h + self.settings.stuck_after_blocks);
        if latest.broadcast_at.is_none() {
            // Stored but never sent (a crash or a node error in between): send the same bytes.
            self.broadcast(&[latest], head).await?;
        } else if stuck {
            self.replace(head, f, latest).await?;
        }
        Ok(())
    }

    async fn replace(&mut self, head: u64, f: &InFlight, latest: &Attempt) -> anyhow::Result<()> {
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
            self.broadcast(&[latest], head).await?;
            return Ok(());
        }
        let signed = sign_transfer(wallet.signer(), &self.transfer(f, f.nonce, fees)?)?;
        let attempt = attempt_of(&signed);
        self.store.record_replacement(f.chunk, &attempt).await?;
        self.metrics
            .speedups_total
            .with_label_values(&[self.name.as_str()])
            .inc();
        self.broadcast(&[&attempt], head).await?;
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
            self.store.record_mined(f.chunk, None).await?;
            return Ok(());
        }
        if head + 1 < m.block + self.settings.confirmations {
            return Ok(());
        }
        self.pause_point("engine.before_confirm").await;
        if m.success {
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
            cmd.reference = Some(format!("0x{}", hex::encode(m.hash)));
            cmd.memo = Some(format!("payout {} chunk {}", f.payout, f.chunk));
            cmd.effects.push(Effect::ChunkConfirmed {
                chunk: f.chunk,
                payout: f.payout,
            });
            self.paying.push((cmd, f.payout));
            Ok(())
        } else {
            self.store.fail_chunk(f.chunk).await?;
            self.finish_if_failed(f.payout).await
        }
    }

    /// Posts this tick's chunk payments as one ledger batch. Each is keyed by its chunk, so a
    /// batch that fails, or a crash after it, is simply posted again next tick.
    async fn pay(&mut self) -> anyhow::Result<()> {
        if self.paying.is_empty() {
            return Ok(());
        }
        let (commands, payouts): (Vec<Command>, Vec<PayoutId>) =
            std::mem::take(&mut self.paying).into_iter().unzip();
        let results = self.ledger.post(commands).await?;
        // Several chunks of one payout can be paid in the same batch: look at each payout once.
        let mut paid: Vec<PayoutId> = Vec::new();
        for (result, payout) in results.into_iter().zip(payouts) {
            match result {
                Ok(posted) if !posted.replayed && !paid.contains(&payout) => paid.push(payout),
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(%payout, error = %e, "the ledger refused a chunk payment")
                }
            }
        }
        for payout in paid {
            let p = self.store.get_payout(payout).await?;
            if p.state == PayoutState::Confirmed {
                self.finished(PayoutState::Confirmed, p.created_at);
            } else {
                // A sibling chunk may have failed earlier: once this one is final too, the
                // unpaid remainder goes back.
                self.finish_if_failed(payout).await?;
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

    /// Once every chunk of a payout is final and one of them failed, the unpaid remainder of
    /// the hold goes back to the account and the payout has failed.
    async fn finish_if_failed(&self, payout: PayoutId) -> anyhow::Result<()> {
        let p = self.store.get_payout(payout).await?;
        let terminal = p.chunks.iter().all(|c| {
            matches!(
                c.state,
                ChunkState::Confirmed | ChunkState::Failed | ChunkState::Cancelled
            )
        });
        if !terminal
            || p.chunks.iter().all(|c| c.state == ChunkState::Confirmed)
            || p.state == PayoutState::Failed
        {
            return Ok(());
        }
        let mut cmd = Command::new(
            format!("payout:{payout}:void"),
            p.asset.clone(),
            Operation::Void { hold: p.hold },
        );
        cmd.memo = Some(format!("payout {payout} failed"));
        cmd.effects.push(Effect::PayoutClosed {
            payout,
            from: vec![PayoutState::Queued, PayoutState::Broadcast],
            state: PayoutState::Failed,
            detail: "a chunk reverted; the unpaid remainder went back to the account".into(),
        });
        // Its own database transaction: a conflict here must not fail anyone else's commands.
        match self.ledger.post(vec![cmd]).await?.pop() {
            Some(Ok(posted)) => {
                if !posted.replayed {
                    self.finished(PayoutState::Failed, p.created_at);
                }
                Ok(())
            }
            Some(Err(LedgerError::HoldResolved(_))) | None => Ok(()),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Gives queued chunks to wallets with room, signs and stores them, then broadcasts.
    /// Nothing new goes out while the network is in safe-mode.
    async fn send(&mut self, head: u64, in_flight: &[InFlight]) -> anyhow::Result<()> {
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
                let busy = in_flight.iter().filter(|f| f.wallet == address).count();
                (w.clone(), self.settings.max_in_flight.saturating_sub(busy))
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
            let mut firsts: HashMap<uuid::Uuid, crate::domain::UnixMicros> = HashMap::new();
            let mut token_room: HashMap<String, i128> = HashMap::new();
            while *free > 0 {
                let Some(work) = queue.peek() else { break };
                let Some(token) = self.tokens.get(&work.asset.code) else {
                    queue.next();
                    continue;
                };
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
                let attempt = attempt_of(&s);
                if work.index == 0 {
                    firsts.insert(attempt.id, work.accepted_at);
                }
                signed.push((work.chunk, attempt));
                *free -= 1;
            }
            if signed.is_empty() {
                continue;
            }
            let address = wallet.address.to_checksum(None);
            match self
                .store
                .record_signed(&self.name, &address, nonce, &signed)
                .await
            {
                Ok(()) => {
                    self.nonces
                        .insert(wallet.address, nonce + signed.len() as u64);
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
            let attempts: Vec<&Attempt> = signed.iter().map(|(_, a)| a).collect();
            let sent = self.broadcast(&attempts, head).await?;
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
    async fn broadcast(&self, attempts: &[&Attempt], head: u64) -> anyhow::Result<Vec<uuid::Uuid>> {
        let mut sent = Vec::new();
        for a in attempts {
            match self.client.broadcast(&a.raw).await {
                Ok(_) => sent.push(a.id),
                Err(e) if e.class == RpcErrorClass::AlreadyKnown => sent.push(a.id),
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
            self.store.mark_broadcast(&sent, head, now_micros()).await?;
        }
        Ok(sent)
    }
}

fn attempt_of(s: &SignedTransfer) -> Attempt {
    Attempt {
        id: uuid::Uuid::now_v7(),
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
