//! Treasury controls at runtime (Admin, Operator): a token's per-transaction cap, a network's
//! fee mode, a paused wallet. Each change needs a reason and is audited. During the
//! configuration freeze the cap and the fee mode may change only under an open incident (the
//! Incident Commander's exception, launch plan §6), which the change is noted on; pausing a
//! wallet is a rollback (§10) and is allowed at any time.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::require_reason;
use crate::api::auth::Caller;
use crate::domain::Role;
use crate::domain::incidents::IncidentUpdate;
use crate::operations::controls::{ControlKind, TreasuryControl, fee_mode_name, parse_fee_mode};
use crate::payouts::networks::{ChainKind, PayoutNetwork};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const STAFF: &[Role] = &[Role::Admin, Role::Operator];

#[derive(Debug, Serialize, ToSchema)]
pub struct SetBy {
    pub actor: String,
    pub reason: String,
    /// The incident it was taken under, if any.
    pub incident: Option<uuid::Uuid>,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapView {
    pub token: String,
    /// In force, in token units.
    pub cap: String,
    /// From the configuration.
    pub configured: String,
    /// Present when set at runtime.
    pub set: Option<SetBy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FeeModeView {
    /// `economy`, `normal` or `urgent` in force; absent on Tron.
    pub mode: Option<String>,
    pub configured: Option<String>,
    pub set: Option<SetBy>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PausedWalletView {
    pub wallet: String,
    pub set: SetBy,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ControlsView {
    pub network: String,
    pub per_tx_caps: Vec<CapView>,
    pub fee_mode: FeeModeView,
    pub paused_wallets: Vec<PausedWalletView>,
}

fn set_by(c: &TreasuryControl) -> SetBy {
    SetBy {
        actor: c.actor.clone(),
        reason: c.reason.clone(),
        incident: c.incident,
        at: crate::domain::micros_to_rfc3339(c.at),
    }
}

fn network<'a>(state: &'a AppState, name: &str) -> ApiResult<&'a PayoutNetwork> {
    state.networks.get(name).ok_or_else(|| ApiError::NotFound {
        what: "network",
        id: name.to_owned(),
        field: None,
    })
}

fn view(state: &AppState, n: &PayoutNetwork) -> ControlsView {
    let rows = state.networks.controls.rows();
    let row = |kind: ControlKind, target: &str| {
        rows.iter()
            .find(|r| r.network == n.name && r.kind == kind && r.target == target)
    };
    let mut per_tx_caps: Vec<CapView> = n
        .tokens
        .iter()
        .map(|(code, t)| CapView {
            token: code.clone(),
            cap: t.spec.format(state.networks.cap(t)),
            configured: t.spec.format(t.cap),
            set: row(ControlKind::PerTxCap, code).map(set_by),
        })
        .collect();
    per_tx_caps.sort_by(|a, b| a.token.cmp(&b.token));
    let evm = n.kind == ChainKind::Evm;
    ControlsView {
        network: n.name.clone(),
        per_tx_caps,
        fee_mode: FeeModeView {
            mode: evm.then(|| {
                fee_mode_name(state.networks.controls.fee_mode(&n.name, n.fee_mode)).to_owned()
            }),
            configured: evm.then(|| fee_mode_name(n.fee_mode).to_owned()),
            set: row(ControlKind::FeeMode, "").map(set_by),
        },
        paused_wallets: rows
            .iter()
            .filter(|r| r.network == n.name && r.kind == ControlKind::WalletPause)
            .map(|r| PausedWalletView {
                wallet: r.target.clone(),
                set: set_by(r),
            })
            .collect(),
    }
}

/// The controls in force on a network, against its configuration (Admin, Operator).
#[utoipa::path(get, tag = "networks", path = "/v1/networks/{name}/controls", security(("bearer" = [])),
    responses((status = 200, body = ControlsView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_controls(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<ControlsView>> {
    caller.require(STAFF)?;
    let n = network(&state, &name)?;
    Ok(Json(view(&state, n)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapChange {
    /// A token of the network, e.g. "USDT".
    pub token: String,
    /// The new cap in token units (positive, within the token's decimals, not below its
    /// `min_payout`); null puts the configured cap back.
    pub cap: Option<String>,
    pub reason: String,
    /// An open incident the change is taken under: required during the configuration freeze.
    pub incident: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FeeModeChange {
    /// `economy`, `normal` or `urgent`; null puts the configured mode back. EVM networks only.
    pub mode: Option<String>,
    pub reason: String,
    /// An open incident the change is taken under: required during the configuration freeze.
    pub incident: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseChange {
    pub paused: bool,
    pub reason: String,
    /// An incident the pause belongs to, if any (noted on its timeline).
    pub incident: Option<String>,
}

/// Which incident a change is taken under: parsed, and required while the configuration is
/// frozen when `frozen_needs_it`.
async fn incident_for(
    state: &AppState,
    text: Option<&str>,
    frozen_needs_it: bool,
) -> ApiResult<Option<uuid::Uuid>> {
    let id = text
        .map(|t| {
            uuid::Uuid::try_parse(t.trim()).map_err(|_| {
                ApiError::invalid("invalid_field", "incident", "incident is an incident's id")
            })
        })
        .transpose()?;
    if frozen_needs_it && id.is_none() {
        let now = state.clock.now();
        if let Some(f) = crate::operations::freeze::active(state.store.as_ref(), now).await? {
            return Err(ApiError::Conflict {
                code: "config_frozen",
                field: Some("incident"),
                message: format!(
                    "{}; the Incident Commander may change the cap or the fee mode under an open incident (incident)",
                    crate::operations::freeze::describe(&f)
                ),
            });
        }
    }
    Ok(id)
}

/// Stores the change (noting it on the incident, if any), refreshes the copy in force and the
/// exported gauges, and answers with the network's controls.
#[allow(clippy::too_many_arguments)]
async fn apply(
    state: &AppState,
    caller: &Caller,
    request_id: String,
    n: &PayoutNetwork,
    kind: ControlKind,
    target: &str,
    value: Option<String>,
    reason: String,
    incident: Option<uuid::Uuid>,
    describe: String,
) -> ApiResult<Json<ControlsView>> {
    let audit = state.audit_record(
        caller,
        request_id,
        &format!("control.{}", kind.as_str()),
        format!("network:{}", n.name),
        Some(reason.clone()),
    );
    let control = value.map(|value| TreasuryControl {
        network: n.name.clone(),
        kind,
        target: target.to_owned(),
        value,
        actor: caller.name.clone(),
        reason: reason.clone(),
        incident,
        at: audit.at,
    });
    let note = IncidentUpdate {
        note: format!("{describe} by {}: {reason}", caller.name),
        status: None,
        severity: None,
        author: caller.name.clone(),
        at: audit.at,
    };
    match state
        .store
        .set_treasury_control(
            &n.name,
            kind,
            target,
            control.as_ref(),
            incident.map(|id| (id, &note)),
            &audit,
        )
        .await
    {
        Err(crate::store::StoreError::NotFound) => {
            return Err(ApiError::invalid(
                "unknown_incident",
                "incident",
                "no such incident",
            ));
        }
        Err(crate::store::StoreError::Conflict(_, message)) => {
            return Err(ApiError::Conflict {
                code: "incident_resolved",
                field: Some("incident"),
                message,
            });
        }
        r => r?,
    }
    // The change is stored; if this read fails, engines catch up within a second and the API
    // within 15 s.
    match state.networks.controls.refresh(state.store.as_ref()).await {
        Ok(()) => export(state),
        Err(e) => tracing::warn!(error = %e, "treasury controls not re-read after a change"),
    }
    Ok(Json(view(state, n)))
}

/// Set a token's per-transaction cap, or put the configured one back (Admin, Operator). The
/// next payout accepted is split under it; payouts already accepted keep their chunks.
#[utoipa::path(put, tag = "networks", path = "/v1/networks/{name}/controls/per-tx-cap", request_body = CapChange, security(("bearer" = [])),
    responses((status = 200, body = ControlsView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_cap(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<CapChange>,
) -> ApiResult<Json<ControlsView>> {
    caller.require(STAFF)?;
    let n = network(&state, &name)?;
    let reason = require_reason(&body.reason)?;
    let token = n.tokens.get(&body.token).ok_or_else(|| {
        ApiError::invalid(
            "unknown_asset",
            "token",
            format!("token {:?} is not paid out on {name}", body.token),
        )
    })?;
    let units = match body.cap.as_deref() {
        None => None,
        Some(text) => {
            let amount = crate::domain::Amount::parse_decimal(text.trim(), &token.spec)
                .map_err(|e| ApiError::invalid("invalid_field", "cap", format!("cap {e}")))?;
            if token.min_payout.is_some_and(|min| amount.units() < min) {
                return Err(ApiError::invalid(
                    "invalid_field",
                    "cap",
                    "cap must not be below the token's min_payout",
                ));
            }
            Some(amount.units())
        }
    };
    let incident = incident_for(&state, body.incident.as_deref(), true).await?;
    let describe = match units {
        Some(u) => format!(
            "per-transaction cap of {} on {name} set to {}",
            body.token,
            token.spec.format(u)
        ),
        None => format!(
            "per-transaction cap of {} on {name} back to the configured {}",
            body.token,
            token.spec.format(token.cap)
        ),
    };
    apply(
        &state,
        &caller,
        request_id,
        n,
        ControlKind::PerTxCap,
        &body.token,
        units.map(|u| u.to_string()),
        reason,
        incident,
        describe,
    )
    .await
}

/// Set the network's fee mode, or put the configured one back (Admin, Operator; EVM). The
/// engine signs its next round with it.
#[utoipa::path(put, tag = "networks", path = "/v1/networks/{name}/controls/fee-mode", request_body = FeeModeChange, security(("bearer" = [])),
    responses((status = 200, body = ControlsView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_fee_mode(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<FeeModeChange>,
) -> ApiResult<Json<ControlsView>> {
    caller.require(STAFF)?;
    let n = network(&state, &name)?;
    let reason = require_reason(&body.reason)?;
    if n.kind != ChainKind::Evm {
        return Err(ApiError::invalid(
            "invalid_field",
            "mode",
            "a fee mode applies to EVM networks; Tron pays in energy",
        ));
    }
    let mode = body
        .mode
        .as_deref()
        .map(|m| {
            parse_fee_mode(m).ok_or_else(|| {
                ApiError::invalid("invalid_field", "mode", "mode is economy, normal or urgent")
            })
        })
        .transpose()?;
    let incident = incident_for(&state, body.incident.as_deref(), true).await?;
    let describe = match mode {
        Some(m) => format!("fee mode on {name} set to {}", fee_mode_name(m)),
        None => format!(
            "fee mode on {name} back to the configured {}",
            fee_mode_name(n.fee_mode)
        ),
    };
    apply(
        &state,
        &caller,
        request_id,
        n,
        ControlKind::FeeMode,
        "",
        mode.map(|m| fee_mode_name(m).to_owned()),
        reason,
        incident,
        describe,
    )
    .await
}

/// Pause or resume one wallet (Admin, Operator). A paused wallet signs nothing new; what it
/// has in flight finishes, and its share of the queue goes to the network's other wallets.
/// A rollback step: allowed during the configuration freeze.
#[utoipa::path(put, tag = "networks", path = "/v1/networks/{name}/wallets/{wallet}/pause", request_body = PauseChange, security(("bearer" = [])),
    responses((status = 200, body = ControlsView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_pause(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path((name, wallet)): Path<(String, String)>,
    ApiJson(body): ApiJson<PauseChange>,
) -> ApiResult<Json<ControlsView>> {
    caller.require(STAFF)?;
    let n = network(&state, &name)?;
    let reason = require_reason(&body.reason)?;
    if !state
        .wallets
        .iter()
        .any(|w| w.network == name && w.id == wallet)
    {
        return Err(ApiError::NotFound {
            what: "wallet",
            id: wallet,
            field: None,
        });
    }
    let incident = incident_for(&state, body.incident.as_deref(), false).await?;
    let describe = format!(
        "wallet {wallet} on {name} {}",
        if body.paused { "paused" } else { "resumed" }
    );
    apply(
        &state,
        &caller,
        request_id,
        n,
        ControlKind::WalletPause,
        &wallet,
        body.paused.then(|| "paused".to_owned()),
        reason,
        incident,
        describe,
    )
    .await
}

/// Exports what is in force: `treasuryd_per_tx_cap_units`, `treasuryd_fee_mode` and
/// `treasuryd_wallet_paused`, for every configured network, token and wallet.
pub fn export(state: &AppState) {
    let m = &state.metrics.operations;
    let controls = &state.networks.controls;
    for name in state.networks.names() {
        let Some(n) = state.networks.get(name) else {
            continue;
        };
        for (code, t) in &n.tokens {
            m.per_tx_cap_units
                .with_label_values(&[name, code.as_str()])
                .set(t.spec.units_as_f64(state.networks.cap(t)));
        }
        if n.kind == ChainKind::Evm {
            let mode = controls.fee_mode(name, n.fee_mode);
            for candidate in ["economy", "normal", "urgent"] {
                m.fee_mode
                    .with_label_values(&[name, candidate])
                    .set(i64::from(fee_mode_name(mode) == candidate));
            }
        }
    }
    for w in state.wallets.iter() {
        m.wallet_paused
            .with_label_values(&[w.network.as_str(), w.id.as_str()])
            .set(i64::from(controls.is_paused(&w.network, &w.id)));
    }
}
