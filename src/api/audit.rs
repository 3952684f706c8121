//! The audit log, read-only (Admin).

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::ApiQuery;
use super::views::Page;
use super::{AppState, page_limit};
use crate::api::auth::Caller;
use crate::domain::{Role, micros_to_rfc3339};
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAudit {
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: String,
    pub at: String,
    pub actor: String,
    pub role: Role,
    pub action: String,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub request_id: String,
    /// What an automatic decision (safe-mode) saw: blocks, balances, the transfers or
    /// reconciliation terms it counted. See runbooks/wallet-reconcile-mismatch.md.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
}

/// Every mutating call, oldest first.
#[utoipa::path(get, tag = "audit", path = "/v1/audit", params(ListAudit), security(("bearer" = [])),
    responses((status = 200, body = Page<AuditView>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListAudit>,
) -> ApiResult<Json<Page<AuditView>>> {
    caller.require(&[Role::Admin])?;
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .map(|c| {
            uuid::Uuid::try_parse(&c).map_err(|_| {
                ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
            })
        })
        .transpose()?;
    let rows = state.store.list_audit(after, limit).await?;
    let next_cursor = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: rows
            .into_iter()
            .map(|r| AuditView {
                id: r.id.to_string(),
                at: micros_to_rfc3339(r.record.at),
                actor: r.record.actor,
                role: r.record.role,
                action: r.record.action,
                target: r.record.target,
                reason: r.record.reason,
                request_id: r.record.request_id,
                evidence: r.record.evidence,
            })
            .collect(),
        next_cursor,
    }))
}
