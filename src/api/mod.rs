//! The control API: axum router, shared state, middleware (request id, metrics, tracing,
//! body limit, timeout). One file per resource.

pub mod accounts;
pub mod allowlists;
pub mod audit;
pub mod auth;
pub mod controls;
pub mod deals;
pub mod deeplinks;
pub mod deposit_addresses;
pub mod error;
pub mod extract;
pub mod health;
pub mod holds;
pub mod incidents;
pub mod journal;
pub mod manual_entries;
pub mod networks;
pub mod openapi;
pub mod operations;
pub mod payouts;
pub mod reports;
pub mod serve;
pub mod templates;
pub mod throttle;
pub mod trust;
pub mod views;
pub mod webhooks;

use crate::domain::{AccountId, Role};
use crate::ledger::{Command, Ledger, Posted};
use crate::metrics::Metrics;
use crate::store::AuditRecord;
use auth::{Authenticator, Caller};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use error::{ApiError, ApiResult};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// What every handler reads. axum clones the state for each request, so it is one shared
/// handle: a clone is a reference count, not a copy of every service's maps and metrics.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

pub struct AppParts {
    pub ledger: Ledger,
    /// Every store area: the API is where they meet. Services get only the areas they use.
    pub store: crate::store::DynStore,
    /// The daemon's one clock.
    pub clock: crate::clock::DynClock,
    pub metrics: Metrics,
    pub auth: Arc<Authenticator>,
    /// Brute-force limits on wrong tokens and codes.
    pub throttles: Arc<throttle::Throttles>,
    /// Signs deeplinks to console pages; None without the console key.
    pub deeplinks: Option<crate::console::deeplink::DeeplinkKey>,
    /// The tier table in force (`[tiers]`); inactive when the config has none.
    pub tiers: Arc<crate::domain::tiers::TierTable>,
    pub networks: Arc<crate::payouts::networks::PayoutNetworks>,
    pub wallets: Arc<Vec<Arc<crate::wallets::Wallet>>>,
    pub templates: Arc<crate::templates::TemplateCatalog>,
    pub escrow: crate::escrow::service::Escrow,
    pub trust: crate::trust::service::Trust,
    pub evidence: Arc<crate::escrow::evidence::EvidenceStore>,
    /// `webhooks.allow_private_networks`: endpoints may be internal (tests, same host).
    pub webhooks_allow_private: bool,
    pub canaries: crate::operations::canary::Canaries,
}

/// Largest page a list endpoint returns.
pub const MAX_PAGE: i64 = 500;
pub const DEFAULT_PAGE: i64 = 100;

