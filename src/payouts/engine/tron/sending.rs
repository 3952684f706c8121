//! Sending on Tron: policy, the fee limit from a live energy estimate, signing rounds stored
//! before broadcast, rebuilds of a chunk's transaction once the last can never land, and the
//! reaction to every broadcast answer.

use super::*;
use crate::domain::UnixMicros;

impl TronEngine {
    /// The transfer of `f` (or of a queued chunk) as a signed transaction on `head`, stamped
    /// with the wall clock as wallets do (made unique within this process).
    fn build(
        &mut self,
        wallet: &Wallet,
        contract: &TronAddress,
        to: &TronAddress,
        amount: i128,
        fee_limit: i64,
        head: &BlockRef,
    ) -> anyhow::Result<tx::SignedTx> {
        // The chain's wall clock, not the daemon's `Clock`: a clock moved by a test or skipped
        // ahead by the demo would stamp transactions the network sees as from the future.
        self.last_timestamp = chrono::Utc::now()
            .timestamp_millis()
            .max(self.last_timestamp + 1);
        let envelope = Envelope {
            ref_block: RefBlock::from_block_id(&head.id),
            timestamp: self.last_timestamp,
            expiration: head.timestamp + self.settings.expiration_ms,
            fee_limit,
        };
        let raw = tx::trigger_raw(
            &tron_address(&wallet.address),
            contract,
            tx::transfer_call_data(to, U256::from(u128::try_from(amount)?)),
            &envelope,
        );
        Ok(tx::sign(&raw, wallet.signer())?)
    }

    /// Whether what was signed is what policy allows: the token, recipient and amount read
    /// back from the bytes, and the recipient on the account's enforced allowlist.
    fn signed_as_intended(
        &self,
        signed: &tx::SignedTx,
        owner: &TronAddress,
        contract: &TronAddress,
        to: &TronAddress,
        amount: i128,
        allowlist: Option<&HashSet<(String, String)>>,
    ) -> bool {
        let Some(p) = transfer_parts(&signed.bytes) else {
            return false;
        };
        let intended = p.owner == *owner
            && p.contract == *contract
            && p.to == *to
            && u128::try_from(amount).is_ok_and(|a| p.amount == U256::from(a));
        intended
            && allowlist
                .is_none_or(|list| list.contains(&(self.core.name.clone(), p.to.to_base58())))
    }

    fn attempt(
        signed: &tx::SignedTx,
        sequence: u64,
        fee_limit: i64,
        energy: i64,
        at: UnixMicros,
    ) -> Attempt {
        Attempt {
            id: uuid::Uuid::now_v7(),
            kind: AttemptKind::Transfer,
            hash: signed.txid,
            raw: signed.bytes.clone(),
            nonce: sequence,
            // The fee limit in sun; a Tron transaction has no priority fee and no gas limit
            // but its energy estimate.
            max_fee_per_gas: u128::try_from(fee_limit).unwrap_or(0),
            max_priority_fee_per_gas: 0,
            gas_limit: u64::try_from(energy).unwrap_or(0),
            created_at: at,
            broadcast_at: None,
            head_at_broadcast: None,
            batch: None,
        }
    }

