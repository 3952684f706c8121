//! Sending: policy before signing (safe-mode, freezes, the rollout guardrail, the allowlist on
//! the signed recipient), nonces, signing rounds stored before broadcast, and broadcasts.

use super::*;

impl NetworkEngine {
    /// Gives queued chunks to wallets with room, signs and stores them, then broadcasts.
    /// Nothing new goes out while the network is in safe-mode.
    pub(super) async fn send(&mut self, head: u64) -> anyhow::Result<()> {
        if self.core.in_safe_mode().await? {
            return Ok(());
        }
        // A paused wallet signs nothing new (its transactions in flight still finish): the
        // queue goes to the network's other wallets.
        let mut room: Vec<(Arc<Wallet>, usize)> = self
            .wallets
            .iter()
            .filter(|w| !self.core.wallet_paused(&w.id))
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
        let queued = self
            .core
            .payouts
            .queued_chunks(&self.core.name, total as i64)
            .await?;
        if queued.is_empty() {
            return Ok(());
        }
        let mut allowance = self.core.rollout_allowance().await?;
        let mut accounts: Vec<AccountId> = queued.iter().map(|w| w.account).collect();
        accounts.sort_unstable();
        accounts.dedup();
        let allowlists = self.core.allowlists.enforced_allowlists(&accounts).await?;
        let fees = self.market_fees().await?;
        let (hot, canary) = self.core.route(queued);
        let (mut hot, mut canary) = (hot.into_iter().peekable(), canary.into_iter().peekable());
        for (wallet, free) in room.iter_mut() {
            // Canary payouts go only from canary wallets, everything else only from hot ones.
            let queue = if wallet.role == WalletRole::Canary {
                &mut canary
            } else {
                &mut hot
            };
            if queue.peek().is_none() {
                continue;
            }
            let native = self.client.native_balance(wallet.address).await?;
            let labels = [self.core.name.clone(), wallet.address.to_checksum(None)];
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
            // First what this wallet can pay now (rollout share, token balance), in order.
            let mut picked: Vec<ChunkWork> = Vec::new();
            let mut token_room: HashMap<String, i128> = HashMap::new();
            while *free > picked.len() {
                let Some(work) = queue.peek() else { break };
                let Some(contract) = self.core.tokens.get(&work.asset.code).map(|t| t.contract)
                else {
                    queue.next();
                    continue;
                };
                let (payout, code, amount) = (work.payout, work.asset.code.clone(), work.amount);
                if !self
                    .core
                    .within_allowance(&mut allowance, payout, &code, amount)
                    .await?
                {
                    // Over today's rollout share: this chunk and every later one of the asset
                    // wait for tomorrow (or a wider phase), in order.
                    queue.next();
                    continue;
                }
                if !token_room.contains_key(&work.asset.code) {
                    let balance = self.client.token_balance(contract, wallet.address).await?;
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
                picked.push(work);
            }
            *free -= picked.len();
            // Then which of them go in batches (approving the contract first where needed),
            // then the transactions, each at the next nonce once it passes policy.
            let mut batchable: HashMap<String, bool> = HashMap::new();
            for work in &picked {
                let code = &work.asset.code;
                if work.single_only || batchable.contains_key(code) {
                    continue;
                }
                let covered = self
                    .settings
                    .batching
                    .as_ref()
                    .is_some_and(|b| b.covers(code));
                let ok = match self.core.tokens.get(code).map(|t| t.contract) {
                    Some(token) if covered => self.approved_for_batches(wallet, token).await?,
                    _ => false,
                };
                batchable.insert(code.clone(), ok);
            }
            let nonce = self.next_nonce(wallet).await?;
            let mut transactions: Vec<Vec<ChunkWork>> = Vec::new();
            let mut open: HashMap<String, usize> = HashMap::new();
            let most = self
                .settings
                .batching
                .as_ref()
                .map_or(1, |b| b.max_transfers);
            for work in picked {
                let batched =
                    !work.single_only && batchable.get(&work.asset.code).copied().unwrap_or(false);
                if !batched {
                    transactions.push(vec![work]);
                    continue;
                }
                match open.get(&work.asset.code) {
                    Some(&i) if transactions[i].len() < most => transactions[i].push(work),
                    _ => {
                        open.insert(work.asset.code.clone(), transactions.len());
                        transactions.push(vec![work]);
                    }
                }
            }
            let mut signed = Vec::new();
            let mut works = Vec::new();
            let mut firsts: HashMap<uuid::Uuid, crate::domain::UnixMicros> = HashMap::new();
            let mut next = nonce;
            for group in transactions {
                let attempts = if group.len() > 1 {
                    match self.sign_batch(wallet, &group, next, fees, &allowlists)? {
                        Some(attempts) => attempts,
                        None => continue,
                    }
                } else {
                    let Some(work) = group.first() else { continue };
                    match self.sign_single(wallet, work, next, fees, &allowlists)? {
                        Some(attempt) => vec![(work.chunk, attempt)],
                        None => continue,
                    }
                };
                next += 1;
                for (work, (chunk, attempt)) in group.into_iter().zip(attempts) {
                    if work.index == 0 {
                        firsts.insert(attempt.id, work.accepted_at);
                    }
                    signed.push((chunk, attempt));
                    works.push(work);
                }
            }
            if signed.is_empty() {
                continue;
            }
            let address = wallet.address.to_checksum(None);
            match self
                .core
                .payouts
                .record_signed(
                    &self.core.name,
                    &address,
                    self.core.fence.unwrap_or_default(),
                    nonce,
                    &signed,
                )
                .await
            {
                Ok(()) => {
                    self.nonces.insert(wallet.address, next);
                    // An idle wallet's queue starts with this round: until the chain is seen
                    // to move it, the queue is stalled once the round has waited the stuck
                    // time.
                    let at = self.core.clock.now();
                    self.queue_marks
                        .entry(address.clone())
                        .or_insert(QueueMark { nonce, head, at });
                    let batched = signed.iter().filter(|(_, a)| a.batch.is_some()).count();
                    self.core
                        .metrics
                        .batched_chunks_total
                        .with_label_values(&[self.core.name.as_str()])
                        .inc_by(batched as u64);
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
                Err(StoreError::Conflict(
                    kind @ (ConflictKind::NonceMoved | ConflictKind::StateChanged),
                    reason,
                )) => {
                    // Someone else moved the nonce or took the chunk: nothing was stored, so
                    // these signatures are discarded unsent. A lost lease or a halt ends the
                    // tick instead (`TickError`).
                    tracing::warn!(wallet = %address, ?kind, %reason, "signing round discarded");
                    self.nonces.remove(&wallet.address);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            self.core.pause_point("engine.after_sign").await;
            // The node takes this round while the engine goes on to the next tick.
            self.broadcast_in_background(signed, head, firsts);
            self.pause_after_broadcast().await;
        }
        Ok(())
    }

    /// Signs `work` as one ERC-20 transfer at `nonce`; None when the signed bytes fail policy.
    fn sign_single(
        &self,
        wallet: &Wallet,
        work: &ChunkWork,
        nonce: u64,
        fees: Fees,
        allowlists: &crate::domain::payouts::EnforcedAllowlists,
    ) -> anyhow::Result<Option<Attempt>> {
        let Some(contract) = self.core.tokens.get(&work.asset.code).map(|t| t.contract) else {
            return Ok(None);
        };
        let tx = TransferTx {
            chain_id: self.chain_id,
            nonce,
            token: contract,
            to: Address::parse_checksummed(&work.destination, None)?,
            value: U256::from(u128::try_from(work.amount)?),
            gas_limit: self.settings.gas_limit,
            fees,
        };
        let s = sign_transfer(wallet.signer(), &tx)?;
        // Policy looks at what was signed: the token, recipient and amount decoded from the
        // raw transaction, not the request they came from.
        let parts = signed_transfer_parts(&s.raw);
        let allowed = allowlists.get(&work.account).is_none_or(|list| {
            parts.is_some_and(|(_, to, _)| {
                list.contains(&(self.core.name.clone(), to.to_checksum(None)))
            })
        });
        if parts != Some((tx.token, tx.to, tx.value)) || !allowed {
            tracing::error!(payout = %work.payout, chunk = %work.chunk, "the signed transfer fails policy; not sending it");
            return Ok(None);
        }
        Ok(Some(attempt_of(
            &s,
            AttemptKind::Transfer,
            self.core.clock.now(),
        )))
    }

    pub(super) async fn next_nonce(&mut self, wallet: &Wallet) -> anyhow::Result<u64> {
        if let Some(n) = self.nonces.get(&wallet.address) {
            return Ok(*n);
        }
        let stored = self
            .core
            .payouts
            .next_nonce(&self.core.name, &wallet.address.to_checksum(None))
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
}
