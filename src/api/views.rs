//! What the API returns: amounts as decimal strings at the asset's scale, ids as strings,
//! times as RFC 3339 UTC.

use crate::domain::{AssetSpec, micros_to_rfc3339};
use crate::ledger::{Account, AccountKind, EntryKind, Hold, HoldState, JournalTx, Ledger};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    pub id: String,
    pub owner: String,
    /// The partner company it belongs to; absent: the operator's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    pub network: String,
    pub asset: String,
    pub decimals: u8,
    pub kind: AccountKind,
    pub allow_negative: bool,
    /// Spendable now, in token units.
    pub available: String,
    /// Reserved by open holds.
    pub held: String,
    /// available + held.
    pub total: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostingView {
    pub account: String,
    /// `available` or `held`.
    pub bucket: String,
    /// Signed decimal: negative takes from the bucket.
    pub amount: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionView {
    pub id: String,
    /// Position in the journal, gapless from 1.
    pub seq: i64,
    pub kind: EntryKind,
    pub network: String,
    pub asset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    pub created_at: String,
    pub postings: Vec<PostingView>,
    /// Hex SHA-256 chaining this transaction to the previous one.
    pub hash: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HoldView {
    pub id: String,
    pub account: String,
    pub network: String,
    pub asset: String,
    pub amount: String,
    pub released: String,
    pub voided: String,
    pub remaining: String,
    pub state: HoldState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PostedView {
    pub transaction: TransactionView,
    /// For a new hold: the hold as this transaction created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<HoldView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

fn spec(ledger: &Ledger, key: &crate::domain::AssetKey) -> AssetSpec {
    // Every stored asset is configured (start-up refuses otherwise); fall back to 0 decimals
    // rather than failing a read if config and data ever disagree.
    ledger.asset(key).cloned().unwrap_or(AssetSpec {
        key: key.clone(),
        decimals: 0,
    })
}

impl AccountView {
    pub fn new(ledger: &Ledger, a: &Account) -> Self {
        let s = spec(ledger, &a.asset);
        Self {
            id: a.id.to_string(),
            owner: a.owner.clone(),
            company: a.company.map(|c| c.to_string()),
            network: a.asset.network.clone(),
            asset: a.asset.code.clone(),
            decimals: s.decimals,
            kind: a.kind,
            allow_negative: a.allow_negative,
            available: s.format(a.available),
            held: s.format(a.held),
            total: s.format(a.available + a.held),
            created_at: micros_to_rfc3339(a.created_at),
        }
    }
}

impl TransactionView {
    pub fn new(ledger: &Ledger, tx: &JournalTx) -> Self {
        let s = spec(ledger, &tx.asset);
        Self {
            id: tx.id.to_string(),
            seq: tx.seq,
            kind: tx.kind,
            network: tx.asset.network.clone(),
            asset: tx.asset.code.clone(),
            hold_id: tx.hold.map(|h| h.to_string()),
            reference: tx.reference.clone(),
            memo: tx.memo.clone(),
            actor: tx.actor.clone(),
            created_at: micros_to_rfc3339(tx.created_at),
            postings: tx
                .postings
                .iter()
                .map(|p| PostingView {
                    account: p.account.to_string(),
                    bucket: p.bucket.as_str().to_owned(),
                    amount: s.format(p.amount),
                })
                .collect(),
            hash: hex::encode(tx.hash),
        }
    }
}

impl HoldView {
    pub fn new(ledger: &Ledger, h: &Hold) -> Self {
        let s = spec(ledger, &h.asset);
        Self {
            id: h.id.to_string(),
            account: h.account.to_string(),
            network: h.asset.network.clone(),
            asset: h.asset.code.clone(),
            amount: s.format(h.amount),
            released: s.format(h.released),
            voided: s.format(h.voided),
            remaining: s.format(h.remaining()),
            state: h.state,
            reference: h.reference.clone(),
            created_at: micros_to_rfc3339(h.created_at),
            resolved_at: h.resolved_at.map(micros_to_rfc3339),
        }
    }

    /// The hold exactly as a HOLD transaction created it, so that replaying the request returns
    /// the first answer even after the hold has since been released.
    pub fn as_created(ledger: &Ledger, tx: &JournalTx, current: &Hold) -> Self {
        let created = Hold {
            released: 0,
            voided: 0,
            state: HoldState::Open,
            resolved_at: None,
            ..current.clone()
        };
        debug_assert_eq!(tx.kind, EntryKind::Hold);
        Self::new(ledger, &created)
    }
}
