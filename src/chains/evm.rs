//! EVM chains through alloy: ERC-20 transfer calldata, local EIP-1559 signing, fee suggestions
//! from `eth_feeHistory`, broadcasting raw transactions, receipts, and a classification of RPC
//! errors that decides how the payout engine reacts.
//!
//! The client wraps one alloy provider built once per RPC URL and reused for every call:
//! building HTTP clients per call is how relayers burn their CPU on TLS set-up.

use alloy::consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy::eips::{BlockNumberOrTag, Encodable2718};
use alloy::network::TxSignerSync;
use alloy::primitives::{Address, B256, Bytes, TxKind, U256};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::TransactionReceipt;
use alloy::signers::local::PrivateKeySigner;
use alloy::sol;
use alloy::sol_types::SolCall;
use std::fmt;

sol! {
    /// The ERC-20 functions the daemon uses. `transfer` is declared without a return value on
    /// purpose: USDT on Ethereum returns nothing, and we judge success by the receipt status and
    /// the Transfer log, never by decoding a return value.
    interface IERC20 {
        function transfer(address to, uint256 value) external;
        function balanceOf(address owner) external view returns (uint256);
        function approve(address spender, uint256 value) external;
        function allowance(address owner, address spender) external view returns (uint256);
        event Transfer(address indexed from, address indexed to, uint256 value);
    }

    /// `contracts/Disperse.sol`: pays many destinations of one token from the caller's own
    /// balance (`transferFrom(msg.sender, ...)`), all or none.
    interface IDisperse {
        function disperse(address token, address[] to, uint256[] amounts) external;
    }
}

/// Call data for `transfer(to, value)`.
pub fn transfer_calldata(to: Address, value: U256) -> Bytes {
    IERC20::transferCall { to, value }.abi_encode().into()
}

/// The recipient and value of `transfer` call data, or None for anything else. Policy checks
/// the recipient decoded here, never the transaction's `to` (which is the token contract).
pub fn decode_transfer(calldata: &[u8]) -> Option<(Address, U256)> {
    IERC20::transferCall::abi_decode(calldata)
        .ok()
        .map(|c| (c.to, c.value))
}

/// The token contract, recipient and amount a signed raw transfer carries: what policy checks,
/// rather than what we meant to sign.
pub fn signed_transfer_parts(raw: &[u8]) -> Option<(Address, Address, U256)> {
    use alloy::consensus::Transaction;
    use alloy::eips::eip2718::Decodable2718;
    let envelope = TxEnvelope::decode_2718(&mut &raw[..]).ok()?;
    let token = envelope.to()?;
    let (to, value) = decode_transfer(envelope.input())?;
    Some((token, to, value))
}

/// Call data for `disperse(token, to, amounts)`.
pub fn disperse_calldata(token: Address, payments: &[(Address, U256)]) -> Bytes {
    IDisperse::disperseCall {
        token,
        to: payments.iter().map(|(to, _)| *to).collect(),
        amounts: payments.iter().map(|(_, value)| *value).collect(),
    }
    .abi_encode()
    .into()
}

/// What a signed raw disperse carries: the contract it calls, the token and every
/// (recipient, amount) in order. Policy checks these, not what we meant to sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisperseParts {
    pub contract: Address,
    pub token: Address,
    pub payments: Vec<(Address, U256)>,
}

/// The parts of a signed raw disperse call, or None for anything else.
pub fn signed_disperse_parts(raw: &[u8]) -> Option<DisperseParts> {
    use alloy::consensus::Transaction;
    use alloy::eips::eip2718::Decodable2718;
    let envelope = TxEnvelope::decode_2718(&mut &raw[..]).ok()?;
    let contract = envelope.to()?;
    let call = IDisperse::disperseCall::abi_decode(envelope.input()).ok()?;
    if call.to.len() != call.amounts.len() {
        return None;
    }
    Some(DisperseParts {
        contract,
        token: call.token,
        payments: call.to.into_iter().zip(call.amounts).collect(),
    })
}

/// How fast a payout should land; picks the priority-fee percentile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeeMode {
    Economy,
    Normal,
    Urgent,
}

