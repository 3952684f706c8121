//! The OpenAPI document, generated from the handlers' annotations and served at /openapi.json.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "treasuryd control API", description = "Ledger and holds, payouts on EVM and Tron, escrow deals, trust pairs and EOD, webhooks, canaries and operating controls. See README.md."),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::accounts::list,
        super::accounts::get_one,
        super::accounts::create,
        super::journal::list,
        super::journal::get_one,
        super::manual_entries::deposit,
        super::manual_entries::adjustment,
        super::holds::create,
        super::holds::get_one,
        super::holds::release,
        super::holds::void,
        super::audit::list,
        super::payouts::create,
        super::payouts::create_batch,
        super::payouts::get_one,
        super::payouts::list,
        super::payouts::approve,
        super::payouts::reject,
        super::payouts::cancel,
        super::networks::list,
        super::networks::set_safe_mode,
        super::networks::set_rollout,
        super::networks::set_freeze,
        super::allowlists::get_one,
        super::allowlists::set_enforced,
        super::allowlists::add,
        super::allowlists::remove,
        super::deposit_addresses::list,
        super::deposit_addresses::add,
        super::deals::create,
        super::deals::list,
        super::deals::get_one,
        super::deals::fund,
        super::deals::deliver,
        super::deals::approve,
        super::deals::raise_issue,
        super::deals::resolve,
        super::deals::upload_evidence,
        super::deals::download_evidence,
        super::deals::timeline,
        super::deals::disputes,
        super::reports::go_no_go,
        super::controls::get_controls,
        super::controls::set_cap,
        super::controls::set_fee_mode,
        super::controls::set_pause,
        super::incidents::open,
        super::incidents::list,
        super::incidents::get_one,
        super::incidents::update,
        super::reports::export_timelines,
        super::reports::export_journal,
        super::webhooks::create,
        super::webhooks::list,
        super::webhooks::get_one,
        super::webhooks::rotate,
        super::webhooks::set_active,
        super::webhooks::deliveries,
        super::webhooks::replay,
        super::webhooks::event,
        super::trust::create_company,
        super::trust::companies,
        super::trust::set_tier,
        super::trust::set_second_factor,
        super::deeplinks::create,
        super::trust::tiers,
        super::trust::headroom,
        super::trust::set_member,
        super::trust::members,
        super::trust::create_pair,
        super::trust::change_terms,
        super::trust::set_suspension,
        super::trust::pairs,
        super::trust::pair,
        super::trust::record_obligation,
        super::trust::sessions,
        super::trust::session,
        super::trust::close,
        super::templates::list,
        super::templates::get_one,
        super::templates::get_scope,
        super::templates::set_scope,
        super::operations::run_canary,
        super::operations::canary_status,
        super::operations::get_freeze,
        super::operations::set_freeze,
    ),
    modifiers(&BearerAuth, &Principals, &StandardRefusals, &DeclaredConstraints)
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Says on each operation who may call it (`x-principals`, and a line of its description):
/// the operator's staff always; a company's users where `auth::COMPANY_ROUTES` lists it, on
/// their company's objects only (another company's answer 404).
struct Principals;

impl Modify for Principals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for (method, op) in operations(item) {
                if op.security.is_none() {
                    continue;
                }
                let company = super::auth::COMPANY_ROUTES.contains(&(method, path.as_str()));
                let (who, line) = if company {
                    (
                        serde_json::json!(["staff", "company"]),
                        "Callers: staff; a company's users on their company's objects only.",
                    )
                } else {
                    (
                        serde_json::json!(["staff"]),
                        "Callers: staff only (a company token gets 403).",
                    )
                };
                op.extensions
                    .get_or_insert_with(Default::default)
                    .insert("x-principals".into(), who);
                op.description = Some(match op.description.take() {
                    Some(d) if !d.is_empty() => format!("{d}\n\n{line}"),
                    _ => line.to_owned(),
                });
            }
        }
    }
}

/// The refusals every operation of a kind can answer, declared on each so the document lists
/// every status code the API returns (each is an `ErrorBody`):
/// - with a bearer token: 401 (none or unknown), 403 (the role or principal may not), 429 (too
///   many wrong tokens from the source), 503 (not ready, or the request ran out of time);
/// - with a path parameter: 404 (no such object, or another company's);
/// - with a JSON body: 400 (malformed JSON), 413 (too large), 415 (not JSON), 422 (a field);
/// - with query parameters: 422.
///
/// Conflicts (409) are declared by the operations that have them.
struct StandardRefusals;

