//! `POST /v1/deeplinks`: a signed, short-lived, single-use link to one console page, for the
//! users of a company the object belongs to (or for staff). See `console::deeplink`.

use super::AppState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, RequestId};
use crate::api::auth::Caller;
use crate::console::deeplink::{MAX_TTL_SECONDS, Target};
use crate::domain::console::Deeplink;
use crate::domain::micros_to_rfc3339;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDeeplink {
    /// deal or payout.
    pub target: Target,
    /// The deal's or payout's id; one the caller may see.
    pub id: String,
    /// Staff only: the company whose users may open it (one the object belongs to); left out,
    /// staff open it. A company's user mints links for their own company only.
    pub company: Option<uuid::Uuid>,
    /// Seconds the link lives, at most 900 (the default).
    #[schema(minimum = 1, maximum = 900)]
    pub ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeeplinkView {
    /// The console path that opens the page: append it to the console's address.
    pub url: String,
    /// The signed link itself (a JWT), for callers that build their own address.
    pub token: String,
    pub jti: String,
    pub target: Target,
    pub id: String,
    pub company: Option<String>,
    pub expires_at: String,
}

/// Mint a deeplink to a deal or payout the caller may see. It opens the object's console page
/// once, within its life (at most 15 minutes), after the user signs in as a user of the link's
/// company.
#[utoipa::path(post, tag = "console", path = "/v1/deeplinks", request_body = NewDeeplink, security(("bearer" = [])),
    responses((status = 201, body = DeeplinkView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewDeeplink>,
) -> ApiResult<(StatusCode, Json<DeeplinkView>)> {
    let ttl = body.ttl_seconds.unwrap_or(MAX_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::invalid(
            "invalid_field",
            "ttl_seconds",
            format!("ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"),
        ));
    }
    let (id, owners) = match body.target {
        Target::Payout => {
            let p = super::payouts::load_payout(&state, &caller, &body.id).await?;
            let owner = state.store.get_account(p.account).await?.company;
            (p.id.0, vec![owner])
        }
        Target::Deal => {
            let (d, _) = super::deals::load_deal(&state, &caller, &body.id).await?;
            let buyer = state.store.get_account(d.buyer).await?.company;
            let seller = state.store.get_account(d.seller).await?.company;
            (d.id.0, vec![buyer, seller])
        }
    };
    let company = match (caller.company, body.company) {
        (Some(own), named) if named.is_none_or(|n| n == own) => Some(own),
        (None, None) => None,
        (None, Some(named)) if owners.contains(&Some(named)) => Some(named),
        _ => {
            return Err(ApiError::invalid(
                "invalid_field",
                "company",
                "company must be one the object belongs to (a company's users: their own)",
            ));
        }
    };
    let key = state.deeplinks.as_ref().ok_or_else(|| ApiError::Conflict {
        code: "deeplinks_unavailable",
        field: None,
        message: "deeplinks need the console key (console.secret_env)".into(),
    })?;
    let now = state.clock.now();
    let (token, claims) = key
        .mint(body.target, id, company, now, ttl)
        .map_err(|e| ApiError::Internal(crate::store::StoreError::Invariant(e.to_string())))?;
    let link = Deeplink {
        jti: claims.jti.clone(),
        target: claims.sub.clone(),
        company,
        created_by: caller.name.clone(),
        created_at: now,
        expires_at: claims.exp * 1_000_000,
    };
    let mut audit = state.audit_record(
        &caller,
        request_id,
        "deeplink.create",
        claims.sub.clone(),
        None,
    );
    audit.evidence = Some(serde_json::json!({"jti": claims.jti, "company": company}));
    state.store.mint_deeplink(&link, &audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(DeeplinkView {
            url: format!("/admin/open?link={token}"),
            token,
            jti: claims.jti,
            target: body.target,
            id: id.to_string(),
            company: company.map(|c| c.to_string()),
            expires_at: micros_to_rfc3339(link.expires_at),
        }),
    ))
}
