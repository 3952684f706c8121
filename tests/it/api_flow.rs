//! The ledger through the API, end to end: accounts, deposits, holds released in parts and
//! voided, journal filters and pagination, audit rows, roles, metrics, OpenAPI, health.

use crate::harness::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;

on_both_backends!(
    hold_lifecycle_moves_money_exactly,
    journal_filters_and_pages,
    roles_audit_metrics_and_docs
);

async fn hold_lifecycle_moves_money_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let buyer = app.create_account("buyer").await;
    let seller = app.create_account("seller").await;
    app.deposit(&buyer, "1000", "fund-1").await;

    let hold = app.hold(&buyer, "400.25", "hold-1").await;
    let b = app.account(&buyer).await;
    assert_eq!(
        (
            b["available"].as_str(),
            b["held"].as_str(),
            b["total"].as_str()
        ),
        (Some("599.750000"), Some("400.250000"), Some("1000.000000"))
    );

    // Two partial releases, then a void of the remainder.
    let (s, body) = app
        .post(
            &format!("/v1/holds/{hold}/release"),
            ADMIN,
            Some("rel-1"),
            &json!({"amount": "100", "destination": seller, "reason": "milestone 1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["transaction"]["kind"], "RELEASE");
    let (s, body) = app
        .post(&format!("/v1/holds/{hold}/release"), ADMIN, Some("rel-2"), &json!({"amount": "50.25", "kind": "offset", "destination": seller, "reason": "damage offset"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["transaction"]["kind"], "OFFSET");
    // More than remains is refused and changes nothing.
    let before = app.footprint().await;
    let (s, body) = app
        .post(
            &format!("/v1/holds/{hold}/release"),
            ADMIN,
            Some("rel-3"),
            &json!({"amount": "250.000001", "destination": seller, "reason": "too much"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("hold_exceeded")),
        "{body}"
    );
    assert_eq!(app.footprint().await, before);

    let (s, body) = app
        .post(
            &format!("/v1/holds/{hold}/void"),
            ADMIN,
            Some("void-1"),
            &json!({"reason": "deal cancelled"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    assert_eq!(body["transaction"]["kind"], "REFUND");

    let (s, h) = app.get(&format!("/v1/holds/{hold}"), TRADER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            h["state"].as_str(),
            h["released"].as_str(),
            h["voided"].as_str(),
            h["remaining"].as_str()
        ),
        (
            Some("resolved"),
            Some("150.250000"),
            Some("250.000000"),
            Some("0.000000")
        )
    );

    // A resolved hold takes nothing more: neither release nor void.
    for (path, key, body) in [
        (
            "release",
            "rel-4",
            json!({"amount": "1", "destination": seller, "reason": "late"}),
        ),
        ("void", "void-2", json!({"reason": "again"})),
    ] {
        let (s, b) = app
            .post(&format!("/v1/holds/{hold}/{path}"), ADMIN, Some(key), &body)
            .await;
        assert_eq!(
            (s, b["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("hold_resolved")),
            "{b}"
        );
    }

    let b = app.account(&buyer).await;
    let s_ = app.account(&seller).await;
    assert_eq!(
        (b["available"].as_str(), b["held"].as_str()),
        (Some("849.750000"), Some("0.000000"))
    );
    assert_eq!(s_["available"].as_str(), Some("150.250000"));

    // Payout and fee releases go to the system accounts, never to a caller-chosen one.
    let hold2 = app.hold(&buyer, "10", "hold-2").await;
    let (s, body) = app
        .post(
            &format!("/v1/holds/{hold2}/release"),
            ADMIN,
            Some("pay-1"),
            &json!({"amount": "9", "kind": "payout", "reason": "on-chain payout"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let external = app
        .ledger
        .system_account(&usdt(), treasuryd::ledger::AccountKind::External)
        .unwrap()
        .to_string();
    assert!(
        body["transaction"]["postings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["account"] == external.as_str() && p["amount"] == "9.000000")
    );
    let (s, body) = app
        .post(
            &format!("/v1/holds/{hold2}/release"),
            ADMIN,
            Some("fee-1"),
            &json!({"amount": "1", "kind": "fee", "destination": seller, "reason": "fee"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("destination")),
        "{body}"
    );
    let (s, _) = app
        .post(
            &format!("/v1/holds/{hold2}/release"),
            ADMIN,
            Some("fee-2"),
            &json!({"amount": "1", "kind": "fee", "reason": "fee"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn journal_filters_and_pages(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_account("a").await;
    let b = app.create_account("b").await;
    for i in 0..7 {
        app.deposit(&a, "1", &format!("a-{i}")).await;
    }
    app.deposit(&b, "2", "b-0").await;
    app.hold(&a, "3", "h-0").await;

    // Page through a's transactions three at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/journal?account={a}&limit=3&cursor={c}"),
            None => format!("/v1/journal?account={a}&limit=3"),
        };
        let (s, page) = app.get(&path, TRADER).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for t in page["items"].as_array().unwrap() {
            seen.push(t["seq"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 8, "7 deposits and a hold touch a: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));

    let (_, holds) = app.get("/v1/journal?kind=HOLD", TRADER).await;
    assert_eq!(holds["items"].as_array().unwrap().len(), 1);
    let (_, future) = app
        .get("/v1/journal?from=2999-01-01T00:00:00Z", TRADER)
        .await;
    assert!(future["items"].as_array().unwrap().is_empty());
    let (_, past) = app
        .get("/v1/journal?to=2999-01-01T00:00:00Z&limit=500", TRADER)
        .await;
    assert_eq!(past["items"].as_array().unwrap().len(), 9);

    let id = past["items"][0]["id"].as_str().unwrap();
    let (s, one) = app.get(&format!("/v1/journal/{id}"), OPERATOR).await;
    assert_eq!((s, one["seq"].as_i64()), (StatusCode::OK, Some(1)));

    let (s, accounts) = app.get("/v1/accounts?owner=a", APPROVER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(accounts["items"][0]["available"], "4.000000");
    app.stop().await.unwrap();
}

async fn roles_audit_metrics_and_docs(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_account("acme").await;

    // Readers may read; only Admin may move money here.
    for token in [TRADER, APPROVER, OPERATOR] {
        let (s, body) = app
            .post(
                "/v1/deposits",
                token,
                Some("k"),
                &json!({"account": a, "amount": "1", "reason": "x"}),
            )
            .await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden"))
        );
        let (s, _) = app.get(&format!("/v1/accounts/{a}"), token).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, body) = app.get("/v1/accounts", "wrong-token").await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
    );

    app.deposit(&a, "5", "dep-1").await;
    let (s, audit) = app.get("/v1/audit", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "account.create and deposit.create: {audit}");
    assert_eq!(rows[1]["action"], "deposit.create");
    assert_eq!(rows[1]["actor"], "test-admin");
    assert_eq!(rows[1]["role"], "admin");
    assert_eq!(rows[1]["reason"], "test funding");
    assert!(!rows[1]["request_id"].as_str().unwrap().is_empty());
    let (s, _) = app.get("/v1/audit", TRADER).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The request id is echoed so callers can quote it.
    let r = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let (s, _) = app.get("/readyz", ADMIN).await;
    assert_eq!(s, StatusCode::OK);

    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_ledger_transactions_total{kind=\"DEPOSIT\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&text, "treasuryd_ledger_transactions_total{kind=\"HOLD\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_http_requests_total{method=\"POST\",route=\"/v1/deposits\",status=\"403\"}"
        ),
        Some(3.0)
    );
    assert!(
        text.contains("route=\"/v1/accounts/{id}\""),
        "routes are templates, not raw paths"
    );

    let (s, doc) = app.get("/openapi.json", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/accounts",
        "/v1/accounts/{id}",
        "/v1/journal",
        "/v1/deposits",
        "/v1/adjustments",
        "/v1/holds",
        "/v1/holds/{id}/release",
        "/v1/holds/{id}/void",
        "/v1/audit",
        "/readyz",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    app.stop().await.unwrap();
}