/// The API's routes, with `extra` (the console's) merged in, all under the same layers:
/// request id, tracing, timeout, body limit and metrics.
pub fn router(
    state: AppState,
    extra: Option<Router>,
    max_body_bytes: usize,
    request_timeout: Duration,
) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let batch_limit = max_body_bytes
        .saturating_mul(payouts::MAX_BATCH)
        .min(4 << 20);
    let routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/openapi.json", get(openapi::serve))
        .route("/v1/accounts", get(accounts::list).post(accounts::create))
        .route("/v1/deals", get(deals::list).post(deals::create))
        .route("/v1/deals/{id}", get(deals::get_one))
        .route("/v1/deals/{id}/fund", post(deals::fund))
        .route("/v1/deals/{id}/deliver", post(deals::deliver))
        .route("/v1/deals/{id}/approve", post(deals::approve))
        .route("/v1/deals/{id}/issue", post(deals::raise_issue))
        .route("/v1/deals/{id}/resolve", post(deals::resolve))
        .route(
            "/v1/deals/{id}/evidence",
            // Files may be larger than JSON bodies; the handler enforces escrow.evidence_max_bytes.
            post(deals::upload_evidence).layer(DefaultBodyLimit::max(
                state.evidence.max_bytes.saturating_add(1),
            )),
        )
        .route(
            "/v1/deals/{id}/evidence/{evidence}",
            get(deals::download_evidence),
        )
        .route("/v1/deals/{id}/timeline", get(deals::timeline))
        .route("/v1/admin/disputes", get(deals::disputes))
        .route("/v1/reports/go-no-go", get(reports::go_no_go))
        .route("/v1/incidents", get(incidents::list).post(incidents::open))
        .route("/v1/incidents/{id}", get(incidents::get_one))
        .route("/v1/incidents/{id}/updates", post(incidents::update))
        .route("/v1/exports/timelines", get(reports::export_timelines))
        .route("/v1/exports/journal", get(reports::export_journal))
        .route(
            "/v1/webhooks/endpoints",
            get(webhooks::list).post(webhooks::create),
        )
        .route("/v1/webhooks/endpoints/{id}", get(webhooks::get_one))
        .route("/v1/webhooks/endpoints/{id}/rotate", post(webhooks::rotate))
        .route(
            "/v1/webhooks/endpoints/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route("/v1/webhooks/endpoints/{id}/replay", post(webhooks::replay))
        .route("/v1/webhooks/events/{id}", get(webhooks::event))
        .route(
            "/v1/companies",
            get(trust::companies).post(trust::create_company),
        )
        .route("/v1/companies/{id}/tier", post(trust::set_tier))
        .route(
            "/v1/companies/{id}/second-factor",
            post(trust::set_second_factor),
        )
        .route("/v1/companies/{id}/headroom", get(trust::headroom))
        .route("/v1/tiers", get(trust::tiers))
        .route("/v1/deeplinks", post(deeplinks::create))
        .route(
            "/v1/companies/{id}/members",
            get(trust::members).post(trust::set_member),
        )
        .route(
            "/v1/trust/pairs",
            get(trust::pairs).post(trust::create_pair),
        )
        .route("/v1/trust/pairs/{id}", get(trust::pair))
        .route("/v1/trust/pairs/{id}/terms", put(trust::change_terms))
        .route(
            "/v1/trust/pairs/{id}/suspension",
            put(trust::set_suspension),
        )
        .route(
            "/v1/trust/pairs/{id}/obligations",
            post(trust::record_obligation),
        )
        .route("/v1/trust/sessions", get(trust::sessions))
        .route("/v1/trust/sessions/{id}", get(trust::session))
        .route("/v1/trust/sessions/{id}/close", post(trust::close))
        .route(
            "/v1/webhooks/endpoints/{id}/active",
            post(webhooks::set_active),
        )
        .route("/v1/templates", get(templates::list))
        .route("/v1/templates/{id}", get(templates::get_one))
        .route(
            "/v1/pilot/scope",
            get(templates::get_scope).put(templates::set_scope),
        )
        .route("/v1/accounts/{id}", get(accounts::get_one))
        .route("/v1/journal", get(journal::list))
        .route("/v1/journal/{id}", get(journal::get_one))
        .route("/v1/deposits", post(manual_entries::deposit))
        .route("/v1/adjustments", post(manual_entries::adjustment))
        .route("/v1/holds", post(holds::create))
        .route("/v1/holds/{id}", get(holds::get_one))
        .route("/v1/holds/{id}/release", post(holds::release))
        .route("/v1/holds/{id}/void", post(holds::void))
        .route("/v1/audit", get(audit::list))
        .route("/v1/payouts", get(payouts::list).post(payouts::create))
        .route(
            "/v1/payouts/batch",
            // 500 payouts: room for each at a single request's limit, up to 4 MiB.
            post(payouts::create_batch).layer((
                DefaultBodyLimit::max(batch_limit),
                Extension(extract::BodyLimit(batch_limit)),
            )),
        )
        .route("/v1/payouts/{id}", get(payouts::get_one))
        .route("/v1/payouts/{id}/approve", post(payouts::approve))
        .route("/v1/payouts/{id}/reject", post(payouts::reject))
        .route("/v1/payouts/{id}/cancel", post(payouts::cancel))
        .route("/v1/networks", get(networks::list))
        .route(
            "/v1/canary/{network}",
            get(operations::canary_status).post(operations::run_canary),
        )
        .route(
            "/v1/config-freeze",
            get(operations::get_freeze).put(operations::set_freeze),
        )
        .route(
            "/v1/networks/{name}/safe-mode",
            post(networks::set_safe_mode),
        )
        .route("/v1/networks/{name}/rollout", post(networks::set_rollout))
        .route("/v1/networks/{name}/freezes", post(networks::set_freeze))
        .route("/v1/networks/{name}/controls", get(controls::get_controls))
        .route(
            "/v1/networks/{name}/controls/per-tx-cap",
            put(controls::set_cap),
        )
        .route(
            "/v1/networks/{name}/controls/fee-mode",
            put(controls::set_fee_mode),
        )
        .route(
            "/v1/networks/{name}/wallets/{wallet}/pause",
            put(controls::set_pause),
        )
        .route(
            "/v1/accounts/{id}/allowlist",
            get(allowlists::get_one).put(allowlists::set_enforced),
        )
        .route(
            "/v1/accounts/{id}/deposit-addresses",
            get(deposit_addresses::list).post(deposit_addresses::add),
        )
        .route(
            "/v1/accounts/{id}/allowlist/destinations",
            post(allowlists::add),
        )
        .route(
            "/v1/accounts/{id}/allowlist/destinations/{network}/{address}",
            axum::routing::delete(allowlists::remove),
        )
        .fallback(|| async {
            ApiError::NotFound {
                what: "route",
                id: String::new(),
                field: None,
            }
        })
        .with_state(state.clone());
    routes
        .merge(extra.unwrap_or_default())
        .layer(middleware::from_fn_with_state(state, record_metrics))
        .layer(Extension(extract::BodyLimit(max_body_bytes)))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, request_timeout))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", request_id = %id, method = %req.method(), uri = %req.uri().path())
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(middleware::map_request(drop_unfit_request_id))
}

