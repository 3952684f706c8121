//! Finding TRC-20 deposits: Transfer logs of the watched tokens to the watched addresses, read
//! block by block from solidified blocks with `gettransactioninfobyblocknum` (which any full node
//! serves; TronGrid's TRC-20 history endpoint is not needed). Failed transactions are skipped
//! (their logs never took effect). The ledger credits each inflow once under `key()`.

use super::TronAddress;
use super::client::{TronClient, TronError, TxInfo};
use alloy::primitives::U256;
use std::collections::HashSet;

/// `keccak256("Transfer(address,address,uint256)")`.
pub const TRANSFER_TOPIC: [u8; 32] = [
    0xdd, 0xf2, 0x52, 0xad, 0x1b, 0xe2, 0xc8, 0x9b, 0x69, 0xc2, 0xb0, 0x68, 0xfc, 0x37, 0x8d, 0xaa,
    0x95, 0x2b, 0xa7, 0xf1, 0x63, 0xc4, 0xa1, 0x16, 0x28, 0xf5, 0x5a, 0x4d, 0xf5, 0x23, 0xb3, 0xef,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflow {
    pub txid: [u8; 32],
    /// The log's position in its transaction.
    pub log_index: usize,
    pub block: u64,
    pub token: TronAddress,
    pub from: TronAddress,
    pub to: TronAddress,
    pub amount: U256,
}

impl Inflow {
    /// The ledger idempotency key on `network` with `prefix` (`deposit`, `wallet-inflow`): one
    /// credit per (transaction, log).
    pub fn key(&self, prefix: &str, network: &str) -> String {
        format!(
            "{prefix}:{network}:{}:{}",
            hex::encode(self.txid),
            self.log_index
        )
    }
}

fn word_address(word: &[u8; 32]) -> TronAddress {
    let mut bytes = [0u8; 20];
    bytes.copy_from_slice(&word[12..]);
    TronAddress::from_evm(bytes)
}

/// The Transfer logs of `tokens` in an executed transaction of `block`; none if it failed
/// (its logs never took effect).
pub fn token_transfers(tx: &TxInfo, block: u64, tokens: &HashSet<TronAddress>) -> Vec<Inflow> {
    if tx.result != "SUCCESS" {
        return Vec::new();
    }
    tx.logs
        .iter()
        .enumerate()
        .filter_map(|(log_index, log)| {
            let token = TronAddress::from_evm(log.address);
            if !tokens.contains(&token)
                || log.topics.len() != 3
                || log.topics[0] != TRANSFER_TOPIC
                || log.data.len() != 32
            {
                return None;
            }
            Some(Inflow {
                txid: tx.txid,
                log_index,
                block,
                token,
                from: word_address(&log.topics[1]),
                to: word_address(&log.topics[2]),
                amount: U256::from_be_slice(&log.data),
            })
        })
        .collect()
}

/// Inflows to `watched` in blocks `from..=to`. The caller keeps `to` at or below the
/// solidified head.
pub async fn scan(
    client: &TronClient,
    from: u64,
    to: u64,
    tokens: &HashSet<TronAddress>,
    watched: &HashSet<TronAddress>,
) -> Result<Vec<Inflow>, TronError> {
    let mut out = Vec::new();
    for block in from..=to {
        for tx in client.block_transactions(block).await? {
            out.extend(
                token_transfers(&tx, block, tokens)
                    .into_iter()
                    .filter(|t| watched.contains(&t.to)),
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_transfer_topic_is_the_event_signature_hash() {
        assert_eq!(
            alloy::primitives::keccak256("Transfer(address,address,uint256)").0,
            super::TRANSFER_TOPIC
        );
    }
}
