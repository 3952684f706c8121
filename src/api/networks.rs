//! Payout networks and their safe-mode switch.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::store::{AuditRecord, SafeMode, now_micros};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct SafeModeView {
    pub reason: String,
    pub actor: String,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkView {
    pub name: String,
    pub chain_id: u64,
    pub tokens: Vec<String>,
    /// Present while the network is in safe-mode: payouts queue, nothing new is broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_mode: Option<SafeModeView>,
}

async fn view(state: &AppState, name: &str) -> ApiResult<NetworkView> {
    let network = state.networks.get(name).ok_or_else(|| ApiError::NotFound {
        what: "network",
        id: name.to_owned(),
        field: None,
    })?;
    let mut tokens: Vec<String> = network.tokens.keys().cloned().collect();
    tokens.sort();
    let safe_mode = state
        .ledger
        .store()
        .safe_mode(name)
        .await?
        .map(|m| SafeModeView {
            reason: m.reason,
            actor: m.actor,
            since: micros_to_rfc3339(m.since),
        });
    Ok(NetworkView {
        name: network.name.clone(),
        chain_id: network.chain_id,
        tokens,
        safe_mode,
    })
}

/// Payout networks with their tokens and safe-mode state.
#[utoipa::path(get, tag = "networks", path = "/v1/networks", security(("bearer" = [])),
    responses((status = 200, body = Vec<NetworkView>)))]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<Vec<NetworkView>>> {
    let mut names: Vec<&str> = state.networks.names().collect();
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(view(&state, name).await?);
    }
    Ok(Json(out))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SafeModeRequest {
    pub enabled: bool,
    pub reason: String,
}

/// Enter or leave safe-mode on a network (Admin, reason required). In safe-mode payouts are
/// accepted and queued and transactions already sent are still tracked, but nothing new is
/// broadcast; leaving it sends the queue in order.
#[utoipa::path(post, tag = "networks", path = "/v1/networks/{name}/safe-mode", request_body = SafeModeRequest,
    security(("bearer" = [])), responses((status = 200, body = NetworkView), (status = 404, body = ErrorBody)))]
pub async fn set_safe_mode(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<SafeModeRequest>,
) -> ApiResult<Json<NetworkView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    view(&state, &name).await?;
    let at = now_micros();
    let audit = AuditRecord {
        actor: caller.name.clone(),
        role: caller.role,
        action: if body.enabled {
            "safe_mode.enter"
        } else {
            "safe_mode.leave"
        }
        .into(),
        target: format!("network:{name}"),
        reason: Some(reason.clone()),
        request_id,
        at,
    };
    let mode = SafeMode {
        reason,
        actor: caller.name.clone(),
        since: at,
    };
    state
        .ledger
        .store()
        .set_safe_mode(&name, body.enabled.then_some(&mode), &audit)
        .await?;
    Ok(Json(view(&state, &name).await?))
}
