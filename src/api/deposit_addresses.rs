//! Deposit addresses of partner accounts: token transfers to them, at the network's
//! confirmation depth, are credited to the account as DEPOSIT, once each.

use super::accounts::load_account;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::store::DepositAddress;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct DepositAddressView {
    pub network: String,
    pub address: String,
    pub added_by: String,
    pub added_at: String,
}

async fn list_of(
    state: &AppState,
    account: &crate::ledger::Account,
) -> ApiResult<Json<Vec<DepositAddressView>>> {
    let rows = state
        .store
        .deposit_addresses(&account.asset.network, Some(account.id))
        .await?;
    Ok(Json(
        rows.into_iter()
            .map(|d| DepositAddressView {
                network: d.asset.network,
                address: d.address,
                added_by: d.added_by,
                added_at: micros_to_rfc3339(d.added_at),
            })
            .collect(),
    ))
}

/// The deposit addresses of an account.
#[utoipa::path(get, tag = "deposits", path = "/v1/accounts/{id}/deposit-addresses", security(("bearer" = [])),
    responses((status = 200, body = Vec<DepositAddressView>), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<DepositAddressView>>> {
    let account = load_account(&state, &caller, &id, None).await?;
    list_of(&state, &account).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDepositAddress {
    /// EIP-55 checksummed address on the account's network.
    pub address: String,
    pub reason: String,
}

/// Declare a deposit address of a partner or operating account (Admin, reason required):
/// transfers of the account's token to it are credited from the next confirmed block on.
/// Adding one that exists changes nothing.
#[utoipa::path(post, tag = "deposits", path = "/v1/accounts/{id}/deposit-addresses", request_body = AddDepositAddress,
    security(("bearer" = [])), responses((status = 200, body = Vec<DepositAddressView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddDepositAddress>,
) -> ApiResult<Json<Vec<DepositAddressView>>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let account = load_account(&state, &caller, &id, None).await?;
    if !account.kind.holds_customer_funds() {
        return Err(ApiError::invalid(
            "wrong_account_kind",
            "account",
            "deposit addresses belong to partner or operating accounts",
        ));
    }
    let network = &account.asset.network;
    let known = state
        .networks
        .get(network)
        .is_some_and(|n| n.tokens.contains_key(&account.asset.code));
    if !known {
        return Err(ApiError::invalid(
            "unknown_network",
            "account",
            format!(
                "{} is not a token of a configured network, so nothing can be watched",
                account.asset
            ),
        ));
    }
    let address = state
        .networks
        .canonical_address(network, &body.address)
        .unwrap_or_else(|| Err("is on no configured network".into()))
        .map_err(|message| {
            ApiError::invalid("invalid_address", "address", format!("address {message}"))
        })?;
    let audit = state.audit_record(
        &caller,
        request_id,
        "deposit_address.add",
        format!("account:{}:{network}:{address}", account.id),
        Some(reason),
    );
    let entry = DepositAddress {
        account: account.id,
        asset: account.asset.clone(),
        address,
        added_by: caller.name.clone(),
        added_at: audit.at,
    };
    state.store.add_deposit_address(&entry, &audit).await?;
    list_of(&state, &account).await
}
