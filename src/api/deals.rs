//! Escrow deals: create, the parties' and the Operator's actions, evidence, the timeline and
//! the Operator's dispute queue. Every action is refused unless it fits both the deal's state
//! (409 `invalid_state`) and the caller's role (403 `forbidden`); both refusals list what the
//! caller may do now, and change nothing.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, RequestId};
use super::views::Page;
use super::{AppState, optional_text, page_limit, require_reason};
use crate::api::auth::Caller;
use crate::domain::{AccountId, Amount, AssetSpec, DealId, Role, micros_to_rfc3339};
use crate::escrow::service::{EscrowError, NewDeal};
use crate::escrow::{
    Deal, DealAction, DealEvent, DealState, Evidence, action_fits_state, action_role,
    allowed_actions,
};
use crate::store::{ConflictKind, StoreError};
use crate::templates::{CurrencyDisplay, DisputeOutcome};
use crate::timers::{TimerKind, TimerState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

impl From<EscrowError> for ApiError {
    fn from(e: EscrowError) -> Self {
        match e {
            EscrowError::NotFound(id) => ApiError::NotFound {
                what: "deal",
                id: id.to_string(),
                field: None,
            },
            EscrowError::Invalid {
                code,
                field,
                message,
            } => ApiError::invalid(code, field, message),
            EscrowError::OutOfScope(r) => {
                ApiError::invalid("out_of_scope", r.field(), r.to_string())
            }
            EscrowError::Conflict(message) => ApiError::Conflict {
                code: "invalid_state",
                field: None,
                message,
            },
            EscrowError::Ledger(e) => ApiError::Ledger(e),
            EscrowError::Store(e) => ApiError::from(e),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MoneySummary {
    pub total: String,
    pub immediate: String,
    pub holdback: String,
    /// Paid to the seller so far.
    pub released: String,
    /// Returned to the buyer by an offset.
    pub offset: String,
    /// Returned to the buyer by a refund.
    pub refunded: String,
    /// Still held on the buyer's account.
    pub held: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimerView {
    pub kind: TimerKind,
    pub due_at: String,
    pub state: TimerState,
    /// Seconds until it fires (0 once due); pending timers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssueView {
    pub reason_code: String,
    pub detail: String,
    pub raised_at: String,
    /// The most an OFFSET may give back for this reason code.
    pub offset_cap: String,
    pub allowed_outcomes: Vec<DisputeOutcome>,
    /// DISPUTE_TTL ran out and the template said to escalate.
    pub escalated: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResolutionView {
    pub outcome: DisputeOutcome,
    pub offset: String,
    pub by: String,
    pub reason: String,
    pub at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateRef {
    pub id: String,
    pub version: u32,
    pub country: String,
    pub category: String,
    pub currency: CurrencyDisplay,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DealView {
    pub id: String,
    pub state: DealState,
    pub template: TemplateRef,
    pub buyer_account: String,
    pub seller_account: String,
    pub network: String,
    pub asset: String,
    pub money: MoneySummary,
    /// What the caller may do now.
    pub allowed_actions: Vec<DealAction>,
    pub timers: Vec<TimerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issue: Option<IssueView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolution: Option<ResolutionView>,
    pub evidence: Vec<Evidence>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seller_payout_address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buyer_refund_address: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
}

fn spec(state: &AppState, deal: &Deal) -> AssetSpec {
    state
        .ledger
        .asset(&deal.asset)
        .cloned()
        .unwrap_or(AssetSpec {
            key: deal.asset.clone(),
            decimals: 0,
        })
}

async fn view(state: &AppState, deal: Deal, caller: &Caller) -> ApiResult<DealView> {
    let store = &state.store;
    let now = state.escrow.clock.now();
    let timers = store.deal_timers(deal.id).await?;
    let evidence = store.evidence(deal.id).await?;
    let s = spec(state, &deal);
    let f = |u: i128| s.format(u);
    Ok(DealView {
        id: deal.id.to_string(),
        state: deal.state,
        template: TemplateRef {
            id: deal.template.id.clone(),
            version: deal.template.version,
            country: deal.template.country.clone(),
            category: deal.template.category.clone(),
            currency: deal.template.currency.clone(),
        },
        buyer_account: deal.buyer.to_string(),
        seller_account: deal.seller.to_string(),
        network: deal.asset.network.clone(),
        asset: deal.asset.code.clone(),
        money: MoneySummary {
            total: f(deal.amount),
            immediate: f(deal.immediate),
            holdback: f(deal.holdback),
            released: f(deal.released),
            offset: f(deal.offset),
            refunded: f(deal.refunded),
            held: f(deal.held()),
        },
        allowed_actions: allowed_actions(deal.state, caller.role),
        timers: timers
            .iter()
            .map(|t| TimerView {
                kind: t.kind,
                due_at: micros_to_rfc3339(t.due_at),
                state: t.state,
                remaining_seconds: (t.state == TimerState::Pending)
                    .then(|| ((t.due_at - now) / 1_000_000).max(0)),
                fired_at: t.fired_at.map(micros_to_rfc3339),
            })
            .collect(),
        issue: deal.issue.as_ref().map(|i| IssueView {
            reason_code: i.reason_code.clone(),
            detail: i.detail.clone(),
            raised_at: micros_to_rfc3339(i.raised_at),
            offset_cap: f(deal
                .template
                .offset_cap(&i.reason_code, deal.amount)
                .unwrap_or(0)),
            allowed_outcomes: deal.template.dispute_outcomes.clone(),
            escalated: deal.escalated,
        }),
        resolution: deal.resolution.as_ref().map(|r| ResolutionView {
            outcome: r.outcome,
            offset: f(r.offset),
            by: r.by.clone(),
            reason: r.reason.clone(),
            at: micros_to_rfc3339(r.at),
        }),
        evidence,
        reference: deal.reference.clone(),
        seller_payout_address: deal.seller_payout.clone(),
        buyer_refund_address: deal.buyer_refund.clone(),
        created_by: deal.created_by.clone(),
        created_at: micros_to_rfc3339(deal.created_at),
        updated_at: micros_to_rfc3339(deal.updated_at),
        settled_at: deal.settled_at.map(micros_to_rfc3339),
    })
}

fn deal_id(text: &str) -> ApiResult<DealId> {
    DealId::parse(text).ok_or(ApiError::NotFound {
        what: "deal",
        id: text.to_owned(),
        field: None,
    })
}

/// Which sides of a deal the caller acts for: staff both; a company's users the side (or
/// sides) whose account is their company's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sides {
    buyer: bool,
    seller: bool,
}

/// The deal `id` if `caller` may see it: staff any; a company's users a deal their company is
/// the buyer or the seller of. Another's answers exactly as a missing one.
pub(super) async fn load_deal(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<(Deal, Sides)> {
    let deal = state.escrow.get(deal_id(id)?).await?;
    let Some(company) = caller.company else {
        return Ok((
            deal,
            Sides {
                buyer: true,
                seller: true,
            },
        ));
    };
    let buyer = state.store.get_account(deal.buyer).await?.company == Some(company);
    let seller = state.store.get_account(deal.seller).await?.company == Some(company);
    if !buyer && !seller {
        return Err(ApiError::NotFound {
            what: "deal",
            id: id.to_owned(),
            field: None,
        });
    }
    Ok((deal, Sides { buyer, seller }))
}

/// The side an action is taken for: funding, approving and raising an issue are the buyer's,
/// delivering the seller's; resolving is staff's.
fn action_side(action: DealAction, sides: Sides) -> Result<(), &'static str> {
    match action {
        DealAction::Fund | DealAction::Approve | DealAction::RaiseIssue if !sides.buyer => {
            Err("the buyer's")
        }
        DealAction::Deliver if !sides.seller => Err("the seller's"),
        _ => Ok(()),
    }
}

/// The deal, if `caller` may take `action` on it now; otherwise 403 (role or side) or 409
/// (state), naming what the caller may do instead.
async fn authorize(
    state: &AppState,
    id: &str,
    action: DealAction,
    caller: &Caller,
) -> ApiResult<Deal> {
    let (deal, sides) = load_deal(state, caller, id).await?;
    if caller.company.is_some() && action == DealAction::Resolve {
        return Err(ApiError::ForbiddenAction(
            "resolve is for the operator's staff".into(),
        ));
    }
    if let Err(whose) = action_side(action, sides) {
        return Err(ApiError::ForbiddenAction(format!(
            "{} is {whose} to take on this deal, and your company is not that side",
            action.as_str()
        )));
    }
    let allowed = allowed_actions(deal.state, caller.role);
    let allowed_text = if allowed.is_empty() {
        "nothing".to_owned()
    } else {
        allowed
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if caller.role != action_role(action) {
        return Err(ApiError::ForbiddenAction(format!(
            "{} is for the {} role; allowed for you on this {} deal: {allowed_text}",
            action.as_str(),
            action_role(action).as_str(),
            deal.state.as_str()
        )));
    }
    if !action_fits_state(action, deal.state) {
        return Err(ApiError::Conflict {
            code: "invalid_state",
            field: None,
            message: format!(
                "the deal is {}: {} is not possible; allowed for you now: {allowed_text}",
                deal.state.as_str(),
                action.as_str()
            ),
        });
    }
    Ok(deal)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeal {
    pub buyer_account: String,
    pub seller_account: String,
    /// ISO 3166 alpha-2, e.g. "MN".
    pub country: String,
    /// e.g. "USED_CAR_PRIVATE".
    pub category: String,
    /// Token units of the accounts' asset.
    pub amount: String,
    pub reference: Option<String>,
    /// EIP-55: pay the seller's releases out on chain here (else they stay on the account).
    pub seller_payout_address: Option<String>,
    /// EIP-55: pay offsets and refunds to the buyer out on chain here.
    pub buyer_refund_address: Option<String>,
}

fn account_id(field: &str, text: &str) -> ApiResult<AccountId> {
    AccountId::parse(text).ok_or_else(|| {
        ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} must be an account id (UUID)"),
        )
    })
}

/// Open a deal (Trader) on the template the pilot scope admits for its country and category.
#[utoipa::path(post, tag = "escrow", path = "/v1/deals", request_body = CreateDeal, security(("bearer" = [])),
    responses((status = 201, body = DealView), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<CreateDeal>,
) -> ApiResult<(StatusCode, Json<DealView>)> {
    caller.require(&[Role::Trader])?;
    let buyer = account_id("buyer_account", &body.buyer_account)?;
    let seller = account_id("seller_account", &body.seller_account)?;
    let reference = optional_text("reference", body.reference, 200)?;
    // A company's users open deals as the buyer only: another company's account as the buyer
    // answers as a missing one.
    let buyer_account = match state.store.get_account(buyer).await {
        Ok(a) if caller.owns(a.company) => a,
        Ok(_) | Err(crate::store::StoreError::NotFound) => {
            return Err(ApiError::NotFound {
                what: "account",
                id: buyer.to_string(),
                field: Some("buyer_account"),
            });
        }
        Err(e) => return Err(e.into()),
    };
    let spec = state
        .ledger
        .asset(&buyer_account.asset)
        .cloned()
        .ok_or(ApiError::NotFound {
            what: "asset",
            id: buyer_account.asset.to_string(),
            field: Some("buyer_account"),
        })?;
    let amount =
        Amount::parse_decimal(&body.amount, &spec).map_err(|e| ApiError::amount("amount", e))?;
    let audit = state.audit_record(&caller, request_id, "deal.create", "deal".into(), None);
    let deal = state
        .escrow
        .create(
            NewDeal {
                buyer,
                seller,
                country: body.country.trim().to_owned(),
                category: body.category.trim().to_owned(),
                amount,
                reference,
                seller_payout: body.seller_payout_address,
                buyer_refund: body.buyer_refund_address,
            },
            &caller.name,
            &audit,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(view(&state, deal, &caller).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListDeals {
    pub state: Option<DealState>,
    /// ISO 3166 alpha-2, e.g. MN.
    pub country: Option<String>,
    /// e.g. USED_CAR_PRIVATE.
    pub category: Option<String>,
    /// The template version deals were created with, e.g. 2.
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    pub template_version: Option<u32>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// Deals, oldest first; filter by `state`, `country`, `category`, `template_version` (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/deals", params(ListDeals), security(("bearer" = [])),
    responses((status = 200, body = Page<DealView>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListDeals>,
) -> ApiResult<Json<Page<DealView>>> {
    let limit = page_limit(q.limit)?;
    let after = q
        .cursor
        .map(|c| {
            DealId::parse(&c).ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
            })
        })
        .transpose()?;
    let deals = state
        .store
        .list_deals(&crate::store::DealFilter {
            // A company's users list the deals their company is a side of.
            company: caller.company,
            state: q.state,
            country: q.country,
            category: q.category,
            template_version: q.template_version,
            after,
            limit,
        })
        .await?;
    let next_cursor = (deals.len() as i64 == limit)
        .then(|| deals.last().map(|d| d.id.to_string()))
        .flatten();
    let mut items = Vec::with_capacity(deals.len());
    for d in deals {
        items.push(view(&state, d, &caller).await?);
    }
    Ok(Json(Page { items, next_cursor }))
}

/// A deal: state, what the caller may do, visible timers, the money summary, evidence.
#[utoipa::path(get, tag = "escrow", path = "/v1/deals/{id}", security(("bearer" = [])),
    responses((status = 200, body = DealView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<DealView>> {
    let (deal, _) = load_deal(&state, &caller, &id).await?;
    Ok(Json(view(&state, deal, &caller).await?))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionBody {
    /// Ids of evidence uploaded to the deal (deliver, issue).
    #[serde(default)]
    pub evidence: Vec<String>,
    /// Issue: one of the template's reason codes.
    pub reason_code: Option<String>,
    /// Issue: what is wrong, in words.
    pub detail: Option<String>,
    /// Resolve: one of the template's outcomes.
    pub outcome: Option<DisputeOutcome>,
    /// Resolve with OFFSET: token units back to the buyer, at most the reason code's cap.
    pub offset: Option<String>,
    /// Resolve: why (audited).
    pub reason: Option<String>,
}

fn evidence_ids(body: &ActionBody) -> ApiResult<Vec<uuid::Uuid>> {
    body.evidence
        .iter()
        .enumerate()
        .map(|(i, e)| {
            uuid::Uuid::try_parse(e).map_err(|_| {
                ApiError::invalid(
                    "invalid_field",
                    format!("evidence[{i}]"),
                    "evidence ids are UUIDs",
                )
            })
        })
        .collect()
}

async fn act(
    state: AppState,
    caller: Caller,
    request_id: String,
    id: String,
    action: DealAction,
    body: ActionBody,
) -> ApiResult<Json<DealView>> {
    let deal = authorize(&state, &id, action, &caller).await?;
    let escrow = &state.escrow;
    let audit = |reason: Option<String>| {
        state.audit_record(
            &caller,
            request_id.clone(),
            &format!("deal.{}", action.as_str()),
            format!("deal:{}", deal.id),
            reason,
        )
    };
    let updated = match action {
        DealAction::Fund => escrow.fund(deal.id, &caller.name, audit(None)).await?,
        DealAction::Deliver => {
            escrow
                .deliver(deal.id, &evidence_ids(&body)?, &caller.name, audit(None))
                .await?
        }
        DealAction::Approve => escrow.approve(deal.id, &caller.name, audit(None)).await?,
        DealAction::RaiseIssue => {
            let code = body
                .reason_code
                .as_deref()
                .map(str::trim)
                .unwrap_or_default();
            if code.is_empty() {
                return Err(ApiError::invalid(
                    "missing_field",
                    "reason_code",
                    "reason_code is required",
                ));
            }
            let detail = optional_text("detail", body.detail.clone(), 2_000)?.unwrap_or_default();
            escrow
                .raise_issue(
                    deal.id,
                    code,
                    &detail,
                    &evidence_ids(&body)?,
                    &caller.name,
                    audit(None),
                )
                .await?
        }
        DealAction::Resolve => {
            let outcome = body.outcome.ok_or_else(|| {
                ApiError::invalid("missing_field", "outcome", "outcome is required")
            })?;
            let reason = require_reason(body.reason.as_deref().unwrap_or_default())?;
            let s = spec(&state, &deal);
            let offset = body
                .offset
                .as_deref()
                .map(|o| Amount::parse_decimal(o, &s).map_err(|e| ApiError::amount("offset", e)))
                .transpose()?;
            escrow
                .resolve(
                    deal.id,
                    outcome,
                    offset,
                    &reason,
                    &caller.name,
                    audit(Some(reason.clone())),
                )
                .await?
        }
    };
    Ok(Json(view(&state, updated, &caller).await?))
}

macro_rules! action_handler {
    ($name:ident, $action:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, tag = "escrow", path = $path, request_body = ActionBody, security(("bearer" = [])),
            responses((status = 200, body = DealView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
        pub async fn $name(
            State(state): State<AppState>,
            caller: Caller,
            RequestId(request_id): RequestId,
            Path(id): Path<String>,
            body: Option<ApiJson<ActionBody>>,
        ) -> ApiResult<Json<DealView>> {
            let body = body.map(|b| b.0).unwrap_or_default();
            act(state, caller, request_id, id, $action, body).await
        }
    };
}

action_handler!(
    fund,
    DealAction::Fund,
    "/v1/deals/{id}/fund",
    "Fund a CREATED deal (Trader): the amount is held on the buyer's account."
);
action_handler!(
    deliver,
    DealAction::Deliver,
    "/v1/deals/{id}/deliver",
    "The seller delivered (Trader; `evidence` when the template requires it): the immediate part is released to the seller and AUTO_APPROVE starts."
);
action_handler!(
    approve,
    DealAction::Approve,
    "/v1/deals/{id}/approve",
    "The buyer approves during INSPECTION (Trader): the holdback is released and the deal settles."
);
action_handler!(
    raise_issue,
    DealAction::RaiseIssue,
    "/v1/deals/{id}/issue",
    "The buyer raises an issue during INSPECTION (Trader; `reason_code`, `detail`, `evidence`): DISPUTE_TTL starts."
);
action_handler!(
    resolve,
    DealAction::Resolve,
    "/v1/deals/{id}/resolve",
    "An Operator resolves an ISSUE with one of the template's outcomes (`outcome`, `offset` for OFFSET, `reason`)."
);

/// Upload evidence to a deal (Trader): the body is the file, `Content-Type` one of the
/// accepted types, `X-Evidence-Type` one of the template's evidence types.
#[utoipa::path(post, tag = "escrow", path = "/v1/deals/{id}/evidence", request_body(content = Vec<u8>, content_type = "application/octet-stream"), security(("bearer" = [])),
    responses((status = 201, body = Evidence), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload_evidence(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Evidence>)> {
    caller.require(&[Role::Trader])?;
    // Either side brings evidence: the seller of delivery, the buyer of an issue.
    let (deal, _) = load_deal(&state, &caller, &id).await?;
    if deal.state == DealState::Settled {
        return Err(ApiError::Conflict {
            code: "invalid_state",
            field: None,
            message: "the deal is SETTLED: no more evidence".into(),
        });
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if !state.evidence.content_types.contains(&content_type) {
        return Err(ApiError::invalid(
            "unsupported_evidence_type",
            "content-type",
            format!(
                "evidence must be one of {}",
                state.evidence.content_types.join(", ")
            ),
        ));
    }
    let kind = headers
        .get("x-evidence-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !deal.template.evidence_types.contains(&kind) {
        return Err(ApiError::invalid(
            "invalid_evidence_type",
            "x-evidence-type",
            format!(
                "X-Evidence-Type must be one of {} for {}",
                deal.template.evidence_types.join(", "),
                deal.template.id
            ),
        ));
    }
    if body.is_empty() {
        return Err(ApiError::invalid(
            "invalid_body",
            "body",
            "the evidence file is empty",
        ));
    }
    if body.len() > state.evidence.max_bytes {
        return Err(ApiError::PayloadTooLarge(state.evidence.max_bytes));
    }
    let sha256 = state.evidence.put(&body).await.map_err(|e| {
        ApiError::Internal(crate::store::StoreError::Invariant(format!(
            "evidence store: {e}"
        )))
    })?;
    let evidence = Evidence {
        id: uuid::Uuid::now_v7(),
        deal: deal.id,
        kind,
        sha256,
        size: i64::try_from(body.len()).unwrap_or(i64::MAX),
        content_type,
        uploaded_by: caller.name.clone(),
        uploaded_at: state.escrow.clock.now(),
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "deal.evidence",
        format!("deal:{}", deal.id),
        None,
    );
    match state
        .store
        .add_evidence(&evidence, state.evidence.max_per_deal, &audit)
        .await
    {
        Err(StoreError::Conflict(ConflictKind::LimitReached, message)) => {
            return Err(ApiError::Conflict {
                code: "evidence_limit_reached",
                field: None,
                message,
            });
        }
        other => other?,
    }
    Ok((StatusCode::CREATED, Json(evidence)))
}

/// The bytes of one piece of evidence (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/deals/{id}/evidence/{evidence}", security(("bearer" = [])),
    responses((status = 200, description = "the file"), (status = 404, body = ErrorBody)))]
pub async fn download_evidence(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, evidence)): Path<(String, String)>,
) -> ApiResult<Response> {
    let (deal, _) = load_deal(&state, &caller, &id).await?;
    let deal = deal.id;
    let not_found = || ApiError::NotFound {
        what: "evidence",
        id: evidence.clone(),
        field: None,
    };
    let list = state.store.evidence(deal).await?;
    let e = list
        .iter()
        .find(|e| e.id.to_string() == evidence)
        .ok_or_else(not_found)?;
    let bytes = state
        .evidence
        .get(&e.sha256)
        .await
        .map_err(|err| {
            ApiError::Internal(crate::store::StoreError::Invariant(format!(
                "evidence store: {err}"
            )))
        })?
        .ok_or_else(not_found)?;
    // Always a download, never rendered in the viewer's page, whatever the file claims to be.
    let disposition = format!("attachment; filename=\"evidence-{}\"", e.id);
    Ok((
        [
            (header::CONTENT_TYPE, e.content_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Timeline {
    pub deal: String,
    pub items: Vec<TimelineEntry>,
}

/// Every state change, timer, evidence, posting and action on the deal, in order (any role).
#[utoipa::path(get, tag = "escrow", path = "/v1/deals/{id}/timeline", security(("bearer" = [])),
    responses((status = 200, body = Timeline), (status = 404, body = ErrorBody)))]
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Timeline>> {
    let (deal, _) = load_deal(&state, &caller, &id).await?;
    let events: Vec<DealEvent> = state.store.deal_events(deal.id).await?;
    Ok(Json(Timeline {
        deal: deal.id.to_string(),
        items: events
            .into_iter()
            .map(|e| TimelineEntry {
                at: micros_to_rfc3339(e.at),
                kind: e.kind,
                actor: e.actor,
                detail: e.detail,
            })
            .collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DisputeView {
    pub deal: DealView,
    /// When DISPUTE_TTL fires (absent once it has).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due_at: Option<String>,
    /// Seconds left before DISPUTE_TTL (0 once due or fired).
    pub remaining_seconds: i64,
}

/// Open disputes, the most urgent first: sorted by remaining TTL ascending (Operator, Admin).
#[utoipa::path(get, tag = "escrow", path = "/v1/admin/disputes", security(("bearer" = [])),
    responses((status = 200, body = Page<DisputeView>)))]
pub async fn disputes(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Page<DisputeView>>> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let now = state.escrow.clock.now();
    let mut items = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .list_deals(&crate::store::DealFilter {
                company: None,
                state: Some(DealState::Issue),
                after,
                limit: super::MAX_PAGE,
                ..Default::default()
            })
            .await?;
        after = page.last().map(|d| d.id);
        let done = (page.len() as i64) < super::MAX_PAGE;
        for deal in page {
            let timers = state.store.deal_timers(deal.id).await?;
            let due = timers
                .iter()
                .filter(|t| t.kind == TimerKind::DisputeTtl && t.state == TimerState::Pending)
                .map(|t| t.due_at)
                .min();
            items.push(DisputeView {
                remaining_seconds: due.map_or(0, |d| ((d - now) / 1_000_000).max(0)),
                due_at: due.map(micros_to_rfc3339),
                deal: view(&state, deal, &caller).await?,
            });
        }
        if done {
            break;
        }
    }
    items.sort_by_key(|d| (d.due_at.is_some(), d.remaining_seconds));
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}