/// A caller's `x-request-id` is kept (and stored in audit rows) only when it is 1-128
/// characters of letters, digits and `-_.:`; any other is dropped, so the router gives the
/// request a fresh one.
async fn drop_unfit_request_id(mut req: Request) -> Request {
    let fit = |v: &axum::http::HeaderValue| {
        (1..=128).contains(&v.len())
            && v.as_bytes()
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if req.headers().get("x-request-id").is_some_and(|v| !fit(v)) {
        req.headers_mut().remove("x-request-id");
    }
    req
}

/// The `method` label: the standard methods by name, any other as `other`, so made-up
/// methods cannot create series.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = method_label(req.method());
    let started = Instant::now();
    let response = next.run(req).await;
    let http = &state.metrics.http;
    http.request_duration_seconds
        .with_label_values(&[route.as_str(), method])
        .observe(started.elapsed().as_secs_f64());
    http.requests_total
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    response
}

/// What every mutating ledger call needs besides the command itself.
pub struct Mutation<'a> {
    pub caller: &'a Caller,
    pub request_id: String,
    pub idempotency_key: String,
    pub action: &'static str,
    pub target: String,
    /// Required for treasury actions; recorded as the journal memo and in the audit row.
    pub reason: Option<String>,
}

impl AppState {
    /// Whether `caller` may see what `account` holds: staff always, a company's users only
    /// their company's (one account read, for them only).
    pub async fn sees_account(&self, caller: &Caller, account: AccountId) -> ApiResult<bool> {
        Ok(caller.company.is_none() || caller.owns(self.store.get_account(account).await?.company))
    }

