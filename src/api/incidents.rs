//! The incident register (Admin, Operator): open an incident, list and read them, add notes
//! that move it along (open → mitigated → resolved) or change its severity. Every change is
//! audited; `treasuryd_incidents_open{severity,status}` follows the register.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, RequestId};
use crate::api::auth::Caller;
use crate::domain::Role;
use crate::domain::incidents::{
    Incident, IncidentLink, IncidentNote, IncidentRecord, IncidentStatus, IncidentUpdate, LinkKind,
    SEVERITIES,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

const STAFF: &[Role] = &[Role::Admin, Role::Operator];
/// Links one request may add.
const MAX_LINKS: usize = 50;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkBody {
    /// `payout`, `deal`, `network` or `wallet`.
    pub kind: String,
    /// The payout's or deal's id, the network's name, the wallet's address.
    pub id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    /// SEV0 (worst) … SEV3.
    pub severity: String,
    /// What happened, in words (at most 500 characters).
    pub summary: String,
    /// When it began (RFC 3339); default now.
    pub at: Option<String>,
    /// What it touched (at most 50).
    #[serde(default)]
    pub links: Vec<LinkBody>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncidentChange {
    /// What was done or learnt, in words (at most 500 characters).
    pub note: String,
    /// `open`, `mitigated` or `resolved`. A resolved incident takes notes only.
    pub status: Option<String>,
    /// SEV0 … SEV3, when the incident is re-graded.
    pub severity: Option<String>,
    /// More of what it touched (at most 50).
    #[serde(default)]
    pub links: Vec<LinkBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoteView {
    #[serde(flatten)]
    pub note: IncidentNote,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    #[serde(flatten)]
    pub incident: Incident,
    /// When it began.
    pub at: String,
    pub updated_at: String,
    pub resolved_at: Option<String>,
    /// Oldest first; absent in lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<NoteView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<IncidentLink>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentList {
    /// Newest first.
    pub incidents: Vec<IncidentView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `open`, `mitigated` or `resolved`; absent: all.
    pub status: Option<String>,
    /// 1 … 500, default 100.
    pub limit: Option<i64>,
    /// The previous page's `next`.
    pub before: Option<String>,
}

fn summary_view(i: Incident) -> IncidentView {
    IncidentView {
        at: crate::domain::micros_to_rfc3339(i.at),
        updated_at: crate::domain::micros_to_rfc3339(i.updated_at),
        resolved_at: i.resolved_at.map(crate::domain::micros_to_rfc3339),
        incident: i,
        timeline: None,
        links: None,
    }
}

fn record_view(r: IncidentRecord) -> IncidentView {
    IncidentView {
        timeline: Some(
            r.notes
                .into_iter()
                .map(|note| NoteView {
                    at: crate::domain::micros_to_rfc3339(note.at),
                    note,
                })
                .collect(),
        ),
        links: Some(r.links),
        ..summary_view(r.incident)
    }
}

fn severity(field: &str, text: &str) -> ApiResult<String> {
    if SEVERITIES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} is SEV0, SEV1, SEV2 or SEV3"),
        ))
    }
}

fn status(field: &str, text: &str) -> ApiResult<IncidentStatus> {
    IncidentStatus::parse(text).ok_or_else(|| {
        ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} is open, mitigated or resolved"),
        )
    })
}

fn words(field: &'static str, text: &str) -> ApiResult<String> {
    super::require_reason(text).map_err(|_| {
        ApiError::invalid(
            "invalid_field",
            field,
            format!(
                "{field} must say what happened, in at most {} characters",
                super::MAX_REASON
            ),
        )
    })
}

