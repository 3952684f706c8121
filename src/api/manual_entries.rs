//! Manual deposit credits and adjustments (Admin, with a reason). On-chain deposits arrive
//! through the deposit watcher later; these are for corrections and off-chain funding.

use super::accounts::{load_account, parse_amount};
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, IdempotencyKey, RequestId};
use super::views::{PostedView, TransactionView};
use super::{AppState, Mutation, WRITERS, optional_text, require_reason};
use crate::api::auth::Caller;
use crate::ledger::{Command, Direction};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub account: String,
    /// Decimal string in token units, at most the asset's decimals.
    pub amount: String,
    pub reference: Option<String>,
    pub reason: String,
}

/// Credit a deposit to an account (Admin).
#[utoipa::path(post, tag = "ledger", path = "/v1/deposits", request_body = DepositRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended deposit")),
    responses((status = 201, body = PostedView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn deposit(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<DepositRequest>,
) -> ApiResult<(StatusCode, Json<PostedView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let reference = optional_text("reference", body.reference, 128)?;
    let account = load_account(&state, &caller, &body.account, Some("account")).await?;
    let amount = parse_amount(&state, &account.asset, "amount", &body.amount)?;
    let mut cmd = Command::new(
        "",
        account.asset.clone(),
        state.ledger.deposit(&account, amount)?,
    );
    cmd.reference = reference;
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "deposit.create",
        target: format!("account:{}", account.id),
        reason: Some(reason),
    };
    let posted = state.post(m, cmd).await?;
    Ok(posted_response(&state, &posted))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentRequest {
    pub account: String,
    pub amount: String,
    /// `credit` adds to the account, `debit` takes from it.
    pub direction: Direction,
    pub reference: Option<String>,
    pub reason: String,
}

/// Correct an account's balance against the adjustments account (Admin).
#[utoipa::path(post, tag = "ledger", path = "/v1/adjustments", request_body = AdjustmentRequest, security(("bearer" = [])),
    params(("Idempotency-Key" = String, Header, description = "unique per intended adjustment")),
    responses((status = 201, body = PostedView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn adjustment(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    ApiJson(body): ApiJson<AdjustmentRequest>,
) -> ApiResult<(StatusCode, Json<PostedView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let reference = optional_text("reference", body.reference, 128)?;
    let account = load_account(&state, &caller, &body.account, Some("account")).await?;
    let amount = parse_amount(&state, &account.asset, "amount", &body.amount)?;
    let mut cmd = Command::new(
        "",
        account.asset.clone(),
        state.ledger.adjustment(&account, amount, body.direction)?,
    );
    cmd.reference = reference;
    let m = Mutation {
        caller: &caller,
        request_id,
        idempotency_key: key,
        action: "adjustment.create",
        target: format!("account:{}", account.id),
        reason: Some(reason),
    };
    let posted = state.post(m, cmd).await?;
    Ok(posted_response(&state, &posted))
}

/// 201 with the transaction; a replay answers exactly as the first request was answered.
pub fn posted_response(
    state: &AppState,
    posted: &crate::ledger::Posted,
) -> (StatusCode, Json<PostedView>) {
    (
        StatusCode::CREATED,
        Json(PostedView {
            transaction: TransactionView::new(&state.ledger, &posted.tx),
            hold: None,
        }),
    )
}
