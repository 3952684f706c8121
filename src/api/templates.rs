//! Deal templates and the pilot's scope flags.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, require_reason};
use crate::api::auth::Caller;
use crate::domain::Role;
use crate::scope::PilotScope;
use crate::templates::Template;
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub items: Vec<Template>,
}

/// Every loaded template, by id (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/templates", security(("bearer" = [])),
    responses((status = 200, body = TemplateList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<TemplateList>> {
    let _ = caller;
    let templates = state.templates.snapshot();
    Ok(Json(TemplateList {
        items: templates.iter().cloned().collect(),
    }))
}

/// One template, e.g. `MN_USED_CAR_PRIVATE_v1` (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/templates/{id}", security(("bearer" = [])),
    responses((status = 200, body = Template), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Template>> {
    let _ = caller;
    state
        .templates
        .snapshot()
        .get(&id)
        .cloned()
        .map(Json)
        .ok_or(ApiError::NotFound {
            what: "template",
            id,
            field: None,
        })
}

/// The scope in force, its flags named as the seeds write them.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub struct ScopeView {
    pub enabled: bool,
    pub country_allowlist: Vec<String>,
    pub category_allowlist: Vec<String>,
    /// "v1", "v2", …: new deals take the newest template version not above it.
    pub template_version: String,
    /// Who set it and why; absent while nobody has (no deal is accepted).
    #[serde(rename = "set_by", skip_serializing_if = "Option::is_none")]
    pub set_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The template a new deal takes in each (country, category) the scope admits.
    #[serde(rename = "admitted_templates")]
    pub admitted_templates: Vec<String>,
}

pub(crate) async fn scope_view(state: &AppState) -> ApiResult<ScopeView> {
    let setting = state.store.pilot_scope().await?;
    let scope = setting
        .as_ref()
        .map(|s| s.scope.clone())
        .unwrap_or_default();
    let templates = state.templates.snapshot();
    let admitted_templates = scope
        .admitted(&templates)
        .iter()
        .map(|t| t.id.clone())
        .collect();
    Ok(ScopeView {
        enabled: scope.enabled,
        country_allowlist: scope.country_allowlist,
        category_allowlist: scope.category_allowlist,
        template_version: scope.template_version,
        set_by: setting.as_ref().map(|s| s.actor.clone()),
        reason: setting.as_ref().map(|s| s.reason.clone()),
        since: setting
            .as_ref()
            .map(|s| crate::domain::micros_to_rfc3339(s.since)),
        admitted_templates,
    })
}

/// The pilot's scope flags in force (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/pilot/scope", security(("bearer" = [])),
    responses((status = 200, body = ScopeView)))]
pub async fn get_scope(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<ScopeView>> {
    let _ = caller;
    Ok(Json(scope_view(&state).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScopeRequest {
    pub enabled: bool,
    #[serde(default)]
    pub country_allowlist: Vec<String>,
    #[serde(default)]
    pub category_allowlist: Vec<String>,
    pub template_version: String,
    pub reason: String,
}

/// Replace the pilot's scope flags (Admin, reason required), at once and for every instance.
/// Only new deals are affected: running deals complete on their own template. A scope that
/// admits a new (country, category) is refused (409 `expansion_not_stable`) until the one in
/// force has stood 7 days with no SEV0/SEV1 incident begun in that time or unresolved.
#[utoipa::path(put, tag = "escrow", path = "/v1/pilot/scope", request_body = ScopeRequest,
    security(("bearer" = [])), responses((status = 200, body = ScopeView), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_scope(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<ScopeRequest>,
) -> ApiResult<Json<ScopeView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let scope = PilotScope {
        enabled: body.enabled,
        country_allowlist: body.country_allowlist,
        category_allowlist: body.category_allowlist,
        template_version: body.template_version,
    };
    if let Err((field, message)) = scope.validate(Some(&state.templates.snapshot())) {
        return Err(ApiError::invalid("invalid_scope", field, message));
    }
    let templates = state.templates.snapshot();
    crate::scope::expansion_allowed(
        state.store.as_ref(),
        state.clock.now(),
        &templates,
        &scope,
        &templates,
    )
    .await?
    .map_err(|message| ApiError::Conflict {
        code: "expansion_not_stable",
        field: Some("category_allowlist"),
        message,
    })?;
    let audit = state.audit_record(
        &caller,
        request_id,
        "pilot_scope.set",
        "pilot".into(),
        Some(reason),
    );
    crate::scope::apply(state.store.as_ref(), &scope, &audit).await?;
    // This instance shows the change at once; the others within their 15 s refresh.
    state
        .metrics
        .scope
        .show(&scope, &state.templates.snapshot());
    Ok(Json(scope_view(&state).await?))
}
