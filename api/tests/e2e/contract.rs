//! The contract a generated client relies on (issue #18): stated times checked the same
//! way everywhere, bodies that are JSON objects, errors that name the field in the
//! caller's words, the conflict codes docs/API.md promises, and idempotency that compares
//! what a request means rather than how it was spelled.

use api::tokens::Role;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{problem, TestServer};

const OPENED_AT: &str = "2026-01-01T00:00:00Z";

async fn open_account(server: &TestServer) -> String {
    let account = uuid::Uuid::new_v4().to_string();
    let (status, body) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &json!({"account_id": account, "name": "Tess", "email": "tess@example.org",
                    "opened_at": OPENED_AT}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    account
}

async fn refused(
    server: &TestServer,
    path: &str,
    role: Role,
    body: &Value,
    status: StatusCode,
) -> Value {
    let response = server
        .post(path, Some(role))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), status, "{path} {body}");
    problem(response).await
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap()
}

fn payment(account: &str, id: &str, paid_at: &str) -> Value {
    json!({
        "payment_id": id, "account_id": account, "kind": "subscription",
        "amount": "19.99", "currency": "EUR", "paid_at": paid_at,
    })
}

#[tokio::test]
async fn money_dated_in_the_future_before_the_account_or_in_year_one_is_refused() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let events = server.event_count().await;
    for (paid_at, says) in [
        ("2036-01-01T00:00:00Z", "in the future"),
        ("9999-12-31T00:00:00Z", "outside the times"),
        ("0001-01-01T00:00:00Z", "outside the times"),
        ("2025-12-31T23:59:59Z", "before the account opened"),
    ] {
        let problem = refused(
            &server,
            "/v1/payments",
            Role::Billing,
            &payment(&account, "pi_dated", paid_at),
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(problem["type"], "validation_failed");
        assert!(detail(&problem).starts_with("paid_at:"), "{problem}");
        assert!(detail(&problem).contains(says), "{paid_at}: {problem}");
    }
    let credits = format!("/v1/accounts/{account}/credits");
    let grant = json!({"grant_id": "g-far", "credits": 5, "reason": "goodwill",
                       "expires_at": "9999-12-31T23:59:59Z"});
    let problem = refused(
        &server,
        &format!("{credits}/grants"),
        Role::Billing,
        &grant,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("expires_at:"), "{problem}");
    let early_grant = json!({"grant_id": "g-early", "credits": 5, "reason": "goodwill",
                             "granted_at": "2025-06-01T00:00:00Z"});
    let problem = refused(
        &server,
        &format!("{credits}/grants"),
        Role::Billing,
        &early_grant,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("granted_at:"), "{problem}");
    assert_eq!(server.event_count().await, events, "nothing was recorded");

    // A payment dated sanely is recorded; a refund dated in the future is not.
    let (status, paid) = server
        .command(
            "/v1/payments",
            Role::Billing,
            &payment(&account, "pi_ok", "2026-02-01T00:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let refund = json!({"refund_id": "re_future", "amount": "1.00", "reason": "refund",
                        "refunded_at": "2036-01-01T00:00:00Z"});
    let problem = refused(
        &server,
        "/v1/payments/pi_ok/refunds",
        Role::Billing,
        &refund,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("refunded_at:"), "{problem}");
}

