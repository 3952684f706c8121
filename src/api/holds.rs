//! Two-phase holds: create, release (in parts), void. Admin for now; escrow deals and the
//! payout engine drive them in later issues.

use super::accounts::{load_account, parse_amount};
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, IdempotencyKey, RequestId};
use super::manual_entries::posted_response;
use super::views::{HoldView, PostedView, TransactionView};
use super::{AppState, Mutation, WRITERS, optional_text, require_reason};
use crate::api::auth::Caller;
use crate::domain::{AccountId, HoldId};
use crate::ledger::{Command, Hold, Operation, ReleaseKind};
use crate::store::StoreError;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHold {
    pub account: String,
    pub amount: String,
    pub reference: Option<String>,
    pub reason: String,
}

/// Reserve funds: available → held on the same account (Admin).
#[utoipa::path(post, tag = "ledger", path = "/v1/holds", request_body = CreateHold, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended hold")),
    responses((status = 201, body = PostedView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<CreateHold>,
) -> ApiResult<(StatusCode, Json<PostedView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let reference = optional_text("reference", body.reference, 128)?;
    let account = load_account(&state, &caller, &body.account, Some("account")).await?;
    let amount = parse_amount(&state, &account.asset, "amount", &body.amount)?;
    let mut cmd = Command::new(
        "",
        account.asset.clone(),
        Operation::Hold {
            account: account.id,
            amount,
        },
    );
    cmd.reference = reference;
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "hold.create",
        target: format!("account:{}", account.id),
        reason: Some(reason),
    };
    let posted = state.post(m, cmd).await?;
    let hold = posted
        .hold
        .as_ref()
        .map(|h| HoldView::as_created(&state.ledger, &posted.tx, h));
    Ok((
        StatusCode::CREATED,
        Json(PostedView {
            transaction: TransactionView::new(&state.ledger, &posted.tx),
            hold,
        }),
    ))
}

/// The hold `text` if `caller` may see it: another company's answers as a missing one.
async fn load_hold(state: &AppState, caller: &Caller, text: &str) -> ApiResult<Hold> {
    let not_found = || ApiError::NotFound {
        what: "hold",
        id: text.to_owned(),
        field: None,
    };
    let id = HoldId::parse(text).ok_or_else(not_found)?;
    let hold = match state.ledger.hold(id).await {
        Ok(h) => h,
        Err(StoreError::NotFound) => return Err(not_found()),
        Err(e) => return Err(e.into()),
    };
    if !state.sees_account(caller, hold.account).await? {
        return Err(not_found());
    }
    Ok(hold)
}

/// One hold, as it stands now.
#[utoipa::path(get, tag = "ledger", path = "/v1/holds/{id}", security(("bearer" = [])),
    responses((status = 200, body = HoldView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<HoldView>> {
    let hold = load_hold(&state, &caller, &id).await?;
    Ok(Json(HoldView::new(&state.ledger, &hold)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHold {
    pub amount: String,
    /// `release` (default) or `offset` to `destination`; `payout` out of the ledger; `fee`.
    #[serde(default = "default_release_kind")]
    pub kind: ReleaseKind,
    /// Required for `release` and `offset`; must not be sent for `payout` and `fee`.
    pub destination: Option<String>,
    pub reason: String,
}

fn default_release_kind() -> ReleaseKind {
    ReleaseKind::Release
}

/// Release part or all of what a hold still reserves (Admin).
#[utoipa::path(post, tag = "ledger", path = "/v1/holds/{id}/release", request_body = ReleaseHold, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended release")),
    responses((status = 201, body = PostedView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn release(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ReleaseHold>,
) -> ApiResult<(StatusCode, Json<PostedView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let hold = load_hold(&state, &caller, &id).await?;
    let amount = parse_amount(&state, &hold.asset, "amount", &body.amount)?;
    let destination: Option<AccountId> = match (body.kind, body.destination) {
        (ReleaseKind::Release | ReleaseKind::Offset, None) => {
            return Err(ApiError::invalid(
                "missing_field",
                "destination",
                "destination is required for release and offset",
            ));
        }
        (ReleaseKind::Release | ReleaseKind::Offset, Some(d)) => Some(
            load_account(&state, &caller, &d, Some("destination"))
                .await?
                .id,
        ),
        (ReleaseKind::Payout | ReleaseKind::Fee, Some(_)) => {
            return Err(ApiError::invalid(
                "invalid_field",
                "destination",
                "destination is chosen by the ledger for payout and fee",
            ));
        }
        (ReleaseKind::Payout | ReleaseKind::Fee, None) => None,
    };
    let cmd = Command::new(
        "",
        hold.asset.clone(),
        state
            .ledger
            .release(&hold, amount, body.kind, destination)?,
    );
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "hold.release",
        target: format!("hold:{}", hold.id),
        reason: Some(reason),
    };
    let posted = state.post(m, cmd).await?;
    Ok(posted_response(&state, &posted))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoidHold {
    pub reason: String,
    pub reference: Option<String>,
}

/// Return everything a hold still reserves to the account's available balance (Admin).
#[utoipa::path(post, tag = "ledger", path = "/v1/holds/{id}/void", request_body = VoidHold, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended void")),
    responses((status = 201, body = PostedView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn void(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<VoidHold>,
) -> ApiResult<(StatusCode, Json<PostedView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let reference = optional_text("reference", body.reference, 128)?;
    let hold = load_hold(&state, &caller, &id).await?;
    let mut cmd = Command::new("", hold.asset.clone(), Operation::Void { hold: hold.id });
    cmd.reference = reference;
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "hold.void",
        target: format!("hold:{}", hold.id),
        reason: Some(reason),
    };
    let posted = state.post(m, cmd).await?;
    Ok(posted_response(&state, &posted))
}