    /// The company a new object of `caller`'s belongs to, given the `company` the body named:
    /// a company's users create only for their own (naming another is refused), staff for the
    /// company they name (which must exist) or for the operator (None).
    pub async fn owning_company(
        &self,
        caller: &Caller,
        named: Option<uuid::Uuid>,
    ) -> ApiResult<Option<uuid::Uuid>> {
        match (caller.company, named) {
            (Some(own), named) if named.is_none_or(|n| n == own) => Ok(Some(own)),
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "invalid_field",
                "company",
                "a company's users create only for their own company",
            )),
            (None, Some(named)) => {
                if self.store.companies().await?.iter().any(|c| c.id == named) {
                    Ok(Some(named))
                } else {
                    Err(ApiError::NotFound {
                        what: "company",
                        id: named.to_string(),
                        field: Some("company"),
                    })
                }
            }
            (_, None) => Ok(None),
        }
    }

    /// The caller `token` speaks for, judged only while `source` has wrong guesses left;
    /// a wrong one counts against `source` (in-process callers have none).
    pub fn authenticate_from(
        &self,
        source: Option<std::net::IpAddr>,
        token: &str,
    ) -> ApiResult<(Caller, [u8; 32])> {
        let now = self.clock.now();
        if let Some(ip) = source
            && let Err(wait) = self.throttles.bearer.check(&ip, now)
        {
            self.metrics
                .http
                .auth_throttled_total
                .with_label_values(&["bearer"])
                .inc();
            return Err(ApiError::TooManyAttempts(wait));
        }
        match self.auth.authenticate(token) {
            Some(found) => Ok(found),
            None => {
                self.metrics
                    .http
                    .auth_failures_total
                    .with_label_values(&["bearer"])
                    .inc();
                if let Some(ip) = source {
                    self.throttles.bearer.fail(ip, now);
                }
                Err(ApiError::Unauthenticated)
            }
        }
    }

    /// The tier check a payout of `amount` from an account of `company` must pass when its
    /// hold is placed; None for the operator's accounts and when no tier table is configured.
    pub async fn tier_quota(
        &self,
        company: Option<uuid::Uuid>,
        spec: &crate::domain::AssetSpec,
        amount: i128,
    ) -> ApiResult<Option<Box<crate::domain::tiers::Quota>>> {
        let Some(company) = company.filter(|_| self.tiers.is_active()) else {
            return Ok(None);
        };
        let tier = self
            .store
            .companies()
            .await?
            .into_iter()
            .find(|c| c.id == company)
            .map(|c| c.tier)
            .ok_or_else(|| {
                ApiError::Internal(crate::store::StoreError::Invariant(format!(
                    "an account's company {company} does not exist"
                )))
            })?;
        Ok(self
            .tiers
            .quota(company, tier, spec, amount, self.clock.now())
            .map(Box::new))
    }

    /// Each asset the tier table names, with `company`'s quota in it and what the company has
    /// used of it today and this month.
    pub async fn tier_usage(
        &self,
        company: &crate::domain::trust::Company,
    ) -> ApiResult<Vec<(crate::domain::tiers::Quota, crate::domain::tiers::Used)>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let now = self.clock.now();
        for (_, asset, _) in self.tiers.rows() {
            let Some(spec) = self
                .ledger
                .asset(asset)
                .filter(|_| seen.insert(asset.clone()))
            else {
                continue;
            };
            if let Some(q) = self.tiers.quota(company.id, company.tier, spec, 0, now) {
                let used = self
                    .store
                    .tier_usage(company.id, asset, q.day_start, q.month_start)
                    .await?;
                out.push((q, used));
            }
        }
        Ok(out)
    }

    /// Exports each company's tier headroom (`only`: one company's).
    pub async fn refresh_tier_headroom(&self, only: Option<uuid::Uuid>) -> ApiResult<()> {
        let metrics = &self.metrics.trust;
        metrics.tier_table.reset();
        if only.is_none() {
            metrics.tier_headroom_units.reset();
        }
        if !self.tiers.is_active() {
            return Ok(());
        }
        metrics
            .tier_table
            .with_label_values(&[self.tiers.version.as_str()])
            .set(1);
        for company in self.store.companies().await? {
            if only.is_some_and(|o| o != company.id) {
                continue;
            }
            let id = company.id.to_string();
            for (q, used) in self.tier_usage(&company).await? {
                // A company that changed tier keeps no series under the old one.
                metrics.forget_headroom(&id, &q.spec.key);
                metrics.show_headroom(&id, &q, used);
            }
        }
        Ok(())
    }

    /// `cmd` as `m`'s caller sends it: the key namespaced per caller, the audit record with it.
    pub fn on_behalf(&self, m: Mutation<'_>, cmd: Command) -> Command {
        on_behalf(m, cmd, self.clock.now())
    }

    /// Posts one command on behalf of an API caller: the key is namespaced per caller so two
    /// callers can never collide, and the audit row commits with the postings.
    pub async fn post(&self, m: Mutation<'_>, cmd: Command) -> ApiResult<Posted> {
        Ok(self
            .ledger
            .post_one(on_behalf(m, cmd, self.clock.now()))
            .await??)
    }

    /// Like `post`, in a database transaction of its own: for commands whose effects may be
    /// refused (a state precondition), so a refusal cannot fail other callers' commands.
    pub async fn post_alone(&self, m: Mutation<'_>, cmd: Command) -> ApiResult<Posted> {
        let mut results = self
            .ledger
            .post(vec![on_behalf(m, cmd, self.clock.now())])
            .await?;
        Ok(results.pop().ok_or_else(|| {
            ApiError::Internal(crate::store::StoreError::Invariant(
                "empty batch result".into(),
            ))
        })??)
    }

    /// The audit record of an action `caller` takes now.
    pub fn audit_record(
        &self,
        caller: &Caller,
        request_id: String,
        action: &str,
        target: String,
        reason: Option<String>,
    ) -> AuditRecord {
        AuditRecord {
            actor: caller.name.clone(),
            role: caller.role,
            action: action.to_owned(),
            target,
            reason,
            request_id,
            at: self.clock.now(),
            evidence: None,
        }
    }
}