impl FeeMode {
    fn percentile(self) -> f64 {
        match self {
            FeeMode::Economy => 10.0,
            FeeMode::Normal => 50.0,
            FeeMode::Urgent => 90.0,
        }
    }
}

/// EIP-1559 fees in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

impl Fees {
    /// The fees of a replacement: both raised by at least `bump_bps` basis points (nodes want
    /// 10%), and at least to `market`, then capped at `cap` (the tip never above the max fee).
    pub fn bumped(self, bump_bps: u32, market: Fees, cap: u128) -> Fees {
        let raise = |v: u128| v + (v * u128::from(bump_bps)).div_ceil(10_000).max(1);
        let max_fee = raise(self.max_fee_per_gas)
            .max(market.max_fee_per_gas)
            .min(cap);
        let tip = raise(self.max_priority_fee_per_gas)
            .max(market.max_priority_fee_per_gas)
            .min(max_fee);
        Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip,
        }
    }
}

/// What went wrong talking to a node, by what the payout engine must do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RpcErrorClass {
    /// The nonce is already used on chain: one of our attempts (or someone else) was mined.
    NonceTooLow,
    /// There is a gap before this nonce.
    NonceTooHigh,
    /// A replacement did not raise the fees enough, or the fee is below the node's floor.
    Underpriced,
    /// The wallet cannot pay value + gas.
    InsufficientFunds,
    /// The node already has this exact transaction: success for a re-broadcast.
    AlreadyKnown,
    /// Timeouts, connection errors, rate limits, 5xx: retry, nothing happened.
    Transient,
    Unknown,
}

impl RpcErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RpcErrorClass::NonceTooLow => "nonce_too_low",
            RpcErrorClass::NonceTooHigh => "nonce_too_high",
            RpcErrorClass::Underpriced => "underpriced",
            RpcErrorClass::InsufficientFunds => "insufficient_funds",
            RpcErrorClass::AlreadyKnown => "already_known",
            RpcErrorClass::Transient => "transient",
            RpcErrorClass::Unknown => "unknown",
        }
    }

    /// Classifies by the message text, which is all geth, anvil, erigon and nethermind agree on.
    pub fn of_message(message: &str) -> Self {
        let m = message.to_ascii_lowercase();
        let has = |needles: &[&str]| needles.iter().any(|n| m.contains(n));
        if has(&[
            "nonce too low",
            "nonce is too low",
            "oldnonce",
            "already been used",
        ]) {
            RpcErrorClass::NonceTooLow
        } else if has(&["nonce too high", "nonce gap", "noncegap"]) {
            RpcErrorClass::NonceTooHigh
        } else if has(&[
            "already known",
            "alreadyknown",
            "known transaction",
            "already imported",
        ]) {
            RpcErrorClass::AlreadyKnown
        } else if has(&[
            "underpriced",
            "fee too low",
            "max fee per gas less than block base fee",
            "feecap",
        ]) {
            RpcErrorClass::Underpriced
        } else if has(&["insufficient funds", "insufficient balance"]) {
            RpcErrorClass::InsufficientFunds
        } else if has(&[
            "timed out",
            "timeout",
            "connection",
            "rate limit",
            "too many requests",
            "503",
            "502",
            "504",
            "temporarily",
            "eof",
        ]) {
            RpcErrorClass::Transient
        } else {
            RpcErrorClass::Unknown
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{class:?} from the node: {message}")]
pub struct RpcError {
    pub class: RpcErrorClass,
    pub message: String,
}

impl RpcError {
    /// A node's JSON-RPC error is classified by its message; a failure to reach the node at
    /// all (connection, timeout, HTTP status) is transient.
    fn from_transport(e: alloy::transports::TransportError) -> Self {
        use alloy::transports::RpcError as E;
        // reqwest names the URL it failed on, and RPC URLs often carry an API key.
        let message = without_urls(&e.to_string());
        let class = match &e {
            E::ErrorResp(payload) => RpcErrorClass::of_message(&payload.message),
            // A garbled answer is the transport's fault, not the node's verdict.
            E::Transport(_) | E::NullResp | E::DeserError { .. } => RpcErrorClass::Transient,
            _ => RpcErrorClass::of_message(&message),
        };
        Self { class, message }
    }
}

pub type RpcResult<T> = Result<T, RpcError>;

/// `text` with every `http(s)://…` in it replaced by `<rpc url>`, so an error message that
/// reaches a log or an operator never carries an endpoint's key.
fn without_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = ["http://", "https://"]
        .iter()
        .filter_map(|p| rest.find(p))
        .min()
    {
        out.push_str(&rest[..at]);
        out.push_str("<rpc url>");
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ','))
            .unwrap_or(tail.len());
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// A transaction signed locally, ready to broadcast and to store before it is broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTransfer {
    pub hash: B256,
    pub raw: Bytes,
    pub nonce: u64,
    pub fees: Fees,
    pub gas_limit: u64,
}

