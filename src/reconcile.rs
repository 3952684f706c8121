//! Reconciliation of hot wallets with the ledger (PRODUCT.md invariant 5): what each wallet
//! holds on chain, token by token and in the native coin, against what the ledger says it
//! holds.
//!
//! The ledger side of a wallet is its custody account per token (minus what the wallet holds:
//! opening balance and inflows in, payouts out) and its gas account in the native coin
//! (opening balance and recorded top-ups in, FEE out). Both sides are compared at the last
//! block the deposit watcher has read, so every inflow up to it is posted. The ledger runs
//! ahead of that block on both ends, because settlement follows the head and the watcher
//! trails it: chunks mined by then but not settled yet are taken off the ledger side
//! (`settling`), and chunks settled from a transaction mined after it, like the gas of a
//! wallet's own calls (approvals) mined after it, are put back (`posted_ahead`). Chunks not
//! known to be mined bound how far the chain may be below the ledger meanwhile (`pending`). Anything else is a difference someone must explain.

use crate::chains::evm::EvmClient;
use crate::domain::{AssetKey, format_units};
use crate::ledger::{AccountKind, WALLET_OWNER_PREFIX};
use crate::payouts::{AttemptKind, ChunkState};
use crate::store::{CustodySnapshot, CustodyStore};
use alloy::primitives::Address;
use serde::Serialize;

/// A token or native coin of a network, as reconciliation needs it.
#[derive(Debug, Clone)]
pub struct ReconciledAsset {
    pub key: AssetKey,
    pub decimals: u8,
    /// The ERC-20 contract; None for the native coin.
    pub contract: Option<Address>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Chain and ledger agree exactly.
    Ok,
    /// The chain is below the ledger by no more than transfers not yet known to be mined.
    InFlight,
    /// More native coin on chain than the ledger knows of: a gas top-up not yet recorded as a
    /// deposit to the wallet's gas account.
    UnrecordedInflow,
    /// A difference nothing in flight explains.
    Mismatch,
    /// The daemon has not posted this wallet's opening balance yet (it does so on the
    /// watcher's first pass as owner): there is nothing to compare with.
    NotOpened,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::InFlight => "in_flight",
            Verdict::UnrecordedInflow => "unrecorded_inflow",
            Verdict::Mismatch => "mismatch",
            Verdict::NotOpened => "not_opened",
        }
    }
}

/// One wallet and asset. Amounts are base units; `difference` is
/// chain − (ledger − settling + posted_ahead).
#[derive(Debug, Clone)]
pub struct Line {
    pub network: String,
    pub wallet: String,
    pub asset: String,
    pub decimals: u8,
    pub block: u64,
    pub chain: i128,
    pub ledger: i128,
    /// Mined at or before `block` but not in the ledger yet.
    pub settling: i128,
    /// In the ledger from a transaction mined after `block`: still in the wallet at `block`.
    pub posted_ahead: i128,
    /// Signed or broadcast and not known to be mined: may have left by `block`.
    pub pending: i128,
    pub difference: i128,
    pub verdict: Verdict,
}

impl Line {
    /// `units` in the asset's display form, e.g. "-12.500000".
    pub fn display(&self, units: i128) -> String {
        format_units(units, self.decimals)
    }
}

/// Amounts as decimal strings in asset units, as the API writes them.
impl Serialize for Line {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Line", 11)?;
        s.serialize_field("network", &self.network)?;
        s.serialize_field("wallet", &self.wallet)?;
        s.serialize_field("asset", &self.asset)?;
        s.serialize_field("block", &self.block)?;
        s.serialize_field("chain", &self.display(self.chain))?;
        s.serialize_field("ledger", &self.display(self.ledger))?;
        s.serialize_field("settling", &self.display(self.settling))?;
        s.serialize_field("posted_ahead", &self.display(self.posted_ahead))?;
        s.serialize_field("pending", &self.display(self.pending))?;
        s.serialize_field("difference", &self.display(self.difference))?;
        s.serialize_field("verdict", &self.verdict)?;
        s.end()
    }
}

