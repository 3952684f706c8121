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
    modifiers(&BearerAuth)
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

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