/// What a transfer needs besides the key.
#[derive(Debug, Clone, Copy)]
pub struct TransferTx {
    pub chain_id: u64,
    pub nonce: u64,
    pub token: Address,
    pub to: Address,
    pub value: U256,
    pub gas_limit: u64,
    pub fees: Fees,
}

/// Signs an ERC-20 transfer as an EIP-1559 transaction.
pub fn sign_transfer(
    signer: &PrivateKeySigner,
    t: &TransferTx,
) -> Result<SignedTransfer, alloy::signers::Error> {
    sign(
        signer,
        t.chain_id,
        t.nonce,
        t.token,
        U256::ZERO,
        transfer_calldata(t.to, t.value),
        t.gas_limit,
        t.fees,
    )
}

/// What a batch of transfers of one token through the disperse contract needs besides the key.
#[derive(Debug, Clone)]
pub struct DisperseTx {
    pub chain_id: u64,
    pub nonce: u64,
    /// The deployed `contracts/Disperse.sol`.
    pub contract: Address,
    pub token: Address,
    /// (recipient, amount), paid in this order.
    pub payments: Vec<(Address, U256)>,
    pub gas_limit: u64,
    pub fees: Fees,
}

/// Signs one disperse call paying every (recipient, amount) of `t` from the signer's balance.
pub fn sign_disperse(
    signer: &PrivateKeySigner,
    t: &DisperseTx,
) -> Result<SignedTransfer, alloy::signers::Error> {
    sign(
        signer,
        t.chain_id,
        t.nonce,
        t.contract,
        U256::ZERO,
        disperse_calldata(t.token, &t.payments),
        t.gas_limit,
        t.fees,
    )
}

/// Signs `approve(spender, value)` on `token`: how a hot wallet lets the disperse contract
/// move its own balance (and only its own: the contract pays from `msg.sender`).
pub fn sign_approve(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    token: Address,
    spender: Address,
    value: U256,
    fees: Fees,
) -> Result<SignedTransfer, alloy::signers::Error> {
    sign(
        signer,
        chain_id,
        nonce,
        token,
        U256::ZERO,
        IERC20::approveCall { spender, value }.abi_encode().into(),
        100_000,
        fees,
    )
}

/// Signs the cancel of `nonce`: a zero-value transfer to ourselves with higher fees.
pub fn sign_cancel(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    fees: Fees,
) -> Result<SignedTransfer, alloy::signers::Error> {
    sign(
        signer,
        chain_id,
        nonce,
        signer.address(),
        U256::ZERO,
        Bytes::new(),
        21_000,
        fees,
    )
}

#[allow(clippy::too_many_arguments)]
fn sign(
    signer: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: Address,
    value: U256,
    input: Bytes,
    gas_limit: u64,
    fees: Fees,
) -> Result<SignedTransfer, alloy::signers::Error> {
    let mut tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: fees.max_fee_per_gas,
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        to: TxKind::Call(to),
        value,
        access_list: Default::default(),
        input,
    };
    let signature = signer.sign_transaction_sync(&mut tx)?;
    let signed = tx.into_signed(signature);
    let hash = *signed.hash();
    let envelope = TxEnvelope::from(signed);
    Ok(SignedTransfer {
        hash,
        raw: envelope.encoded_2718().into(),
        nonce,
        fees,
        gas_limit,
    })
}

/// Which side of a `Transfer` the watched addresses are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferDirection {
    Incoming,
    Outgoing,
}