/// Compares each of `wallets` on `network` in `assets` at the last block the watcher has read.
/// Err when the watcher has not read a block yet or the chain cannot be read.
pub async fn reconcile_network(
    store: &dyn CustodyStore,
    client: &EvmClient,
    network: &str,
    wallets: &[Address],
    assets: &[ReconciledAsset],
) -> anyhow::Result<Vec<Line>> {
    // Openings first: one recorded after this read is posted before the snapshot below, so
    // a wallet counted as opened always has its opening in the snapshot.
    let opened = store.wallet_openings(network).await?;
    let mut snapshot = store.custody_snapshot(network).await?;
    let Some(block) = snapshot.next_block.and_then(|n| n.checked_sub(1)) else {
        anyhow::bail!("network {network}: the deposit watcher has not read a block yet");
    };
    // Where the chain has each wallet call whose gas is posted (a few per wallet: approvals).
    for call in &mut snapshot.wallet_call_fees {
        call.mined_block = client
            .inclusion(call.hash.into())
            .await?
            .map(|i| i.block_number);
    }
    let mut lines = Vec::with_capacity(wallets.len() * assets.len());
    for wallet in wallets {
        let address = wallet.to_checksum(None);
        for asset in assets {
            let chain = match asset.contract {
                Some(token) => client.token_balance_at(token, *wallet, Some(block)).await?,
                None => client.native_balance_at(*wallet, Some(block)).await?,
            };
            let chain = i128::try_from(chain)
                .map_err(|_| anyhow::anyhow!("{address} holds more {} than fits", asset.key))?;
            let mut line = compare(&snapshot, &address, asset, block, chain);
            if !opened.contains_key(&(address.clone(), asset.key.code.clone())) {
                line.verdict = Verdict::NotOpened;
            }
            lines.push(line);
        }
    }
    Ok(lines)
}

/// One line from the database snapshot and the chain balance at `block`.
fn compare(
    snapshot: &CustodySnapshot,
    wallet: &str,
    asset: &ReconciledAsset,
    block: u64,
    chain: i128,
) -> Line {
    let owner = format!("{WALLET_OWNER_PREFIX}{wallet}");
    let native = asset.contract.is_none();
    let (kind, sign) = if native {
        (AccountKind::Operating, 1)
    } else {
        // The custody account is the outside world's side: minus what the wallet holds.
        (AccountKind::External, -1)
    };
    let ledger = snapshot
        .accounts
        .iter()
        .find(|a| a.owner == owner && a.asset == asset.key && a.kind == kind)
        .map_or(0, |a| sign * a.available);
    let (mut settling, mut pending) = (0i128, 0i128);
    for f in snapshot.in_flight.iter().filter(|f| f.wallet == wallet) {
        let mined = f.mined.filter(|m| m.block <= block);
        if native {
            match mined {
                Some(m) if !snapshot.fee_posted.contains(&f.chunk) => {
                    settling += i128::try_from(m.fee_wei).unwrap_or(i128::MAX)
                }
                Some(_) => {}
                // Not known to be mined: at most the dearest attempt's gas may be gone.
                None if f.mined.is_none() => {
                    pending += f
                        .attempts
                        .iter()
                        .map(|a| {
                            let most = a.max_fee_per_gas.saturating_mul(u128::from(a.gas_limit));
                            // A batch's gas is shared out among its chunks.
                            a.batch.map_or(most, |b| b.share_of(most))
                        })
                        .max()
                        .map_or(0, |w| i128::try_from(w).unwrap_or(i128::MAX))
                }
                None => {}
            }
        } else if f.asset == asset.key {
            match mined {
                Some(m) => {
                    let transfer = f
                        .attempts
                        .iter()
                        .find(|a| a.hash == m.hash)
                        .is_none_or(|a| a.kind == AttemptKind::Transfer);
                    if m.success && transfer {
                        settling += f.amount;
                    }
                }
                None if f.mined.is_none() => pending += f.amount,
                None => {}
            }
        }
    }
    let mut posted_ahead = 0i128;
    for f in snapshot.settled_ahead.iter().filter(|f| f.wallet == wallet) {
        let Some(m) = f.mined.filter(|m| m.block > block) else {
            continue;
        };
        if native {
            if snapshot.fee_posted.contains(&f.chunk) {
                posted_ahead += i128::try_from(m.fee_wei).unwrap_or(i128::MAX);
            }
        } else if f.asset == asset.key && f.state == ChunkState::Confirmed {
            posted_ahead += f.amount;
        }
    }
    // A wallet call's FEE is posted once it is mined, which may be after `block` (or its
    // block may have been reorganised away since): in the ledger, not on that block.
    if native {
        posted_ahead += snapshot
            .wallet_call_fees
            .iter()
            .filter(|c| c.wallet == wallet && c.mined_block.is_none_or(|b| b > block))
            .map(|c| c.fee)
            .sum::<i128>();
    }
    // Mined after `block` but not final: its FEE may be posted already (a failed transfer or
    // a cancel is closed after its FEE).
    if native {
        for f in snapshot.in_flight.iter().filter(|f| f.wallet == wallet) {
            if let Some(m) = f.mined.filter(|m| m.block > block)
                && snapshot.fee_posted.contains(&f.chunk)
            {
                posted_ahead += i128::try_from(m.fee_wei).unwrap_or(i128::MAX);
            }
        }
    }
    let difference = chain - (ledger - settling + posted_ahead);
    let verdict = match difference {
        0 => Verdict::Ok,
        d if d < 0 && -d <= pending => Verdict::InFlight,
        d if d > 0 && native => Verdict::UnrecordedInflow,
        _ => Verdict::Mismatch,
    };
    Line {
        network: asset.key.network.clone(),
        wallet: wallet.to_owned(),
        asset: asset.key.code.clone(),
        decimals: asset.decimals,
        block,
        chain,
        ledger,
        settling,
        posted_ahead,
        pending,
        difference,
        verdict,
    }
}

