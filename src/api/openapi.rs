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
        super::reports::record,
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
    modifiers(&BearerAuth, &Principals)
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
            let ops = [
                ("GET", item.get.as_mut()),
                ("POST", item.post.as_mut()),
                ("PUT", item.put.as_mut()),
                ("DELETE", item.delete.as_mut()),
                ("PATCH", item.patch.as_mut()),
            ];
            for (method, op) in ops {
                let Some(op) = op else { continue };
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

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