/// An ERC-20 `Transfer` log, as far as a deposit cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferLog {
    pub token: Address,
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub tx_hash: B256,
    pub log_index: u64,
    pub block: u64,
}

/// The outcome of a mined transaction, as far as a payout cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inclusion {
    pub block_number: u64,
    pub block_hash: B256,
    /// The receipt's status: the transaction did not revert. Not that tokens moved.
    pub success: bool,
    pub gas_used: u64,
    pub effective_gas_price: u128,
    /// The ERC-20 Transfer events it emitted: (token, from, to, value).
    pub transfers: Vec<(Address, Address, Address, U256)>,
}

impl Inclusion {
    /// Whether the transaction moved exactly `value` of `token` from `from` to `to`. A
    /// successful status alone does not say so: a token may return false instead of
    /// reverting, and a call to an address without code succeeds and moves nothing.
    pub fn moved(&self, token: Address, from: Address, to: Address, value: U256) -> bool {
        self.success && self.transfers.contains(&(token, from, to, value))
    }
}

impl From<&TransactionReceipt> for Inclusion {
    fn from(r: &TransactionReceipt) -> Self {
        use alloy::sol_types::SolEvent;
        let transfers = r
            .inner
            .logs()
            .iter()
            .filter_map(|log| {
                let t = IERC20::Transfer::decode_log(&log.inner).ok()?;
                Some((t.address, t.data.from, t.data.to, t.data.value))
            })
            .collect();
        Self {
            block_number: r.block_number.unwrap_or_default(),
            block_hash: r.block_hash.unwrap_or_default(),
            success: r.status(),
            gas_used: r.gas_used,
            effective_gas_price: r.effective_gas_price,
            transfers,
        }
    }
}

/// Calls per JSON-RPC batch unless the network's `rpc_batch_calls` says otherwise: none.
const DEFAULT_BATCH_CALLS: usize = 1;

/// Calls open at once when batches are off.
const UNBATCHED_CONCURRENCY: usize = 16;

/// The longest one RPC call may take.
pub const RPC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One node of one network.
#[derive(Clone)]
pub struct EvmClient {
    provider: DynProvider,
    url: String,
    /// Calls per JSON-RPC batch request (1: no batches).
    batch_calls: usize,
}

impl fmt::Debug for EvmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvmClient")
            .field("url", &crate::config::redact_url(&self.url))
            .finish()
    }
}

impl EvmClient {
    pub fn new(url: &str) -> Result<Self, RpcError> {
        let parsed = url.parse().map_err(|e| RpcError {
            class: RpcErrorClass::Unknown,
            message: format!("RPC URL: {e}"),
        })?;
        // One HTTP client per endpoint, reused for every call; a node that stops answering
        // fails the call after the timeout instead of stalling the engine.
        let http = alloy::transports::http::reqwest::Client::builder()
            .timeout(RPC_TIMEOUT)
            .build()
            .map_err(|e| RpcError {
                class: RpcErrorClass::Unknown,
                message: format!("HTTP client: {e}"),
            })?;
        let transport = alloy::transports::http::Http::with_client(http, parsed);
        let client = alloy::rpc::client::RpcClient::new(transport, false);
        Ok(Self {
            provider: ProviderBuilder::new()
                .disable_recommended_fillers()
                .connect_client(client)
                .erased(),
            url: url.to_owned(),
            batch_calls: DEFAULT_BATCH_CALLS,
        })
    }

    /// The same client sending at most `calls` calls per batch request (1: each on its own).
    pub fn with_batch_calls(mut self, calls: usize) -> Self {
        self.batch_calls = calls.max(1);
        self
    }

    async fn chain_id_once(&self) -> RpcResult<u64> {
        self.provider
            .get_chain_id()
            .await
            .map_err(RpcError::from_transport)
    }

    async fn head_once(&self) -> RpcResult<u64> {
        self.provider
            .get_block_number()
            .await
            .map_err(RpcError::from_transport)
    }

