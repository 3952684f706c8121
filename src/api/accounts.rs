//! Accounts and their balances.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, RequestId};
use super::views::{AccountView, Page};
use super::{AppState, WRITERS, page_limit, require_reason};
use crate::api::auth::Caller;
use crate::domain::{AccountId, Amount, AssetKey};
use crate::ledger::{AccountKind, NewAccount};
use crate::store::{AccountFilter, AuditRecord, ConflictKind, StoreError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListAccounts {
    pub owner: Option<String>,
    pub network: Option<String>,
    pub asset: Option<String>,
    pub kind: Option<AccountKind>,
    pub cursor: Option<String>,
    pub limit: Option<i64>,
}

/// List accounts with their balances.
#[utoipa::path(get, tag = "accounts", path = "/v1/accounts", params(ListAccounts), security(("bearer" = [])),
    responses((status = 200, body = Page<AccountView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListAccounts>,
) -> ApiResult<Json<Page<AccountView>>> {
    let limit = page_limit(q.limit)?;
    let asset = match (q.network, q.asset) {
        (Some(n), Some(a)) => Some(AssetKey::new(n, a)),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "missing_field",
                "network",
                "network is required with asset",
            ));
        }
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "missing_field",
                "asset",
                "asset is required with network",
            ));
        }
    };
    let after = q
        .cursor
        .map(|c| {
            AccountId::parse(&c).ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "cursor", "cursor is not one we issued")
            })
        })
        .transpose()?;
    let accounts = state
        .store
        .list_accounts(&AccountFilter {
            owner: q.owner,
            // A company's users list only its accounts.
            company: caller.company,
            asset,
            kind: q.kind,
            after,
            limit,
        })
        .await?;
    let next_cursor = (accounts.len() as i64 == limit)
        .then(|| accounts.last().map(|a| a.id.to_string()))
        .flatten();
    Ok(Json(Page {
        items: accounts
            .iter()
            .map(|a| AccountView::new(&state.ledger, a))
            .collect(),
        next_cursor,
    }))
}

/// One account with its balances.
#[utoipa::path(get, tag = "accounts", path = "/v1/accounts/{id}", security(("bearer" = [])),
    responses((status = 200, body = AccountView), (status = 404, body = ErrorBody)))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountView>> {
    let account = load_account(&state, &caller, &id, None).await?;
    Ok(Json(AccountView::new(&state.ledger, &account)))
}

/// Loads an account named by `text` that `caller` may act on; `field` says where the id came
/// from (None: the path). Another company's account answers exactly as a missing one.
pub async fn load_account(
    state: &AppState,
    caller: &Caller,
    text: &str,
    field: Option<&'static str>,
) -> ApiResult<crate::ledger::Account> {
    let id = account_id(text, field)?;
    owned_account(caller, text, field, state.store.get_account(id).await)
}

/// The account the payout request names, with whether its allowlist lets it pay
/// `destination` on `network`: one read (see `load_account` for the errors).
pub async fn load_paying_account(
    state: &AppState,
    caller: &Caller,
    text: &str,
    network: &str,
    destination: &str,
) -> ApiResult<(crate::ledger::Account, bool)> {
    let id = account_id(text, Some("account"))?;
    let read = state.store.account_paying(id, network, destination).await;
    let allowed = read.as_ref().map(|(_, allowed)| *allowed).unwrap_or(false);
    let account = owned_account(caller, text, Some("account"), read.map(|(a, _)| a))?;
    Ok((account, allowed))
}

fn account_not_found(text: &str, field: Option<&'static str>) -> ApiError {
    ApiError::NotFound {
        what: "account",
        id: text.to_owned(),
        field,
    }
}

fn account_id(text: &str, field: Option<&'static str>) -> ApiResult<AccountId> {
    AccountId::parse(text).ok_or_else(|| match field {
        Some(f) => ApiError::invalid(
            "invalid_field",
            f,
            format!("{f} must be an account id (UUID)"),
        ),
        None => account_not_found(text, field),
    })
}

/// Another company's account answers as if it did not exist.
fn owned_account(
    caller: &Caller,
    text: &str,
    field: Option<&'static str>,
    read: Result<crate::ledger::Account, StoreError>,
) -> ApiResult<crate::ledger::Account> {
    match read {
        Ok(a) if caller.owns(a.company) => Ok(a),
        Ok(_) | Err(StoreError::NotFound) => Err(account_not_found(text, field)),
        Err(e) => Err(e.into()),
    }
}

/// Parses `text` as an amount of `asset`, naming `field` in the error.
pub fn parse_amount(
    state: &AppState,
    asset: &AssetKey,
    field: &'static str,
    text: &str,
) -> ApiResult<Amount> {
    let spec = state
        .ledger
        .asset(asset)
        .ok_or_else(|| ApiError::NotFound {
            what: "asset",
            id: asset.to_string(),
            field: Some(field),
        })?;
    Amount::parse_decimal(text, spec).map_err(|e| ApiError::amount(field, e))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccount {
    /// Who the funds belong to: a partner id, or the operator's own name.
    pub owner: String,
    pub network: String,
    pub asset: String,
    /// `partner` or `operating`; system accounts are created by the daemon.
    pub kind: AccountKind,
    /// The company a partner account belongs to (staff only; a company's admin opens accounts
    /// for its own company). Absent: the operator's.
    #[serde(default)]
    pub company: Option<uuid::Uuid>,
    #[serde(default)]
    pub allow_negative: bool,
    pub reason: String,
}

/// Open an account (Admin).
#[utoipa::path(post, tag = "accounts", path = "/v1/accounts", request_body = CreateAccount, security(("bearer" = [])),
    responses((status = 201, body = AccountView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<CreateAccount>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    caller.require(WRITERS)?;
    let reason = require_reason(&body.reason)?;
    let owner = body.owner.trim();
    if owner.is_empty()
        || owner.len() > 128
        || owner == "system"
        || owner.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(
            "invalid_field",
            "owner",
            "owner must be 1-128 characters and not \"system\"",
        ));
    }
    if body.kind.is_system() {
        return Err(ApiError::invalid(
            "invalid_field",
            "kind",
            "kind must be partner or operating",
        ));
    }
    let asset = AssetKey::new(body.network, body.asset);
    if state.ledger.asset(&asset).is_none() {
        return Err(ApiError::NotFound {
            what: "asset",
            id: asset.to_string(),
            field: Some("asset"),
        });
    }
    let audit = AuditRecord {
        actor: caller.name.clone(),
        role: caller.role,
        action: "account.create".into(),
        target: String::new(),
        reason: Some(reason),
        request_id,
        at: state.clock.now(),
        evidence: None,
    };
    let company = state.owning_company(&caller, body.company).await?;
    if company.is_some() && body.kind != AccountKind::Partner {
        return Err(ApiError::invalid(
            "invalid_field",
            "kind",
            "a company's account is a partner account",
        ));
    }
    let new = NewAccount {
        owner: owner.to_owned(),
        company,
        asset,
        kind: body.kind,
        allow_negative: body.allow_negative,
    };
    match state.store.create_account(&new, &audit).await {
        Ok(a) => Ok((
            StatusCode::CREATED,
            Json(AccountView::new(&state.ledger, &a)),
        )),
        Err(StoreError::Conflict(ConflictKind::Exists, message)) => Err(ApiError::Conflict {
            code: "account_exists",
            field: Some("owner"),
            message,
        }),
        Err(e) => Err(e.into()),
    }
}