/// Each link names something that exists here: a payout or deal by id, a configured network,
/// one of the daemon's wallets. Another company's payout or deal is the operator's to name.
async fn links(state: &AppState, body: &[LinkBody]) -> ApiResult<Vec<IncidentLink>> {
    if body.len() > MAX_LINKS {
        return Err(ApiError::invalid(
            "invalid_field",
            "links",
            format!("at most {MAX_LINKS} links at once"),
        ));
    }
    let mut out = Vec::with_capacity(body.len());
    for (n, link) in body.iter().enumerate() {
        let field = |what: &str| format!("links[{n}].{what}");
        let kind = LinkKind::parse(&link.kind).ok_or_else(|| {
            ApiError::invalid(
                "invalid_field",
                field("kind"),
                "kind is payout, deal, network or wallet",
            )
        })?;
        let unknown = || {
            ApiError::invalid(
                "unknown_link",
                field("id"),
                format!("no {} {:?} here", kind.as_str(), link.id),
            )
        };
        let id = link.id.trim();
        let exists = match kind {
            LinkKind::Payout | LinkKind::Deal => {
                let Ok(uuid) = uuid::Uuid::try_parse(id) else {
                    return Err(unknown());
                };
                let found = if kind == LinkKind::Payout {
                    state
                        .store
                        .get_payout(crate::domain::PayoutId(uuid))
                        .await
                        .map(|_| ())
                } else {
                    state
                        .store
                        .get_deal(crate::domain::DealId(uuid))
                        .await
                        .map(|_| ())
                };
                match found {
                    Ok(()) => true,
                    Err(crate::store::StoreError::NotFound) => false,
                    Err(e) => return Err(e.into()),
                }
            }
            LinkKind::Network => state.networks.get(id).is_some(),
            LinkKind::Wallet => state.wallets.iter().any(|w| w.id == id),
        };
        if !exists {
            return Err(unknown());
        }
        out.push(IncidentLink {
            kind,
            id: id.to_owned(),
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Open an incident (Admin, Operator). An open SEV0 or SEV1 asks for rollback
/// (`TreasurydCriticalIncidentOpen`) and fails the Go/No-Go report of its period.
#[utoipa::path(post, tag = "operations", path = "/v1/incidents", request_body = NewIncident, security(("bearer" = [])),
    responses((status = 201, body = IncidentView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn open(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewIncident>,
) -> ApiResult<(StatusCode, Json<IncidentView>)> {
    caller.require(STAFF)?;
    let severity = severity("severity", &body.severity)?;
    let summary = words("summary", &body.summary)?;
    let now = state.clock.now();
    let at = match body.at.as_deref() {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|_| ApiError::invalid("invalid_field", "at", "at must be RFC 3339"))?
            .timestamp_micros(),
        None => now,
    };
    let links = links(&state, &body.links).await?;
    let incident = Incident {
        id: uuid::Uuid::now_v7(),
        severity,
        summary: summary.clone(),
        status: IncidentStatus::Open,
        at,
        recorded_by: caller.name.clone(),
        updated_at: now,
        resolved_at: None,
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "incident.open",
        format!("incident:{}", incident.id),
        Some(summary),
    );
    state
        .store
        .record_incident(&incident, &links, &audit)
        .await?;
    // The change is stored; a failed gauge refresh is caught up by the 15 s refresh.
    if let Err(e) = refresh_metrics(&state).await {
        tracing::warn!(error = %e, "incident metrics not refreshed");
    }
    let record = state.store.incident(incident.id).await?;
    Ok((StatusCode::CREATED, Json(record_view(record))))
}

/// The register, newest first (Admin, Operator).
#[utoipa::path(get, tag = "operations", path = "/v1/incidents", params(ListQuery), security(("bearer" = [])),
    responses((status = 200, body = IncidentList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<IncidentList>> {
    caller.require(STAFF)?;
    let status = q
        .status
        .as_deref()
        .map(|s| status("status", s))
        .transpose()?;
    let limit = super::page_limit(q.limit)?;
    let before = q
        .before
        .as_deref()
        .map(|b| {
            uuid::Uuid::try_parse(b).map_err(|_| {
                ApiError::invalid("invalid_field", "before", "before is a page's next")
            })
        })
        .transpose()?;
    let page = state.store.list_incidents(status, before, limit).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|i| i.id.to_string()))
        .flatten();
    Ok(Json(IncidentList {
        incidents: page.into_iter().map(summary_view).collect(),
        next,
    }))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        what: "incident",
        id: id.to_owned(),
        field: None,
    }
}

async fn load(state: &AppState, id: &str) -> ApiResult<IncidentRecord> {
    let uuid = uuid::Uuid::try_parse(id).map_err(|_| not_found(id))?;
    match state.store.incident(uuid).await {
        Ok(r) => Ok(r),
        Err(crate::store::StoreError::NotFound) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// One incident with its timeline and links (Admin, Operator).
#[utoipa::path(get, tag = "operations", path = "/v1/incidents/{id}", security(("bearer" = [])),
    responses((status = 200, body = IncidentView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<IncidentView>> {
    caller.require(STAFF)?;
    Ok(Json(record_view(load(&state, &id).await?)))
}

/// Add a note to an incident's timeline, moving its status or severity with it (Admin,
/// Operator). `status: resolved` closes it; a resolved incident takes notes only (409).
#[utoipa::path(post, tag = "operations", path = "/v1/incidents/{id}/updates", request_body = IncidentChange, security(("bearer" = [])),
    responses((status = 200, body = IncidentView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<IncidentChange>,
) -> ApiResult<Json<IncidentView>> {
    caller.require(STAFF)?;
    let note = words("note", &body.note)?;
    let new_status = body
        .status
        .as_deref()
        .map(|s| status("status", s))
        .transpose()?;
    let new_severity = body
        .severity
        .as_deref()
        .map(|s| severity("severity", s))
        .transpose()?;
    let links = links(&state, &body.links).await?;
    let current = load(&state, &id).await?.incident;
    let change = IncidentUpdate {
        note: note.clone(),
        status: new_status.filter(|s| *s != current.status),
        severity: new_severity.filter(|s| *s != current.severity),
        author: caller.name.clone(),
        at: state.clock.now(),
    };
    let action = match change.status {
        Some(IncidentStatus::Resolved) => "incident.resolve",
        _ => "incident.update",
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        action,
        format!("incident:{}", current.id),
        Some(note),
    );
    let record = match state
        .store
        .update_incident(current.id, &change, &links, &audit)
        .await
    {
        Err(crate::store::StoreError::NotFound) => return Err(not_found(&id)),
        r => r?,
    };
    // The change is stored; a failed gauge refresh is caught up by the 15 s refresh.
    if let Err(e) = refresh_metrics(&state).await {
        tracing::warn!(error = %e, "incident metrics not refreshed");
    }
    Ok(Json(record_view(record)))
}

/// Sets `treasuryd_incidents_open{severity,status}` from the register: every severity and
/// unresolved status is exported, 0 when none, so a resolved incident clears its series.
pub async fn refresh_metrics(state: &AppState) -> Result<(), crate::store::StoreError> {
    let counts = state.store.unresolved_incidents().await?;
    let gauge = &state.metrics.operations.incidents_open;
    for severity in SEVERITIES {
        for status in [IncidentStatus::Open, IncidentStatus::Mitigated] {
            let n = counts
                .iter()
                .find(|(sev, st, _)| sev == severity && *st == status)
                .map_or(0, |(_, _, n)| *n);
            gauge.with_label_values(&[severity, status.as_str()]).set(n);
        }
    }
    Ok(())
}