    /// The number of the latest `finalized` block.
    async fn finalized_head_once(&self) -> RpcResult<Option<u64>> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Finalized)
            .await
            .map_err(RpcError::from_transport)?;
        Ok(block.map(|b| b.header.number))
    }

    /// Nonce of the next transaction: `pending` counts the node's mempool too.
    async fn nonce_once(&self, address: Address, pending: bool) -> RpcResult<u64> {
        let call = self.provider.get_transaction_count(address);
        let call = if pending {
            call.pending()
        } else {
            call.latest()
        };
        call.await.map_err(RpcError::from_transport)
    }

    async fn native_balance_once(&self, address: Address, block: Option<u64>) -> RpcResult<U256> {
        let call = self.provider.get_balance(address);
        let call = match block {
            Some(b) => call.block_id(alloy::eips::BlockId::number(b)),
            None => call,
        };
        call.await.map_err(RpcError::from_transport)
    }

    pub async fn token_balance(&self, token: Address, owner: Address) -> RpcResult<U256> {
        self.token_balance_at(token, owner, None).await
    }

    /// `eth_call` of a view function on `contract` at `block` (None: latest); the raw answer.
    async fn view<C: SolCall>(
        &self,
        contract: Address,
        call: &C,
        block: Option<u64>,
    ) -> RpcResult<Bytes> {
        let request = alloy::rpc::types::TransactionRequest::default()
            .to(contract)
            .input(Bytes::from(call.abi_encode()).into());
        let call = self.provider.call(request);
        let call = match block {
            Some(b) => call.block(alloy::eips::BlockId::number(b)),
            None => call,
        };
        call.await.map_err(RpcError::from_transport)
    }

    async fn token_balance_at_once(
        &self,
        token: Address,
        owner: Address,
        block: Option<u64>,
    ) -> RpcResult<U256> {
        let out = self
            .view(token, &IERC20::balanceOfCall { owner }, block)
            .await?;
        // No code at that address in that block: the token was not deployed yet.
        if out.is_empty() {
            return Ok(U256::ZERO);
        }
        IERC20::balanceOfCall::abi_decode_returns(&out).map_err(|e| RpcError {
            class: RpcErrorClass::Unknown,
            message: format!("balanceOf returned {out}: {e}"),
        })
    }

    async fn allowance_once(
        &self,
        token: Address,
        owner: Address,
        spender: Address,
    ) -> RpcResult<U256> {
        let out = self
            .view(token, &IERC20::allowanceCall { owner, spender }, None)
            .await?;
        IERC20::allowanceCall::abi_decode_returns(&out).map_err(|e| RpcError {
            class: RpcErrorClass::Unknown,
            message: format!("allowance returned {out}: {e}"),
        })
    }

    /// Fees for the next block from the last 10 blocks: the mode's percentile of priority fees
    /// (at least `min_tip`), and a max fee of twice the next base fee plus the tip, at most `cap`.
    async fn suggest_fees_once(&self, mode: FeeMode, min_tip: u128, cap: u128) -> RpcResult<Fees> {
        let history = self
            .provider
            .get_fee_history(10, BlockNumberOrTag::Latest, &[mode.percentile()])
            .await
            .map_err(RpcError::from_transport)?;
        let next_base = history.base_fee_per_gas.last().copied().unwrap_or_default();
        let mut tips: Vec<u128> = history
            .reward
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.first().copied())
            .collect();
        tips.sort_unstable();
        let tip = tips
            .get(tips.len() / 2)
            .copied()
            .unwrap_or_default()
            .max(min_tip);
        let max_fee = (next_base.saturating_mul(2).saturating_add(tip)).min(cap);
        Ok(Fees {
            max_fee_per_gas: max_fee,
            max_priority_fee_per_gas: tip.min(max_fee),
        })
    }

    /// Sends a signed transaction. A node that already has it answers `AlreadyKnown`, which the
    /// caller treats as success: re-broadcasting a stored transaction is always safe.
    async fn broadcast_once(&self, raw: &[u8]) -> RpcResult<B256> {
        match self.provider.send_raw_transaction(raw).await {
            Ok(pending) => Ok(*pending.tx_hash()),
            Err(e) => Err(RpcError::from_transport(e)),
        }
    }

    async fn inclusion_once(&self, hash: B256) -> RpcResult<Option<Inclusion>> {
        let receipt = self
            .provider
            .get_transaction_receipt(hash)
            .await
            .map_err(RpcError::from_transport)?;
        Ok(receipt.as_ref().map(Inclusion::from))
    }

    /// The hash of block `number` on the node's canonical chain, to see whether an inclusion
    /// still stands.
    async fn block_hash_once(&self, number: u64) -> RpcResult<Option<B256>> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Number(number))
            .await
            .map_err(RpcError::from_transport)?;
        Ok(block.map(|b| b.header.hash))
    }

    async fn transfer_logs_once(
        &self,
        tokens: &[Address],
        parties: &[Address],
        direction: TransferDirection,
        blocks: std::ops::RangeInclusive<u64>,
    ) -> RpcResult<Vec<TransferLog>> {
        use alloy::rpc::types::Filter;
        use alloy::sol_types::SolEvent;
        let words: Vec<B256> = parties.iter().map(|a| a.into_word()).collect();
        let filter = Filter::new()
            .address(tokens.to_vec())
            .event_signature(IERC20::Transfer::SIGNATURE_HASH)
            .from_block(*blocks.start())
            .to_block(*blocks.end());
        let filter = match direction {
            TransferDirection::Incoming => filter.topic2(words),
            TransferDirection::Outgoing => filter.topic1(words),
        };
        let logs = self
            .provider
            .get_logs(&filter)
            .await
            .map_err(RpcError::from_transport)?;
        let mut out = Vec::with_capacity(logs.len());
        for log in logs {
            let (Some(tx_hash), Some(log_index), Some(block)) =
                (log.transaction_hash, log.log_index, log.block_number)
            else {
                continue;
            };
            let Ok(event) = IERC20::Transfer::decode_log(&log.inner) else {
                continue;
            };
            out.push(TransferLog {
                token: log.inner.address,
                from: event.from,
                to: event.to,
                value: event.value,
                tx_hash,
                log_index,
                block,
            });
        }
        Ok(out)
    }

    /// Sends `method` once per entry of `params`, as JSON-RPC batches of `batch_calls`: one
    /// HTTP request (and one parse of the answer) per batch instead of one per call. Answers
    /// come back in the order of `params`, each with its own outcome. A batch the transport
    /// loses as a whole (a 5xx, a reset, a garbled answer) is sent again up to three times,
    /// like a single call: every method used here is a read or the broadcast of bytes already
    /// stored. With `batch_calls` 1 each call goes on its own, 16 at a time.
    async fn batched<P, R>(
        &self,
        method: &'static str,
        params: &[P],
    ) -> RpcResult<Vec<RpcResult<R>>>
    where
        P: alloy::rpc::json_rpc::RpcSend,
        R: alloy::rpc::json_rpc::RpcRecv,
    {
        if self.batch_calls <= 1 {
            // A sliding window, answered in order: a slow call holds up one slot, not a wave.
            use futures::StreamExt;
            let mut calls = Vec::with_capacity(params.len());
            for p in params {
                calls.push(self.retrying(move || async move {
                    self.provider
                        .client()
                        .request::<_, R>(method, p)
                        .await
                        .map_err(RpcError::from_transport)
                }));
            }
            let out = futures::stream::iter(calls)
                .buffered(UNBATCHED_CONCURRENCY)
                .collect()
                .await;
            return Ok(out);
        }
        let mut out = Vec::with_capacity(params.len());
        for part in params.chunks(self.batch_calls) {
            let answers = self
                .retrying(|| async {
                    let mut batch = alloy::rpc::client::BatchRequest::new(self.provider.client());
                    let mut waiters = Vec::with_capacity(part.len());
                    for p in part {
                        waiters.push(
                            batch
                                .add_call::<_, R>(method, p)
                                .map_err(RpcError::from_transport)?,
                        );
                    }
                    batch.send().await.map_err(RpcError::from_transport)?;
                    let mut answers = Vec::with_capacity(waiters.len());
                    for w in waiters {
                        answers.push(w.await.map_err(RpcError::from_transport));
                    }
                    Ok(answers)
                })
                .await?;
            out.extend(answers);
        }
        Ok(out)
    }

    /// Broadcasts signed transactions in batches, answered one by one in the same order (see
    /// `broadcast` for what each answer means).
    pub async fn broadcast_all(&self, raws: &[&[u8]]) -> RpcResult<Vec<RpcResult<B256>>> {
        let params: Vec<(Bytes,)> = raws.iter().map(|r| (Bytes::copy_from_slice(r),)).collect();
        self.batched("eth_sendRawTransaction", &params).await
    }

    /// The inclusion of each transaction, in batches; fails if any read fails.
    pub async fn inclusions(&self, hashes: &[B256]) -> RpcResult<Vec<Option<Inclusion>>> {
        let params: Vec<(B256,)> = hashes.iter().map(|h| (*h,)).collect();
        self.batched::<_, Option<TransactionReceipt>>("eth_getTransactionReceipt", &params)
            .await?
            .into_iter()
            .map(|r| r.map(|r| r.as_ref().map(Inclusion::from)))
            .collect()
    }

    /// The canonical hash of each block, in batches; fails if any read fails.
    pub async fn block_hashes(&self, numbers: &[u64]) -> RpcResult<Vec<Option<B256>>> {
        let params: Vec<(BlockNumberOrTag, bool)> = numbers
            .iter()
            .map(|n| (BlockNumberOrTag::Number(*n), false))
            .collect();
        self.batched::<_, Option<alloy::rpc::types::Block>>("eth_getBlockByNumber", &params)
            .await?
            .into_iter()
            .map(|r| r.map(|b| b.map(|b| b.header.hash)))
            .collect()
    }

    /// Runs a call again on transient failures (a 5xx, a connection reset, a garbled answer),
    /// up to three more times within about a second. Every call here is safe to repeat: reads,
    /// and broadcasts of the same signed bytes.
    async fn retrying<T, F, Fut>(&self, call: F) -> RpcResult<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = RpcResult<T>>,
    {
        use backon::Retryable;
        call.retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_millis(25))
                .with_max_delay(std::time::Duration::from_millis(400))
                .with_max_times(3)
                .with_jitter(),
        )
        .when(|e: &RpcError| e.class == RpcErrorClass::Transient)
        .await
    }

    pub async fn chain_id(&self) -> RpcResult<u64> {
        self.retrying(|| self.chain_id_once()).await
    }

    pub async fn head(&self) -> RpcResult<u64> {
        self.retrying(|| self.head_once()).await
    }

    pub async fn finalized_head(&self) -> RpcResult<Option<u64>> {
        self.retrying(|| self.finalized_head_once()).await
    }

    pub async fn nonce(&self, address: Address, pending: bool) -> RpcResult<u64> {
        self.retrying(|| self.nonce_once(address, pending)).await
    }

    pub async fn native_balance(&self, address: Address) -> RpcResult<U256> {
        self.native_balance_at(address, None).await
    }

    /// `address`'s balance of the native asset as of `block` (None: the latest block).
    pub async fn native_balance_at(&self, address: Address, block: Option<u64>) -> RpcResult<U256> {
        self.retrying(|| self.native_balance_once(address, block))
            .await
    }

    pub async fn suggest_fees(&self, mode: FeeMode, min_tip: u128, cap: u128) -> RpcResult<Fees> {
        self.retrying(|| self.suggest_fees_once(mode, min_tip, cap))
            .await
    }

    pub async fn broadcast(&self, raw: &[u8]) -> RpcResult<B256> {
        self.retrying(|| self.broadcast_once(raw)).await
    }

    pub async fn inclusion(&self, hash: B256) -> RpcResult<Option<Inclusion>> {
        self.retrying(|| self.inclusion_once(hash)).await
    }

    pub async fn block_hash(&self, number: u64) -> RpcResult<Option<B256>> {
        self.retrying(|| self.block_hash_once(number)).await
    }

    /// `owner`'s balance of `token` as of `block` (None: the latest block).
    pub async fn token_balance_at(
        &self,
        token: Address,
        owner: Address,
        block: Option<u64>,
    ) -> RpcResult<U256> {
        self.retrying(|| self.token_balance_at_once(token, owner, block))
            .await
    }

    /// How much of `owner`'s `token` balance `spender` may move, at the latest block.
    pub async fn allowance(
        &self,
        token: Address,
        owner: Address,
        spender: Address,
    ) -> RpcResult<U256> {
        self.retrying(|| self.allowance_once(token, owner, spender))
            .await
    }

    /// `Transfer` logs of `tokens` in blocks `blocks`: to any of `parties` (`Incoming`), or
    /// from any of them (`Outgoing`).
    pub async fn transfer_logs(
        &self,
        tokens: &[Address],
        parties: &[Address],
        direction: TransferDirection,
        blocks: std::ops::RangeInclusive<u64>,
    ) -> RpcResult<Vec<TransferLog>> {
        self.retrying(|| self.transfer_logs_once(tokens, parties, direction, blocks.clone()))
            .await
    }

    /// The underlying provider, for tests and the dev chain.
    pub fn provider(&self) -> &DynProvider {
        &self.provider
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_never_reach_an_error_message() {
        assert_eq!(
            super::without_urls(
                "error sending request for url (https://eth.example/v2/SECRETKEY): connection refused; \
                 also http://u:p@10.0.0.1:8545/?key=K2"
            ),
            "error sending request for url (<rpc url>): connection refused; also <rpc url>"
        );
        assert_eq!(super::without_urls("no url here"), "no url here");
    }

    #[tokio::test]
    async fn a_transport_error_does_not_carry_the_endpoint_or_its_key() {
        // Nothing listens on port 1: the connection is refused.
        let client = super::EvmClient::new("http://127.0.0.1:1/v3/SECRET-API-KEY").unwrap();
        let e = client.head().await.unwrap_err();
        let text = format!("{e} {e:?}");
        assert!(
            !text.contains("SECRET-API-KEY") && !text.contains("127.0.0.1:1"),
            "{text}"
        );
        assert_eq!(e.class, super::RpcErrorClass::Transient, "{text}");
    }

    use super::*;

    #[test]
    fn transfer_calldata_round_trips() {
        let to: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap();
        let data = transfer_calldata(to, U256::from(1_500_000u64));
        assert_eq!(
            &data[..4],
            &[0xa9, 0x05, 0x9c, 0xbb],
            "transfer(address,uint256) selector"
        );
        assert_eq!(decode_transfer(&data), Some((to, U256::from(1_500_000u64))));
        assert_eq!(decode_transfer(&data[..20]), None);
        assert_eq!(decode_transfer(&[0x09, 0x5e, 0xa7, 0xb3]), None);
    }

    #[test]
    fn classifies_node_messages() {
        use RpcErrorClass::*;
        for (m, c) in [
            ("nonce too low: next nonce 5, tx nonce 4", NonceTooLow),
            ("Nonce too high", NonceTooHigh),
            ("replacement transaction underpriced", Underpriced),
            ("transaction underpriced", Underpriced),
            ("max fee per gas less than block base fee", Underpriced),
            (
                "insufficient funds for gas * price + value",
                InsufficientFunds,
            ),
            ("already known", AlreadyKnown),
            ("error sending request: connection refused", Transient),
            ("HTTP error 503 Service Unavailable", Transient),
            ("execution reverted", Unknown),
        ] {
            assert_eq!(RpcErrorClass::of_message(m), c, "{m}");
        }
    }

    #[test]
    fn bumps_by_at_least_the_policy_and_never_past_the_cap() {
        let old = Fees {
            max_fee_per_gas: 100,
            max_priority_fee_per_gas: 10,
        };
        let quiet = Fees {
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 1,
        };
        let b = old.bumped(1_250, quiet, 1_000);
        assert_eq!((b.max_fee_per_gas, b.max_priority_fee_per_gas), (113, 12));
        let busy = Fees {
            max_fee_per_gas: 500,
            max_priority_fee_per_gas: 50,
        };
        assert_eq!(old.bumped(1_250, busy, 1_000).max_fee_per_gas, 500);
        assert_eq!(old.bumped(1_250, busy, 105).max_fee_per_gas, 105);
        let tiny = Fees {
            max_fee_per_gas: 1,
            max_priority_fee_per_gas: 1,
        };
        assert_eq!(
            tiny.bumped(1_250, quiet, 10).max_fee_per_gas,
            2,
            "a bump always raises"
        );
    }
}