#[tokio::test]
async fn every_time_in_an_answer_is_rfc3339() {
    let server = TestServer::start().await;
    let referrer = open_account(&server).await;
    let referrer: Value = server
        .get(&format!("/v1/accounts/{referrer}"), Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let payer = uuid::Uuid::new_v4().to_string();
    let (status, opened) = server
        .command(
            "/v1/accounts",
            Role::Billing,
            &json!({"account_id": payer, "name": "Uma", "email": "uma@example.org",
                    "opened_at": OPENED_AT, "signup_ip": "198.51.100.9",
                    "referral_code": referrer["referral_code"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    // The latest instant accepted, so the hold's end is as late as it gets.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, paid) = server
        .command(
            "/v1/payments",
            Role::Billing,
            &payment(&payer, "pi_now", &now),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{paid}");
    let payable_at = paid["commissions"][0]["payable_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(payable_at).is_ok(),
        "{payable_at} is RFC 3339"
    );
    assert!(!payable_at.starts_with('+'), "{payable_at}");
}

#[tokio::test]
async fn a_body_must_be_a_json_object() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let credits = format!("/v1/accounts/{account}/credits");
    let (status, _) = server
        .command(
            &format!("{credits}/grants"),
            Role::Billing,
            &json!({"grant_id": "g", "credits": 10, "reason": "goodwill"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let events = server.event_count().await;
    for body in [
        json!(["arr1", 1, "chef", null]),
        json!("spend"),
        json!(3),
        json!(null),
    ] {
        let problem = refused(
            &server,
            &format!("{credits}/spend"),
            Role::Billing,
            &body,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(problem["type"], "validation_failed", "{body}: {problem}");
        assert!(detail(&problem).contains("JSON object"), "{problem}");
    }
    assert_eq!(server.event_count().await, events, "no credit was spent");
    let balance: Value = server
        .get(&credits, Some(Role::Billing))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(balance["balance"], 10);
}

#[tokio::test]
async fn errors_name_the_field_sent_never_a_rust_type_and_stay_short() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    let problem = refused(
        &server,
        "/v1/donations",
        Role::Finance,
        &json!({"period": "2026-01", "organisation": "ocean-cleanup", "share": "2.5"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("share:"), "{problem}");
    let problem = refused(
        &server,
        "/v1/payments/pi_x/commissions/abc/review",
        Role::Finance,
        &json!({"decision": "release"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).contains("level"), "{problem}");
    let spend = format!("/v1/accounts/{account}/credits/spend");
    let long = "x".repeat(60 * 1024 - 100);
    for body in [
        json!({"spend_id": "s", "credits": "ten", "persona": "chef"}),
        json!({"spend_id": "s", "credits": -1, "persona": "chef"}),
        json!({"spend_id": "s", "credits": long, "persona": "chef"}),
        json!({"spend_id": long, "credits": 1, "persona": "chef"}),
    ] {
        let problem = refused(
            &server,
            &spend,
            Role::Billing,
            &body,
            StatusCode::BAD_REQUEST,
        )
        .await;
        let text = detail(&problem);
        for rust in ["u8", "u64", "usize", "struct ", "Request"] {
            assert!(!text.contains(rust), "{rust} leaks: {text}");
        }
        assert!(text.len() <= 512, "{} bytes echoed", text.len());
        assert!(
            text.starts_with("credits") || text.starts_with("spend_id"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_documented_conflicts_and_a_typed_idempotency() {
    let server = TestServer::start().await;
    let account = open_account(&server).await;
    // The same amount spelled twice ways is the same payment.
    let mut first = payment(&account, "pi_spelled", "2026-02-01T00:00:00Z");
    first["amount"] = "5.0".into();
    let (status, answer) = server.command("/v1/payments", Role::Billing, &first).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let mut again = first.clone();
    again["amount"] = "5.00".into();
    let (status, replay) = server.command("/v1/payments", Role::Billing, &again).await;
    assert_eq!(status, StatusCode::OK, "{replay}");
    assert_eq!(replay, answer);
    let refund = |amount: &str| {
        json!({"refund_id": "re_1", "amount": amount, "reason": "refund",
               "refunded_at": "2026-02-02T00:00:00Z"})
    };
    let path = "/v1/payments/pi_spelled/refunds";
    let (status, _) = server.command(path, Role::Billing, &refund("1.5")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server.command(path, Role::Billing, &refund("1.50")).await;
    assert_eq!(status, StatusCode::OK);

    // A subscription payment names a subscription the payer has.
    let mut unknown = payment(&account, "pi_unknown_sub", "2026-02-01T00:00:00Z");
    unknown["subscription_id"] = "sub_nobody".into();
    let problem = refused(
        &server,
        "/v1/payments",
        Role::Billing,
        &unknown,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(problem["type"], "subscription_not_found", "{problem}");

    // A donation of nothing is no donation.
    let problem = refused(
        &server,
        "/v1/donations",
        Role::Finance,
        &json!({"period": "2026-01", "organisation": "ocean-cleanup", "share": "0"}),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail(&problem).starts_with("share:"), "{problem}");

    // A period runs once: again as of another time is `payout_run_exists`.
    let run = json!({"period": "2026-01", "as_of": "2026-02-01T00:00:00Z"});
    let (status, first_run) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!(status, StatusCode::CREATED, "{first_run}");
    let (status, same) = server.command("/v1/payout-runs", Role::Finance, &run).await;
    assert_eq!((status, &same), (StatusCode::OK, &first_run));
    let problem = refused(
        &server,
        "/v1/payout-runs",
        Role::Finance,
        &json!({"period": "2026-01", "as_of": "2026-02-05T00:00:00Z"}),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(problem["type"], "payout_run_exists", "{problem}");
}

/// Whether `value` is what `schema` (of the served spec `spec`) describes: types, the
/// required members, no undeclared member, enums, `date-time` formats. Enough of JSON
/// Schema to catch a response whose schema is another type's.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        let target = &spec["components"]["schemas"][name];
        if target.is_null() {
            return Err(format!("{at}: {reference} is not in the spec"));
        }
        return conforms(spec, target, value, at);
    }
    for (keyword, all) in [("oneOf", false), ("anyOf", false), ("allOf", true)] {
        if let Some(branches) = schema[keyword].as_array() {
            let results: Vec<_> = branches
                .iter()
                .map(|branch| conforms(spec, branch, value, at))
                .collect();
            let ok = if all {
                results.iter().all(Result::is_ok)
            } else {
                results.iter().any(Result::is_ok)
            };
            if !ok {
                return Err(format!("{at}: {keyword}: {results:?}"));
            }
        }
    }
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(one) => vec![one.as_str()],
        Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let integer_as_number = kind == "integer" && allowed.contains(&"number");
    if !allowed.is_empty() && !allowed.contains(&kind) && !integer_as_number {
        return Err(format!("{at}: {kind} where the spec says {allowed:?}"));
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(value) {
            return Err(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    if let (Some("date-time"), Value::String(text)) = (schema["format"].as_str(), value) {
        chrono::DateTime::parse_from_rfc3339(text)
            .map_err(|error| format!("{at}: {text:?} is not a date-time: {error}"))?;
    }
    if let Value::Object(members) = value {
        let declared = schema["properties"].as_object();
        if let Some(required) = schema["required"].as_array() {
            for name in required.iter().filter_map(Value::as_str) {
                if !members.contains_key(name) {
                    return Err(format!("{at}: required member {name} was not sent"));
                }
            }
        }
        if let Some(declared) = declared {
            for (name, member) in members {
                let Some(member_schema) = declared.get(name) else {
                    return Err(format!("{at}: member {name} is not in the spec"));
                };
                conforms(spec, member_schema, member, &format!("{at}.{name}"))?;
            }
        }
    }
    if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
        for (index, item) in items.iter().enumerate() {
            conforms(spec, item_schema, item, &format!("{at}[{index}]"))?;
        }
    }
    Ok(())
}

/// Sends `body` and checks the answer against the spec's schema for its status.
async fn answer_conforms(
    server: &TestServer,
    spec: &Value,
    (method, template, path): (&str, &str, &str),
    role: Role,
    body: Option<&Value>,
) -> Value {
    let request = match method {
        "get" => server.get(path, Some(role)),
        "put" => server.put(path, Some(role)),
        _ => server.post(path, Some(role)),
    };
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16().to_string();
    let media = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let answer: Value = response.json().await.unwrap();
    let described = &spec["paths"][template][method]["responses"][&status];
    assert!(
        described.is_object(),
        "{method} {template} answered {status}, which the spec does not list: {answer}"
    );
    let content = &described["content"][media.as_str()];
    assert!(
        content.is_object(),
        "{method} {template} {status} is sent as {media}, which the spec does not say: {described}"
    );
    if let Err(mismatch) = conforms(spec, &content["schema"], &answer, "body") {
        panic!("{method} {template} {status}: {mismatch}\n{answer}");
    }
    answer
}

#[tokio::test]
async fn answers_match_the_schemas_the_spec_gives_them() {
    let server = TestServer::start().await;
    let spec: Value = server
        .get("/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let referrer = uuid::Uuid::new_v4().to_string();
    let opened = answer_conforms(
        &server,
        &spec,
        ("post", "/v1/accounts", "/v1/accounts"),
        Role::Billing,
        Some(
            &json!({"account_id": referrer, "name": "Rhea", "email": "rhea@example.org",
                     "opened_at": OPENED_AT}),
        ),
    )
    .await;
    let payer = uuid::Uuid::new_v4().to_string();
    answer_conforms(
        &server,
        &spec,
        ("post", "/v1/accounts", "/v1/accounts"),
        Role::Billing,
        Some(
            &json!({"account_id": payer, "name": "Sol", "email": "sol@example.org",
                     "opened_at": OPENED_AT, "signup_ip": "198.51.100.44",
                     "referral_code": opened["referral_code"]}),
        ),
    )
    .await;
    let paid = answer_conforms(
        &server,
        &spec,
        ("post", "/v1/payments", "/v1/payments"),
        Role::Billing,
        Some(&payment(&payer, "pi_schema", "2026-02-01T00:00:00Z")),
    )
    .await;
    assert_eq!(paid["commissions"].as_array().unwrap().len(), 1, "{paid}");
    answer_conforms(
        &server,
        &spec,
        (
            "post",
            "/v1/payments/{payment_id}/refunds",
            "/v1/payments/pi_schema/refunds",
        ),
        Role::Billing,
        Some(
            &json!({"refund_id": "re_schema", "amount": "1.00", "reason": "refund",
                     "refunded_at": "2026-02-02T00:00:00Z"}),
        ),
    )
    .await;
    let credits = format!("/v1/accounts/{payer}/credits");
    answer_conforms(
        &server,
        &spec,
        (
            "post",
            "/v1/accounts/{id}/credits/grants",
            &format!("{credits}/grants"),
        ),
        Role::Billing,
        Some(
            &json!({"grant_id": "g", "credits": 5, "reason": "promotion",
                     "expires_at": "2030-01-01T00:00:00Z"}),
        ),
    )
    .await;
    answer_conforms(
        &server,
        &spec,
        (
            "post",
            "/v1/accounts/{id}/credits/spend",
            &format!("{credits}/spend"),
        ),
        Role::Billing,
        Some(&json!({"spend_id": "s", "credits": 9, "persona": "chef"})),
    )
    .await;
    for (template, path, role) in [
        (
            "/v1/accounts/{id}",
            format!("/v1/accounts/{payer}"),
            Role::Billing,
        ),
        ("/v1/accounts/{id}/credits", credits.clone(), Role::Billing),
        (
            "/v1/accounts/{id}/upline",
            format!("/v1/accounts/{payer}/upline"),
            Role::Billing,
        ),
        (
            "/v1/accounts/{id}/downline",
            format!("/v1/accounts/{referrer}/downline"),
            Role::Billing,
        ),
        (
            "/v1/accounts/{id}/commissions",
            format!("/v1/accounts/{referrer}/commissions"),
            Role::Finance,
        ),
        (
            "/v1/accounts/{id}",
            "/v1/accounts/nobody".to_owned(),
            Role::Billing,
        ),
        ("/v1/events", "/v1/events?limit=3".to_owned(), Role::Auditor),
    ] {
        answer_conforms(&server, &spec, ("get", template, &path), role, None).await;
    }
}

async fn served_spec(server: &TestServer) -> Value {
    server
        .get("/openapi.json", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A path of `template` with a plausible value for each parameter.
fn fill(template: &str) -> String {
    let mut path = template.to_owned();
    for (parameter, value) in [
        ("{id}", "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b"),
        ("{affiliate_id}", "0b7c6f4e-5d1a-4b8e-9a3f-2c1d0e9f8a7b"),
        ("{payment_id}", "pi_1"),
        ("{subscription_id}", "sub_1"),
        ("{level}", "1"),
        ("{period}", "2026-01"),
        ("{stream}", "account-1"),
        ("{reservation_id}", "r_1"),
    ] {
        path = path.replace(parameter, value);
    }
    assert!(
        !path.contains('{'),
        "a parameter of {template} has no value"
    );
    path
}

#[tokio::test]
async fn the_spec_says_which_roles_each_operation_admits_and_errors_are_problems() {
    let server = TestServer::start().await;
    let spec = served_spec(&server).await;
    let mut operations = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.as_str() >= "400" {
                    let content = response["content"].as_object().unwrap();
                    assert_eq!(
                        content.keys().collect::<Vec<_>>(),
                        ["application/problem+json"],
                        "{method} {template} {status}"
                    );
                }
            }
            let Some(requirements) = operation["security"].as_array() else {
                continue;
            };
            let admitted: Vec<&str> = requirements
                .iter()
                .flat_map(|requirement| requirement.as_object().unwrap().keys())
                .map(String::as_str)
                .collect();
            assert!(!admitted.is_empty(), "{method} {template}");
            for status in ["401", "403", "500", "503"] {
                assert!(
                    operation["responses"][status].is_object(),
                    "{method} {template} lists {status}"
                );
            }
            operations += 1;
            let path = fill(template);
            for role in Role::ALL {
                let request = server
                    .client
                    .request(method.to_uppercase().parse().unwrap(), server.url(&path))
                    .bearer_auth(crate::support::secret(role));
                let request = if operation["requestBody"].is_object() {
                    request.json(&json!({}))
                } else {
                    request
                };
                let status = request.send().await.unwrap().status();
                let listed = admitted.contains(&role.as_str());
                assert_eq!(
                    status == StatusCode::FORBIDDEN,
                    !listed,
                    "{role} on {method} {template}: {status}, the spec admits {admitted:?}"
                );
            }
        }
    }
    assert!(operations > 30, "{operations} operations checked");
    let credits = &spec["components"]["schemas"]["SpendCreditsRequest"]["properties"];
    assert_eq!(credits["credits"]["minimum"], 1, "{credits}");
    assert!(credits["spend_id"]["pattern"].is_string(), "{credits}");
    let payment = &spec["components"]["schemas"]["RecordPaymentRequest"]["properties"];
    assert!(payment["currency"]["enum"]
        .as_array()
        .unwrap()
        .contains(&json!("EUR")));
    assert_eq!(payment["paid_at"]["format"], "date-time", "{payment}");
    assert_eq!(payment["account_id"]["format"], "uuid", "{payment}");
}