/// The assets of `network` as configured: its tokens, then its native coin.
pub fn configured_assets(network: &crate::config::NetworkConfig) -> Vec<ReconciledAsset> {
    let mut assets: Vec<ReconciledAsset> = network
        .tokens
        .iter()
        .filter_map(|t| {
            Some(ReconciledAsset {
                key: AssetKey::new(network.name.clone(), t.code.clone()),
                decimals: t.decimals,
                contract: Some(Address::parse_checksummed(&t.address, None).ok()?),
            })
        })
        .collect();
    let native = network.native();
    assets.push(ReconciledAsset {
        key: AssetKey::new(network.name.clone(), native.code),
        decimals: native.decimals,
        contract: None,
    });
    assets
}

/// A fixed-width table of `lines` for people.
pub fn render(lines: &[Line]) -> String {
    let mut out = format!(
        "{:<10} {:<42} {:<6} {:>9} {:>24} {:>24} {:>20} {:>20} {:>20} {:>20}  verdict\n",
        "network",
        "wallet",
        "asset",
        "block",
        "chain",
        "ledger",
        "settling",
        "posted_ahead",
        "pending",
        "difference"
    );
    for l in lines {
        out.push_str(&format!(
            "{:<10} {:<42} {:<6} {:>9} {:>24} {:>24} {:>20} {:>20} {:>20} {:>20}  {}\n",
            l.network,
            l.wallet,
            l.asset,
            l.block,
            l.display(l.chain),
            l.display(l.ledger),
            l.display(l.settling),
            l.display(l.posted_ahead),
            l.display(l.pending),
            l.display(l.difference),
            l.verdict.as_str()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, ChunkId, HoldId, PayoutId};
    use crate::ledger::Account;
    use crate::payouts::{Attempt, ChunkState, InFlight, Mined};

    const WALLET: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    fn usdt() -> ReconciledAsset {
        ReconciledAsset {
            key: AssetKey::new("ethereum", "USDT"),
            decimals: 6,
            contract: Some(Address::repeat_byte(0x11)),
        }
    }

    fn eth() -> ReconciledAsset {
        ReconciledAsset {
            key: AssetKey::new("ethereum", "ETH"),
            decimals: 18,
            contract: None,
        }
    }

    fn account(asset: &ReconciledAsset, kind: AccountKind, available: i128) -> Account {
        Account {
            id: AccountId::new(),
            owner: format!("{WALLET_OWNER_PREFIX}{WALLET}"),
            company: None,
            asset: asset.key.clone(),
            kind,
            allow_negative: true,
            available,
            held: 0,
            created_at: 0,
        }
    }

    /// A USDT chunk of `amount` from the wallet, mined at `mined` (successfully) or not.
    fn chunk(amount: i128, mined: Option<u64>, kind: AttemptKind) -> InFlight {
        let attempt = Attempt {
            id: uuid::Uuid::new_v4(),
            kind,
            hash: [7; 32],
            raw: vec![],
            nonce: 0,
            max_fee_per_gas: 2_000,
            max_priority_fee_per_gas: 1,
            gas_limit: 100,
            created_at: 0,
            broadcast_at: Some(0),
            head_at_broadcast: Some(0),
            batch: None,
        };
        InFlight {
            chunk: ChunkId::new(),
            payout: PayoutId::new(),
            hold: HoldId::new(),
            asset: usdt().key,
            destination: String::new(),
            amount,
            state: if mined.is_some() {
                ChunkState::Mined
            } else {
                ChunkState::Broadcast
            },
            wallet: WALLET.into(),
            nonce: 0,
            mined: mined.map(|block| Mined {
                hash: [7; 32],
                block,
                block_hash: [0; 32],
                success: true,
                fee_wei: 50_000,
            }),
            cancel_requested: false,
            attempts: vec![attempt],
        }
    }

    fn snapshot(in_flight: Vec<InFlight>) -> CustodySnapshot {
        CustodySnapshot {
            next_block: Some(101),
            accounts: vec![
                // The wallet holds 1,000 USDT and 1 ETH as the ledger sees it.
                account(&usdt(), AccountKind::External, -1_000_000_000),
                account(&eth(), AccountKind::Operating, 1_000_000),
            ],
            in_flight,
            settled_ahead: Vec::new(),
            fee_posted: Default::default(),
            wallet_call_fees: Vec::new(),
        }
    }

    #[test]
    fn a_chunk_mined_by_the_block_but_not_settled_is_taken_off_the_ledger() {
        let s = snapshot(vec![chunk(5_000_000, Some(100), AttemptKind::Transfer)]);
        let l = compare(&s, WALLET, &usdt(), 100, 995_000_000);
        assert_eq!(
            (l.settling, l.difference, l.verdict),
            (5_000_000, 0, Verdict::Ok)
        );
        // Its gas too, until the FEE is posted.
        let l = compare(&s, WALLET, &eth(), 100, 950_000);
        assert_eq!((l.settling, l.verdict), (50_000, Verdict::Ok));
        let mut posted = s.clone();
        posted.fee_posted.insert(s.in_flight[0].chunk);
        let l = compare(&posted, WALLET, &eth(), 100, 950_000);
        assert_eq!((l.difference, l.verdict), (-50_000, Verdict::Mismatch));
    }

    #[test]
    fn an_approvals_gas_counts_from_the_block_that_mined_it() {
        let mut s = snapshot(Vec::new());
        s.wallet_call_fees.push(crate::store::WalletCallFee {
            wallet: WALLET.into(),
            hash: [9; 32],
            fee: 30_000,
            mined_block: Some(101),
        });
        // The ledger posted its FEE; the block compared does not have it yet.
        s.accounts[1].available -= 30_000;
        let l = compare(&s, WALLET, &eth(), 100, 1_000_000);
        assert_eq!((l.posted_ahead, l.verdict), (30_000, Verdict::Ok));
        // Mined by the block: the chain has it as well.
        s.wallet_call_fees[0].mined_block = Some(100);
        let l = compare(&s, WALLET, &eth(), 100, 970_000);
        assert_eq!((l.posted_ahead, l.verdict), (0, Verdict::Ok));
        let l = compare(&s, WALLET, &eth(), 100, 1_000_000);
        assert_eq!(l.verdict, Verdict::UnrecordedInflow);
    }

    #[test]
    fn a_chunk_mined_after_the_block_has_not_left_yet() {
        let s = snapshot(vec![chunk(5_000_000, Some(101), AttemptKind::Transfer)]);
        let l = compare(&s, WALLET, &usdt(), 100, 1_000_000_000);
        assert_eq!((l.settling, l.pending, l.verdict), (0, 0, Verdict::Ok));
    }

    #[test]
    fn a_broadcast_chunk_explains_at_most_its_amount() {
        let s = snapshot(vec![chunk(5_000_000, None, AttemptKind::Transfer)]);
        let l = compare(&s, WALLET, &usdt(), 100, 995_000_000);
        assert_eq!((l.pending, l.verdict), (5_000_000, Verdict::InFlight));
        let l = compare(&s, WALLET, &usdt(), 100, 994_999_999);
        assert_eq!((l.difference, l.verdict), (-5_000_001, Verdict::Mismatch));
        // Gas: at most the dearest attempt's cap.
        let l = compare(&s, WALLET, &eth(), 100, 1_000_000 - 200_000);
        assert_eq!((l.pending, l.verdict), (200_000, Verdict::InFlight));
    }

    #[test]
    fn a_mined_cancel_moves_no_tokens() {
        let s = snapshot(vec![chunk(5_000_000, Some(100), AttemptKind::Cancel)]);
        let l = compare(&s, WALLET, &usdt(), 100, 1_000_000_000);
        assert_eq!((l.settling, l.verdict), (0, Verdict::Ok));
    }

    #[test]
    fn more_on_chain_than_the_ledger_knows() {
        let s = snapshot(vec![]);
        // Tokens: nothing may appear unrecorded.
        let l = compare(&s, WALLET, &usdt(), 100, 1_000_000_001);
        assert_eq!((l.difference, l.verdict), (1, Verdict::Mismatch));
        // Native: a top-up treasury has not recorded yet.
        let l = compare(&s, WALLET, &eth(), 100, 3_000_000);
        assert_eq!(l.verdict, Verdict::UnrecordedInflow);
        assert_eq!(l.display(l.difference), "0.000000000002000000");
    }

    #[test]
    fn a_chunk_settled_from_a_later_block_is_still_in_the_wallet_at_the_block() {
        // Settlement follows the head; the comparison reads the watcher's older block 100.
        let mut paid = chunk(5_000_000, Some(103), AttemptKind::Transfer);
        paid.state = ChunkState::Confirmed;
        let mut s = snapshot(vec![]);
        s.accounts[0].available = -995_000_000;
        s.accounts[1].available = 950_000;
        s.fee_posted.insert(paid.chunk);
        s.settled_ahead.push(paid.clone());
        let l = compare(&s, WALLET, &usdt(), 100, 1_000_000_000);
        assert_eq!(
            (l.posted_ahead, l.difference, l.verdict),
            (5_000_000, 0, Verdict::Ok)
        );
        let l = compare(&s, WALLET, &eth(), 100, 1_000_000);
        assert_eq!((l.posted_ahead, l.verdict), (50_000, Verdict::Ok));
        // Without it the chain holds more than the ledger: the false mismatch of issue 17.
        s.settled_ahead.clear();
        let l = compare(&s, WALLET, &usdt(), 100, 1_000_000_000);
        assert_eq!((l.difference, l.verdict), (5_000_000, Verdict::Mismatch));
        // A failed transfer moved no tokens, only gas.
        paid.state = ChunkState::Failed;
        s.settled_ahead.push(paid);
        let l = compare(&s, WALLET, &usdt(), 100, 995_000_000);
        assert_eq!((l.posted_ahead, l.verdict), (0, Verdict::Ok));
    }
}
