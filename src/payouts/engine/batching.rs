//! Batching on chain: several queued chunks of one token paid by one `disperse` call of
//! `contracts/Disperse.sol`, from the hot wallet's own balance (the contract only ever calls
//! `transferFrom(msg.sender, ...)`).
//!
//! How the guarantees carry over:
//! - every chunk of a batch has its own attempt row with the batch's hash, bytes and nonce and
//!   its place among the payments, all stored in the signing round's one transaction; the
//!   ledger still pays each chunk on its own, at depth, keyed by the chunk;
//! - a replacement (speed-up or cancel) re-signs the whole batch once and is stored for every
//!   chunk of it in one transaction, so they never disagree about which transactions are
//!   theirs;
//! - a batch pays all or none. One that reverted, or whose nonce a batch-mate's cancel took,
//!   pays nobody: its chunks go back to the queue marked to go out alone, which finds the
//!   failing destination with one more transfer each and pays no one twice;
//! - the gas of a batch is shared out among its chunks (`BatchSlot::share_of`), so the FEE
//!   postings add up to what the transaction burned;
//! - the approval the contract needs is a wallet transaction of its own, stored under the
//!   nonce lock before it is broadcast, like every attempt.

use super::*;
use crate::chains::evm::{DisperseTx, sign_approve, sign_disperse, signed_disperse_parts};

/// A gas allowance for the disperse call itself, on top of `gas_per_transfer` a payment.
const BATCH_BASE_GAS: u64 = 50_000;

/// An allowance this large is as good as unlimited (we approve `U256::MAX`; tokens that spend
/// it down still leave more than any treasury will ever pay).
fn unlimited(allowance: U256) -> bool {
    allowance >= U256::MAX >> 1
}

/// `[networks.batching]`, parsed.
#[derive(Debug, Clone)]
pub(super) struct Batching {
    pub(super) contract: Address,
    tokens: Vec<String>,
    pub(super) max_transfers: usize,
    gas_per_transfer: u64,
}

impl Batching {
    pub(super) fn from_config(c: &crate::config::BatchingConfig) -> anyhow::Result<Self> {
        Ok(Self {
            contract: Address::parse_checksummed(&c.contract, None)?,
            tokens: c.tokens.clone(),
            max_transfers: c.max_transfers as usize,
            gas_per_transfer: c.gas_per_transfer,
        })
    }

    pub(super) fn covers(&self, asset: &str) -> bool {
        self.tokens.iter().any(|t| t == asset)
    }

    pub(super) fn gas_limit(&self, payments: usize) -> u64 {
        BATCH_BASE_GAS + self.gas_per_transfer * payments as u64
    }
}

