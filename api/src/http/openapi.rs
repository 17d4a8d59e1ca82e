//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the handlers'
//! annotations so it cannot drift from the code silently (a test calls every path it
//! lists).

use axum::routing::get;
use axum::{Json, Router};
use utoipa::OpenApi;

use ledger::domain::credits::CREDITS_MAX;
use ledger::domain::ids::TOKEN_LENGTH_MAX;
use ledger::domain::plan::{HOLD_DAYS_MAX, PLAN_LEVELS_MAX};
use ledger::domain::Currency;

use super::error::PROBLEM_CONTENT_TYPE;
use super::payments::AMOUNT_PATTERN;
use super::AppState;
use crate::tokens::Role;

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
        super::heads::latest_head,
        super::heads::list_heads,
        super::heads::sign_head,
        super::heads::head_key,
        super::proofs::inclusion,
        super::proofs::consistency,
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

pub fn router() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}

async fn openapi_json() -> Json<&'static serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOCUMENT.get_or_init(document))
}

/// The served description: what the handlers' annotations say, completed with what every
/// operation shares and no annotation repeats (see [`complete`]).
pub fn document() -> serde_json::Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the description serializes");
    complete(&mut document);
    document
}

/// The pattern of the ids other systems give us (`payment_id`, `spend_id`, ...).
fn token_pattern() -> String {
    format!("^[A-Za-z0-9_.:-]{{1,{TOKEN_LENGTH_MAX}}}$")
}

/// The month of a period, `2000-01` to `9999-12`.
const PERIOD_PATTERN: &str = "^[2-9][0-9]{3}-(0[1-9]|1[0-2])$";

/// Completes the description with what the server does on every operation, so that a
/// generated client can trust it:
///
/// - a security scheme per role (`billing`, `finance`, ...: each a bearer token of that
///   role); an operation's `security` lists the roles it admits, any one of them;
/// - every error as `application/problem+json`, and the errors every operation of its
///   kind can answer (401 and 403 where a token is needed; 400, 413 and 415 where a body
///   is read; 400 where parameters are; 409 `wrong_expected_version` for commands; 500
///   and 503 everywhere under `/v1`);
/// - the constraints the server enforces, by field: ids' pattern and length, amounts'
///   pattern, the currencies, periods, `date-time` instants, bounds of credits, `limit`,
///   `depth` and `level`.
fn complete(document: &mut serde_json::Value) {
    use serde_json::{json, Value};
    let schemes: serde_json::Map<String, Value> = Role::ALL
        .iter()
        .map(|role| {
            (
                role.as_str().to_owned(),
                json!({"type": "http", "scheme": "bearer",
                       "description": format!("A token of the `{role}` role (`--token {role}:SECRET`)")}),
            )
        })
        .collect();
    document["components"]["securitySchemes"] = Value::Object(schemes);
    let problem = |description: &str| {
        json!({"description": description, "content": {PROBLEM_CONTENT_TYPE: {
            "schema": {"$ref": "#/components/schemas/Problem"}}}})
    };
    let paths = document["paths"].as_object_mut().expect("paths");
    for (path, item) in paths.iter_mut() {
        let item = item.as_object_mut().expect("a path item");
        for (method, operation) in item.iter_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|requirements| !requirements.is_empty());
            let has_body = operation.contains_key("requestBody");
            let has_parameters = operation
                .get("parameters")
                .and_then(Value::as_array)
                .is_some_and(|parameters| !parameters.is_empty());
            if let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            {
                for parameter in parameters {
                    let name = parameter["name"].as_str().unwrap_or_default().to_owned();
                    constrain(&name, &mut parameter["schema"]);
                }
            }
            let responses = operation
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("responses");
            for (status, response) in responses.iter_mut() {
                if status.as_str() >= "400" {
                    if let Some(content) = response["content"].as_object_mut() {
                        if let Some(schema) = content.remove("application/json") {
                            content.insert(PROBLEM_CONTENT_TYPE.to_owned(), schema);
                        }
                    }
                }
            }
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            };
            if secured {
                add("401", "`unauthorized`: no valid bearer token");
                add(
                    "403",
                    "`forbidden`: the token's role may not use this operation",
                );
            }
            if has_body {
                add(
                    "400",
                    "`validation_failed`, `malformed_json` or `unknown_field`",
                );
                add("413", "`payload_too_large`: the body is larger than 64 KiB");
                add(
                    "415",
                    "`unsupported_media_type`: the body is not `application/json`",
                );
            }
            if has_parameters {
                add("400", "`validation_failed`: a bad path or query parameter");
            }
            if path.starts_with("/v1/") {
                if method == "post" || method == "put" {
                    add(
                        "409",
                        "`wrong_expected_version`: a concurrent writer won; retry",
                    );
                }
                add("500", "`internal`: a failure of the server, logged");
                add(
                    "503",
                    "`unavailable`: shutting down, or the store refuses writes",
                );
            }
        }
    }
    let schemas = document["components"]["schemas"]
        .as_object_mut()
        .expect("schemas");
    for (name, schema) in schemas.iter_mut() {
        let request = name.ends_with("Request");
        if let Some(properties) = schema["properties"].as_object_mut() {
            for (field, property) in properties.iter_mut() {
                if request || field.ends_with("_at") || field == "at" {
                    constrain(field, property);
                }
            }
        }
    }
}

