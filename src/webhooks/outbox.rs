//! The outbox: events written by database triggers in the same transaction as the change they
//! report (see migration 0013), rendered once into the JSON body partners receive, and fanned
//! out to the endpoints subscribed when it is rendered.
//!
//! Body: `{"id", "type", "created_at", "data"}`; `data` holds the subject as it was created
//! (payout, deal, deposit or network) and the timeline line that caused the event. What
//! changes over a subject's life (its state, chunks, transactions) is read with the API
//! (`GET /v1/payouts/{id}`, `GET /v1/deals/{id}`): the event type says what happened.
pub use crate::domain::webhooks::{
    AttemptOutcome, Backlog, Delivery, DeliveryState, EndpointBacklog, OutboxEvent,
};

use crate::domain::micros_to_rfc3339;
use crate::ledger::{AccountKind, Ledger};
use crate::store::{PayoutStore, Store, StoreError};
use serde_json::{Value, json};

crate::domain::stored_as_text!(DeliveryState);

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "dead" => Some(DeliveryState::Dead),
            _ => None,
        }
    }
}

/// Whether an endpoint subscribed to `event_type` (`type`, `family.*` or `*`).
pub fn subscribed(subscriptions: &[String], event_type: &str) -> bool {
    subscriptions.iter().any(|s| {
        s == "*"
            || s == event_type
            || s.strip_suffix(".*").is_some_and(|family| {
                event_type
                    .strip_prefix(family)
                    .is_some_and(|rest| rest.starts_with('.'))
            })
    })
}

/// The payouts a batch of events is about, read in one call (`payouts_by_id`) rather than one
/// full payout (chunks, events, attempts) per event.
pub async fn payouts_of(
    payouts: &dyn PayoutStore,
    events: &[OutboxEvent],
) -> Result<std::collections::HashMap<crate::domain::PayoutId, crate::payouts::Payout>, StoreError>
{
    let ids: Vec<crate::domain::PayoutId> = events
        .iter()
        .filter(|e| e.event_type.starts_with("payout."))
        .filter_map(|e| e.subject_id.map(crate::domain::PayoutId))
        .collect::<std::collections::HashSet<_>>()
        .into_iter()
        .collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(payouts
        .payouts_by_id(&ids)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect())
}