impl NetworkEngine {
    /// Whether chunks of `token` may go out in batches from `wallet` at its next nonces; signs,
    /// stores and broadcasts the approval first when the allowance is short.
    pub(super) async fn approved_for_batches(
        &mut self,
        wallet: &Wallet,
        token: Address,
    ) -> anyhow::Result<bool> {
        let Some(batching) = self.settings.batching.clone() else {
            return Ok(false);
        };
        if self.approved.contains(&(wallet.address, token)) {
            return Ok(true);
        }
        // An approval stored before a restart and not yet final: the allowance may not show it
        // yet, and a second one would be wasted (or, on USDT, revert).
        let (address, token_text) = (wallet.address.to_checksum(None), token.to_checksum(None));
        if self.wallet_calls.iter().any(|c| {
            c.wallet == address
                && c.token == token_text
                && c.spender == batching.contract.to_checksum(None)
        }) {
            self.approved.insert((wallet.address, token));
            return Ok(true);
        }
        let allowance = self
            .client
            .allowance(token, wallet.address, batching.contract)
            .await?;
        if unlimited(allowance) {
            self.approved.insert((wallet.address, token));
            return Ok(true);
        }
        let fees = self.market_fees().await?;
        // Tokens like USDT refuse to change one non-zero allowance into another: clear it first.
        let mut values = Vec::new();
        if !allowance.is_zero() {
            values.push(U256::ZERO);
        }
        values.push(U256::MAX);
        for value in values {
            let nonce = self.next_nonce(wallet).await?;
            let signed = sign_approve(
                wallet.signer(),
                self.chain_id,
                nonce,
                token,
                batching.contract,
                value,
                fees,
            )?;
            let call = WalletCall {
                hash: signed.hash.0,
                wallet: wallet.address.to_checksum(None),
                nonce,
                token: token.to_checksum(None),
                spender: batching.contract.to_checksum(None),
                raw: signed.raw.to_vec(),
                created_at: self.core.clock.now(),
                broadcast_at: None,
            };
            match self
                .core
                .payouts
                .record_wallet_call(&self.core.name, self.core.fence.unwrap_or_default(), &call)
                .await
            {
                Ok(()) => {}
                Err(StoreError::Conflict(ConflictKind::NonceMoved, reason)) => {
                    tracing::warn!(wallet = %wallet.address, %reason, "approval discarded unsent");
                    self.nonces.remove(&wallet.address);
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
            self.nonces.insert(wallet.address, nonce + 1);
            tracing::info!(wallet = %wallet.address, %token, %value, nonce, "approving the disperse contract");
            self.wallet_calls.push(call.clone());
            self.send_wallet_call(&call).await?;
        }
        self.approved.insert((wallet.address, token));
        Ok(true)
    }

    async fn send_wallet_call(&mut self, call: &WalletCall) -> anyhow::Result<()> {
        match self.client.broadcast(&call.raw).await {
            Ok(_) => {}
            Err(e) if e.class == RpcErrorClass::AlreadyKnown => {}
            Err(e) => {
                tracing::warn!(wallet = %call.wallet, nonce = call.nonce, error = %e.message, "approval broadcast failed; will retry");
                return Ok(());
            }
        }
        if call.broadcast_at.is_none() {
            let at = self.core.clock.now();
            self.core
                .payouts
                .mark_wallet_call_broadcast(call.hash, at)
                .await?;
            if let Some(c) = self.wallet_calls.iter_mut().find(|c| c.hash == call.hash) {
                c.broadcast_at = Some(at);
            }
        }
        Ok(())
    }

    /// Approvals not yet final: sent again when never sent or stuck (every later nonce of the
    /// wallet waits for them); once mined their gas is posted as FEE (keyed by the transaction,
    /// so a replay posts nothing twice), and at the confirmation depth they are forgotten,
    /// after which the allowance is read again (an approval that reverted is signed anew).
    pub(super) async fn follow_wallet_calls(
        &mut self,
        head: u64,
        mined_below: &HashMap<String, u64>,
    ) -> anyhow::Result<()> {
        if self.wallet_calls.is_empty() {
            return Ok(());
        }
        let mut chain: HashMap<String, u64> = mined_below.clone();
        let now = self.core.clock.now();
        let mut open = Vec::new();
        let mut fees = Vec::new();
        let mut done = Vec::new();
        for call in std::mem::take(&mut self.wallet_calls) {
            let below = match chain.get(&call.wallet) {
                Some(n) => *n,
                None => {
                    let address = Address::parse_checksummed(&call.wallet, None)?;
                    let n = self.client.nonce(address, false).await?;
                    chain.insert(call.wallet.clone(), n);
                    n
                }
            };
            if call.nonce >= below {
                let stuck = call
                    .broadcast_at
                    .is_none_or(|at| now - at >= self.settings.stuck_after_micros);
                if stuck {
                    self.send_wallet_call(&call).await?;
                }
                open.push(call);
                continue;
            }
            let Some(i) = self.client.inclusion(call.hash.into()).await? else {
                tracing::warn!(wallet = %call.wallet, nonce = call.nonce, "an approval's nonce is spent without its receipt yet");
                open.push(call);
                continue;
            };
            // Its gas is posted as soon as it is mined, so that reconciliation never sees the
            // wallet's coin short for longer than a tick; the call is kept (and sent again if
            // a reorg unspends its nonce) until it is at the confirmation depth.
            let at_depth = head + 1 >= i.block_number + self.settings.confirmations;
            let fee = u128::from(i.gas_used).saturating_mul(i.effective_gas_price);
            if fee > 0 && self.wallet_call_fees_posted.insert(call.hash) {
                let account =
                    *self.accounts.gas.get(&call.wallet).ok_or_else(|| {
                        anyhow::anyhow!("wallet {} has no gas account", call.wallet)
                    })?;
                let op = self.core.ledger.network_fee(
                    account,
                    &self.native,
                    Amount::new(i128::try_from(fee)?)?,
                )?;
                let tx = format!("0x{}", hex::encode(call.hash));
                let mut cmd =
                    Command::new(format!("wallet-call:{tx}:gas"), self.native.clone(), op);
                cmd.memo = Some(format!(
                    "gas of approving {} for batches from {}",
                    call.token, call.wallet
                ));
                cmd.reference = Some(tx);
                fees.push(cmd);
            }
            if !at_depth {
                open.push(call);
                continue;
            }
            if !i.success {
                tracing::error!(wallet = %call.wallet, token = %call.token, "the approval of the disperse contract reverted; batches of the token revert until one succeeds");
            }
            done.push(call);
        }
        if !fees.is_empty() {
            let posted = self.core.ledger.post(fees).await;
            let failed = match posted {
                Ok(results) => results
                    .into_iter()
                    .find_map(Result::err)
                    .map(anyhow::Error::from),
                Err(e) => Some(e.into()),
            };
            if let Some(e) = failed {
                // Posted again next tick (the key makes a replay harmless).
                self.wallet_call_fees_posted.clear();
                return Err(e);
            }
        }
        for call in done {
            let wallet = Address::parse_checksummed(&call.wallet, None)?;
            let token = Address::parse_checksummed(&call.token, None)?;
            self.approved.remove(&(wallet, token));
        }
        self.wallet_calls = open;
        Ok(())
    }

    /// Signs one disperse call paying `works` (all of one token) at `nonce`, with each chunk's
    /// attempt at its place in the batch. None when the signed bytes fail policy.
    pub(super) fn sign_batch(
        &self,
        wallet: &Wallet,
        works: &[ChunkWork],
        nonce: u64,
        fees: Fees,
        allowlists: &crate::domain::payouts::EnforcedAllowlists,
    ) -> anyhow::Result<Option<Vec<(ChunkId, Attempt)>>> {
        let Some(batching) = &self.settings.batching else {
            return Ok(None);
        };
        let Some(first) = works.first() else {
            return Ok(None);
        };
        let Some(token) = self.core.tokens.get(&first.asset.code).map(|t| t.contract) else {
            return Ok(None);
        };
        let mut payments = Vec::with_capacity(works.len());
        for w in works {
            payments.push((
                Address::parse_checksummed(&w.destination, None)?,
                U256::from(u128::try_from(w.amount)?),
            ));
        }
        let tx = DisperseTx {
            chain_id: self.chain_id,
            nonce,
            contract: batching.contract,
            token,
            payments: payments.clone(),
            gas_limit: batching.gas_limit(works.len()),
            fees,
        };
        let signed = sign_disperse(wallet.signer(), &tx)?;
        // Policy looks at what was signed: the contract, the token and every payment decoded
        // from the raw transaction.
        let Some(parts) = signed_disperse_parts(&signed.raw) else {
            tracing::error!(nonce, "a signed batch does not decode; not sending it");
            return Ok(None);
        };
        let allowed = works.iter().zip(&parts.payments).all(|(w, (to, _))| {
            allowlists
                .get(&w.account)
                .is_none_or(|list| list.contains(&(self.core.name.clone(), to.to_checksum(None))))
        });
        if parts.contract != batching.contract
            || parts.token != token
            || parts.payments != payments
            || !allowed
        {
            tracing::error!(
                nonce,
                chunks = works.len(),
                "a signed batch fails policy; not sending it"
            );
            return Ok(None);
        }
        let at = self.core.clock.now();
        let size = u32::try_from(works.len())?;
        Ok(Some(
            works
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let mut a = attempt_of(&signed, AttemptKind::Transfer, at);
                    a.batch = Some(BatchSlot {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        size,
                    });
                    (w.chunk, a)
                })
                .collect(),
        ))
    }

