//! Partners' webhook endpoints (Admin): register with a signing secret shown once, list, rotate
//! the secret with an overlap during which both sign, switch on and off.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use super::{AppState, require_reason};
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
    /// The company whose events it receives; absent: staff's, it receives every event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
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
        company: e.company.map(|c| c.to_string()),
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

/// Of `events`, those `endpoint` receives: all for a staff endpoint, a company's only those
/// concerning it (a replay follows the rule delivery does).
async fn for_endpoint(
    state: &AppState,
    endpoint: &Endpoint,
    events: &[crate::webhooks::outbox::OutboxEvent],
) -> ApiResult<Vec<i64>> {
    use crate::webhooks::outbox::{companies, concerns, payouts_of};
    if endpoint.company.is_none() {
        return Ok(events.iter().map(|e| e.seq).collect());
    }
    let store = state.store.as_ref();
    let payouts = payouts_of(store, events).await?;
    let mut seqs = Vec::new();
    for e in events {
        if concerns(endpoint.company, &companies(store, &payouts, e).await?) {
            seqs.push(e.seq);
        }
    }
    Ok(seqs)
}

/// The endpoint `id` if `caller` may see it: another company's answers as a missing one.
async fn load(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Endpoint> {
    let not_found = || ApiError::NotFound {
        what: "endpoint",
        id: id.to_owned(),
        field: None,
    };
    let uuid = uuid::Uuid::try_parse(id).map_err(|_| not_found())?;
    match state.store.endpoint(uuid).await {
        Ok(e) if caller.owns(e.company) => Ok(e),
        Ok(_) | Err(crate::store::StoreError::NotFound) => Err(not_found()),
        Err(e) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// https only; internal addresses are refused.
    pub url: String,
    /// Event types, `family.*` or `*`.
    pub event_types: Vec<String>,
    /// The company whose events it receives (staff only; a company's admin registers endpoints
    /// for its own company). Absent: every event.
    #[serde(default)]
    pub company: Option<uuid::Uuid>,
    pub reason: String,
}

/// Register a partner endpoint (Admin). The answer carries its signing secret, once.
#[utoipa::path(post, tag = "webhooks", path = "/v1/webhooks/endpoints", request_body = NewEndpoint, security(("bearer" = [])),
    responses((status = 201, body = EndpointWithSecret), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointWithSecret>)> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let url = check_url(body.url.trim(), state.webhooks_allow_private)
        .map_err(|m| ApiError::invalid("invalid_url", "url", format!("url: {m}")))?;
    check_event_types(&body.event_types).map_err(|(i, m)| {
        ApiError::invalid("invalid_event_type", format!("event_types[{i}]"), m)
    })?;
    let company = state.owning_company(&caller, body.company).await?;
    let now = state.clock.now();
    let endpoint = Endpoint {
        id: uuid::Uuid::now_v7(),
        company,
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
    let audit = state.audit_record(
        &caller,
        request_id,
        "webhook_endpoint.create",
        format!("webhook_endpoint:{}", endpoint.id),
        Some(reason),
    );
    state.store.create_endpoint(&endpoint, &audit).await?;
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
    let now = state.clock.now();
    let items = state
        .store
        .endpoints()
        .await?
        .iter()
        .filter(|e| caller.owns(e.company))
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
        &load(&state, &caller, &id).await?,
        state.clock.now(),
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
    responses((status = 200, body = EndpointWithSecret), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn rotate(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rotate>,
) -> ApiResult<Json<EndpointWithSecret>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let overlap = body.overlap_seconds.unwrap_or(86_400);
    if overlap > 7 * 86_400 {
        return Err(ApiError::invalid(
            "invalid_field",
            "overlap_seconds",
            "overlap_seconds is at most 604800 (7 days)",
        ));
    }
    let endpoint = load(&state, &caller, &id).await?;
    let secret = new_secret();
    let now = state.clock.now();
    let audit = state.audit_record(
        &caller,
        request_id,
        "webhook_endpoint.rotate",
        format!("webhook_endpoint:{}", endpoint.id),
        Some(reason),
    );
    let until = now + i64::try_from(overlap).unwrap_or(0) * 1_000_000;
    state
        .store
        .rotate_endpoint_secret(endpoint.id, &secret, until, &audit)
        .await?;
    let updated = load(&state, &caller, &id).await?;
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
    responses((status = 200, body = EndpointView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_active(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SetActive>,
) -> ApiResult<Json<EndpointView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let endpoint = load(&state, &caller, &id).await?;
    let audit = state.audit_record(
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
        .store
        .set_endpoint_active(
            endpoint.id,
            body.active,
            (!body.active).then_some(reason.as_str()),
            &audit,
        )
        .await?;
    Ok(Json(view(
        &load(&state, &caller, &id).await?,
        state.clock.now(),
    )))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub event_id: String,
    pub event_type: String,
    /// pending, delivered or dead (the retry horizon passed).
    pub state: String,
    pub attempts: i32,
    /// When it became due (first queued or last replayed); the horizon counts from here.
    pub due_since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i32>,
    /// The start of the receiver's answer or the I/O error of the last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    pub replays: i32,
}

fn delivery_view(d: &crate::webhooks::outbox::Delivery) -> DeliveryView {
    use crate::webhooks::outbox::DeliveryState;
    DeliveryView {
        event_id: d.event_id.to_string(),
        event_type: d.event_type.clone(),
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        due_since: micros_to_rfc3339(d.due_since),
        next_attempt_at: (d.state == DeliveryState::Pending)
            .then(|| micros_to_rfc3339(d.next_attempt_at)),
        last_attempt_at: d.last_attempt_at.map(micros_to_rfc3339),
        last_status: d.last_status,
        last_error: d.last_error.clone(),
        delivered_at: d.delivered_at.map(micros_to_rfc3339),
        replays: d.replays,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListDeliveries {
    /// pending, delivered or dead.
    pub state: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// An endpoint's deliveries in event order (Admin): what is waiting, delivered or dead-lettered.
#[utoipa::path(get, tag = "webhooks", path = "/v1/webhooks/endpoints/{id}/deliveries", params(ListDeliveries), security(("bearer" = [])),
    responses((status = 200, body = super::views::Page<DeliveryView>), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    super::extract::ApiQuery(q): super::extract::ApiQuery<ListDeliveries>,
) -> ApiResult<Json<super::views::Page<DeliveryView>>> {
    caller.require(&[Role::Admin])?;
    let endpoint = load(&state, &caller, &id).await?;
    let limit = super::page_limit(q.limit)?;
    let filter = q
        .state
        .as_deref()
        .map(|s| {
            crate::webhooks::outbox::DeliveryState::parse(s).ok_or_else(|| {
                ApiError::invalid(
                    "invalid_state",
                    "state",
                    "state must be pending, delivered or dead",
                )
            })
        })
        .transpose()?;
    let after = match q.cursor.as_deref() {
        None => 0,
        Some(c) => c.parse::<i64>().map_err(|_| {
            ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
        })?,
    };
    let rows = state
        .store
        .webhook_deliveries(endpoint.id, filter, after, limit)
        .await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|d| d.event_seq.to_string()))
        .flatten();
    Ok(Json(super::views::Page {
        items: rows.iter().map(delivery_view).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Redeliver this one event.
    pub event_id: Option<String>,
    /// Redeliver every dead-lettered event of the endpoint.
    #[serde(default)]
    pub dead_lettered: bool,
    /// Redeliver every event the endpoint subscribes to written in `[from, to)` (RFC 3339).
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayResult {
    /// Events the selection matched.
    pub matched: usize,
    /// Of those, how many became due again (the others were already pending).
    pub replayed: u64,
}

/// The most events one time-range replay may select.
const MAX_REPLAY: i64 = 10_000;

/// Redeliver one event, every dead-lettered event, or a time range (Admin, reason required).
/// Idempotent by event id: an event already pending is not queued twice; receivers see the
/// same `Treasuryd-Event-Id` again and de-duplicate on it.
#[utoipa::path(post, tag = "webhooks", path = "/v1/webhooks/endpoints/{id}/replay", request_body = Replay, security(("bearer" = [])),
    responses((status = 200, body = ReplayResult), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Replay>,
) -> ApiResult<Json<ReplayResult>> {
    use crate::webhooks::outbox::{DeliveryState, subscribed};
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let endpoint = load(&state, &caller, &id).await?;
    let store = &state.store;
    let selectors = usize::from(body.event_id.is_some())
        + usize::from(body.dead_lettered)
        + usize::from(body.from.is_some() || body.to.is_some());
    if selectors != 1 {
        return Err(ApiError::invalid(
            "invalid_replay",
            "event_id",
            "give exactly one of event_id, dead_lettered: true, or from and to",
        ));
    }
    let (seqs, target) = if let Some(event_id) = &body.event_id {
        let missing = || ApiError::NotFound {
            what: "event",
            id: event_id.clone(),
            field: Some("event_id"),
        };
        let uuid = uuid::Uuid::try_parse(event_id).map_err(|_| missing())?;
        let event = match store.webhook_event(uuid).await {
            Err(crate::store::StoreError::NotFound) => return Err(missing()),
            other => other?,
        };
        if event.dispatched_at.is_none() {
            return Err(ApiError::invalid(
                "event_not_dispatched",
                "event_id",
                "the event is not queued yet; it will be delivered without a replay",
            ));
        }
        if !subscribed(&endpoint.event_types, &event.event_type)
            || !for_endpoint(&state, &endpoint, std::slice::from_ref(&event))
                .await?
                .contains(&event.seq)
        {
            return Err(ApiError::invalid(
                "not_subscribed",
                "event_id",
                format!("the endpoint does not receive this {}", event.event_type),
            ));
        }
        (vec![event.seq], format!("event:{event_id}"))
    } else if body.dead_lettered {
        let mut seqs = Vec::new();
        let mut after = 0;
        loop {
            let page = store
                .webhook_deliveries(endpoint.id, Some(DeliveryState::Dead), after, 1000)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.event_seq;
            seqs.extend(page.iter().map(|d| d.event_seq));
        }
        (seqs, "dead_lettered".to_owned())
    } else {
        let parse = |field: &'static str, v: &Option<String>| {
            v.as_deref()
                .and_then(crate::domain::rfc3339_to_micros)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_field",
                        field,
                        format!("{field} must be an RFC 3339 time"),
                    )
                })
        };
        let (from, to) = (parse("from", &body.from)?, parse("to", &body.to)?);
        if from >= to {
            return Err(ApiError::invalid(
                "invalid_field",
                "to",
                "to must be after from",
            ));
        }
        let events = store
            .webhook_events_between(from, to, MAX_REPLAY + 1)
            .await?;
        if events.len() as i64 > MAX_REPLAY {
            return Err(ApiError::invalid(
                "range_too_large",
                "from",
                format!("the range holds more than {MAX_REPLAY} events; replay it in parts"),
            ));
        }
        let subscribed: Vec<_> = events
            .into_iter()
            .filter(|e| subscribed(&endpoint.event_types, &e.event_type))
            .collect();
        let seqs = for_endpoint(&state, &endpoint, &subscribed).await?;
        (
            seqs,
            format!(
                "range:{}..{}",
                micros_to_rfc3339(from),
                micros_to_rfc3339(to)
            ),
        )
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "webhook_endpoint.replay",
        format!("webhook_endpoint:{} {target}", endpoint.id),
        Some(reason),
    );
    let replayed = store
        .replay_webhook_events(endpoint.id, &seqs, &audit)
        .await?;
    Ok(Json(ReplayResult {
        matched: seqs.len(),
        replayed,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EventView {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: String,
    /// When the outbox got it (the change's database transaction).
    pub written_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatched_at: Option<String>,
    /// The body partners receive, once rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub body: Option<serde_json::Value>,
}

/// One outbox event with the body partners receive (Admin).
#[utoipa::path(get, tag = "webhooks", path = "/v1/webhooks/events/{id}", security(("bearer" = [])),
    responses((status = 200, body = EventView), (status = 404, body = ErrorBody)))]
pub async fn event(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<EventView>> {
    caller.require(&[Role::Admin])?;
    let missing = || ApiError::NotFound {
        what: "event",
        id: id.clone(),
        field: None,
    };
    let uuid = uuid::Uuid::try_parse(&id).map_err(|_| missing())?;
    let e = match state.store.webhook_event(uuid).await {
        Err(crate::store::StoreError::NotFound) => return Err(missing()),
        other => other?,
    };
    Ok(Json(EventView {
        id: e.id.to_string(),
        event_type: e.event_type,
        occurred_at: micros_to_rfc3339(e.occurred_at),
        written_at: micros_to_rfc3339(e.created_at),
        dispatched_at: e.dispatched_at.map(micros_to_rfc3339),
        body: e.body.as_deref().map(crate::webhooks::outbox::body_json),
    }))
}
