//! Tracking the chunks in flight: receipts and block hashes read in parallel, replacement of
//! stuck transactions and Operator cancels, and settlement at the confirmation depth (PAYOUT
//! and FEE in one ledger batch per tick).

use super::*;

impl NetworkEngine {
    /// Reads the receipts of every attempt whose nonce is spent, then the hashes of the blocks
    /// that hold mined chunks, each as JSON-RPC batches when the network allows them (else 16
    /// calls at a time).
    pub(super) async fn prefetch(&mut self, attention: &[(ChunkId, bool)]) -> anyhow::Result<()> {
        let mut hashes: Vec<alloy::primitives::B256> = attention
            .iter()
            .filter(|(_, spent)| *spent)
            .filter_map(|(chunk, _)| self.tracked.get(chunk))
            .filter(|f| f.mined.is_none())
            .flat_map(|f| f.attempts.iter().map(|a| a.hash.into()))
            .collect();
        // A batch's chunks share its hash: one receipt each.
        hashes.sort_unstable();
        hashes.dedup();
        if !hashes.is_empty() {
            let receipts = self.client.inclusions(&hashes).await?;
            for (hash, receipt) in hashes.iter().zip(receipts) {
                self.receipts.insert(hash.0, receipt);
            }
        }
        let mut blocks: Vec<u64> = attention
            .iter()
            .filter_map(|(chunk, _)| self.tracked.get(chunk)?.mined.map(|m| m.block))
            .chain(self.receipts.values().flatten().map(|i| i.block_number))
            .collect();
        blocks.sort_unstable();
        blocks.dedup();
        if !blocks.is_empty() {
            let read = self.client.block_hashes(&blocks).await?;
            for (block, hash) in blocks.iter().zip(read) {
                self.block_hashes.insert(*block, hash);
            }
        }
        Ok(())
    }