impl Modify for StandardRefusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
        let refusal = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            for (_, op) in operations(item) {
                let params = op.parameters.as_deref().unwrap_or_default();
                let located = |place: ParameterIn| {
                    params.iter().any(|p| match p {
                        RefOr::T(p) => p.parameter_in == place,
                        RefOr::Ref(_) => false,
                    })
                };
                let (in_path, in_query) = (located(ParameterIn::Path), located(ParameterIn::Query));
                let json_body = matches!(&op.request_body,
                    Some(RefOr::T(b)) if b.content.contains_key("application/json"));
                let mut codes: Vec<(&str, &str)> = Vec::new();
                if op.security.is_some() {
                    codes.extend([
                        ("401", "No bearer token, or one that is not known (`unauthenticated`)."),
                        ("403", "The caller's role or principal may not call this (`forbidden`)."),
                        ("429", "Too many wrong tokens from this source: see `Retry-After` (`too_many_attempts`)."),
                        ("503", "Not ready, or the request ran out of time (`not_ready`, `request_timeout`)."),
                    ]);
                }
                if in_path {
                    codes.push((
                        "404",
                        "No such object, or one of another company (`*_not_found`).",
                    ));
                }
                if json_body {
                    codes.extend([
                        ("400", "The body is not valid JSON (`malformed_json`)."),
                        ("413", "The body is larger than `server.max_body_bytes` (`payload_too_large`)."),
                        ("415", "The body is not `application/json` (`unsupported_media_type`)."),
                    ]);
                }
                if json_body || in_query {
                    codes.push(("422", "A field is invalid; `field` names it."));
                }
                for (code, description) in codes {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| refusal(description).into());
                }
            }
        }
    }
}

/// Constraints the handlers enforce on shapes that recur, declared once here: every body's
/// `reason` (1-500 characters, not only blanks: `require_reason`), every `limit` (1 to
/// `MAX_PAGE`: `page_limit`) and every `Idempotency-Key` header (1-255 visible ASCII
/// characters, required: `extract::IdempotencyKey`).
struct DeclaredConstraints;

impl Modify for DeclaredConstraints {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
        use utoipa::openapi::{RefOr, Required};
        let reason = || -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(super::MAX_REASON))
                .pattern(Some("\\S"))
                .description(Some("Why, in words; kept in the audit log."))
                .into()
        };
        if let Some(components) = openapi.components.as_mut() {
            for schema in components.schemas.values_mut() {
                if let RefOr::T(Schema::Object(object)) = schema
                    && object.properties.contains_key("reason")
                    && object.required.iter().any(|r| r == "reason")
                {
                    object.properties.insert("reason".into(), reason());
                }
            }
        }
        for item in openapi.paths.paths.values_mut() {
            for (_, op) in operations(item) {
                for p in op.parameters.iter_mut().flatten() {
                    if let RefOr::T(p) = p
                        && p.name == "limit"
                    {
                        p.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::Integer)
                                .minimum(Some(1))
                                .maximum(Some(super::MAX_PAGE))
                                .description(Some(format!(
                                    "Rows per page, 1 to {} (default {}); more is refused.",
                                    super::MAX_PAGE,
                                    super::DEFAULT_PAGE
                                )))
                                .into(),
                        );
                    }
                    if let RefOr::T(p) = p
                        && p.name.eq_ignore_ascii_case("idempotency-key")
                    {
                        p.required = Required::True;
                        p.schema = Some(
                            ObjectBuilder::new()
                                .schema_type(Type::String)
                                .min_length(Some(1))
                                .max_length(Some(super::extract::MAX_IDEMPOTENCY_KEY))
                                .pattern(Some("^[!-~]+$"))
                                .into(),
                        );
                    }
                }
            }
        }
    }
}

/// A path's operations, with their methods.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = (&'static str, &mut utoipa::openapi::path::Operation)> {
    [
        ("GET", item.get.as_mut()),
        ("POST", item.post.as_mut()),
        ("PUT", item.put.as_mut()),
        ("DELETE", item.delete.as_mut()),
        ("PATCH", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.map(|op| (method, op)))
}

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
