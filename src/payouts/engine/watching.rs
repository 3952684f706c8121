//! Watching the chain behind the confirmation depth: deposits to declared addresses, token
//! transfers out of hot wallets that we did not sign, and reorgs of transfers already paid.

use super::*;
use crate::reconcile::Verdict;

/// At most this many transfers go into a `balance_mismatch`'s evidence (the count says if more
/// were counted): enough to check by hand, small enough for an audit row and a webhook.
const EVIDENCE_TRANSFERS: usize = 200;

/// One token transfer as safe-mode evidence: where it was, what it moved, whether we signed it.
fn transfer_evidence(log: &crate::chains::evm::TransferLog, ours: bool) -> serde_json::Value {
    serde_json::json!({
        "tx": format!("0x{}", hex::encode(log.tx_hash)),
        "log_index": log.log_index,
        "block": log.block,
        "from": log.from.to_checksum(None),
        "to": log.to.to_checksum(None),
        "units": log.value.to_string(),
        "ours": ours,
    })
}

impl NetworkEngine {
    /// Reconciles the hot wallets over confirmed blocks `from..=to`. Every token transfer out
    /// of a hot wallet must be one of ours (a stored attempt): one that is not means the key is
    /// used elsewhere. And each wallet's token balance must have moved by exactly its
    /// transfers in and out: anything else (an issuer seizing or minting into it, a token that
    /// takes a fee) means the ledger's picture of the wallet no longer holds. Either puts the
    /// network in safe-mode, a balance difference once `CONFIRMING_READS` reads of the range
    /// found it. Returns the transfers into hot wallets, which the caller posts as inflows, or
    /// None while a difference waits for its next read (the cursor stays).
    pub(super) async fn reconcile_wallets(
        &mut self,
        contracts: &[Address],
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Vec<crate::chains::evm::TransferLog>>> {
        let wallets: Vec<Address> = self.wallets.iter().map(|w| w.address).collect();
        // The range's edges, read again at the end: logs and balances read across a reorg of
        // the range describe two different chains, and are no finding either way.
        let edges: Vec<u64> = from.checked_sub(1).into_iter().chain([to]).collect();
        let edges_before = self.client.block_hashes(&edges).await?;
        let outgoing = self
            .client
            .transfer_logs(contracts, &wallets, TransferDirection::Outgoing, from..=to)
            .await?;
        let incoming = self
            .client
            .transfer_logs(contracts, &wallets, TransferDirection::Incoming, from..=to)
            .await?;
        let hashes: Vec<[u8; 32]> = outgoing.iter().map(|l| l.tx_hash.0).collect();
        let ours = if hashes.is_empty() {
            Default::default()
        } else {
            self.core.custody.known_attempts(&hashes).await?
        };
        for log in outgoing.iter().filter(|l| !ours.contains(&l.tx_hash.0)) {
            let wallet = log.from.to_checksum(None);
            self.wallet_metrics
                .unexpected_outflows_total
                .with_label_values(&[self.core.name.as_str(), wallet.as_str()])
                .inc();
            let reason = format!(
                "automatic: hot wallet {wallet} sent {} base units of {} in tx 0x{} (block {}), which treasuryd never signed",
                log.value,
                log.token.to_checksum(None),
                hex::encode(log.tx_hash),
                log.block
            );
            let evidence = serde_json::json!({
                "wallet": wallet,
                "blocks": {"from": from, "to": to},
                "transfer": transfer_evidence(log, false),
            });
            self.core
                .enter_safe_mode("unexpected_outflow", reason, evidence)
                .await?;
        }
        let Some(before) = from.checked_sub(1) else {
            return Ok(Some(incoming));
        };
        let mut differences = Vec::new();
        for wallet in &wallets {
            for token in contracts {
                let flow =
                    |logs: &[crate::chains::evm::TransferLog],
                     mine: fn(&crate::chains::evm::TransferLog) -> Address| {
                        logs.iter()
                            .filter(|l| l.token == *token && mine(l) == *wallet)
                            .fold(U256::ZERO, |sum, l| sum.saturating_add(l.value))
                    };
                let received = flow(&incoming, |l| l.to);
                let sent = flow(&outgoing, |l| l.from);
                let start = self
                    .client
                    .token_balance_at(*token, *wallet, Some(before))
                    .await?;
                let end = self
                    .client
                    .token_balance_at(*token, *wallet, Some(to))
                    .await?;
                if start.saturating_add(received) == end.saturating_add(sent) {
                    continue;
                }
                let address = wallet.to_checksum(None);
                let reason = format!(
                    "automatic: hot wallet {address} holds {end} base units of {} at block {to}; its transfers since block {before} ({start}, +{received}, -{sent}) account for {}",
                    token.to_checksum(None),
                    start.saturating_add(received).saturating_sub(sent)
                );
                let counted: Vec<&crate::chains::evm::TransferLog> = outgoing
                    .iter()
                    .filter(|l| l.token == *token && l.from == *wallet)
                    .chain(
                        incoming
                            .iter()
                            .filter(|l| l.token == *token && l.to == *wallet),
                    )
                    .collect();
                let transfers: Vec<serde_json::Value> = counted
                    .iter()
                    .take(EVIDENCE_TRANSFERS)
                    .map(|l| transfer_evidence(l, ours.contains(&l.tx_hash.0)))
                    .collect();
                let evidence = serde_json::json!({
                    "wallet": address,
                    "token": token.to_checksum(None),
                    "balance_before": {"block": before, "units": start.to_string()},
                    "balance_after": {"block": to, "units": end.to_string()},
                    "received": received.to_string(),
                    "sent": sent.to_string(),
                    "expected": start.saturating_add(received).saturating_sub(sent).to_string(),
                    "transfers_counted": counted.len(),
                    "transfers": transfers,
                    "confirming_reads": CONFIRMING_READS,
                });
                differences.push(((*wallet, *token), reason, evidence));
            }
        }
        if self.client.block_hashes(&edges).await? != edges_before {
            tracing::info!(network = %self.core.name, from, to, "the range was reorganised while it was read; reading it again");
            return Ok(None);
        }
        let found: Vec<(Address, Address)> = differences.iter().map(|(k, _, _)| *k).collect();
        let confirmed = self.suspect_balances.confirm(from, &found);
        for (key, reason, evidence) in differences {
            let address = key.0.to_checksum(None);
            if !confirmed.contains(&key) {
                self.wallet_metrics
                    .balance_rereads_total
                    .with_label_values(&[self.core.name.as_str(), address.as_str()])
                    .inc();
                tracing::warn!(network = %self.core.name, %reason, %evidence, "a hot wallet's balance differs from its transfers; reading the range again before acting");
                continue;
            }
            self.wallet_metrics
                .balance_mismatches_total
                .with_label_values(&[self.core.name.as_str(), address.as_str()])
                .inc();
            self.core
                .enter_safe_mode("balance_mismatch", reason, evidence)
                .await?;
        }
        if found.len() > confirmed.len() {
            return Ok(None);
        }
        Ok(Some(incoming))
    }

    /// Posts each hot wallet's opening balance per token and in the native coin as of block
    /// `from - 1`, once per (wallet, asset) for the life of the database: from then on inflows
    /// and payouts keep its ledger accounts level with the chain. A crash between the posting
    /// and its record replays the same posting (same key, same block: the cursor has not moved).
    async fn open_wallets(&mut self, from: u64) -> anyhow::Result<()> {
        self.core.pause_point("watcher.before_opening").await;
        let opened = self.core.custody.wallet_openings(&self.core.name).await?;
        let block = from.checked_sub(1);
        for w in &self.wallets {
            let address = w.address.to_checksum(None);
            for asset in &self.reconciled_assets {
                if opened.contains_key(&(address.clone(), asset.key.code.clone())) {
                    continue;
                }
                let balance = match (block, asset.contract) {
                    (None, _) => U256::ZERO,
                    (Some(b), Some(token)) => {
                        self.client
                            .token_balance_at(token, w.address, Some(b))
                            .await?
                    }
                    (Some(b), None) => self.client.native_balance_at(w.address, Some(b)).await?,
                };
                let units = i128::try_from(balance)
                    .map_err(|_| anyhow::anyhow!("{address}: balance out of range"))?;
                if units > 0 {
                    let amount = Amount::new(units)?;
                    let op = match asset.contract {
                        Some(_) => {
                            let custody = *self
                                .accounts
                                .custody
                                .get(&(address.clone(), asset.key.code.clone()))
                                .ok_or_else(|| anyhow::anyhow!("{address}: no custody account"))?;
                            self.core
                                .ledger
                                .wallet_inflow(custody, &asset.key, amount)?
                        }
                        None => Operation::Deposit {
                            account: *self
                                .accounts
                                .gas
                                .get(&address)
                                .ok_or_else(|| anyhow::anyhow!("{address}: no gas account"))?,
                            source: self
                                .core
                                .ledger
                                .system_account(&asset.key, AccountKind::External)
                                .ok_or_else(|| anyhow::anyhow!("no external {}", asset.key))?,
                            amount,
                        },
                    };
                    let mut cmd = Command::new(
                        format!(
                            "wallet-opening:{}:{address}:{}",
                            self.chain_id, asset.key.code
                        ),
                        asset.key.clone(),
                        op,
                    );
                    cmd.memo = Some(format!(
                        "opening balance of hot wallet {address} at block {}",
                        block.unwrap_or(0)
                    ));
                    if let Some(Err(e)) = self.core.ledger.post(vec![cmd]).await?.pop() {
                        anyhow::bail!("the ledger refused the opening of {address}: {e}");
                    }
                }
                self.core
                    .custody
                    .record_wallet_opening(
                        &self.core.name,
                        &address,
                        &asset.key.code,
                        block.unwrap_or(0),
                    )
                    .await?;
                tracing::info!(
                    network = %self.core.name,
                    wallet = %address,
                    asset = %asset.key.code,
                    block = block.unwrap_or(0),
                    units = %units,
                    "hot wallet opening balance posted"
                );
            }
        }
        self.opened = true;
        Ok(())
    }

    /// The ledger command for a token transfer into a hot wallet, keyed by chain, tx hash and
    /// log index like a deposit. None for a token the network does not pay in.
    fn inflow(&self, log: &crate::chains::evm::TransferLog) -> anyhow::Result<Option<Command>> {
        let Some((code, _)) = self
            .core
            .tokens
            .iter()
            .find(|(_, t)| t.contract == log.token)
        else {
            return Ok(None);
        };
        let wallet = log.to.to_checksum(None);
        let Some(custody) = self.accounts.custody.get(&(wallet.clone(), code.clone())) else {
            return Ok(None);
        };
        let asset = AssetKey::new(self.core.name.clone(), code.clone());
        let units = i128::try_from(log.value)
            .map_err(|_| anyhow::anyhow!("an inflow of {} out of range", log.value))?;
        let Ok(amount) = Amount::new(units) else {
            // A zero-value transfer moves nothing.
            return Ok(None);
        };
        let tx = format!("0x{}", hex::encode(log.tx_hash));
        let mut cmd = Command::new(
            format!("wallet-inflow:{}:{tx}:{}", self.chain_id, log.log_index),
            asset.clone(),
            self.core.ledger.wallet_inflow(*custody, &asset, amount)?,
        );
        cmd.reference = Some(tx);
        cmd.memo = Some(format!(
            "{code} into hot wallet {wallet} from {} in block {}",
            log.from.to_checksum(None),
            log.block
        ));
        Ok(Some(cmd))
    }

    /// Runs `reconcile` over the hot wallets every `reconcile_interval_seconds`: exports each
    /// line and puts the network in safe-mode on a token difference nothing in flight explains.
    /// A failed run (a node down) is counted and tried again next interval.
    pub(super) async fn reconcile_periodically(&mut self) -> anyhow::Result<()> {
        let due = match self.recheck_at {
            Some(at) => Instant::now() >= at,
            None => self
                .reconciled_at
                .is_none_or(|at| at.elapsed() >= self.reconcile_every),
        };
        // Nothing to compare before the watcher has read its first range.
        if !self.opened || !due {
            return Ok(());
        }
        self.reconciled_at = Some(Instant::now());
        self.recheck_at = None;
        let wallets: Vec<Address> = self.wallets.iter().map(|w| w.address).collect();
        let lines = match crate::reconcile::reconcile_network(
            self.core.custody.as_ref(),
            &self.client,
            &self.core.name,
            &wallets,
            &self.reconciled_assets,
        )
        .await
        {
            Ok(lines) => lines,
            Err(e) => {
                tracing::warn!(network = %self.core.name, error = format!("{e:#}"), "reconciliation could not run");
                self.wallet_metrics
                    .reconcile_runs_total
                    .with_label_values(&[self.core.name.as_str(), "error"])
                    .inc();
                return Ok(());
            }
        };
        // The native coin may move for reasons the ledger is told of later (a top-up recorded
        // after the fact); only tokens stop payouts, once as many runs in a row found them.
        let found: Vec<(String, String)> = lines
            .iter()
            .filter(|l| l.verdict == Verdict::Mismatch && l.asset != self.native.code)
            .map(|l| (l.wallet.clone(), l.asset.clone()))
            .collect();
        let confirmed = self.suspect_lines.confirm(0, &found);
        if found.len() > confirmed.len() {
            self.recheck_at = Some(Instant::now() + Duration::from_secs(1));
        }
        let mut outcome = "clean";
        for line in &lines {
            self.wallet_metrics.record_reconciliation(line);
            if line.verdict == Verdict::Mismatch {
                let key = (line.wallet.clone(), line.asset.clone());
                let act = confirmed.contains(&key);
                if act || line.asset == self.native.code {
                    outcome = "mismatch";
                } else if outcome == "clean" {
                    outcome = "unconfirmed";
                }
                tracing::error!(network = %self.core.name, wallet = %line.wallet, asset = %line.asset, chain = %line.display(line.chain), ledger = %line.display(line.ledger), difference = %line.display(line.difference), confirmed = act, "hot wallet balance differs from the ledger");
                if act {
                    let reason = format!(
                        "automatic: hot wallet {} holds {} {} at block {}; the ledger, less what is settling, plus what it posted ahead of that block, says {}",
                        line.wallet,
                        line.display(line.chain),
                        line.asset,
                        line.block,
                        line.display(line.ledger - line.settling + line.posted_ahead)
                    );
                    let evidence = serde_json::json!({
                        "line": line,
                        "confirming_reads": CONFIRMING_READS,
                    });
                    self.core
                        .enter_safe_mode("reconcile_mismatch", reason, evidence)
                        .await?;
                }
            }
        }
        self.wallet_metrics
            .reconcile_runs_total
            .with_label_values(&[self.core.name.as_str(), outcome])
            .inc();
        Ok(())
    }

    /// Credits token transfers to deposit addresses (and records those into hot wallets as
    /// inflows) from blocks at the confirmation depth, at most once a second and 2,000 blocks
    /// per call. Each is keyed by chain, tx hash and log index, so a re-read range (after a crash, before the cursor moved) replays
    /// instead of crediting twice. Blocks below the depth are never read, so a reorg within
    /// it cannot credit a transfer that did not stay.
    /// The newest block the watcher reads. Never the head itself, whatever the depth: a node
    /// may still be writing its newest block, and anvil was seen to answer balances and logs
    /// at the head that a later read of the same block contradicts (a false
    /// `balance_mismatch` in crash storms). A block with a successor is settled on the node.
    fn readable_block(&self, head: u64) -> Option<u64> {
        (head + 1).checked_sub(self.settings.confirmations.max(2))
    }

    /// The first block not read for deposits; on a first start, set to the configured block or
    /// to the one after `safe`.
    async fn deposit_start(&mut self, safe: u64) -> anyhow::Result<u64> {
        if let Some(next) = self.core.custody.deposit_cursor(&self.core.name).await? {
            return Ok(next);
        }
        let start = self.settings.deposits_from_block.unwrap_or(safe + 1);
        self.core
            .custody
            .set_deposit_cursor(&self.core.name, start)
            .await?;
        // The first read comes a pass later: deposit addresses declared right after start
        // (with `deposits_from_block`, for history) are then in it.
        self.deposits_read_at = Some(std::time::Instant::now());
        Ok(start)
    }

    /// Whether the hot wallets' openings are posted, posting them first if not. Nothing is
    /// sent before: a chunk mined at or before the opening's block would be in the opening
    /// balance and in its PAYOUT both (seen after a crash right after the first broadcast:
    /// the restarted daemon read the opening after the payout had landed).
    pub(super) async fn opened_before_sending(&mut self, head: u64) -> anyhow::Result<bool> {
        if self.opened {
            return Ok(true);
        }
        let Some(safe) = self.readable_block(head) else {
            return Ok(false);
        };
        let from = self.deposit_start(safe).await?;
        self.open_wallets(from).await?;
        Ok(true)
    }

    pub(super) async fn watch_deposits(&mut self, head: u64) -> anyhow::Result<()> {
        if self
            .deposits_read_at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return Ok(());
        }
        self.deposits_read_at = Some(std::time::Instant::now());
        let addresses = self
            .core
            .custody
            .deposit_addresses(&self.core.name, None)
            .await?;
        let Some(safe) = self.readable_block(head) else {
            return Ok(());
        };
        let from = self.deposit_start(safe).await?;
        if !self.opened {
            self.open_wallets(from).await?;
        }
        if from > safe {
            return Ok(());
        }
        let to = safe.min(from + 1_999);
        let contracts: Vec<Address> = self.core.tokens.values().map(|t| t.contract).collect();
        let Some(inflows) = self.reconcile_wallets(&contracts, from, to).await? else {
            return Ok(());
        };
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
        for log in &inflows {
            commands.extend(self.inflow(log)?);
        }
        for log in logs {
            let Some((code, _)) = self
                .core
                .tokens
                .iter()
                .find(|(_, t)| t.contract == log.token)
            else {
                continue;
            };
            let to_address = log.to.to_checksum(None);
            let Some(target) = addresses
                .iter()
                .find(|d| d.address == to_address && &d.asset.code == code)
            else {
                tracing::warn!(network = %self.core.name, token = %code, to = %to_address, "a transfer to a deposit address of no account in that token; not credited");
                continue;
            };
            let (Ok(units), Some(source)) = (
                i128::try_from(log.value),
                self.core
                    .ledger
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
                .core
                .ledger
                .post(commands.clone())
                .await?
                .into_iter()
                .zip(&commands)
            {
                match result {
                    Ok(posted)
                        if !posted.replayed
                            && matches!(cmd.operation, Operation::Deposit { .. }) =>
                    {
                        self.core
                            .metrics
                            .deposits_total
                            .with_label_values(&[self.core.name.as_str(), cmd.asset.code.as_str()])
                            .inc()
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::error!(key = %cmd.idempotency_key, error = %e, "the ledger refused a deposit or inflow; it will be read again");
                        return Ok(());
                    }
                }
            }
            self.core.pause_point("deposits.before_cursor").await;
        }
        self.core
            .metrics
            .deposit_blocks_read_total
            .with_label_values(&[self.core.name.as_str()])
            .inc_by(to + 1 - from);
        self.core
            .custody
            .set_deposit_cursor(&self.core.name, to + 1)
            .await?;
        Ok(())
    }

    /// Checks that paid chunks are still on the chain. The hash of the highest watched block
    /// vouches for every block below it, so a quiet chain costs one call per tick. A paid
    /// chunk whose block left the chain puts the network in safe-mode (an Admin leaves it),
    /// counts in `deep_reorgs_total`, and its stored transaction is re-sent until it is
    /// included again (same nonce: it cannot pay twice).
    pub(super) async fn watch_deep_reorgs(&mut self, head: u64) -> anyhow::Result<()> {
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
            let canonical = self.client.block_hash(block).await?.map(|h| h.0);
            if canonical == Some(expected) {
                continue;
            }
            self.watched[i].block_hash = None;
            let (chunk, payout) = (self.watched[i].chunk, self.watched[i].payout);
            self.core
                .metrics
                .deep_reorgs_total
                .with_label_values(&[self.core.name.as_str()])
                .inc();
            let reason = format!(
                "automatic: chunk {chunk} of payout {payout}, paid at block {block}, left the chain after its confirmation depth"
            );
            tracing::error!(network = %self.core.name, %chunk, %payout, block, "a paid transaction was reorged out; entering safe-mode");
            self.core
                .payouts
                .add_payout_event(payout, "reorged_after_confirmation", &reason)
                .await?;
            let evidence = serde_json::json!({
                "chunk": chunk.to_string(),
                "payout": payout.to_string(),
                "tx": format!("0x{}", hex::encode(self.watched[i].attempt.hash)),
                "block": block,
                "paid_in_block_hash": format!("0x{}", hex::encode(expected)),
                "canonical_block_hash": canonical.map(|h| format!("0x{}", hex::encode(h))),
                "head": head,
                "confirmations": self.settings.confirmations,
            });
            self.core
                .enter_safe_mode("deep_reorg", reason, evidence)
                .await?;
        }
        self.reland().await
    }

    /// Re-sends the paid transactions a reorg took off the chain, and records where each lands
    /// again.
    pub(super) async fn reland(&mut self) -> anyhow::Result<()> {
        for i in 0..self.watched.len() {
            if self.watched[i].block_hash.is_some() {
                continue;
            }
            let (chunk, attempt) = (self.watched[i].chunk, self.watched[i].attempt.clone());
            match self.client.inclusion(attempt.hash.into()).await? {
                Some(inc) => {
                    self.watched[i].block = inc.block_number;
                    self.watched[i].block_hash = Some(inc.block_hash.0);
                    self.core
                        .payouts
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
}