    /// A new transaction for `f` on a fresh reference block, once the previous one can never
    /// land: stored before it is sent.
    pub(super) async fn rebuild(
        &mut self,
        head: &BlockRef,
        f: &InFlight,
        fee_limit: i64,
        reason: &str,
    ) -> anyhow::Result<()> {
        let Some(wallet) = self.wallets.iter().find(|w| w.id == f.wallet).cloned() else {
            anyhow::bail!(
                "chunk {} was sent from {}, which is no longer configured",
                f.chunk,
                f.wallet
            );
        };
        let Some(contract) = self
            .core
            .tokens
            .get(&f.asset.code)
            .map(|t| tron_address(&t.contract))
        else {
            anyhow::bail!("no token {} on {}", f.asset.code, self.core.name);
        };
        let to = TronAddress::from_base58(&f.destination)?;
        let signed = self.build(&wallet, &contract, &to, f.amount, fee_limit, head)?;
        let accounts = self
            .core
            .payouts
            .payouts_by_id(&[f.payout])
            .await?
            .pop()
            .map(|p| p.account);
        let allowlists = match accounts {
            Some(a) => self.core.allowlists.enforced_allowlists(&[a]).await?,
            None => HashMap::new(),
        };
        let list = accounts.and_then(|a| allowlists.get(&a));
        if !self.signed_as_intended(
            &signed,
            &tron_address(&wallet.address),
            &contract,
            &to,
            f.amount,
            list,
        ) {
            tracing::error!(chunk = %f.chunk, "the rebuilt transfer fails policy; not sending it");
            return Ok(());
        }
        let energy = f
            .attempts
            .last()
            .map_or(0, |a| i64::try_from(a.gas_limit).unwrap_or(0));
        let attempt = Self::attempt(&signed, f.nonce, fee_limit, energy, self.core.clock.now());
        let detail = format!(
            "chunk {}: rebuilt ({reason}) on block {} with fee limit {fee_limit} sun, expiring at {} ms, tx {}",
            f.chunk,
            head.number,
            head.timestamp + self.settings.expiration_ms,
            hex::encode(attempt.hash)
        );
        self.core
            .payouts
            .record_replacements(&[(f.chunk, attempt.clone(), detail)], "rebuilt")
            .await?;
        self.core
            .metrics
            .rebuilds_total
            .with_label_values(&[self.core.name.as_str(), reason])
            .inc();
        if let Some(t) = self.tracked.get_mut(&f.chunk) {
            t.attempts.push(attempt.clone());
        }
        self.core.pause_point("engine.after_replacement").await;
        self.broadcast(&[(f.chunk, attempt)], head).await
    }