    /// The same batch as `latest` at its nonce with new fees: the payments decoded from the
    /// bytes that were signed, never rebuilt from what we meant.
    pub(super) fn batch_again(&self, latest: &Attempt, fees: Fees) -> anyhow::Result<DisperseTx> {
        let parts = signed_disperse_parts(&latest.raw)
            .ok_or_else(|| anyhow::anyhow!("a stored batch does not decode"))?;
        Ok(DisperseTx {
            chain_id: self.chain_id,
            nonce: latest.nonce,
            contract: parts.contract,
            token: parts.token,
            payments: parts.payments,
            gas_limit: latest.gas_limit,
            fees,
        })
    }

    /// The chunks whose latest attempt is `latest` (a batch's), with their places, in order.
    pub(super) fn batch_mates(&self, f: &InFlight, latest: &Attempt) -> Vec<(ChunkId, BatchSlot)> {
        let mut mates: Vec<(ChunkId, BatchSlot)> = self
            .tracked
            .values()
            .filter(|t| t.wallet == f.wallet && t.nonce == f.nonce)
            .filter_map(|t| {
                let a = t.attempts.last()?;
                (a.hash == latest.hash).then_some((t.chunk, a.batch?))
            })
            .collect();
        mates.sort_by_key(|(_, slot)| slot.index);
        mates
    }
}
