//! `treasuryd ledger verify`: recompute everything the ledger caches from the journal alone and
//! report every disagreement. It never repairs anything; a mismatch is for a human.

use super::model::*;
use crate::domain::{AccountId, AssetKey, HoldId};
use crate::store::{AccountFilter, JournalFilter, LedgerStore, StoreResult};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

const PAGE: i64 = 2_000;

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub transactions: u64,
    pub postings: u64,
    pub accounts: u64,
    pub holds: u64,
    pub head_seq: i64,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "journal: {} transactions, {} postings, head at seq {}",
            self.transactions, self.postings, self.head_seq
        )?;
        writeln!(
            f,
            "accounts checked: {}; holds checked: {}",
            self.accounts, self.holds
        )?;
        if self.problems.is_empty() {
            write!(
                f,
                "result: CLEAN (chain intact, every transaction sums to zero, balances and holds match)"
            )
        } else {
            writeln!(f, "result: {} PROBLEM(S)", self.problems.len())?;
            for p in &self.problems {
                writeln!(f, "  - {p}")?;
            }
            Ok(())
        }
    }
}

#[derive(Default)]
struct HoldTally {
    amount: i128,
    resolved: i128,
}

pub async fn verify(store: &dyn LedgerStore) -> StoreResult<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut problems = Vec::new();

    let mut accounts: HashMap<AccountId, Account> = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_accounts(&AccountFilter {
                after,
                limit: PAGE,
                ..Default::default()
            })
            .await?;
        after = page.last().map(|a| a.id);
        let done = (page.len() as i64) < PAGE;
        accounts.extend(page.into_iter().map(|a| (a.id, a)));
        if done {
            break;
        }
    }

    let mut computed: HashMap<(AccountId, Bucket), i128> = HashMap::new();
    let mut holds: BTreeMap<HoldId, HoldTally> = BTreeMap::new();
    let mut prev_hash = GENESIS_HASH;
    let mut expected_seq = 1;
    let mut after_seq = 0;
    loop {
        let page = store
            .list_journal(&JournalFilter {
                company: None,
                after_seq,
                limit: PAGE,
                ..Default::default()
            })
            .await?;
        for tx in &page {
            report.transactions += 1;
            report.postings += tx.postings.len() as u64;
            if tx.seq != expected_seq {
                problems.push(format!(
                    "journal gap: expected seq {expected_seq}, found {}",
                    tx.seq
                ));
            }
            expected_seq = tx.seq + 1;
            let hash = JournalTx::chain_hash(&prev_hash, &tx.content_digest());
            if hash != tx.hash {
                problems.push(format!(
                    "hash chain broken at seq {} (tx {})",
                    tx.seq, tx.id
                ));
            }
            prev_hash = tx.hash;
            check_transaction(tx, &accounts, &mut problems);
            for p in &tx.postings {
                *computed.entry((p.account, p.bucket)).or_default() += p.amount;
            }
            if let Some(h) = tx.hold {
                let held_delta: i128 = tx
                    .postings
                    .iter()
                    .filter(|p| p.bucket == Bucket::Held)
                    .map(|p| p.amount)
                    .sum();
                let tally = holds.entry(h).or_default();
                if tx.kind == EntryKind::Hold {
                    tally.amount += held_delta;
                } else {
                    tally.resolved -= held_delta;
                }
            }
        }
        after_seq = page.last().map_or(after_seq, |t| t.seq);
        if (page.len() as i64) < PAGE {
            break;
        }
    }

    let (head_seq, head_hash) = store.journal_head().await?;
    report.head_seq = head_seq;
    if head_seq != expected_seq - 1 {
        problems.push(format!(
            "journal head says seq {head_seq}, journal ends at {}",
            expected_seq - 1
        ));
    }
    if head_hash != prev_hash {
        problems.push("journal head hash does not match the last transaction".into());
    }

    let mut open_by_account: HashMap<AccountId, i128> = HashMap::new();
    let mut after = None;
    loop {
        let page = store.list_holds(after, PAGE).await?;
        for h in &page {
            report.holds += 1;
            let tally = holds.remove(&h.id).unwrap_or_default();
            if tally.amount != h.amount || tally.resolved != h.released + h.voided {
                problems.push(format!(
                    "hold {}: journal says amount {} resolved {}, row says amount {} resolved {}",
                    h.id,
                    tally.amount,
                    tally.resolved,
                    h.amount,
                    h.released + h.voided
                ));
            }
            if h.remaining() < 0 || (h.state == HoldState::Resolved) != (h.remaining() == 0) {
                problems.push(format!(
                    "hold {} is {:?} with {} remaining",
                    h.id,
                    h.state,
                    h.remaining()
                ));
            }
            *open_by_account.entry(h.account).or_default() += h.remaining();
        }
        after = page.last().map(|h| h.id);
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    for id in holds.keys() {
        problems.push(format!("hold {id} appears in the journal but has no row"));
    }

    for a in accounts.values() {
        report.accounts += 1;
        let available = computed
            .get(&(a.id, Bucket::Available))
            .copied()
            .unwrap_or(0);
        let held = computed.get(&(a.id, Bucket::Held)).copied().unwrap_or(0);
        if available != a.available || held != a.held {
            problems.push(format!(
                "account {}: journal gives available {available} held {held}, cached available {} held {}",
                a.id, a.available, a.held
            ));
        }
        if a.available < 0 && !a.allow_negative {
            problems.push(format!(
                "account {} is negative ({}) without permission",
                a.id, a.available
            ));
        }
        let open = open_by_account.get(&a.id).copied().unwrap_or(0);
        if open != a.held {
            problems.push(format!(
                "account {}: open holds total {open}, held balance {}",
                a.id, a.held
            ));
        }
    }
    report.problems = problems;
    Ok(report)
}

fn check_transaction(
    tx: &JournalTx,
    accounts: &HashMap<AccountId, Account>,
    problems: &mut Vec<String>,
) {
    let mut sums: BTreeMap<&AssetKey, i128> = BTreeMap::new();
    for p in &tx.postings {
        match accounts.get(&p.account) {
            Some(a) => *sums.entry(&a.asset).or_default() += p.amount,
            None => problems.push(format!(
                "seq {}: posting to unknown account {}",
                tx.seq, p.account
            )),
        }
    }
    for (asset, sum) in sums {
        if sum != 0 {
            problems.push(format!(
                "seq {}: postings in {asset} sum to {sum}, not zero",
                tx.seq
            ));
        }
        if asset != &tx.asset {
            problems.push(format!(
                "seq {}: posting in {asset} inside a {} transaction",
                tx.seq, tx.asset
            ));
        }
    }
    if tx.postings.is_empty() {
        problems.push(format!("seq {}: transaction without postings", tx.seq));
    }
}