    /// Sends stored transactions and reacts to each answer: accepted or already known are
    /// tracked; a passing condition leaves them for the next tick (same bytes); TAPOS and
    /// expiration errors wait for the expiry and a rebuild; a wallet short of bandwidth stops
    /// signing this tick; a transaction refused as built is not sent again.
    pub(super) async fn broadcast(
        &mut self,
        attempts: &[(ChunkId, Attempt)],
        head: &BlockRef,
    ) -> anyhow::Result<()> {
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(attempts.to_vec())
            .map(|(chunk, a)| {
                let client = self.client.clone();
                async move {
                    let answer = client.broadcast_bytes(&a.raw).await;
                    (chunk, a, answer)
                }
            })
            .buffer_unordered(RPC_CONCURRENCY)
            .collect()
            .await;
        let network = self.core.name.clone();
        let mut sent = Vec::new();
        for (chunk, a, answer) in results {
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    self.core
                        .metrics
                        .rpc_errors_total
                        .with_label_values(&[network.as_str(), "unreachable"])
                        .inc();
                    tracing::warn!(%chunk, error = %e, "broadcast failed; will retry the same bytes");
                    continue;
                }
            };
            let code = answer.code.clone().unwrap_or_default();
            let reaction = rules::reaction(answer.code.as_deref());
            if !matches!(reaction, Reaction::Track | Reaction::AlreadyKnown) {
                self.core
                    .metrics
                    .broadcast_refusals_total
                    .with_label_values(&[network.as_str(), code.as_str()])
                    .inc();
            }
            let payout = self.tracked.get(&chunk).map(|f| f.payout);
            let note = |what: &str| {
                format!(
                    "chunk {chunk}: tx {} {what}: {code} {}",
                    hex::encode(a.hash),
                    answer.message
                )
            };
            match reaction {
                Reaction::Track | Reaction::AlreadyKnown => sent.push((chunk, a.id)),
                Reaction::RetryLater => {
                    tracing::info!(%chunk, %code, "the node is busy; the same bytes go again next tick");
                }
                Reaction::RebuildAfterExpiry => {
                    sent.push((chunk, a.id));
                    if let Some(p) = payout {
                        let detail =
                            note("cannot be accepted as built; rebuilt once it has expired");
                        self.core
                            .payouts
                            .add_payout_event(p, "broadcast_refused", &detail)
                            .await?;
                    }
                }
                Reaction::WalletShortOfResources => {
                    if let Some(f) = self.tracked.get(&chunk) {
                        self.short.insert(f.wallet.clone());
                    }
                    tracing::warn!(%chunk, %code, "the wallet is short of bandwidth/TRX; waiting for a top-up");
                }
                Reaction::Refused => {
                    self.refused.insert(a.id);
                    sent.push((chunk, a.id));
                    tracing::error!(%chunk, %code, message = %answer.message, "the node refused the transaction as built");
                    if let Some(p) = payout {
                        let detail = note("refused; the chunk fails once it has expired");
                        self.core
                            .payouts
                            .add_payout_event(p, "broadcast_refused", &detail)
                            .await?;
                    }
                }
            }
        }
        if sent.is_empty() {
            return Ok(());
        }
        let at = self.core.clock.now();
        let ids: Vec<uuid::Uuid> = sent.iter().map(|(_, id)| *id).collect();
        self.core
            .payouts
            .mark_broadcast(&ids, head.number, at)
            .await?;
        for (chunk, id) in sent {
            if let Some(f) = self.tracked.get_mut(&chunk) {
                f.note_broadcast(id, at, head.number);
            }
        }
        Ok(())
    }

    /// A wallet's resources as gauges; whether it is below its buffers (then it is not used).
    fn observe_wallet(&self, wallet: &Wallet, r: &Resources, prices: &Prices) -> bool {
        let labels = [self.core.name.as_str(), wallet.id.as_str()];
        let wm = &self.wallet_metrics;
        wm.trx_balance
            .with_label_values(&labels)
            .set(r.balance_sun as f64 / 1e6);
        wm.energy_available
            .with_label_values(&labels)
            .set(r.energy_available as f64);
        wm.bandwidth_available
            .with_label_values(&labels)
            .set(r.bandwidth_available as f64);
        let b = &wallet.tron_buffers;
        let spare = Resources {
            balance_sun: (r.balance_sun - b.trx_sun).max(0),
            energy_available: (r.energy_available - b.energy).max(0),
            bandwidth_available: (r.bandwidth_available - b.bandwidth).max(0),
        };
        let cost = rules::PayoutCost {
            energy: self.settings.transfer_energy,
            bandwidth: self.settings.transfer_bandwidth,
            energy_price: prices.energy_sun,
            bandwidth_price: prices.bandwidth_sun,
        };
        let runway = rules::runway(&spare, &cost);
        wm.runway_payouts
            .with_label_values(&labels)
            .set(if runway == i64::MAX {
                f64::INFINITY
            } else {
                runway as f64
            });
        let below = rules::below_buffers(r, b);
        wm.below_gas_buffer
            .with_label_values(&labels)
            .set(i64::from(below));
        below
    }

    async fn next_sequence(&mut self, wallet: &str) -> anyhow::Result<u64> {
        if let Some(n) = self.sequences.get(wallet) {
            return Ok(*n);
        }
        let next = self
            .core
            .payouts
            .next_nonce(&self.core.name, wallet)
            .await?
            .unwrap_or(0);
        self.sequences.insert(wallet.to_owned(), next);
        Ok(next)
    }

    /// Gives queued chunks to wallets with room and resources: applies policy, sizes each fee
    /// limit from a live energy estimate, signs on the head block, stores the round, and only
    /// then broadcasts. Nothing new goes out in safe-mode.
    pub(super) async fn send(&mut self, head: &BlockRef) -> anyhow::Result<()> {
        if self.core.in_safe_mode().await? {
            return Ok(());
        }
        let room: Vec<(Arc<Wallet>, usize)> = self
            .wallets
            .iter()
            .filter(|w| !self.short.contains(&w.id) && !self.core.wallet_paused(&w.id))
            .map(|w| {
                let busy = self.tracked.values().filter(|f| f.wallet == w.id).count();
                (w.clone(), self.settings.max_in_flight.saturating_sub(busy))
            })
            .filter(|(_, r)| *r > 0)
            .collect();
        let total: usize = room.iter().map(|(_, r)| r).sum();
        if total == 0 {
            return Ok(());
        }
        let queued = self
            .core
            .payouts
            .queued_chunks(&self.core.name, total as i64)
            .await?;
        if queued.is_empty() {
            // Idle: the wallet gauges are refreshed every few seconds, not every tick.
            if self
                .observed_at
                .is_none_or(|at| at.elapsed() >= IDLE_OBSERVE_EVERY)
            {
                self.observed_at = Some(Instant::now());
                let prices = self.client.prices().await?;
                for w in &self.wallets {
                    let owner = tron_address(&w.address);
                    let r = self.client.resources(&owner).await?;
                    self.observe_wallet(w, &r, &prices);
                    for (code, t) in &self.core.tokens {
                        let units = self
                            .client
                            .token_balance(&tron_address(&t.contract), &owner)
                            .await?;
                        self.wallet_metrics
                            .token_balance
                            .with_label_values(&[
                                self.core.name.as_str(),
                                w.id.as_str(),
                                code.as_str(),
                            ])
                            .set(
                                t.spec
                                    .units_as_f64(i128::try_from(units).unwrap_or(i128::MAX)),
                            );
                    }
                }
            }
            return Ok(());
        }
        let prices = self.client.prices().await?;
        self.observed_at = Some(Instant::now());
        let mut allowance = self.core.rollout_allowance().await?;
        let mut accounts: Vec<AccountId> = queued.iter().map(|w| w.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let allowlists = self.core.allowlists.enforced_allowlists(&accounts).await?;
        let (hot, canary) = self.core.route(queued);
        let (mut hot, mut canary) = (hot.into_iter().peekable(), canary.into_iter().peekable());
        for (wallet, mut free) in room {
            // Canary payouts go only from canary wallets, everything else only from hot ones.
            let queue = if wallet.role == WalletRole::Canary {
                &mut canary
            } else {
                &mut hot
            };
            if queue.peek().is_none() {
                continue;
            }
            let owner = tron_address(&wallet.address);
            let mut r = self.client.resources(&owner).await?;
            if self.observe_wallet(&wallet, &r, &prices) {
                tracing::warn!(wallet = %wallet.id, "below its TRX/energy/bandwidth buffers: not sending");
                continue;
            }
            let first = self.next_sequence(&wallet.id).await?;
            let mut signed: Vec<(ChunkId, Attempt)> = Vec::new();
            let mut works: Vec<ChunkWork> = Vec::new();
            let mut token_room: HashMap<String, i128> = HashMap::new();
            while free > 0 {
                let Some(work) = queue.peek().cloned() else {
                    break;
                };
                let Some((contract, spec)) = self
                    .core
                    .tokens
                    .get(&work.asset.code)
                    .map(|t| (tron_address(&t.contract), t.spec.clone()))
                else {
                    queue.next();
                    continue;
                };
                let code = work.asset.code.clone();
                if !self
                    .core
                    .within_allowance(&mut allowance, work.payout, &code, work.amount)
                    .await?
                {
                    queue.next();
                    continue;
                }
                if !token_room.contains_key(&code) {
                    let balance = self.client.token_balance(&contract, &owner).await?;
                    let balance = i128::try_from(balance).unwrap_or(i128::MAX);
                    self.wallet_metrics
                        .token_balance
                        .with_label_values(&[
                            self.core.name.as_str(),
                            wallet.id.as_str(),
                            code.as_str(),
                        ])
                        .set(spec.units_as_f64(balance));
                    let keep = wallet.min_token_units.get(&code).copied().unwrap_or(0);
                    token_room.insert(code.clone(), balance - keep);
                }
                if token_room.get(&code).is_none_or(|left| *left < work.amount) {
                    tracing::warn!(wallet = %wallet.id, asset = %work.asset, "token balance cannot cover the next chunk");
                    break;
                }
                let to = TronAddress::from_base58(&work.destination)?;
                let data = tx::transfer_call_data(&to, U256::from(u128::try_from(work.amount)?));
                let energy = self
                    .client
                    .estimate_energy(&owner, &contract, &data)
                    .await?;
                let Some(fee_limit) = rules::fee_limit(
                    energy,
                    prices.energy_sun,
                    self.settings.fee_limit_factor_bps,
                    self.settings.fee_limit_cap,
                ) else {
                    tracing::warn!(wallet = %wallet.id, energy, cap = self.settings.fee_limit_cap, "the energy estimate costs more than the fee limit cap: stake energy or raise tron.fee_limit_cap_sun");
                    break;
                };
                // What it will burn beyond the stake, and what the wallet keeps.
                let burn = (energy - r.energy_available).max(0) * prices.energy_sun
                    + (self.settings.transfer_bandwidth - r.bandwidth_available).max(0)
                        * prices.bandwidth_sun;
                if r.balance_sun - burn < wallet.tron_buffers.trx_sun {
                    tracing::warn!(wallet = %wallet.id, "TRX above the buffer cannot cover the next chunk");
                    break;
                }
                let tx = self.build(&wallet, &contract, &to, work.amount, fee_limit, head)?;
                queue.next();
                if !self.signed_as_intended(
                    &tx,
                    &owner,
                    &contract,
                    &to,
                    work.amount,
                    allowlists.get(&work.account),
                ) {
                    tracing::error!(payout = %work.payout, chunk = %work.chunk, "the signed transfer fails policy; not sending it");
                    continue;
                }
                r.balance_sun -= burn;
                r.energy_available = (r.energy_available - energy).max(0);
                r.bandwidth_available =
                    (r.bandwidth_available - self.settings.transfer_bandwidth).max(0);
                if let Some(left) = token_room.get_mut(&code) {
                    *left -= work.amount;
                }
                let attempt = Self::attempt(
                    &tx,
                    first + signed.len() as u64,
                    fee_limit,
                    energy,
                    self.core.clock.now(),
                );
                signed.push((work.chunk, attempt));
                works.push(work);
                free -= 1;
            }
            if signed.is_empty() {
                continue;
            }
            match self
                .core
                .payouts
                .record_signed(
                    &self.core.name,
                    &wallet.id,
                    self.core.fence.unwrap_or_default(),
                    first,
                    &signed,
                )
                .await
            {
                Ok(()) => {
                    self.sequences
                        .insert(wallet.id.clone(), first + signed.len() as u64);
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
                                wallet: wallet.id.clone(),
                                nonce: attempt.nonce,
                                mined: None,
                                cancel_requested: false,
                                attempts: vec![attempt.clone()],
                            },
                        );
                    }
                }
                Err(StoreError::Conflict(
                    kind @ (ConflictKind::NonceMoved | ConflictKind::StateChanged),
                    reason,
                )) => {
                    // Nothing was stored: these signatures are discarded unsent. A lost lease
                    // or a halt ends the tick instead (`TickError`).
                    tracing::warn!(wallet = %wallet.id, ?kind, %reason, "signing round discarded");
                    self.sequences.remove(&wallet.id);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.core.pause_point("engine.after_sign").await;
            self.broadcast(&signed, head).await?;
            let now = self.core.clock.now();
            for (work, (chunk, _)) in works.iter().zip(&signed) {
                let sent = self
                    .tracked
                    .get(chunk)
                    .is_some_and(|f| f.attempts.iter().any(|a| a.broadcast_at.is_some()));
                if work.index == 0 && sent {
                    self.core
                        .metrics
                        .first_broadcast_seconds
                        .with_label_values(&[self.core.name.as_str()])
                        .observe((now - work.accepted_at).max(0) as f64 / 1e6);
                }
            }
            self.core.pause_point("engine.after_broadcast").await;
        }
        Ok(())
    }
}
