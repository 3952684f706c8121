//! Companies, trust pairs and their end-of-day sessions. Admins set up companies, members and
//! pairs; traders who are members of a pair's company record obligations in its open session;
//! operators close a session by hand or dry-run the close.

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, IdempotencyKey, RequestId};
use super::{AppState, optional_text, page_limit, require_reason};
use crate::api::auth::Caller;
use crate::domain::{AccountId, AssetSpec, Role, UnixMicros, micros_to_rfc3339};
use crate::store::{ConflictKind, StoreError};
use crate::trust::service::{Preview, TrustError};
use crate::trust::{
    Company, Member, ObligationKind, Session, SessionState, SettlementMode, Side, StoredObligation,
    Tier, TrustPair,
};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

fn parse_id(what: &'static str, id: &str, field: Option<&'static str>) -> ApiResult<uuid::Uuid> {
    uuid::Uuid::try_parse(id).map_err(|_| ApiError::NotFound {
        what,
        id: id.to_owned(),
        field,
    })
}

fn not_found(what: &'static str, id: &str, field: Option<&'static str>) -> ApiError {
    ApiError::NotFound {
        what,
        id: id.to_owned(),
        field,
    }
}

fn spec(state: &AppState, pair: &TrustPair) -> AssetSpec {
    state
        .ledger
        .asset(&pair.asset)
        .cloned()
        .unwrap_or(AssetSpec {
            key: pair.asset.clone(),
            decimals: 0,
        })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompanyView {
    pub id: String,
    pub name: String,
    pub tier: Tier,
    /// Its users need a second factor in the console, whatever their role.
    pub second_factor: bool,
    pub created_by: String,
    pub created_at: String,
}

fn company_view(c: &Company) -> CompanyView {
    CompanyView {
        id: c.id.to_string(),
        name: c.name.clone(),
        tier: c.tier,
        second_factor: c.second_factor,
        created_by: c.created_by.clone(),
        created_at: micros_to_rfc3339(c.created_at),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCompany {
    pub name: String,
    /// S, M, L or XL.
    pub tier: Tier,
    /// Its users need a second factor in the console whatever their role (default true).
    pub second_factor: Option<bool>,
    pub reason: String,
}

/// Register a company (Admin).
#[utoipa::path(post, tag = "trust", path = "/v1/companies", request_body = NewCompany, security(("bearer" = [])),
    responses((status = 201, body = CompanyView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_company(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewCompany>,
) -> ApiResult<(StatusCode, Json<CompanyView>)> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::invalid(
            "invalid_field",
            "name",
            "name must be 1-200 characters",
        ));
    }
    optional_text("name", Some(name.clone()), 200)?;
    let company = Company {
        id: uuid::Uuid::now_v7(),
        name,
        tier: body.tier,
        created_by: caller.name.clone(),
        created_at: state.clock.now(),
        second_factor: body.second_factor.unwrap_or(true),
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "company.create",
        format!("company:{}", company.id),
        Some(reason),
    );
    match state.store.create_company(&company, &audit).await {
        Err(StoreError::Conflict(ConflictKind::Exists, m)) => Err(ApiError::Conflict {
            code: "company_exists",
            field: Some("name"),
            message: m,
        }),
        other => {
            other?;
            Ok((StatusCode::CREATED, Json(company_view(&company))))
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompanyList {
    pub items: Vec<CompanyView>,
}

/// Every company (any role).
#[utoipa::path(get, tag = "trust", path = "/v1/companies", security(("bearer" = [])),
    responses((status = 200, body = CompanyList)))]
pub async fn companies(
    State(state): State<AppState>,
    _caller: Caller,
) -> ApiResult<Json<CompanyList>> {
    let items = state.store.companies().await?;
    Ok(Json(CompanyList {
        items: items.iter().map(company_view).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierChange {
    /// S, M, L or XL.
    pub tier: Tier,
    #[schema(min_length = 3)]
    pub reason: String,
}

/// Move a company to another tier (Admin). Audited with the tier table's version; it applies
/// to requests made after it, never to payouts already accepted.
#[utoipa::path(post, tag = "trust", path = "/v1/companies/{id}/tier", request_body = TierChange, security(("bearer" = [])),
    responses((status = 200, body = CompanyView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn set_tier(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TierChange>,
) -> ApiResult<Json<CompanyView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let before = company(&state, &id, None).await?;
    let mut audit = state.audit_record(
        &caller,
        request_id,
        "company.tier",
        format!("company:{}", before.id),
        Some(reason),
    );
    audit.evidence = Some(serde_json::json!({
        "from": before.tier.as_str(),
        "to": body.tier.as_str(),
        "tier_table": state.tiers.version,
    }));
    if before.tier != body.tier {
        match state
            .store
            .set_company_tier(before.id, before.tier, body.tier, &audit)
            .await
        {
            Err(StoreError::Conflict(_, m)) => {
                return Err(ApiError::Conflict {
                    code: "state_changed",
                    field: Some("tier"),
                    message: m,
                });
            }
            other => other?,
        }
        if let Err(e) = state.refresh_tier_headroom(Some(before.id)).await {
            tracing::warn!(error = %e, "tier headroom not refreshed");
        }
    }
    Ok(Json(company_view(&Company {
        tier: body.tier,
        ..before
    })))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorPolicy {
    /// Whether the company's users need a second factor in the console whatever their role
    /// (its admins and approvers always do).
    pub required: bool,
    #[schema(min_length = 3)]
    pub reason: String,
}

/// Set a company's second-factor policy (Admin), audited; sessions signed in from then on
/// follow it.
#[utoipa::path(post, tag = "trust", path = "/v1/companies/{id}/second-factor", request_body = SecondFactorPolicy, security(("bearer" = [])),
    responses((status = 200, body = CompanyView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_second_factor(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SecondFactorPolicy>,
) -> ApiResult<Json<CompanyView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let before = company(&state, &id, None).await?;
    let mut audit = state.audit_record(
        &caller,
        request_id,
        "company.second_factor",
        format!("company:{}", before.id),
        Some(reason),
    );
    audit.evidence = Some(serde_json::json!({"required": body.required}));
    state
        .store
        .set_company_second_factor(before.id, body.required, &audit)
        .await?;
    Ok(Json(company_view(&Company {
        second_factor: body.required,
        ..before
    })))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierRow {
    pub tier: Tier,
    pub network: String,
    pub asset: String,
    /// Token units, decimal strings at the asset's scale.
    pub max_payout: String,
    pub daily_volume: String,
    pub monthly_volume: String,
    pub max_credit_limit: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TierTableView {
    /// Empty when no table is configured (no tier limits).
    pub version: String,
    /// The zone whose midnights start the days and months volumes are counted in.
    pub timezone: String,
    /// A tier without a row for an asset may not pay out in it while the table has rows.
    pub rows: Vec<TierRow>,
}

/// The tier table in force: per tier and asset, the largest payout, the daily and monthly
/// payout volume and the largest trust credit limit.
#[utoipa::path(get, tag = "trust", path = "/v1/tiers", security(("bearer" = [])),
    responses((status = 200, body = TierTableView)))]
pub async fn tiers(State(state): State<AppState>, _caller: Caller) -> Json<TierTableView> {
    let t = &state.tiers;
    let rows = t
        .rows()
        .into_iter()
        .map(|(tier, asset, l)| {
            let spec = state.ledger.asset(asset).cloned().unwrap_or(AssetSpec {
                key: asset.clone(),
                decimals: 0,
            });
            TierRow {
                tier,
                network: asset.network.clone(),
                asset: asset.code.clone(),
                max_payout: spec.format(l.max_payout),
                daily_volume: spec.format(l.daily_volume),
                monthly_volume: spec.format(l.monthly_volume),
                max_credit_limit: spec.format(l.max_credit_limit),
            }
        })
        .collect();
    Json(TierTableView {
        version: t.version.clone(),
        timezone: t.timezone.name().to_owned(),
        rows,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeadroomRow {
    pub network: String,
    pub asset: String,
    /// The largest single payout that would pass now.
    pub payout: String,
    /// What is left of the day's and the month's payout volume.
    pub day: String,
    pub month: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HeadroomView {
    pub company: String,
    pub tier: Tier,
    pub tier_table: String,
    /// One row per asset the table names; empty when no table is configured.
    pub assets: Vec<HeadroomRow>,
}

/// What a company may still pay out under its tier, per asset (staff; a company's users for
/// their own company).
#[utoipa::path(get, tag = "trust", path = "/v1/companies/{id}/headroom", security(("bearer" = [])),
    responses((status = 200, body = HeadroomView), (status = 404, body = ErrorBody)))]
pub async fn headroom(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<HeadroomView>> {
    let c = company(&state, &id, None).await?;
    if !caller.owns(Some(c.id)) {
        return Err(not_found("company", &id, None));
    }
    let assets = state
        .tier_usage(&c)
        .await?
        .into_iter()
        .map(|(q, used)| {
            let [payout, day, month] = q.windows(used).map(|(_, left)| q.spec.format(left));
            HeadroomRow {
                network: q.spec.key.network.clone(),
                asset: q.spec.key.code.clone(),
                payout,
                day,
                month,
            }
        })
        .collect();
    Ok(Json(HeadroomView {
        company: c.id.to_string(),
        tier: c.tier,
        tier_table: state.tiers.version.clone(),
        assets,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// The API token's name the user signs in with.
    pub user: String,
    pub role: Role,
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub company: String,
    pub user: String,
    pub role: Role,
    pub added_by: String,
    pub added_at: String,
}

fn member_view(m: &Member) -> MemberView {
    MemberView {
        company: m.company.to_string(),
        user: m.user.clone(),
        role: m.role,
        added_by: m.added_by.clone(),
        added_at: micros_to_rfc3339(m.added_at),
    }
}

async fn company(state: &AppState, id: &str, field: Option<&'static str>) -> ApiResult<Company> {
    let uuid = parse_id("company", id, field)?;
    state
        .store
        .companies()
        .await?
        .into_iter()
        .find(|c| c.id == uuid)
        .ok_or_else(|| not_found("company", id, field))
}

/// Add a user to a company in a role, or change their role (Admin).
#[utoipa::path(post, tag = "trust", path = "/v1/companies/{id}/members", request_body = NewMember, security(("bearer" = [])),
    responses((status = 200, body = MemberView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewMember>,
) -> ApiResult<Json<MemberView>> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let company = company(&state, &id, None).await?;
    let user = body.user.trim().to_owned();
    if user.is_empty() || user.chars().count() > 200 || user.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "invalid_field",
            "user",
            "user must be 1-200 printable characters",
        ));
    }
    let member = Member {
        company: company.id,
        user,
        role: body.role,
        added_by: caller.name.clone(),
        added_at: state.clock.now(),
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "company.member.set",
        format!("company:{} user:{}", company.id, member.user),
        Some(reason),
    );
    state.store.set_company_member(&member, &audit).await?;
    Ok(Json(member_view(&member)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
}

/// A company's members (Admin, Operator).
#[utoipa::path(get, tag = "trust", path = "/v1/companies/{id}/members", security(("bearer" = [])),
    responses((status = 200, body = MemberList), (status = 404, body = ErrorBody)))]
pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberList>> {
    caller.require(&[Role::Admin, Role::Operator])?;
    let company = company(&state, &id, None).await?;
    let items = state.store.company_members(Some(company.id), None).await?;
    Ok(Json(MemberList {
        items: items.iter().map(member_view).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PairView {
    pub id: String,
    pub company_a: String,
    pub company_b: String,
    pub account_a: String,
    pub account_b: String,
    pub network: String,
    pub asset: String,
    pub limit_a_to_b: String,
    pub limit_b_to_a: String,
    pub timezone: String,
    /// Local HH:MM.
    pub cutoff: String,
    pub mode: SettlementMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_address_a: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout_address_b: Option<String>,
    /// The session taking obligations now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_session: Option<SessionView>,
    pub created_by: String,
    pub created_at: String,
    /// Present while suspended: no new obligations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspended: Option<SuspensionView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspensionView {
    pub by: String,
    pub reason: String,
    pub at: String,
}

async fn pair_view(state: &AppState, p: &TrustPair) -> ApiResult<PairView> {
    let spec = spec(state, p);
    let open = state
        .store
        .trust_sessions(Some(p.id), Some(SessionState::Open), 1)
        .await?;
    let open_session = match open.first() {
        Some(s) => Some(session_view(state, p, s, false).await?),
        None => None,
    };
    Ok(PairView {
        id: p.id.to_string(),
        company_a: p.company_a.to_string(),
        company_b: p.company_b.to_string(),
        account_a: p.account_a.to_string(),
        account_b: p.account_b.to_string(),
        network: p.asset.network.clone(),
        asset: p.asset.code.clone(),
        limit_a_to_b: spec.format(p.limit_a_to_b),
        limit_b_to_a: spec.format(p.limit_b_to_a),
        timezone: p.timezone.name().to_owned(),
        cutoff: p.cutoff.format("%H:%M").to_string(),
        mode: p.mode,
        payout_address_a: p.payout_address_a.clone(),
        payout_address_b: p.payout_address_b.clone(),
        open_session,
        created_by: p.created_by.clone(),
        created_at: micros_to_rfc3339(p.created_at),
        suspended: p.suspended.as_ref().map(|s| SuspensionView {
            by: s.by.clone(),
            reason: s.reason.clone(),
            at: micros_to_rfc3339(s.at),
        }),
    })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPair {
    pub company_a: String,
    pub company_b: String,
    /// Each company's account in the pair's asset: settlement moves between them.
    pub account_a: String,
    pub account_b: String,
    /// The most A may owe B net within one session, and the other way round.
    pub limit_a_to_b: String,
    pub limit_b_to_a: String,
    /// IANA timezone, e.g. Europe/Warsaw.
    pub timezone: String,
    /// Local cut-off, HH:MM.
    pub cutoff: String,
    /// full, partial or t_plus_1.
    pub mode: SettlementMode,
    /// Where A's and B's settlements are paid out on chain (EIP-55); left out: they stay on
    /// the account.
    pub payout_address_a: Option<String>,
    pub payout_address_b: Option<String>,
    pub reason: String,
}

/// Partial and T+1 settlement are for the Canary phase onwards (launch plan §7): while the
/// pair's network is in Pilot, only `full` is accepted.
async fn mode_allowed(state: &AppState, mode: SettlementMode, network: &str) -> ApiResult<()> {
    let phase = super::networks::phase_in_force(state, network).await?;
    if mode != SettlementMode::Full && phase == Some(crate::payouts::policy::RolloutPhase::Pilot) {
        return Err(ApiError::invalid(
            "mode_not_in_phase",
            "mode",
            format!(
                "partial and t_plus_1 settlement start in the canary phase; {network} is in pilot"
            ),
        ));
    }
    Ok(())
}

/// Create a trust pair (Admin); its first session opens at once and closes at the next cut-off.
/// What each side may owe (`limit_a_to_b` for A) is bounded by its tier's credit limit.
#[utoipa::path(post, tag = "trust", path = "/v1/trust/pairs", request_body = NewPair, security(("bearer" = [])),
    responses((status = 201, body = PairView), (status = 422, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn create_pair(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    ApiJson(body): ApiJson<NewPair>,
) -> ApiResult<(StatusCode, Json<PairView>)> {
    caller.require(&[Role::Admin])?;
    super::operations::ensure_config_open(&state).await?;
    let reason = require_reason(&body.reason)?;
    let a = company(&state, &body.company_a, Some("company_a")).await?;
    let b = company(&state, &body.company_b, Some("company_b")).await?;
    if a.id == b.id {
        return Err(ApiError::invalid(
            "invalid_field",
            "company_b",
            "a pair needs two different companies",
        ));
    }
    let store = &state.store;
    let mut accounts = Vec::new();
    for (field, text, owner) in [
        ("account_a", &body.account_a, &a),
        ("account_b", &body.account_b, &b),
    ] {
        let id = AccountId::parse(text).ok_or_else(|| not_found("account", text, Some(field)))?;
        let account = match store.get_account(id).await {
            Err(StoreError::NotFound) => return Err(not_found("account", text, Some(field))),
            other => other?,
        };
        if account.kind != crate::ledger::AccountKind::Partner {
            return Err(ApiError::invalid(
                "invalid_field",
                field,
                format!("{field} must be a partner account"),
            ));
        }
        // Settlement moves this account's money for its company's debts: it must be theirs.
        if account.company != Some(owner.id) {
            return Err(ApiError::invalid(
                "invalid_field",
                field,
                format!("{field} must be an account of company {}", owner.name),
            ));
        }
        accounts.push(account);
    }
    if accounts[0].id == accounts[1].id || accounts[0].asset != accounts[1].asset {
        return Err(ApiError::invalid(
            "invalid_field",
            "account_b",
            "the two accounts must differ and hold the same asset",
        ));
    }
    mode_allowed(&state, body.mode, &accounts[0].asset.network).await?;
    let asset = accounts[0].asset.clone();
    let limit_a_to_b =
        super::accounts::parse_amount(&state, &asset, "limit_a_to_b", &body.limit_a_to_b)?;
    let limit_b_to_a =
        super::accounts::parse_amount(&state, &asset, "limit_b_to_a", &body.limit_b_to_a)?;
    // Each side owes at most what its tier's credit limit allows.
    let asset_spec = state
        .ledger
        .asset(&asset)
        .cloned()
        .ok_or_else(|| ApiError::NotFound {
            what: "asset",
            id: asset.to_string(),
            field: Some("account_a"),
        })?;
    for (field, owes, limit) in [
        ("limit_a_to_b", &a, limit_a_to_b.units()),
        ("limit_b_to_a", &b, limit_b_to_a.units()),
    ] {
        state
            .tiers
            .check_credit(owes.tier, &asset_spec, limit)
            .map_err(|refusal| ApiError::TierLimit { field, refusal })?;
    }
    let timezone: chrono_tz::Tz = body.timezone.parse().map_err(|_| {
        ApiError::invalid(
            "invalid_field",
            "timezone",
            format!("{:?} is not an IANA timezone", body.timezone),
        )
    })?;
    let cutoff = crate::trust::cutoff::parse_time(&body.cutoff).ok_or_else(|| {
        ApiError::invalid("invalid_field", "cutoff", "cutoff must be HH:MM (24 h)")
    })?;
    for (field, address, account) in [
        ("payout_address_a", &body.payout_address_a, accounts[0].id),
        ("payout_address_b", &body.payout_address_b, accounts[1].id),
    ] {
        if let Some(address) = address {
            state
                .escrow
                .check_payout_address(field, address, account, &asset)
                .await?;
        }
    }
    let now = state.trust.now();
    let pair = TrustPair {
        id: uuid::Uuid::now_v7(),
        company_a: a.id,
        company_b: b.id,
        account_a: accounts[0].id,
        account_b: accounts[1].id,
        asset,
        limit_a_to_b: limit_a_to_b.units(),
        limit_b_to_a: limit_b_to_a.units(),
        timezone,
        cutoff,
        mode: body.mode,
        payout_address_a: body.payout_address_a,
        payout_address_b: body.payout_address_b,
        created_by: caller.name.clone(),
        created_at: now,
        suspended: None,
    };
    let first = crate::trust::service::Trust::first_session(&pair, now);
    let audit = state.audit_record(
        &caller,
        request_id,
        "trust_pair.create",
        format!("trust_pair:{}", pair.id),
        Some(reason),
    );
    store.create_trust_pair(&pair, &first, &audit).await?;
    Ok((StatusCode::CREATED, Json(pair_view(&state, &pair).await?)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TermsChange {
    /// New limits (token units), within each side's tier credit limit.
    pub limit_a_to_b: Option<String>,
    pub limit_b_to_a: Option<String>,
    /// IANA time zone of the cut-off.
    pub timezone: Option<String>,
    /// Local HH:MM.
    pub cutoff: Option<String>,
    /// full, partial or t_plus_1 (partial and t_plus_1 from the canary phase on).
    pub mode: Option<SettlementMode>,
    pub reason: String,
}

/// Change a pair's terms (Admin, reason required; refused during the configuration freeze).
/// They take effect from the next session: the open session keeps the limits, mode and cut-off
/// it opened with, and the next cut-off is computed from the new cut-off and time zone.
#[utoipa::path(put, tag = "trust", path = "/v1/trust/pairs/{id}/terms", request_body = TermsChange, security(("bearer" = [])),
    responses((status = 200, body = PairView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn change_terms(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TermsChange>,
) -> ApiResult<Json<PairView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let pair = load_pair(&state, &id, None).await?;
    super::operations::ensure_config_open(&state).await?;
    let asset_spec = spec(&state, &pair);
    let mut terms = crate::domain::trust::PairTerms::default();
    for (field, text, owes) in [
        ("limit_a_to_b", &body.limit_a_to_b, pair.company_a),
        ("limit_b_to_a", &body.limit_b_to_a, pair.company_b),
    ] {
        let Some(text) = text else { continue };
        let limit = super::accounts::parse_amount(&state, &pair.asset, field, text)?.units();
        let owes = company(&state, &owes.to_string(), None).await?;
        state
            .tiers
            .check_credit(owes.tier, &asset_spec, limit)
            .map_err(|refusal| ApiError::TierLimit { field, refusal })?;
        if field == "limit_a_to_b" {
            terms.limit_a_to_b = Some(limit);
        } else {
            terms.limit_b_to_a = Some(limit);
        }
    }
    if let Some(tz) = &body.timezone {
        terms.timezone = Some(tz.parse().map_err(|_| {
            ApiError::invalid(
                "invalid_field",
                "timezone",
                format!("{tz:?} is not an IANA timezone"),
            )
        })?);
    }
    if let Some(cutoff) = &body.cutoff {
        terms.cutoff = Some(crate::trust::cutoff::parse_time(cutoff).ok_or_else(|| {
            ApiError::invalid("invalid_field", "cutoff", "cutoff must be HH:MM (24 h)")
        })?);
    }
    if let Some(mode) = body.mode {
        mode_allowed(&state, mode, &pair.asset.network).await?;
        terms.mode = Some(mode);
    }
    if terms == crate::domain::trust::PairTerms::default() {
        return Err(ApiError::invalid(
            "missing_field",
            "limit_a_to_b",
            "name at least one term to change: limit_a_to_b, limit_b_to_a, timezone, cutoff or mode",
        ));
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        "trust_pair.terms",
        format!("trust_pair:{}", pair.id),
        Some(reason),
    );
    state
        .store
        .update_trust_pair_terms(pair.id, &terms, &audit)
        .await?;
    let changed = load_pair(&state, &id, None).await?;
    Ok(Json(pair_view(&state, &changed).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspensionChange {
    pub suspended: bool,
    pub reason: String,
}

/// Suspend or resume a pair (Admin, reason required). A suspended pair takes no new
/// obligations (409 `pair_suspended`); its sessions still close at cut-off and settle. A
/// rollback step: allowed during the configuration freeze.
#[utoipa::path(put, tag = "trust", path = "/v1/trust/pairs/{id}/suspension", request_body = SuspensionChange, security(("bearer" = [])),
    responses((status = 200, body = PairView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set_suspension(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SuspensionChange>,
) -> ApiResult<Json<PairView>> {
    caller.require(&[Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let pair = load_pair(&state, &id, None).await?;
    let audit = state.audit_record(
        &caller,
        request_id,
        if body.suspended {
            "trust_pair.suspend"
        } else {
            "trust_pair.resume"
        },
        format!("trust_pair:{}", pair.id),
        Some(reason.clone()),
    );
    let suspension = body.suspended.then(|| crate::domain::trust::Suspension {
        by: caller.name.clone(),
        reason,
        at: audit.at,
    });
    state
        .store
        .set_trust_pair_suspension(pair.id, suspension.as_ref(), &audit)
        .await?;
    let changed = load_pair(&state, &id, None).await?;
    Ok(Json(pair_view(&state, &changed).await?))
}

async fn load_pair(
    state: &AppState,
    id: &str,
    field: Option<&'static str>,
) -> ApiResult<TrustPair> {
    let uuid = parse_id("trust pair", id, field)?;
    state
        .store
        .trust_pairs(Some(uuid))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| not_found("trust pair", id, field))
}

/// The sides of `pair` the caller acts for as a trader: a company token's trader for its
/// company, a staff trader for the companies they are a member of.
async fn trader_sides(state: &AppState, caller: &Caller, pair: &TrustPair) -> ApiResult<Vec<Side>> {
    if caller.role != Role::Trader {
        return Ok(Vec::new());
    }
    let memberships = state
        .store
        .company_members(None, Some(&caller.name))
        .await?;
    Ok([Side::A, Side::B]
        .into_iter()
        .filter(|s| {
            caller.company == Some(pair.company(*s))
                || memberships
                    .iter()
                    .any(|m| m.company == pair.company(*s) && m.role == Role::Trader)
        })
        .collect())
}

/// Staff see every pair; a company's users and member traders only their companies' pairs.
/// Another pair answers as a missing one.
async fn require_visible(state: &AppState, caller: &Caller, pair: &TrustPair) -> ApiResult<()> {
    let visible = match caller.company {
        Some(c) => c == pair.company_a || c == pair.company_b,
        None => caller.role != Role::Trader || !trader_sides(state, caller, pair).await?.is_empty(),
    };
    if visible {
        Ok(())
    } else {
        Err(not_found("trust pair", &pair.id.to_string(), None))
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PairList {
    pub items: Vec<PairView>,
}

/// Trust pairs (staff: all; traders: their companies').
#[utoipa::path(get, tag = "trust", path = "/v1/trust/pairs", security(("bearer" = [])),
    responses((status = 200, body = PairList)))]
pub async fn pairs(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<PairList>> {
    let mut items = Vec::new();
    for p in state.store.trust_pairs(None).await? {
        if require_visible(&state, &caller, &p).await.is_ok() {
            items.push(pair_view(&state, &p).await?);
        }
    }
    Ok(Json(PairList { items }))
}

/// One pair with its open session.
#[utoipa::path(get, tag = "trust", path = "/v1/trust/pairs/{id}", security(("bearer" = [])),
    responses((status = 200, body = PairView), (status = 404, body = ErrorBody)))]
pub async fn pair(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<PairView>> {
    let p = load_pair(&state, &id, None).await?;
    require_visible(&state, &caller, &p).await?;
    Ok(Json(pair_view(&state, &p).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObligationView {
    pub id: String,
    /// Position across every session; closing freezes a session at its last.
    pub seq: i64,
    pub session: String,
    /// The company that owes.
    pub debtor: String,
    pub creditor: String,
    pub amount: String,
    pub kind: ObligationKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    pub created_by: String,
    pub created_at: String,
}

fn obligation_view(spec: &AssetSpec, pair: &TrustPair, o: &StoredObligation) -> ObligationView {
    ObligationView {
        id: o.id.to_string(),
        seq: o.seq,
        session: o.session.to_string(),
        debtor: pair.company(o.debtor).to_string(),
        creditor: pair.company(o.debtor.other()).to_string(),
        amount: spec.format(o.amount),
        kind: o.kind,
        reference: o.reference.clone(),
        created_by: o.created_by.clone(),
        created_at: micros_to_rfc3339(o.created_at),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewObligation {
    /// The company that owes (one of the pair's two).
    pub debtor: String,
    pub amount: String,
    pub reference: Option<String>,
}

/// Record an obligation the caller's company owes in the pair's open session (a Trader of the
/// debtor company, with an Idempotency-Key of the caller's own). Refused with the headroom left
/// when it would pass the debtor's limit.
#[utoipa::path(post, tag = "trust", path = "/v1/trust/pairs/{id}/obligations", request_body = NewObligation, security(("bearer" = [])),
    responses((status = 201, body = ObligationView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn record_obligation(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewObligation>,
) -> ApiResult<(StatusCode, Json<ObligationView>)> {
    caller.require(&[Role::Trader])?;
    let pair = load_pair(&state, &id, None).await?;
    require_visible(&state, &caller, &pair).await?;
    let sides = trader_sides(&state, &caller, &pair).await?;
    if sides.is_empty() {
        return Err(ApiError::Forbidden(
            "only a trader of one of the pair's companies records its obligations",
        ));
    }
    let debtor = match uuid::Uuid::try_parse(&body.debtor) {
        Ok(c) if c == pair.company_a => Side::A,
        Ok(c) if c == pair.company_b => Side::B,
        _ => {
            return Err(ApiError::invalid(
                "invalid_field",
                "debtor",
                "debtor must be one of the pair's two companies",
            ));
        }
    };
    // Consent: a debt is recorded by the side that owes it, never put on a company by the other.
    if !sides.contains(&debtor) {
        return Err(ApiError::ForbiddenAction(
            "an obligation is recorded by the debtor's side: only a trader of the debtor company \
             records what it owes"
                .into(),
        ));
    }
    let amount = super::accounts::parse_amount(&state, &pair.asset, "amount", &body.amount)?;
    let reference = optional_text("reference", body.reference, 200)?;
    let spec = spec(&state, &pair);
    let obligation = StoredObligation {
        seq: 0,
        id: uuid::Uuid::now_v7(),
        session: uuid::Uuid::nil(),
        debtor,
        amount: amount.units(),
        kind: ObligationKind::Intraday,
        reference,
        // Per caller: another caller's key is another obligation, never a replay of this one.
        idempotency_key: Some(format!("{}:{}:{key}", pair.id, caller.name)),
        created_by: caller.name.clone(),
        created_at: state.trust.now(),
    };
    let audit = state.audit_record(
        &caller,
        request_id,
        "trust_obligation.record",
        format!("trust_pair:{} obligation:{}", pair.id, obligation.id),
        None,
    );
    let stored = match state
        .store
        .record_trust_obligation(
            pair.id,
            &obligation,
            &crate::trust::netting::headroom_rule(debtor),
            &audit,
        )
        .await
    {
        Err(StoreError::CreditLimit { headroom, limits }) => {
            let limit = match debtor {
                crate::trust::Side::A => limits.0,
                crate::trust::Side::B => limits.1,
            };
            return Err(ApiError::invalid(
                "credit_limit_exceeded",
                "amount",
                format!(
                    "amount {} is over the debtor's credit limit of {}; headroom left in this session: {}",
                    spec.format(obligation.amount),
                    spec.format(limit),
                    spec.format(headroom)
                ),
            ));
        }
        Err(StoreError::Conflict(ConflictKind::Suspended, m)) => {
            return Err(ApiError::Conflict {
                code: "pair_suspended",
                field: None,
                message: m,
            });
        }
        Err(StoreError::Conflict(ConflictKind::NoOpenSession, m)) => {
            return Err(ApiError::Conflict {
                code: "no_open_session",
                field: None,
                message: m,
            });
        }
        other => other?,
    };
    if stored.id != obligation.id
        && (stored.amount != obligation.amount || stored.debtor != obligation.debtor)
    {
        return Err(ApiError::Conflict {
            code: "idempotency_conflict",
            field: Some("Idempotency-Key"),
            message: "this Idempotency-Key was used for another obligation".into(),
        });
    }
    Ok((
        StatusCode::CREATED,
        Json(obligation_view(&spec, &pair, &stored)),
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub pair: String,
    pub business_date: String,
    pub cutoff_at: String,
    pub state: SessionState,
    /// The terms it runs on: the pair's when it opened (a change of terms reaches the next
    /// session).
    pub mode: SettlementMode,
    pub limit_a_to_b: String,
    pub limit_b_to_a: String,
    /// Obligations so far (open) or frozen at close.
    pub obligations: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frozen_seq: Option<i64>,
    pub gross_a_to_b: String,
    pub gross_b_to_a: String,
    /// The company that owes net, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor: Option<String>,
    pub net_amount: String,
    /// nothing, full, partial, carried or unsettled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub settled_amount: String,
    pub carried_amount: String,
    /// The payout that took the creditor's settlement on chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settled_at: Option<String>,
    /// With `GET /v1/trust/sessions/{id}`: its obligations in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ObligationView>>,
}

async fn session_view(
    state: &AppState,
    pair: &TrustPair,
    s: &Session,
    with_obligations: bool,
) -> ApiResult<SessionView> {
    let spec = spec(state, pair);
    let store = &state.store;
    let list = if with_obligations || s.state == SessionState::Open {
        Some(store.trust_obligations(s.id, s.frozen_seq).await?)
    } else {
        None
    };
    let netted = match (&list, s.state) {
        (Some(l), SessionState::Open) => crate::trust::netting::net(
            &l.iter()
                .map(|o| crate::trust::netting::Obligation {
                    debtor: o.debtor,
                    amount: o.amount,
                })
                .collect::<Vec<_>>(),
        ),
        _ => s.netted,
    };
    let at = |m: Option<UnixMicros>| m.map(micros_to_rfc3339);
    Ok(SessionView {
        id: s.id.to_string(),
        pair: pair.id.to_string(),
        business_date: s.business_date.to_string(),
        cutoff_at: micros_to_rfc3339(s.cutoff_at),
        state: s.state,
        mode: s.mode(pair),
        limit_a_to_b: spec.format(s.limit(pair, crate::trust::Side::A)),
        limit_b_to_a: spec.format(s.limit(pair, crate::trust::Side::B)),
        obligations: netted.obligations,
        frozen_seq: s.frozen_seq,
        gross_a_to_b: spec.format(netted.gross_a_to_b),
        gross_b_to_a: spec.format(netted.gross_b_to_a),
        debtor: netted.debtor().map(|(d, _)| pair.company(d).to_string()),
        net_amount: spec.format(netted.debtor().map_or(0, |(_, a)| a)),
        outcome: s.outcome.map(|o| o.as_str().to_owned()),
        settled_amount: spec.format(s.settled_amount),
        carried_amount: spec.format(s.carried_amount),
        payout: s.payout.map(|p| p.to_string()),
        closed_by: s.closed_by.clone(),
        closed_at: at(s.closed_at),
        settled_at: at(s.settled_at),
        items: match (with_obligations, list) {
            (true, Some(l)) => Some(l.iter().map(|o| obligation_view(&spec, pair, o)).collect()),
            _ => None,
        },
    })
}

async fn load_session(state: &AppState, id: &str) -> ApiResult<(Session, TrustPair)> {
    let uuid = parse_id("trust session", id, None)?;
    let s = match state.store.trust_session(uuid).await {
        Err(StoreError::NotFound) => return Err(not_found("trust session", id, None)),
        other => other?,
    };
    let pair = load_pair(state, &s.pair.to_string(), None).await?;
    Ok((s, pair))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListSessions {
    pub pair: Option<String>,
    pub state: Option<SessionState>,
    pub limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionView>,
}

/// Sessions in cut-off order, of one pair and/or in one state (staff, or the pair's traders).
#[utoipa::path(get, tag = "trust", path = "/v1/trust/sessions", params(ListSessions), security(("bearer" = [])),
    responses((status = 200, body = SessionList)))]
pub async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListSessions>,
) -> ApiResult<Json<SessionList>> {
    let limit = page_limit(q.limit)?;
    let pair = match &q.pair {
        Some(p) => Some(load_pair(&state, p, Some("pair")).await?),
        None => None,
    };
    let pairs = state.store.trust_pairs(None).await?;
    let mut items = Vec::new();
    for s in state
        .store
        .trust_sessions(pair.as_ref().map(|p| p.id), q.state, limit)
        .await?
    {
        let Some(p) = pairs.iter().find(|p| p.id == s.pair) else {
            continue;
        };
        if require_visible(&state, &caller, p).await.is_ok() {
            items.push(session_view(&state, p, &s, false).await?);
        }
    }
    Ok(Json(SessionList { items }))
}

/// One session with its obligations.
#[utoipa::path(get, tag = "trust", path = "/v1/trust/sessions/{id}", security(("bearer" = [])),
    responses((status = 200, body = SessionView), (status = 404, body = ErrorBody)))]
pub async fn session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<SessionView>> {
    let (s, pair) = load_session(&state, &id).await?;
    require_visible(&state, &caller, &pair).await?;
    Ok(Json(session_view(&state, &pair, &s, true).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CloseQuery {
    /// Compute and return what closing would settle; change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseRequest {
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewView {
    pub session: String,
    pub obligations: usize,
    pub frozen_seq: i64,
    pub gross_a_to_b: String,
    pub gross_b_to_a: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debtor: Option<String>,
    pub net_amount: String,
    /// The debtor's available balance now.
    pub available: String,
    /// nothing, full, partial, carried or unsettled.
    pub outcome: String,
    pub settle: String,
    pub carry: String,
    /// Settlement would wait: the network is in safe-mode.
    pub safe_mode: bool,
}

pub fn preview_view(spec: &AssetSpec, pair: &TrustPair, p: &Preview) -> PreviewView {
    PreviewView {
        session: p.session.to_string(),
        obligations: p.obligations,
        frozen_seq: p.frozen_seq,
        gross_a_to_b: spec.format(p.gross_a_to_b),
        gross_b_to_a: spec.format(p.gross_b_to_a),
        debtor: p.debtor.map(|d| pair.company(d).to_string()),
        net_amount: spec.format(p.net_amount),
        available: spec.format(p.available),
        outcome: p.outcome.to_owned(),
        settle: spec.format(p.settle),
        carry: spec.format(p.carry),
        safe_mode: p.safe_mode,
    }
}

/// Close a session now (Operator, Admin; reason required) — or, with `?dry_run=true`, return
/// exactly what closing it would settle and change nothing.
#[utoipa::path(post, tag = "trust", path = "/v1/trust/sessions/{id}/close", params(CloseQuery), request_body = CloseRequest, security(("bearer" = [])),
    responses((status = 200, body = Object), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn close(
    State(state): State<AppState>,
    caller: Caller,
    RequestId(request_id): RequestId,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<CloseQuery>,
    ApiJson(body): ApiJson<CloseRequest>,
) -> ApiResult<Json<serde_json::Value>> {
    caller.require(&[Role::Operator, Role::Admin])?;
    let reason = require_reason(&body.reason)?;
    let (s, pair) = load_session(&state, &id).await?;
    let spec = spec(&state, &pair);
    if q.dry_run {
        let preview = state.trust.preview(&s).await?;
        return Ok(Json(
            serde_json::to_value(preview_view(&spec, &pair, &preview)).unwrap_or_default(),
        ));
    }
    let audit = state.audit_record(
        &caller,
        request_id,
        "trust_session.close",
        format!("trust_session:{}", s.id),
        Some(reason),
    );
    let closed = match state.trust.close(s.id, &caller.name, Some(&audit)).await {
        Ok(c) => c,
        Err(TrustError::NotOpen(_, current)) => {
            return Err(ApiError::Conflict {
                code: "session_not_open",
                field: None,
                message: format!("session {} is {current}", s.id),
            });
        }
        Err(TrustError::Store(e)) => return Err(e.into()),
        Err(TrustError::Ledger(e)) => return Err(ApiError::Ledger(e)),
        Err(TrustError::Amount(e)) => return Err(ApiError::amount("amount", e)),
    };
    Ok(Json(
        serde_json::to_value(session_view(&state, &pair, &closed, true).await?).unwrap_or_default(),
    ))
}