/// The companies `event` concerns, whose endpoints receive it: a payout's or a deposit's
/// account's company, a deal's buyer's and seller's, an EOD session's two members. An event of
/// no company (safe-mode, the operator's own accounts) goes to staff endpoints only.
pub async fn companies(
    store: &dyn Store,
    payouts: &std::collections::HashMap<crate::domain::PayoutId, crate::payouts::Payout>,
    event: &OutboxEvent,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    let Some(subject) = event.subject_id else {
        return Ok(Vec::new());
    };
    let accounts = match event.event_type.split('.').next().unwrap_or_default() {
        "payout" => match payouts.get(&crate::domain::PayoutId(subject)) {
            Some(p) => vec![p.account],
            None => vec![
                store
                    .get_payout(crate::domain::PayoutId(subject))
                    .await?
                    .account,
            ],
        },
        "deal" => {
            let d = store.get_deal(crate::domain::DealId(subject)).await?;
            vec![d.buyer, d.seller]
        }
        "deposit" => store
            .get_transaction(crate::domain::TxId(subject))
            .await?
            .postings
            .iter()
            .filter(|p| p.amount > 0)
            .map(|p| p.account)
            .collect(),
        "eod" => {
            let s = store.trust_session(subject).await?;
            let pair = store.trust_pairs(Some(s.pair)).await?;
            return Ok(pair
                .iter()
                .flat_map(|p| [p.company_a, p.company_b])
                .collect());
        }
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for account in accounts {
        if let Some(c) = store.get_account(account).await?.company
            && !out.contains(&c)
        {
            out.push(c);
        }
    }
    Ok(out)
}

/// Whether `endpoint` receives an event concerning `companies`: a staff endpoint every event, a
/// company's only its own.
pub fn concerns(endpoint: Option<uuid::Uuid>, companies: &[uuid::Uuid]) -> bool {
    endpoint.is_none_or(|c| companies.contains(&c))
}

/// The body partners receive for `event`: the subject read from the (append-only or
/// write-once) rows it was created from, amounts in the asset's units. `payouts` holds the
/// batch's payouts (`payouts_of`).
pub async fn render(
    ledger: &Ledger,
    store: &dyn Store,
    payouts: &std::collections::HashMap<crate::domain::PayoutId, crate::payouts::Payout>,
    event: &OutboxEvent,
) -> Result<String, StoreError> {
    let family = event.event_type.split('.').next().unwrap_or_default();
    let subject = || {
        event
            .subject_id
            .ok_or_else(|| StoreError::Invariant(format!("event {} has no subject", event.id)))
    };
    let amount = |asset: &crate::domain::AssetKey, units: i128| match ledger.asset(asset) {
        Some(spec) => spec.format(units),
        None => units.to_string(),
    };
    let data = match family {
        "payout" => {
            let p = payouts
                .get(&crate::domain::PayoutId(subject()?))
                .ok_or(StoreError::NotFound)?;
            json!({
                "payout": {
                    "id": p.id.to_string(),
                    "account": p.account.to_string(),
                    "network": p.asset.network,
                    "asset": p.asset.code,
                    "destination": p.destination,
                    "amount": amount(&p.asset, p.amount),
                    "reference": p.reference,
                    "metadata": p.metadata,
                    "created_at": micros_to_rfc3339(p.created_at),
                },
                "detail": event.detail,
            })
        }
        "deal" => {
            let d = store.get_deal(crate::domain::DealId(subject()?)).await?;
            json!({
                "deal": {
                    "id": d.id.to_string(),
                    "template": d.template.id,
                    "country": d.template.country,
                    "category": d.template.category,
                    "buyer": d.buyer.to_string(),
                    "seller": d.seller.to_string(),
                    "network": d.asset.network,
                    "asset": d.asset.code,
                    "amount": amount(&d.asset, d.amount),
                    "immediate": amount(&d.asset, d.immediate),
                    "holdback": amount(&d.asset, d.holdback),
                    "reference": d.reference,
                    "created_at": micros_to_rfc3339(d.created_at),
                },
                "actor": event.actor,
                "detail": event.detail,
            })
        }
        "deposit" => {
            let tx = store
                .get_transaction(crate::domain::TxId(subject()?))
                .await?;
            let mut credited = None;
            for posting in tx.postings.iter().filter(|p| p.amount > 0) {
                let account = store.get_account(posting.account).await?;
                if account.kind == AccountKind::Partner {
                    credited = Some((account.id, posting.amount));
                }
            }
            let (account, units) = credited.ok_or_else(|| {
                StoreError::Invariant(format!("deposit {} credits no partner account", tx.id))
            })?;
            // Chain deposits are keyed `deposit:{chain id}:{tx hash}:{log index}`.
            let chain = tx
                .idempotency_key
                .strip_prefix("deposit:")
                .and_then(|rest| {
                    let mut parts = rest.split(':');
                    Some((parts.next()?, parts.next()?, parts.next()?))
                })
                .and_then(|(_, hash, log)| {
                    Some(json!({"tx_hash": hash, "log_index": log.parse::<u64>().ok()?}))
                });
            json!({
                "deposit": {
                    "transaction": tx.id.to_string(),
                    "account": account.to_string(),
                    "network": tx.asset.network,
                    "asset": tx.asset.code,
                    "amount": amount(&tx.asset, units),
                    "reference": tx.reference,
                    "chain": chain,
                    "journal_seq": tx.seq,
                    "created_at": micros_to_rfc3339(tx.created_at),
                },
            })
        }
        "eod" => {
            let s = store.trust_session(subject()?).await?;
            let pair = store
                .trust_pairs(Some(s.pair))
                .await?
                .into_iter()
                .next()
                .ok_or(StoreError::NotFound)?;
            let debtor = s.netted.debtor();
            json!({
                "session": {
                    "id": s.id.to_string(),
                    "pair": pair.id.to_string(),
                    "company_a": pair.company_a.to_string(),
                    "company_b": pair.company_b.to_string(),
                    "network": pair.asset.network,
                    "asset": pair.asset.code,
                    "business_date": s.business_date.to_string(),
                    "cutoff_at": micros_to_rfc3339(s.cutoff_at),
                    "obligations": s.netted.obligations,
                    "gross_a_to_b": amount(&pair.asset, s.netted.gross_a_to_b),
                    "gross_b_to_a": amount(&pair.asset, s.netted.gross_b_to_a),
                    "debtor": debtor.map(|(d, _)| pair.company(d).to_string()),
                    "net_amount": amount(&pair.asset, debtor.map_or(0, |(_, a)| a)),
                },
                // What the session came to is read with GET /v1/trust/sessions/{id}; the
                // event type says which step this was.
                "actor": event.actor,
            })
        }
        "safe_mode" => json!({
            "network": event.network,
            "reason": event.detail,
            "actor": event.actor,
            "evidence": event
                .evidence
                .as_deref()
                .map(serde_json::from_str::<Value>)
                .transpose()
                .map_err(|e| StoreError::Invariant(format!("event {} evidence: {e}", event.id)))?,
        }),
        other => {
            return Err(StoreError::Invariant(format!(
                "event {} has an unknown family {other:?}",
                event.id
            )));
        }
    };
    let body = json!({
        "id": event.id.to_string(),
        "type": event.event_type,
        "created_at": micros_to_rfc3339(event.occurred_at),
        "data": data,
    });
    serde_json::to_string(&body).map_err(|e| StoreError::Invariant(format!("event body: {e}")))
}

/// Parses a rendered body back (tests and the API's event view).
pub fn body_json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_select_types_families_and_all() {
        let subs = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(subscribed(&subs(&["*"]), "deal.settled"));
        assert!(subscribed(&subs(&["payout.*"]), "payout.confirmed"));
        assert!(!subscribed(&subs(&["payout.*"]), "payouts.x"));
        assert!(!subscribed(&subs(&["payout.*"]), "deal.settled"));
        assert!(subscribed(&subs(&["deal.funded"]), "deal.funded"));
        assert!(!subscribed(&subs(&["deal.funded"]), "deal.settled"));
        assert!(!subscribed(&[], "deal.settled"));
    }

    #[test]
    fn delivery_states_round_trip() {
        for s in [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ] {
            assert_eq!(DeliveryState::parse(s.as_str()), Some(s));
        }
        assert_eq!(DeliveryState::parse("lost"), None);
    }
}
