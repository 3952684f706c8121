//! Bad input at the API: each case gets its 4xx, a stable code, a message naming the field,
//! and changes nothing (journal, audit log and balances are compared before and after).

use crate::harness::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    bad_input_is_refused_and_changes_nothing,
    balances_stay_within_what_both_databases_store
);

struct Case {
    name: &'static str,
    path: String,
    token: Option<&'static str>,
    key: Option<&'static str>,
    content_type: &'static str,
    body: String,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    path: impl Into<String>,
    body: Value,
    status: StatusCode,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        path: path.into(),
        token: Some(ADMIN),
        key: Some("bad-input-key"),
        content_type: "application/json",
        body: body.to_string(),
        status,
        code,
        field,
    }
}

async fn bad_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_account("alice").await;
    let b = app.create_account("bob").await;
    app.deposit(&a, "100", "setup-1").await;
    let hold = app.hold(&a, "10", "setup-2").await;
    let ghost = uuid::Uuid::now_v7().to_string();

    use StatusCode as S;
    let dep = |extra: Value| {
        let mut body = json!({"account": a, "amount": "1", "reason": "r"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        body
    };
    let release = format!("/v1/holds/{hold}/release");
    let mut cases = vec![
        case(
            "unknown field",
            "/v1/deposits",
            dep(json!({"extra": 1})),
            S::UNPROCESSABLE_ENTITY,
            "unknown_field",
            Some("extra"),
        ),
        case(
            "zero amount",
            "/v1/deposits",
            dep(json!({"amount": "0"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        case(
            "negative amount",
            "/v1/deposits",
            dep(json!({"amount": "-1"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        case(
            "over-precise amount",
            "/v1/deposits",
            dep(json!({"amount": "1.0000001"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        case(
            "exponent amount",
            "/v1/deposits",
            dep(json!({"amount": "1e3"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        case(
            "huge amount",
            "/v1/deposits",
            dep(json!({"amount": "1".repeat(40)})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        case(
            "numeric amount",
            "/v1/deposits",
            dep(json!({"amount": 5})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("amount"),
        ),
        case(
            "unknown account",
            "/v1/deposits",
            dep(json!({"account": ghost})),
            S::UNPROCESSABLE_ENTITY,
            "account_not_found",
            Some("account"),
        ),
        case(
            "malformed account id",
            "/v1/deposits",
            dep(json!({"account": "acct-1"})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("account"),
        ),
        case(
            "missing reason",
            "/v1/deposits",
            dep(json!({"reason": null})),
            S::UNPROCESSABLE_ENTITY,
            "missing_field",
            Some("reason"),
        ),
        case(
            "blank reason",
            "/v1/deposits",
            dep(json!({"reason": "   "})),
            S::UNPROCESSABLE_ENTITY,
            "reason_required",
            Some("reason"),
        ),
        case(
            "reference too long",
            "/v1/deposits",
            dep(json!({"reference": "r".repeat(129)})),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("reference"),
        ),
        case(
            "array body",
            "/v1/deposits",
            json!([1, 2]),
            S::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        case(
            "unknown asset",
            "/v1/accounts",
            json!({"owner": "x", "network": "ethereum", "asset": "DOGE", "kind": "partner", "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "unknown_asset",
            Some("asset"),
        ),
        case(
            "system account kind",
            "/v1/accounts",
            json!({"owner": "x", "network": "ethereum", "asset": "USDT", "kind": "external", "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("kind"),
        ),
        case(
            "unknown account kind",
            "/v1/accounts",
            json!({"owner": "x", "network": "ethereum", "asset": "USDT", "kind": "vault", "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("kind"),
        ),
        case(
            "duplicate account",
            "/v1/accounts",
            json!({"owner": "alice", "network": "ethereum", "asset": "USDT", "kind": "partner", "reason": "r"}),
            S::CONFLICT,
            "account_exists",
            Some("owner"),
        ),
        case(
            "hold beyond available",
            "/v1/holds",
            json!({"account": a, "amount": "90.000001", "reason": "r"}),
            S::CONFLICT,
            "insufficient_funds",
            Some("amount"),
        ),
        case(
            "debit beyond available",
            "/v1/adjustments",
            json!({"account": a, "amount": "91", "direction": "debit", "reason": "r"}),
            S::CONFLICT,
            "insufficient_funds",
            Some("amount"),
        ),
        case(
            "bad direction",
            "/v1/adjustments",
            json!({"account": a, "amount": "1", "direction": "sideways", "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("direction"),
        ),
        case(
            "unknown hold",
            format!("/v1/holds/{ghost}/release"),
            json!({"amount": "1", "destination": b, "reason": "r"}),
            S::NOT_FOUND,
            "hold_not_found",
            None,
        ),
        case(
            "release without destination",
            release.clone(),
            json!({"amount": "1", "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "missing_field",
            Some("destination"),
        ),
        case(
            "release to unknown account",
            release.clone(),
            json!({"amount": "1", "destination": ghost, "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "account_not_found",
            Some("destination"),
        ),
        case(
            "release to a system account",
            release.clone(),
            json!({"amount": "1", "destination": app.ledger.system_account(&usdt(), treasuryd::ledger::AccountKind::External).unwrap().to_string(), "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "wrong_account_kind",
            None,
        ),
        case(
            "bad release kind",
            release.clone(),
            json!({"amount": "1", "kind": "gift", "destination": b, "reason": "r"}),
            S::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("kind"),
        ),
        case(
            "release beyond hold",
            release.clone(),
            json!({"amount": "10.000001", "destination": b, "reason": "r"}),
            S::CONFLICT,
            "hold_exceeded",
            Some("amount"),
        ),
    ];
    let raw = |name, body: &str, content_type, status, code, field| Case {
        name,
        path: "/v1/deposits".into(),
        token: Some(ADMIN),
        key: Some("bad-input-key"),
        content_type,
        body: body.to_owned(),
        status,
        code,
        field,
    };
    cases.push(raw(
        "malformed JSON",
        "{\"account\": ",
        "application/json",
        S::BAD_REQUEST,
        "malformed_json",
        None,
    ));
    cases.push(raw(
        "trailing garbage",
        "{\"account\": \"x\"} x",
        "application/json",
        S::BAD_REQUEST,
        "malformed_json",
        None,
    ));
    cases.push(raw(
        "not JSON content type",
        "account=x",
        "application/x-www-form-urlencoded",
        S::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        None,
    ));
    let oversized = json!({"account": a, "amount": "1", "reason": "r".repeat(70_000)}).to_string();
    cases.push(raw(
        "oversized body",
        &oversized,
        "application/json",
        S::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        None,
    ));
    let mut c = case(
        "wrong role",
        "/v1/deposits",
        dep(json!({})),
        S::FORBIDDEN,
        "forbidden",
        None,
    );
    c.token = Some(TRADER);
    cases.push(c);
    let mut c = case(
        "no token",
        "/v1/deposits",
        dep(json!({})),
        S::UNAUTHORIZED,
        "unauthenticated",
        None,
    );
    c.token = None;
    cases.push(c);
    let mut c = case(
        "missing idempotency key",
        "/v1/deposits",
        dep(json!({})),
        S::UNPROCESSABLE_ENTITY,
        "missing_idempotency_key",
        Some("Idempotency-Key"),
    );
    c.key = None;
    cases.push(c);
    let mut c = case(
        "blank idempotency key",
        "/v1/deposits",
        dep(json!({})),
        S::UNPROCESSABLE_ENTITY,
        "invalid_idempotency_key",
        Some("Idempotency-Key"),
    );
    c.key = Some(" ");
    cases.push(c);

    let before = (
        app.footprint().await,
        app.account(&a).await,
        app.account(&b).await,
    );
    for c in &cases {
        let mut req = app
            .client
            .post(app.url(&c.path))
            .header("content-type", c.content_type)
            .body(c.body.clone());
        if let Some(t) = c.token {
            req = req.bearer_auth(t);
        }
        if let Some(k) = c.key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, c.status, "{}: {body}", c.name);
        assert_eq!(
            body["error"]["code"].as_str(),
            Some(c.code),
            "{}: {body}",
            c.name
        );
        assert!(
            !body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{}: no message",
            c.name
        );
        assert_eq!(
            body["error"]["field"].as_str(),
            c.field,
            "{}: {body}",
            c.name
        );
        if let Some(f) = c.field.filter(|f| *f != "Idempotency-Key") {
            assert!(
                body["error"]["message"].as_str().unwrap().contains(f),
                "{}: message must name {f}: {body}",
                c.name
            );
        }
    }
    let after = (
        app.footprint().await,
        app.account(&a).await,
        app.account(&b).await,
    );
    assert_eq!(before, after, "a refused request changed something");

    // Query strings are validated the same way.
    for (path, code, field) in [
        ("/v1/journal?limit=0", "invalid_field", "limit"),
        ("/v1/journal?limit=abc", "invalid_field", "limit"),
        ("/v1/journal?bogus=1", "unknown_field", "bogus"),
        ("/v1/journal?kind=STEAL", "invalid_field", "kind"),
        ("/v1/journal?from=yesterday", "invalid_field", "from"),
        ("/v1/journal?cursor=zzz", "invalid_cursor", "cursor"),
        ("/v1/accounts?asset=USDT", "missing_field", "network"),
    ] {
        let (s, body) = app.get(path, TRADER).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
        assert_eq!(
            (
                body["error"]["code"].as_str(),
                body["error"]["field"].as_str()
            ),
            (Some(code), Some(field)),
            "{path}: {body}"
        );
    }
    let (s, body) = app.get(&format!("/v1/accounts/{ghost}"), TRADER).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("account_not_found"))
    );
    app.stop().await.unwrap();
}

/// The largest deposit (10^28 - 1 base units) is accepted once; a second would take the balance
/// past what both databases store exactly (PostgreSQL's through `rust_decimal`, whose encoding
/// panics past 2^96): it is refused, 422, and nothing changes.
async fn balances_stay_within_what_both_databases_store(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let account = app.create_account("whale").await;
    let max = "9999999999999999999999.999999";
    app.deposit(&account, max, "max-1").await;
    let before = app.footprint().await;
    let (s, body) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some("max-2"),
            &json!({"account": account, "amount": max, "reason": "test funding"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "balance_out_of_range", "{body}");
    assert_eq!(app.footprint().await, before);
    assert_eq!(app.account(&account).await["available"], max);
    // The daemon goes on writing.
    app.hold(&account, "1", "after").await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_and_methods_from_callers_are_bounded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let account = app.create_account("ids").await;
    let deposit = |id: String, key: &'static str| {
        let app = &app;
        let account = account.clone();
        async move {
            let r = app
                .client
                .post(app.url("/v1/deposits"))
                .bearer_auth(ADMIN)
                .header("idempotency-key", key)
                .header("x-request-id", id)
                .json(&json!({"account": account, "amount": "1", "reason": "ids"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED);
            r.headers()["x-request-id"].to_str().unwrap().to_owned()
        }
    };
    // A fit id is kept, echoed and audited; an oversized or odd one is replaced.
    assert_eq!(deposit("req-1:ok".into(), "k1").await, "req-1:ok");
    let long = "x".repeat(300);
    let replaced = deposit(long.clone(), "k2").await;
    assert_ne!(replaced, long);
    let odd = deposit("drop table; --".into(), "k3").await;
    assert_ne!(odd, "drop table; --");
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let ids: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["request_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"req-1:ok") && ids.contains(&replaced.as_str()),
        "{ids:?}"
    );
    assert!(
        ids.iter().all(|i| i.len() <= 128 && !i.contains(' ')),
        "{ids:?}"
    );

    // Made-up methods share one `other` series.
    for verb in ["BREW", "WHEN", "PROPFIND"] {
        let method = reqwest::Method::from_bytes(verb.as_bytes()).unwrap();
        let _ = app.call(method, "/v1/accounts", ADMIN, None).await;
    }
    let metrics = app.metrics_text().await;
    assert!(
        !metrics.contains("BREW") && !metrics.contains("PROPFIND"),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    app.stop().await.unwrap();
}

/// A payout below the token's `min_payout` costs a whole transfer's gas for next to nothing:
/// refused, naming the field and the minimum, and nothing is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payout_below_the_minimum_is_refused() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        c.networks[0].tokens[0].min_payout = Some("5".into());
    })
    .await;
    let account = app.create_account("dust").await;
    app.deposit(&account, "100", "fund").await;
    let payout = |amount: &'static str, key: &'static str| {
        let (app, account) = (&app, account.clone());
        async move {
            app.post(
                "/v1/payouts",
                TRADER,
                Some(key),
                &json!({"account": account, "network": "ethereum", "asset": "USDT",
                    "destination": DESTINATION, "amount": amount}),
            )
            .await
        }
    };
    let before = app.footprint().await;
    let (s, body) = payout("4.999999", "dust").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        (&body["error"]["code"], &body["error"]["field"]),
        (&json!("amount_below_minimum"), &json!("amount")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("5.000000"),
        "{body}"
    );
    assert_eq!(app.footprint().await, before);
    let (s, body) = payout("5", "enough").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    app.stop().await.unwrap();
}