    /// Whether a second healthy endpoint has the same block at `m.block` and a head at the
    /// confirmation depth: a money-deciding read is not taken from one node alone. Read once
    /// per tick and block.
    pub(super) async fn witnessed(&mut self, m: &Mined) -> anyhow::Result<bool> {
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

    pub(super) async fn track(
        &mut self,
        head: u64,
        f: &InFlight,
        nonce_spent: bool,
    ) -> anyhow::Result<()> {
        match (f.state, f.mined) {
            (ChunkState::Mined, Some(m)) => self.settle(head, f, m).await,
            _ => self.follow(head, f, nonce_spent).await,
        }
    }

    /// A chunk not yet mined: look for a receipt of any attempt, re-send what was never sent,
    /// and replace what is stuck.
    pub(super) async fn follow(
        &mut self,
        head: u64,
        f: &InFlight,
        nonce_spent: bool,
    ) -> anyhow::Result<()> {
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
                let success = did_as_signed(&i, &f.wallet, a);
                if i.success && !success {
                    tracing::error!(network = %self.core.name, chunk = %f.chunk, tx = %format!("0x{}", hex::encode(a.hash)), "a transfer succeeded without its Transfer event: no tokens moved; the chunk fails at depth");
                }
                let fee = u128::from(i.gas_used).saturating_mul(i.effective_gas_price);
                let mined = Mined {
                    hash: a.hash,
                    block: i.block_number,
                    block_hash: i.block_hash.0,
                    success,
                    // A batch's gas is shared out among its chunks, adding up to the whole.
                    fee_wei: a.batch.map_or(fee, |slot| slot.share_of(fee)),
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
        let stuck = self.is_stuck(head, self.core.clock.now(), &f.wallet, latest);
        if latest.broadcast_at.is_none() {
            if self.being_broadcast(latest.id) {
                return Ok(());
            }
            // Stored but never sent (a crash or a node error in between): send the same bytes.
            self.broadcast(&[(f.chunk, latest.clone())], head).await?;
        } else if stuck {
            self.replace(head, f, latest, latest.kind).await?;
        }
        Ok(())
    }

    /// Re-signs the chunk's nonce as `kind` with fees raised by at least the bump: a speed-up
    /// of a stuck transaction, or the cancel of a transfer.
    pub(super) async fn replace(
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
        let market = self.market_fees().await?;
        let fees = old.bumped(self.settings.bump_bps, market, self.settings.max_fee);
        if fees.max_fee_per_gas <= old.max_fee_per_gas {
            // At the fee cap: keep the transaction alive as it is; never drop it.
            tracing::warn!(chunk = %f.chunk, nonce = f.nonce, "stuck at the fee cap; re-broadcasting as is");
            self.core
                .metrics
                .fee_cap_rebroadcasts_total
                .with_label_values(&[self.core.name.as_str()])
                .inc();
            self.broadcast(&[(f.chunk, latest.clone())], head).await?;
            return Ok(());
        }
        let signed = match (kind, latest.batch) {
            (AttemptKind::Transfer, None) => {
                sign_transfer(wallet.signer(), &self.transfer(f, f.nonce, fees)?)?
            }
            (AttemptKind::Transfer, Some(_)) => {
                sign_disperse(wallet.signer(), &self.batch_again(latest, fees)?)?
            }
            (AttemptKind::Cancel, _) => sign_cancel(wallet.signer(), self.chain_id, f.nonce, fees)?,
        };
        // A batch is replaced for all its chunks at once, each keeping its place (a cancel's
        // gas is shared out like the batch's).
        let mates = match latest.batch {
            None => vec![(f.chunk, None)],
            Some(_) => self
                .batch_mates(f, latest)
                .into_iter()
                .map(|(chunk, slot)| (chunk, Some(slot)))
                .collect(),
        };
        let now = self.core.clock.now();
        let attempts: Vec<(ChunkId, Attempt, String)> = mates
            .into_iter()
            .map(|(chunk, slot)| {
                let mut attempt = attempt_of(&signed, kind, now);
                attempt.batch = slot;
                let detail = format!(
                    "chunk {chunk}: nonce {} {} with max fee {} wei, tip {} wei, tx 0x{}",
                    attempt.nonce,
                    match kind {
                        AttemptKind::Transfer => "re-signed",
                        AttemptKind::Cancel => "cancelled by a self-transfer",
                    },
                    attempt.max_fee_per_gas,
                    attempt.max_priority_fee_per_gas,
                    hex::encode(attempt.hash)
                );
                (chunk, attempt, detail)
            })
            .collect();
        self.core
            .payouts
            .record_replacements(
                &attempts,
                match kind {
                    AttemptKind::Transfer => "replaced",
                    AttemptKind::Cancel => "cancel_signed",
                },
            )
            .await?;
        self.core.pause_point("engine.after_replacement").await;
        for (chunk, attempt, _) in &attempts {
            if let Some(t) = self.tracked.get_mut(chunk) {
                t.attempts.push(attempt.clone());
            }
        }
        let counter = if kind == AttemptKind::Cancel && latest.kind == AttemptKind::Transfer {
            &self.core.metrics.cancels_total
        } else {
            &self.core.metrics.speedups_total
        };
        counter.with_label_values(&[self.core.name.as_str()]).inc();
        let sending: Vec<(ChunkId, Attempt)> =
            attempts.into_iter().map(|(c, a, _)| (c, a)).collect();
        self.broadcast(&sending, head).await?;
        Ok(())
    }

    /// A mined chunk: once at depth (and still on the canonical chain) queue its payment for
    /// this tick's ledger batch, or fail it if it reverted.
    pub(super) async fn settle(&mut self, head: u64, f: &InFlight, m: Mined) -> anyhow::Result<()> {
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
            self.core
                .metrics
                .reorgs_total
                .with_label_values(&[self.core.name.as_str()])
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
            tracing::info!(network = %self.core.name, chunk = %f.chunk, block = m.block, "waiting for a second endpoint to confirm the inclusion");
            return Ok(());
        }
        self.core.pause_point("engine.before_confirm").await;
        let mined_attempt = f.attempts.iter().find(|a| a.hash == m.hash);
        let kind = mined_attempt.map_or(AttemptKind::Transfer, |a| a.kind);
        let batched = mined_attempt.is_some_and(|a| a.batch.is_some());
        let tx = format!("0x{}", hex::encode(m.hash));
        let mut commands = Vec::new();
        let outcome = match (kind, m.success) {
            (AttemptKind::Transfer, true) => {
                // The tokens left this wallet: its custody account takes the payout.
                let destination = *self
                    .accounts
                    .custody
                    .get(&(f.wallet.clone(), f.asset.code.clone()))
                    .ok_or_else(|| {
                        anyhow::anyhow!("wallet {} has no {} custody account", f.wallet, f.asset)
                    })?;
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
            // A batch pays all or none: one that paid nothing says nothing about this chunk's
            // own transfer, which goes out alone next.
            (AttemptKind::Transfer, false) if batched => Outcome::Requeue(format!(
                "chunk {}: the batch {tx} reverted at confirmation depth; it goes out alone",
                f.chunk
            )),
            (AttemptKind::Cancel, _) if batched && !f.cancel_requested => {
                Outcome::Requeue(format!(
                    "chunk {}: the cancel {tx} of another payout's chunk took its batch; it goes out alone",
                    f.chunk
                ))
            }
            (AttemptKind::Transfer, false) => Outcome::Unpaid(
                f.chunk,
                ChunkState::Failed,
                format!("the transfer {tx} reverted or moved no tokens, at confirmation depth"),
            ),
            (AttemptKind::Cancel, _) => Outcome::Unpaid(
                f.chunk,
                ChunkState::Cancelled,
                format!("the cancel {tx} was mined instead of the transfer"),
            ),
        };
        if let Some(fee) = self.gas_fee(f, &m, batched, &tx)? {
            commands.push(fee);
        }
        self.settling.push(Settlement {
            chunk: f.chunk,
            nonce: f.nonce,
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
    pub(super) fn gas_fee(
        &self,
        f: &InFlight,
        m: &Mined,
        batched: bool,
        tx: &str,
    ) -> anyhow::Result<Option<Command>> {
        let Ok(fee) = i128::try_from(m.fee_wei) else {
            anyhow::bail!("gas fee of {tx} out of range");
        };
        if fee == 0 {
            return Ok(None);
        }
        let account = *self
            .accounts
            .gas
            .get(&f.wallet)
            .ok_or_else(|| anyhow::anyhow!("wallet {} has no gas account", f.wallet))?;
        let op = self
            .core
            .ledger
            .network_fee(account, &self.native, Amount::new(fee)?)?;
        let mut cmd = Command::new(
            crate::domain::payouts::gas_key(f.chunk, &m.hash, batched),
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
    pub(super) async fn settle_batch(&mut self) -> anyhow::Result<()> {
        if self.settling.is_empty() {
            return Ok(());
        }
        let settling = std::mem::take(&mut self.settling);
        let commands: Vec<Command> = settling
            .iter()
            .flat_map(|s| s.commands.iter().cloned())
            .collect();
        let mut results = self.core.ledger.post(commands).await?.into_iter();
        // Several chunks of one payout can settle in the same batch: look at each payout once.
        let mut touched: Vec<PayoutId> = Vec::new();
        let mut paid_now: Vec<PayoutId> = Vec::new();
        let mut requeued: Vec<(ChunkId, u64, String)> = Vec::new();
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
                self.core
                    .payouts
                    .close_chunk(*chunk, *state, detail)
                    .await?;
            }
            if let (true, Outcome::Requeue(detail)) = (ok, &s.outcome) {
                requeued.push((s.chunk, s.nonce, detail.clone()));
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
        if !requeued.is_empty() {
            self.core.payouts.requeue_alone(&requeued).await?;
            self.core
                .metrics
                .requeued_alone_total
                .with_label_values(&[self.core.name.as_str()])
                .inc_by(requeued.len() as u64);
        }
        self.core.close_payouts(&touched, &paid_now).await
    }
}

/// Whether an included attempt did what it was signed for: a cancel by its status, a transfer
/// only if its Transfer event is there as signed (token, wallet, recipient, amount). The
/// status alone would book a payout whose tokens never moved.
fn did_as_signed(i: &crate::chains::evm::Inclusion, wallet: &str, attempt: &Attempt) -> bool {
    match attempt.kind {
        AttemptKind::Cancel => i.success,
        AttemptKind::Transfer => {
            let from = Address::parse_checksummed(wallet, None).ok();
            let payment = match attempt.batch {
                None => signed_transfer_parts(&attempt.raw),
                // The chunk's own payment in the batch, decoded from the signed bytes.
                Some(slot) => signed_disperse_parts(&attempt.raw).and_then(|parts| {
                    let (to, value) = parts.payments.get(slot.index as usize)?;
                    Some((parts.token, *to, *value))
                }),
            };
            match (from, payment) {
                (Some(from), Some((token, to, value))) => i.moved(token, from, to, value),
                _ => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::evm::{Fees, Inclusion, TransferTx, sign_transfer};
    use alloy::signers::local::PrivateKeySigner;

    /// anvil's public development key #1.
    const DEV_KEY: &str = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";

    fn signed(kind: AttemptKind) -> (String, Attempt, Address, Address) {
        let signer: PrivateKeySigner = DEV_KEY.parse().unwrap();
        let (token, to) = (Address::repeat_byte(0x11), Address::repeat_byte(0x22));
        let s = sign_transfer(
            &signer,
            &TransferTx {
                chain_id: 31337,
                nonce: 0,
                token,
                to,
                value: U256::from(5_000_000u64),
                gas_limit: 100_000,
                fees: Fees {
                    max_fee_per_gas: 2,
                    max_priority_fee_per_gas: 1,
                },
            },
        )
        .unwrap();
        let attempt = Attempt {
            id: uuid::Uuid::new_v4(),
            kind,
            hash: [7; 32],
            raw: s.raw.to_vec(),
            nonce: 0,
            max_fee_per_gas: 2,
            max_priority_fee_per_gas: 1,
            gas_limit: 100_000,
            created_at: 0,
            broadcast_at: Some(0),
            head_at_broadcast: Some(0),
            batch: None,
        };
        (signer.address().to_checksum(None), attempt, token, to)
    }

    fn included(success: bool, transfers: Vec<(Address, Address, Address, U256)>) -> Inclusion {
        Inclusion {
            block_number: 9,
            block_hash: Default::default(),
            success,
            gas_used: 50_000,
            effective_gas_price: 1,
            transfers,
        }
    }

    #[test]
    fn a_transfer_succeeds_only_with_its_transfer_event_as_signed() {
        let (wallet, attempt, token, to) = signed(AttemptKind::Transfer);
        let from: Address = wallet.parse().unwrap();
        let five = U256::from(5_000_000u64);
        let as_signed = (token, from, to, five);
        assert!(did_as_signed(
            &included(true, vec![as_signed]),
            &wallet,
            &attempt
        ));
        // Success without any event: a token that returns false, or no contract at all.
        assert!(!did_as_signed(&included(true, vec![]), &wallet, &attempt));
        // An event that is not the one signed: another amount, recipient or token.
        for other in [
            (token, from, to, U256::from(4_999_999u64)),
            (token, from, Address::repeat_byte(0x33), five),
            (Address::repeat_byte(0x44), from, to, five),
        ] {
            assert!(!did_as_signed(
                &included(true, vec![other]),
                &wallet,
                &attempt
            ));
        }
        // Reverted, whatever it logged.
        assert!(!did_as_signed(
            &included(false, vec![as_signed]),
            &wallet,
            &attempt
        ));
    }

    #[test]
    fn a_cancel_is_judged_by_its_status() {
        let (wallet, attempt, _, _) = signed(AttemptKind::Cancel);
        assert!(did_as_signed(&included(true, vec![]), &wallet, &attempt));
        assert!(!did_as_signed(&included(false, vec![]), &wallet, &attempt));
    }

    #[test]
    fn a_batched_chunk_succeeds_only_with_its_own_payment_as_signed() {
        let signer: PrivateKeySigner = DEV_KEY.parse().unwrap();
        let from = signer.address();
        let token = Address::repeat_byte(0x11);
        let (a, b) = (Address::repeat_byte(0x21), Address::repeat_byte(0x22));
        let s = crate::chains::evm::sign_disperse(
            &signer,
            &crate::chains::evm::DisperseTx {
                chain_id: 31337,
                nonce: 4,
                contract: Address::repeat_byte(0x99),
                token,
                payments: vec![(a, U256::from(10u64)), (b, U256::from(20u64))],
                gas_limit: 200_000,
                fees: Fees {
                    max_fee_per_gas: 2,
                    max_priority_fee_per_gas: 1,
                },
            },
        )
        .unwrap();
        let attempt = |index| Attempt {
            id: uuid::Uuid::new_v4(),
            kind: AttemptKind::Transfer,
            hash: s.hash.0,
            raw: s.raw.to_vec(),
            nonce: 4,
            max_fee_per_gas: 2,
            max_priority_fee_per_gas: 1,
            gas_limit: 200_000,
            created_at: 0,
            broadcast_at: Some(0),
            head_at_broadcast: Some(0),
            batch: Some(crate::payouts::BatchSlot { index, size: 2 }),
        };
        let wallet = from.to_checksum(None);
        let first = (token, from, a, U256::from(10u64));
        let second = (token, from, b, U256::from(20u64));
        let both = included(true, vec![first, second]);
        assert!(did_as_signed(&both, &wallet, &attempt(0)));
        assert!(did_as_signed(&both, &wallet, &attempt(1)));
        // Only the other chunk's payment in the receipt: this one was not paid.
        assert!(!did_as_signed(
            &included(true, vec![second]),
            &wallet,
            &attempt(0)
        ));
        assert!(!did_as_signed(
            &included(true, vec![first]),
            &wallet,
            &attempt(1)
        ));
        // A place past the batch's payments matches nothing.
        assert!(!did_as_signed(&both, &wallet, &attempt(2)));
        assert!(!did_as_signed(
            &included(false, vec![first, second]),
            &wallet,
            &attempt(0)
        ));
    }
}
