//! Operating controls: canary payouts per network and the configuration freeze.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, RequestId};
use super::{AppState, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::operations::canary::CanaryError;
use crate::operations::{CanaryResult, CanaryRun, ConfigFreeze};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The longest a canary request waits for the result (below the request timeout).
const MAX_WAIT_SECONDS: u64 = 25;

#[derive(Debug, Serialize, ToSchema)]
pub struct CanaryRunView {
    pub id: String,
    pub network: String,
    /// The 1-unit payout: `GET /v1/payouts/{id}` tells its story.
    pub payout: String,
    pub started_by: String,
    pub started_at: String,
    /// Absent while it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<CanaryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl From<CanaryRun> for CanaryRunView {
    fn from(r: CanaryRun) -> Self {
        Self {
            id: r.id.to_string(),
            network: r.network,
            payout: r.payout.to_string(),
            started_by: r.started_by,
            started_at: micros_to_rfc3339(r.started_at),
            result: r.result,
            reason: r.reason,
            finished_at: r.finished_at.map(micros_to_rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CanaryStatus {
    pub network: String,
    /// Whether a canary can run here: a canary address, a canary wallet, the canary asset.
    pub configured: bool,
    /// Newest first (at most 20).
    pub runs: Vec<CanaryRunView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    pub reason: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CanaryWait {
    /// Seconds to wait for the result before answering 202 (0..=25, default 20).
    pub wait_seconds: Option<u64>,
}

fn canary_error(e: CanaryError) -> ApiError {
    match e {
        CanaryError::UnknownNetwork(n) => ApiError::NotFound {
            what: "network",
            id: n,
            field: None,
        },
        e @ CanaryError::NotConfigured { .. } => ApiError::Conflict {
            code: "canary_not_configured",
            field: None,
            message: e.to_string(),
        },
        e @ CanaryError::Running { .. } => ApiError::Conflict {
            code: "canary_running",
            field: None,
            message: e.to_string(),
        },
        CanaryError::Store(e) => ApiError::from(e),
        CanaryError::Ledger(e) => ApiError::Ledger(e),
    }
}

/// Send a canary payout on a network (Admin, Operator; reason required): 1 unit from its
/// canary wallet to its canary address through the whole pipeline. Answered `200` with the
/// result (green or red) once it has one, or `202` while it still runs after `wait_seconds`
/// (its result then shows in `GET /v1/canary/{network}`).
#[utoipa::path(post, tag = "operations", path = "/v1/canary/{network}", request_body = CanaryRequest,
    params(("network" = String, Path), CanaryWait), security(("bearer" = [])),
    responses((status = 200, body = CanaryRunView), (status = 202, body = CanaryRunView),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn run_canary(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(network): Path<String>,
    ApiQuery(q): ApiQuery<CanaryWait>,
    ApiJson(body): ApiJson<CanaryRequest>,
) -> ApiResult<(StatusCode, Json<CanaryRunView>)> {
    caller.require(&[Role::Admin, Role::Operator])?;
    let reason = require_reason(&body.reason)?;
    let wait = q.wait_seconds.unwrap_or(20);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::invalid(
            "invalid_field",
            "wait_seconds",
            format!("wait_seconds must be at most {MAX_WAIT_SECONDS}"),
        ));
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        "canary.run",
        format!("network:{network}"),
        Some(reason),
    );
    let run = state
        .canaries
        .start(&network, audit)
        .await
        .map_err(canary_error)?;
    let run = state
        .canaries
        .wait(&run, Duration::from_secs(wait))
        .await
        .map_err(canary_error)?;
    let status = if run.result.is_some() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(run.into())))
}

/// A network's canary runs, newest first, and whether a canary can run there.
#[utoipa::path(get, tag = "operations", path = "/v1/canary/{network}", params(("network" = String, Path)),
    security(("bearer" = [])), responses((status = 200, body = CanaryStatus), (status = 404, body = ErrorBody)))]
pub async fn canary_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> ApiResult<Json<CanaryStatus>> {
    caller.require(&[Role::Admin, Role::Operator, Role::Approver])?;
    if state.networks.get(&network).is_none() {
        return Err(ApiError::NotFound {
            what: "network",
            id: network,
            field: None,
        });
    }
    let runs = state.store.canary_runs(&network, 20).await?;
    Ok(Json(CanaryStatus {
        configured: state.canaries.configured().contains(&network),
        network,
        runs: runs.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigFreezeView {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Absent: until an Admin lifts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

fn freeze_view(f: Option<ConfigFreeze>, now: i64) -> ConfigFreezeView {
    match f.filter(|f| f.active_at(now)) {
        Some(f) => ConfigFreezeView {
            active: true,
            reason: Some(f.reason),
            set_by: Some(f.actor),
            since: Some(micros_to_rfc3339(f.since)),
            until: f.until.map(micros_to_rfc3339),
        },
        None => ConfigFreezeView {
            active: false,
            reason: None,
            set_by: None,
            since: None,
            until: None,
        },
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFreezeRequest {
    pub enabled: bool,
    /// RFC 3339; the freeze ends on its own then. Absent: until lifted.
    pub until: Option<String>,
    pub reason: String,
}

/// Whether configuration is frozen.
#[utoipa::path(get, tag = "operations", path = "/v1/config-freeze", security(("bearer" = [])),
    responses((status = 200, body = ConfigFreezeView)))]
pub async fn get_freeze(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<ConfigFreezeView>> {
    let now = state.clock.now();
    let f = state.store.config_freeze().await?;
    Ok(Json(freeze_view(f, now)))
}

/// Freeze or unfreeze configuration (Admin, reason required). While frozen, calls that change
/// configuration are refused with 409 `config_frozen`; safe-mode, token freezes, canaries and
/// operations are not.
#[utoipa::path(put, tag = "operations", path = "/v1/config-freeze", request_body = ConfigFreezeRequest,
    security(("bearer" = [])), responses((status = 200, body = ConfigFreezeView), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_freeze(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<ConfigFreezeRequest>,
) -> ApiResult<Json<ConfigFreezeView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let now = state.clock.now();
    let until = body
        .until
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_micros())
                .ok()
                .filter(|u| *u > now)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_field",
                        "until",
                        "until must be an RFC 3339 time in the future",
                    )
                })
        })
        .transpose()?;
    if !body.enabled && until.is_some() {
        return Err(ApiError::invalid(
            "invalid_field",
            "until",
            "until goes with enabled: true",
        ));
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        if body.enabled {
            "config_freeze.enter"
        } else {
            "config_freeze.leave"
        },
        "config".into(),
        Some(reason.clone()),
    );
    let freeze = body.enabled.then(|| ConfigFreeze {
        reason,
        actor: caller.name.clone(),
        since: now,
        until,
    });
    state
        .store
        .set_config_freeze(freeze.as_ref(), &audit)
        .await?;
    state
        .metrics
        .operations
        .config_freeze
        .set(i64::from(freeze.is_some()));
    Ok(Json(freeze_view(freeze, now)))
}

/// Refuses a configuration-changing call while the configuration freeze is active.
pub async fn ensure_config_open(state: &AppState) -> ApiResult<()> {
    let now = state.clock.now();
    match crate::operations::freeze::active(state.store.as_ref(), now).await? {
        Some(f) => Err(ApiError::Conflict {
            code: "config_frozen",
            field: None,
            message: crate::operations::freeze::describe(&f),
        }),
        None => Ok(()),
    }
}
