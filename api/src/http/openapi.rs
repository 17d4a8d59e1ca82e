//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the handlers'
//! annotations so it cannot drift from the code silently (a test calls every path it
//! lists).

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Referral and credit ledger",
        description = "Event-sourced ledger of accounts, credits, payments, commissions and \
                       payouts. Errors are application/problem+json with a stable `type`."
    ),
    paths(
        super::health::healthz,
        super::health::readyz,
        super::events::read_all,
        super::events::read_stream,
        super::events::verify,
        super::accounts::open_account,
        super::accounts::get_account,
        super::accounts::get_credits,
        super::accounts::grant_credits,
        super::accounts::spend_credits,
        super::reservations::reserve_credits,
        super::reservations::capture_reservation,
        super::reservations::void_reservation,
        super::accounts::upline,
        super::accounts::downline,
        super::lifecycle::start_subscription,
        super::lifecycle::cancel_subscription,
        super::lifecycle::expire_credits,
        super::lifecycle::correct_personal_data,
        super::payments::record_payment,
        super::payments::refund_payment,
        super::payouts::run_payouts,
        super::payouts::publish_plan,
        super::finance::review_commission,
        super::finance::settle_payout,
        super::finance::allocate_donation,
        super::reports::account_commissions,
        super::reports::payouts,
        super::reports::trial_balance,
        super::reports::donations,
        super::reports::commissions,
        super::privacy::request_erasure,
        super::privacy::export,
        super::privacy::restriction,
        super::privacy::hold,
        super::privacy::requests,
        metrics_doc,
        openapi_doc,
    ),
    components(schemas(super::error::Problem)),
    modifiers(&BearerAuth),
    tags(
        (name = "operations", description = "Probes, metrics and this description"),
        (name = "auditor", description = "The raw event log (role auditor)"),
        (name = "billing", description = "Accounts, credits, payments and refunds (role billing)"),
        (name = "finance", description = "Payout runs, settlements, commission reviews and donations (role finance); reports (finance, auditor)"),
        (name = "admin", description = "The commission plan (role admin)"),
        (name = "privacy", description = "Erasure, export, restriction of processing and legal holds (role privacy)"),
    )
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

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
#[allow(dead_code)] // Documents the route; `metrics::exposition` serves it.
fn metrics_doc() {}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 description", content_type = "application/json")))]
#[allow(dead_code)] // Documents the route; `openapi_json` serves it.
fn openapi_doc() {}
