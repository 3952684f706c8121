//! The journal, read-only.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::views::{Page, TransactionView};
use super::{AppState, page_limit};
use crate::api::auth::Caller;
use crate::domain::{AccountId, TxId, rfc3339_to_micros};
use crate::ledger::EntryKind;
use crate::store::{JournalFilter, StoreError};
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListJournal {
    /// Only transactions with a posting to this account.
    pub account: Option<String>,
    pub kind: Option<EntryKind>,
    /// RFC 3339, inclusive.
    pub from: Option<String>,
    /// RFC 3339, exclusive.
    pub to: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Journal transactions in journal order, with filters.
#[utoipa::path(get, tag = "ledger", path = "/v1/journal", params(ListJournal), security(("bearer" = [])),
    responses((status = 200, body = Page<TransactionView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListJournal>,
) -> ApiResult<Json<Page<TransactionView>>> {
    let limit = page_limit(q.limit)?;
    let time = |field: &'static str, v: Option<String>| {
        v.map(|t| {
            rfc3339_to_micros(&t).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_field",
                    field,
                    format!("{field} must be an RFC 3339 time"),
                )
            })
        })
        .transpose()
    };
    let account = q
        .account
        .map(|a| {
            AccountId::parse(&a).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_field",
                    "account",
                    "account must be an account id (UUID)",
                )
            })
        })
        .transpose()?;
    let after_seq = match q.cursor {
        None => 0,
        Some(c) => c
            .strip_prefix("j")
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
            })?,
    };
    let txs = state
        .store
        .list_journal(&JournalFilter {
            account,
            // A company's users see the transactions that touch their accounts.
            company: caller.company,
            kind: q.kind,
            from: time("from", q.from)?,
            to: time("to", q.to)?,
            after_seq,
            limit,
        })
        .await?;
    let next_cursor = (txs.len() as i64 == limit)
        .then(|| txs.last().map(|t| format!("j{}", t.seq)))
        .flatten();
    Ok(Json(Page {
        items: txs
            .iter()
            .map(|t| TransactionView::new(&state.ledger, t))
            .collect(),
        next_cursor,
    }))
}

/// One journal transaction.
#[utoipa::path(get, tag = "ledger", path = "/v1/journal/{id}", security(("bearer" = [])),
    responses((status = 200, body = TransactionView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<TransactionView>> {
    let not_found = || ApiError::NotFound {
        what: "transaction",
        id: id.clone(),
        field: None,
    };
    let tx_id = TxId::parse(&id).ok_or_else(not_found)?;
    let tx = match state.store.get_transaction(tx_id).await {
        Ok(tx) => tx,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    // Staff see every transaction; a company's users those touching one of their accounts.
    let mut sees = caller.company.is_none();
    for p in &tx.postings {
        if sees {
            break;
        }
        sees = state.sees_account(&caller, p.account).await?;
    }
    if !sees {
        return Err(not_found());
    }
    Ok(Json(TransactionView::new(&state.ledger, &tx)))
}
