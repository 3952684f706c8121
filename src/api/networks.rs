//! Payout networks and their safe-mode switch.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::payouts::policy::RolloutPhase;
use crate::store::{AssetFreeze, RolloutSetting, SafeMode};
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
pub struct RolloutView {
    pub phase: RolloutPhase,
    /// The share of the daily volume target the phase allows.
    pub percent: u8,
    /// Token units per asset per day at 100%; absent: no limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_volume_target: Option<String>,
    /// IANA zone whose midnight starts the day.
    pub timezone: String,
    /// Who set the phase and why; absent while it is the configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FreezeView {
    pub asset: String,
    pub reason: String,
    pub actor: String,
    pub since: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NetworkView {
    pub name: String,
    /// `evm` or `tron`: how its addresses are written (EIP-55 or base58check).
    #[schema(value_type = String)]
    pub kind: crate::payouts::networks::ChainKind,
    /// EVM only (0 on Tron).
    pub chain_id: u64,
    pub tokens: Vec<String>,
    /// The coin gas is paid in, posted as FEE.
    pub native_asset: String,
    /// Present while the network is in safe-mode: payouts queue, nothing new is broadcast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub safe_mode: Option<SafeModeView>,
    pub rollout: RolloutView,
    /// Tokens frozen on this network: their payouts queue, nothing new is broadcast.
    pub frozen: Vec<FreezeView>,
    /// The instance running this network's payouts, under its engine lease.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<EngineLeaseView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EngineLeaseView {
    pub owner: String,
    /// Grows by one each time another instance takes over.
    pub fence: u64,
    pub expires_at: String,
}

/// The network's rollout phase in force: the one set through the API, else the configured
/// one; None for a network this daemon does not pay on.
pub async fn phase_in_force(
    state: &AppState,
    name: &str,
) -> ApiResult<Option<crate::payouts::policy::RolloutPhase>> {
    let Some(network) = state.networks.get(name) else {
        return Ok(None);
    };
    let set = state.store.rollout_phase(name).await?;
    Ok(Some(set.map_or(network.rollout.phase, |s| s.phase)))
}

async fn view(state: &AppState, name: &str) -> ApiResult<NetworkView> {
    let network = state.networks.get(name).ok_or_else(|| ApiError::NotFound {
        what: "network",
        id: name.to_owned(),
        field: None,
    })?;
    let mut tokens: Vec<String> = network.tokens.keys().cloned().collect();
    tokens.sort();
    let safe_mode = state.store.safe_mode(name).await?.map(|m| SafeModeView {
        reason: m.reason,
        actor: m.actor,
        since: micros_to_rfc3339(m.since),
    });
    let store = &state.store;
    let set = store.rollout_phase(name).await?;
    let phase = set.as_ref().map_or(network.rollout.phase, |s| s.phase);
    let rollout = RolloutView {
        phase,
        percent: u8::try_from(phase.percent()).unwrap_or(100),
        daily_volume_target: network.rollout.daily_volume_target.clone(),
        timezone: network.rollout.timezone.clone(),
        set_by: set.as_ref().map(|s| s.actor.clone()),
        reason: set.as_ref().map(|s| s.reason.clone()),
        since: set.as_ref().map(|s| micros_to_rfc3339(s.since)),
    };
    let frozen = store
        .freezes(name)
        .await?
        .into_iter()
        .map(|f| FreezeView {
            asset: f.asset,
            reason: f.reason,
            actor: f.actor,
            since: micros_to_rfc3339(f.since),
        })
        .collect();
    let engine = store.lease(name).await?.map(|l| EngineLeaseView {
        owner: l.owner,
        fence: l.fence,
        expires_at: micros_to_rfc3339(l.expires_at),
    });
    Ok(NetworkView {
        engine,
        name: network.name.clone(),
        kind: network.kind,
        chain_id: network.chain_id,
        tokens,
        native_asset: network.native.code.clone(),
        safe_mode,
        rollout,
        frozen,
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
    let action = if body.enabled {
        "safe_mode.enter"
    } else {
        "safe_mode.leave"
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        action,
        format!("network:{name}"),
        Some(reason.clone()),
    );
    let at = audit.at;
    let mode = SafeMode {
        reason,
        actor: caller.name.clone(),
        since: at,
    };
    state
        .store
        .set_safe_mode(&name, body.enabled.then_some(&mode), &audit)
        .await?;
    state
        .metrics
        .payouts
        .safe_mode
        .with_label_values(&[name.as_str()])
        .set(i64::from(body.enabled));
    Ok(Json(view(&state, &name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutRequest {
    pub phase: RolloutPhase,
    pub reason: String,
}

/// Set the rollout phase of a network (Admin, reason required): pilot, canary and full send
/// at most 10%, 30% and 100% of the daily volume target per asset. Payouts beyond it wait.
#[utoipa::path(post, tag = "networks", path = "/v1/networks/{name}/rollout", request_body = RolloutRequest,
    security(("bearer" = [])), responses((status = 200, body = NetworkView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_rollout(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<RolloutRequest>,
) -> ApiResult<Json<NetworkView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let current = view(&state, &name).await?.rollout.phase;
    // A configuration freeze lets the phase go down (a rollback), never up.
    if body.phase.percent() > current.percent() {
        super::operations::ensure_config_open(&state).await?;
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        &format!("rollout.{}", body.phase.as_str()),
        format!("network:{name}"),
        Some(reason.clone()),
    );
    let setting = RolloutSetting {
        phase: body.phase,
        actor: caller.name.clone(),
        reason,
        since: audit.at,
    };
    state
        .store
        .set_rollout_phase(&name, &setting, &audit)
        .await?;
    Ok(Json(view(&state, &name).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeRequest {
    /// A token of the network, e.g. "USDT".
    pub asset: String,
    pub frozen: bool,
    pub reason: String,
}

/// Freeze or unfreeze one token on a network (Admin, reason required). While frozen, its
/// payouts are accepted and queued but nothing new is signed; transactions already sent are
/// still tracked. Unfreezing sends the queue in order.
#[utoipa::path(post, tag = "networks", path = "/v1/networks/{name}/freezes", request_body = FreezeRequest,
    security(("bearer" = [])), responses((status = 200, body = NetworkView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_freeze(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<FreezeRequest>,
) -> ApiResult<Json<NetworkView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    view(&state, &name).await?;
    let known = state
        .networks
        .get(&name)
        .is_some_and(|n| n.tokens.contains_key(&body.asset));
    if !known {
        return Err(ApiError::invalid(
            "unknown_asset",
            "asset",
            format!("asset {:?} is not paid out on {name}", body.asset),
        ));
    }
    let action = if body.frozen {
        "asset.freeze"
    } else {
        "asset.unfreeze"
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        action,
        format!("network:{name}:{}", body.asset),
        Some(reason.clone()),
    );
    let freeze = AssetFreeze {
        asset: body.asset.clone(),
        reason,
        actor: caller.name.clone(),
        since: audit.at,
    };
    state
        .store
        .set_freeze(&name, &body.asset, body.frozen.then_some(&freeze), &audit)
        .await?;
    Ok(Json(view(&state, &name).await?))
}