/// The command as the caller's: namespaced idempotency key, actor, memo and audit record.
fn on_behalf(m: Mutation<'_>, mut cmd: Command, at: crate::domain::UnixMicros) -> Command {
    cmd.idempotency_key = format!("api:{}:{}", m.caller.name, m.idempotency_key);
    cmd.actor = Some(m.caller.name.clone());
    cmd.memo = m.reason.clone();
    cmd.audit = Some(AuditRecord {
        actor: m.caller.name.clone(),
        role: m.caller.role,
        action: m.action.to_owned(),
        target: m.target,
        reason: m.reason,
        request_id: m.request_id,
        at,
        evidence: None,
    });
    cmd
}

/// A reason as the OpenAPI document declares it (`reason` in every body: 1-500 characters,
/// not only blanks): trimmed.
pub const MAX_REASON: usize = 500;

pub fn require_reason(reason: &str) -> ApiResult<String> {
    let trimmed = reason.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(
            "reason_required",
            "reason",
            "reason must say why, in words",
        ));
    }
    if reason.chars().count() > MAX_REASON {
        return Err(ApiError::invalid(
            "invalid_field",
            "reason",
            format!("reason is longer than {MAX_REASON} characters"),
        ));
    }
    Ok(trimmed.to_owned())
}

pub fn optional_text(field: &str, value: Option<String>, max: usize) -> ApiResult<Option<String>> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} is longer than {max} characters"),
        )),
        Some(v) if v.chars().any(char::is_control) => Err(ApiError::invalid(
            "invalid_field",
            field,
            format!("{field} contains control characters"),
        )),
        other => Ok(other),
    }
}

pub fn page_limit(limit: Option<i64>) -> ApiResult<i64> {
    match limit {
        None => Ok(DEFAULT_PAGE),
        Some(l) if (1..=MAX_PAGE).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::invalid(
            "invalid_field",
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        )),
    }
}

pub const WRITERS: &[Role] = &[Role::Admin];