/// The constraints of the field or parameter `name`, added to its schema (inside the
/// `oneOf` of an optional one).
fn constrain(name: &str, schema: &mut serde_json::Value) {
    use serde_json::{json, Value};
    if let Some(branches) = schema.get_mut("oneOf").and_then(Value::as_array_mut) {
        for branch in branches
            .iter_mut()
            .filter(|branch| branch["type"] != "null")
        {
            constrain(name, branch);
        }
        return;
    }
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let types: Vec<String> = match object.get("type") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .filter_map(|one| one.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let is = |kind: &str| types.iter().any(|one| one == kind);
    let mut set = |key: &str, value: Value| {
        object.insert(key.to_owned(), value);
    };
    if is("string") {
        match name {
            "payment_id" | "refund_id" | "spend_id" | "grant_id" | "persona"
            | "subscription_id" | "product" | "organisation" | "reference" | "correction_id"
            | "reservation_id" => {
                set("pattern", json!(token_pattern()));
                set("minLength", json!(1));
                set("maxLength", json!(TOKEN_LENGTH_MAX));
            }
            "amount" | "minimum_payout" => set("pattern", json!(AMOUNT_PATTERN)),
            "currency" => set("enum", json!(Currency::codes().collect::<Vec<_>>())),
            "period" => set("pattern", json!(PERIOD_PATTERN)),
            "share" => set("pattern", json!(r"^(0(\.[0-9]{1,6})?|1(\.0{1,6})?)$")),
            "referral_code" => set("pattern", json!("^[2-9A-HJ-NP-Za-hj-np-z]{8}$")),
            // Accounts in paths: random (version 4) UUIDs.
            "id" | "affiliate_id" => set("format", json!("uuid")),
            // Instants; the trial balance's `as_of` parameter may be a log position, and
            // is not described here.
            _ if name.ends_with("_at") || name == "at" || name == "effective_from" => {
                set("format", json!("date-time"))
            }
            _ => {}
        }
    }
    if is("integer") {
        match name {
            "credits" => {
                set("minimum", json!(1));
                set("maximum", json!(CREDITS_MAX));
            }
            "limit" => {
                set("minimum", json!(1));
                set("maximum", json!(super::events::EVENTS_PAGE_MAX));
            }
            "depth" => {
                set("minimum", json!(1));
                set("maximum", json!(super::accounts::REFERRAL_DEPTH_MAX));
            }
            "level" => {
                set("minimum", json!(1));
                set("maximum", json!(PLAN_LEVELS_MAX));
            }
            "version" => set("minimum", json!(1)),
            "hold_days" => set("maximum", json!(HOLD_DAYS_MAX)),
            _ => {}
        }
    }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, found);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                found.push(path);
            }
        }
    }

    /// utoipa names a schema after its Rust type and keeps the last of two types of one
    /// name: the spec then describes one type's responses with the other's fields (the
    /// payment's 7-field commission once read as the reports' 13-field one). So no two
    /// `ToSchema` types may share a name, wherever they live in the crate.
    #[test]
    fn no_two_schemas_share_a_name() {
        let mut files = Vec::new();
        sources(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut derives_schema = false;
            let mut renamed = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with("#[derive(") && line.contains("ToSchema") {
                    derives_schema = true;
                } else if line.starts_with("#[schema(as") {
                    renamed = true;
                } else if derives_schema && !line.starts_with("#[") && !line.starts_with("//") {
                    let name = ["pub struct ", "pub enum ", "struct ", "enum "]
                        .iter()
                        .find_map(|prefix| line.strip_prefix(prefix))
                        .map(|rest| {
                            rest.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                                .next()
                                .unwrap_or_default()
                                .to_owned()
                        });
                    if let (Some(name), false) = (name, renamed) {
                        seen.entry(name)
                            .or_default()
                            .push(file.display().to_string());
                    }
                    derives_schema = false;
                    renamed = false;
                }
            }
        }
        assert!(seen.len() > 50, "the scan finds the schemas: {seen:?}");
        let clashes: Vec<_> = seen.iter().filter(|(_, files)| files.len() > 1).collect();
        assert!(clashes.is_empty(), "schemas sharing a name: {clashes:?}");
    }
}
