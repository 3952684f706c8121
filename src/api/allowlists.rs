//! Destination allowlists of partner accounts. When an account's list is enforced, a payout
//! from it is refused at the API unless its destination is on the list for that network, and
//! the engine checks the recipient decoded from every transfer it signs against the same list.

use super::accounts::load_account;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, RequestId};
use super::{AppState, optional_text, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::store::{AllowedDestination, StoreError};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Serialize, ToSchema)]
pub struct DestinationView {
    pub network: String,
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub added_by: String,
    pub added_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AllowlistView {
    pub account: String,
    /// While true, payouts go only to the destinations listed.
    pub enforced: bool,
    pub destinations: Vec<DestinationView>,
}

async fn view(state: &AppState, account: crate::domain::AccountId) -> ApiResult<AllowlistView> {
    let list = state.store.allowlist(account).await?;
    Ok(AllowlistView {
        account: account.to_string(),
        enforced: list.enforced,
        destinations: list
            .entries
            .into_iter()
            .map(|e| DestinationView {
                network: e.network,
                address: e.address,
                label: e.label,
                added_by: e.added_by,
                added_at: micros_to_rfc3339(e.added_at),
            })
            .collect(),
    })
}

/// A partner account's destination allowlist.
#[utoipa::path(get, tag = "allowlists", path = "/v1/accounts/{id}/allowlist", security(("bearer" = [])),
    responses((status = 200, body = AllowlistView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AllowlistView>> {
    let account = load_account(&state, &caller, &id, None).await?;
    Ok(Json(view(&state, account.id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnforceRequest {
    pub enforced: bool,
    pub reason: String,
}

/// Turn enforcement of an account's allowlist on or off (Admin, reason required).
#[utoipa::path(put, tag = "allowlists", path = "/v1/accounts/{id}/allowlist", request_body = EnforceRequest,
    security(("bearer" = [])), responses((status = 200, body = AllowlistView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_enforced(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EnforceRequest>,
) -> ApiResult<Json<AllowlistView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let account = load_account(&state, &caller, &id, None).await?;
    let action = if body.enforced {
        "allowlist.enforce"
    } else {
        "allowlist.relax"
    };
    let record = state.audit_record(
        &caller,
        request_id,
        action,
        format!("account:{}", account.id),
        Some(reason),
    );
    state
        .store
        .set_allowlist_enforced(account.id, body.enforced, &record)
        .await?;
    Ok(Json(view(&state, account.id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDestination {
    pub network: String,
    /// EIP-55 checksummed address.
    pub address: String,
    pub label: Option<String>,
    pub reason: String,
}

fn parse_destination(state: &AppState, network: &str, address: &str) -> ApiResult<String> {
    let Some(parsed) = state.networks.canonical_address(network, address) else {
        return Err(ApiError::invalid(
            "unknown_network",
            "network",
            format!("network {network:?} is not configured for payouts"),
        ));
    };
    parsed.map_err(|message| {
        ApiError::invalid("invalid_address", "address", format!("address {message}"))
    })
}

/// Add a destination to an account's allowlist (Admin, reason required).
#[utoipa::path(post, tag = "allowlists", path = "/v1/accounts/{id}/allowlist/destinations", request_body = AddDestination,
    security(("bearer" = [])), responses((status = 200, body = AllowlistView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddDestination>,
) -> ApiResult<Json<AllowlistView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let account = load_account(&state, &caller, &id, None).await?;
    let address = parse_destination(&state, &body.network, &body.address)?;
    let label = optional_text("label", body.label, 128)?;
    let record = state.audit_record(
        &caller,
        request_id,
        "allowlist.add",
        format!("account:{}:{}:{address}", account.id, body.network),
        Some(reason),
    );
    let entry = AllowedDestination {
        network: body.network,
        address,
        label,
        added_by: caller.name.clone(),
        added_at: record.at,
    };
    state
        .store
        .set_allowed_destination(account.id, &entry, true, &record)
        .await?;
    Ok(Json(view(&state, account.id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// Why; required.
    pub reason: String,
}

/// Remove a destination from an account's allowlist (Admin, reason required). Payouts to it
/// that are queued stay queued until it is allowed again or they are cancelled.
#[utoipa::path(delete, tag = "allowlists", path = "/v1/accounts/{id}/allowlist/destinations/{network}/{address}",
    params(RemoveQuery), security(("bearer" = [])),
    responses((status = 200, body = AllowlistView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path((id, network, address)): Path<(String, String, String)>,
    ApiQuery(q): ApiQuery<RemoveQuery>,
) -> ApiResult<Json<AllowlistView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&q.reason)?;
    let account = load_account(&state, &caller, &id, None).await?;
    let address = parse_destination(&state, &network, &address)?;
    let record = state.audit_record(
        &caller,
        request_id,
        "allowlist.remove",
        format!("account:{}:{network}:{address}", account.id),
        Some(reason),
    );
    let entry = AllowedDestination {
        network,
        address: address.clone(),
        label: None,
        added_by: caller.name.clone(),
        added_at: record.at,
    };
    match state
        .store
        .set_allowed_destination(account.id, &entry, false, &record)
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => {
            return Err(ApiError::NotFound {
                what: "allowed destination",
                id: address,
                field: None,
            });
        }
        Err(e) => return Err(e.into()),
    }
    Ok(Json(view(&state, account.id).await?))
}
