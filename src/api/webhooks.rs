//! Partners' webhook endpoints (Admin): register with a signing secret shown once, list, rotate
//! the secret with an overlap during which both sign, switch on and off.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, audit_record, require_reason};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use crate::webhooks::{Endpoint, check_event_types, check_url, new_secret};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub event_types: Vec<String>,
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// While set, the previous secret still signs (a rotation's overlap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_until: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: EndpointView,
    /// Shown once: keep it to verify `Treasuryd-Signature`.
    pub secret: String,
}

fn view(e: &Endpoint, now: i64) -> EndpointView {
    EndpointView {
        id: e.id.to_string(),
        url: e.url.clone(),
        event_types: e.event_types.clone(),
        active: e.active,
        disabled_reason: e.disabled_reason.clone(),
        previous_secret_valid_until: e.previous_until.filter(|u| *u > now).map(micros_to_rfc3339),
        created_by: e.created_by.clone(),
        created_at: micros_to_rfc3339(e.created_at),
        updated_at: micros_to_rfc3339(e.updated_at),
    }
}

async fn load(state: &AppState, id: &str) -> ApiResult<Endpoint> {
    let not_found = || ApiError::NotFound {
        what: "endpoint",
        id: id.to_owned(),
        field: None,
    };
    let uuid = uuid::Uuid::try_parse(id).map_err(|_| not_found())?;
    match state.ledger.store().endpoint(uuid).await {
        Err(crate::store::StoreError::NotFound) => Err(not_found()),
        other => Ok(other?),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// https only; internal addresses are refused.
    pub url: String,
    /// Event types, `family.*` or `*`.
    pub event_types: Vec<String>,
    pub reason: String,
}

/// Register a partner endpoint (Admin). The answer carries its signing secret, once.
#[utoipa::path(post, tag = "webhooks", path = "/v1/webhooks/endpoints", request_body = NewEndpoint, security(("bearer" = [])),
    responses((status = 201, body = EndpointWithSecret), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointWithSecret>)> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let url = check_url(body.url.trim(), state.webhooks_allow_private)
        .map_err(|m| ApiError::invalid("invalid_url", "url", format!("url: {m}")))?;
    check_event_types(&body.event_types).map_err(|(i, m)| {
        ApiError::invalid("invalid_event_type", format!("event_types[{i}]"), m)
    })?;
    let now = crate::store::now_micros();
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7(),
        url: url.to_string(),
        event_types: body.event_types,
        active: true,
        secret: new_secret(),
        previous_secret: None,
        previous_until: None,
        disabled_reason: None,
        created_by: caller.name.clone(),
        created_at: now,
        updated_at: now,
    };
    let audit = audit_record(
        &caller,
        request_id,
        "webhook_endpoint.create",
        format!("webhook_endpoint:{}", endpoint.id),
        Some(reason),
    );
    state
        .ledger
        .store()
        .create_endpoint(&endpoint, &audit)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(EndpointWithSecret {
            endpoint: view(&endpoint, now),
            secret: endpoint.secret.expose_secret().to_owned(),
        }),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EndpointList {
    pub items: Vec<EndpointView>,
}

/// Every endpoint, without secrets (Admin).
#[utoipa::path(get, tag = "webhooks", path = "/v1/webhooks/endpoints", security(("bearer" = [])),
    responses((status = 200, body = EndpointList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<EndpointList>> {
    caller.require(&[Role::Admin])?;
    let now = crate::store::now_micros();
    let items = state
        .ledger
        .store()
        .endpoints()
        .await?
        .iter()
        .map(|e| view(e, now))
        .collect();
    Ok(Json(EndpointList { items }))
}

/// One endpoint, without its secret (Admin).
#[utoipa::path(get, tag = "webhooks", path = "/v1/webhooks/endpoints/{id}", security(("bearer" = [])),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EndpointView>> {
    caller.require(&[Role::Admin])?;
    Ok(Json(view(
        &load(&state, &id).await?,
        crate::store::now_micros(),
    )))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rotate {
    /// How long the previous secret keeps signing (default 86,400 s, at most 7 days).
    pub overlap_seconds: Option<u64>,
    pub reason: String,
}

/// A new signing secret, shown once (Admin); the previous one signs too until the overlap ends.
#[utoipa::path(post, tag = "webhooks", path = "/v1/webhooks/endpoints/{id}/rotate", request_body = Rotate, security(("bearer" = [])),
    responses((status = 200, body = EndpointWithSecret), (status = 404, body = ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rotate>,
) -> ApiResult<Json<EndpointWithSecret>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let overlap = body.overlap_seconds.unwrap_or(86_400);
    if overlap > 7 * 86_400 {
        return Err(ApiError::invalid(
            "invalid_field",
            "overlap_seconds",
            "overlap_seconds is at most 604800 (7 days)",
        ));
    }
    let endpoint = load(&state, &id).await?;
    let secret = new_secret();
    let now = crate::store::now_micros();
    let audit = audit_record(
        &caller,
        request_id,
        "webhook_endpoint.rotate",
        format!("webhook_endpoint:{}", endpoint.id),
        Some(reason),
    );
    let until = now + i64::try_from(overlap).unwrap_or(0) * 1_000_000;
    state
        .ledger
        .store()
        .rotate_endpoint_secret(endpoint.id, &secret, until, &audit)
        .await?;
    let updated = load(&state, &id).await?;
    Ok(Json(EndpointWithSecret {
        endpoint: view(&updated, now),
        secret: secret.expose_secret().to_owned(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetActive {
    pub active: bool,
    pub reason: String,
}

/// Switch an endpoint on or off (Admin, reason required).
#[utoipa::path(post, tag = "webhooks", path = "/v1/webhooks/endpoints/{id}/active", request_body = SetActive, security(("bearer" = [])),
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody)))]
pub async fn set_active(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetActive>,
) -> ApiResult<Json<EndpointView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let endpoint = load(&state, &id).await?;
    let audit = audit_record(
        &caller,
        request_id,
        if body.active {
            "webhook_endpoint.enable"
        } else {
            "webhook_endpoint.disable"
        },
        format!("webhook_endpoint:{}", endpoint.id),
        Some(reason.clone()),
    );
    state
        .ledger
        .store()
        .set_endpoint_active(
            endpoint.id,
            body.active,
            (!body.active).then_some(reason.as_str()),
            &audit,
        )
        .await?;
    Ok(Json(view(
        &load(&state, &id).await?,
        crate::store::now_micros(),
    )))
}
