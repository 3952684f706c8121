//! Payout requests through the API: accepted only once held and stored, split under the cap,
//! four-eyes flagged, idempotent, and every kind of bad input refused with nothing held.

use crate::harness::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    payouts_are_held_split_and_idempotent,
    bad_payout_requests_hold_nothing,
    a_batch_answers_each_payout_as_alone
);

fn payout(account: &str, amount: &str) -> Value {
    json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": amount,
           "reference": "inv-1", "metadata": {"invoice": 1}})
}

async fn payouts_are_held_split_and_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = funded_partner(&app, "acme", "USDT", "1000000").await;

    let (s, small) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some("p-1"),
            &payout(&acme, "1500.25"),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{small}");
    assert_eq!(small["state"], "queued");
    assert_eq!(small["chunks"], json!(["1500.250000"]));
    assert_eq!(small["destination"], DESTINATION);
    assert_eq!(small["metadata"], json!({"invoice": 1}));
    let (s, held) = app
        .get(
            &format!("/v1/holds/{}", small["hold_id"].as_str().unwrap()),
            TRADER,
        )
        .await;
    assert_eq!(
        (s, held["amount"].as_str(), held["state"].as_str()),
        (StatusCode::OK, Some("1500.250000"), Some("open"))
    );

    let (s, big) = app
        .post("/v1/payouts", TRADER, Some("p-2"), &payout(&acme, "600000"))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{big}");
    assert_eq!(
        big["chunks"],
        json!(["250000.000000", "250000.000000", "100000.000000"])
    );
    assert_eq!(
        big["state"], "pending_approval",
        "at or above the 100,000 threshold"
    );
    let acc = app.account(&acme).await;
    assert_eq!(
        (acc["available"].as_str(), acc["held"].as_str()),
        (Some("398499.750000"), Some("601500.250000"))
    );

    let (s, story) = app
        .get(
            &format!("/v1/payouts/{}", big["id"].as_str().unwrap()),
            OPERATOR,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{story}");
    let kinds: Vec<&str> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["accepted", "split", "approval_required"]);
    assert_eq!(
        story["chunks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["state"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["queued"; 3]
    );
    assert_eq!(story["created_by"], "test-trader");

    // Replays answer exactly as the first time and write nothing; another body is a conflict.
    let before = app.footprint().await;
    let (s, again) = app
        .post("/v1/payouts", TRADER, Some("p-2"), &payout(&acme, "600000"))
        .await;
    assert_eq!((s, &again), (StatusCode::ACCEPTED, &big));
    let mut other = payout(&acme, "600000");
    other["destination"] = json!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
    let (s, conflict) = app.post("/v1/payouts", TRADER, Some("p-2"), &other).await;
    assert_eq!(
        (s, conflict["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("idempotency_conflict")),
        "{conflict}"
    );
    let mut other = payout(&acme, "600000");
    other["metadata"] = json!({"invoice": 2});
    let (s, _) = app.post("/v1/payouts", TRADER, Some("p-2"), &other).await;
    assert_eq!(s, StatusCode::CONFLICT, "metadata is part of the request");
    assert_eq!(app.footprint().await, before);

    let (s, list) = app.get("/v1/payouts?state=pending_approval", TRADER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["id"], big["id"]);
    let (_, all) = app
        .get(&format!("/v1/payouts?account={acme}&limit=1"), TRADER)
        .await;
    assert_eq!(all["items"][0]["id"], small["id"]);
    let (_, next) = app
        .get(
            &format!(
                "/v1/payouts?account={acme}&limit=1&cursor={}",
                all["next_cursor"].as_str().unwrap()
            ),
            TRADER,
        )
        .await;
    assert_eq!(next["items"][0]["id"], big["id"]);

    let (s, audit) = app.get("/v1/audit", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["action"] == "payout.create")
            .count(),
        2
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn bad_payout_requests_hold_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let usdc = funded_partner(&app, "acme", "USDC", "100").await;
    let with = |field: &str, value: Value| {
        let mut body = payout(&acme, "10");
        if value.is_null() {
            body.as_object_mut().unwrap().remove(field);
        } else {
            body[field] = value;
        }
        body
    };
    let lowercase = DESTINATION.to_lowercase();
    // One letter's case flipped: the same hex, but the EIP-55 checksum no longer matches.
    let wrong_checksum = DESTINATION.replace("C51812dc", "c51812dc");
    let cases: Vec<(&str, Value, StatusCode, &str, Option<&str>)> = vec![
        (
            "bad checksum",
            with("destination", json!(wrong_checksum)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_address",
            Some("destination"),
        ),
        (
            "no checksum",
            with("destination", json!(lowercase)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_address",
            Some("destination"),
        ),
        (
            "short address",
            with("destination", json!("0x1234")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_address",
            Some("destination"),
        ),
        (
            "zero address",
            with(
                "destination",
                json!("0x0000000000000000000000000000000000000000"),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_address",
            Some("destination"),
        ),
        (
            "zero amount",
            with("amount", json!("0")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        (
            "negative amount",
            with("amount", json!("-5")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        (
            "over-precise amount",
            with("amount", json!("1.0000001")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_amount",
            Some("amount"),
        ),
        (
            "unknown network",
            with("network", json!("dogechain")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_network",
            Some("network"),
        ),
        (
            "unknown asset",
            with("asset", json!("DAI")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_asset",
            Some("asset"),
        ),
        (
            "account in another asset",
            with("account", json!(usdc)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "asset_mismatch",
            Some("account"),
        ),
        (
            "metadata not an object",
            with("metadata", json!([1])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("metadata"),
        ),
        (
            "metadata too big",
            with("metadata", json!({"x": "y".repeat(5000)})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            Some("metadata"),
        ),
        (
            "missing destination",
            with("destination", Value::Null),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
            Some("destination"),
        ),
        (
            "more than available",
            with("amount", json!("100.000001")),
            StatusCode::CONFLICT,
            "insufficient_funds",
            Some("amount"),
        ),
    ];
    let before = (app.footprint().await, app.account(&acme).await);
    for (name, body, status, code, field) in cases {
        let (s, answer) = app
            .post(
                "/v1/payouts",
                TRADER,
                Some(&format!("bad-{}", name.replace(' ', "-"))),
                &body,
            )
            .await;
        assert_eq!(s, status, "{name}: {answer}");
        assert_eq!(
            (
                answer["error"]["code"].as_str(),
                answer["error"]["field"].as_str()
            ),
            (Some(code), field),
            "{name}: {answer}"
        );
    }
    let (s, answer) = app
        .post("/v1/payouts", TRADER, None, &payout(&acme, "1"))
        .await;
    assert_eq!(
        (s, answer["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("missing_idempotency_key")
        )
    );
    for token in [ADMIN, APPROVER, OPERATOR] {
        let (s, _) = app
            .post("/v1/payouts", token, Some("role"), &payout(&acme, "1"))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "only Traders request payouts");
    }
    assert_eq!(
        (app.footprint().await, app.account(&acme).await),
        before,
        "a refused payout changed something"
    );
    let (_, list) = app.get("/v1/payouts", TRADER).await;
    assert!(list["items"].as_array().unwrap().is_empty());
    app.stop().await.unwrap();
}

/// `POST /v1/payouts/batch`: each payout is judged as it would be alone, with its own key; the
/// accepted ones are held and stored before the answer, the refused ones hold nothing; a
/// replay answers every one as before, and a key from a batch replays through the single route.
async fn a_batch_answers_each_payout_as_alone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let account = funded_partner(&app, "payroll", "USDT", "1000").await;
    let item = |key: &str, destination: &str, amount: &str| {
        json!({"idempotency_key": key, "account": account, "network": "ethereum", "asset": "USDT",
            "destination": destination, "amount": amount, "reference": format!("salary {key}")})
    };
    let batch = json!({"payouts": [
        item("p-1", DESTINATION, "100"),
        item("p-2", DESTINATION, "250.5"),
        item("p-3", "0x70997970c51812dc3a010c7d01b50e0d17dc79c9", "1"),
        item("p-4", DESTINATION, "5000"),
        item("p-5", DESTINATION, "0.000001"),
    ]});
    let (s, answer) = app.post("/v1/payouts/batch", TRADER, None, &batch).await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    let results = answer["results"].as_array().unwrap();
    let statuses: Vec<u64> = results
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![202, 202, 422, 409, 202], "{answer}");
    assert_eq!(results[2]["error"]["field"], "destination", "{answer}");
    assert_eq!(
        results[3]["error"]["code"], "insufficient_funds",
        "{answer}"
    );
    // Held before the answer: 100 + 250.5 + 0.000001 of 1,000.
    let held = app.account(&account).await;
    assert_eq!(held["held"], "350.500001", "{held}");
    for r in results.iter().filter(|r| r["status"] == 202) {
        let (s, p) = app
            .get(
                &format!("/v1/payouts/{}", r["payout"]["id"].as_str().unwrap()),
                TRADER,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        assert_eq!(
            p["reference"],
            format!("salary {}", r["idempotency_key"].as_str().unwrap())
        );
    }
    // The same batch again: every answer as before, nothing new held.
    let before = app.footprint().await;
    let (_, again) = app.post("/v1/payouts/batch", TRADER, None, &batch).await;
    let ids = |a: &Value| -> Vec<Value> {
        a["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["payout"]["id"].clone())
            .collect()
    };
    assert_eq!(ids(&again), ids(&answer), "{again}");
    assert_eq!(app.footprint().await, before);
    // A batch key is the caller's key for that payout on the single route too.
    let (s, alone) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some("p-1"),
            &json!({"account": account, "network": "ethereum", "asset": "USDT",
                "destination": DESTINATION, "amount": "100", "reference": "salary p-1"}),
        )
        .await;
    assert_eq!(
        (s, &alone["id"]),
        (StatusCode::ACCEPTED, &results[0]["payout"]["id"]),
        "{alone}"
    );
    // Size limits and bad keys.
    let (s, body) = app
        .post("/v1/payouts/batch", TRADER, None, &json!({"payouts": []}))
        .await;
    assert_eq!(
        (s, &body["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("payouts"))
    );
    let many: Vec<Value> = (0..501)
        .map(|i| item(&format!("m-{i}"), DESTINATION, "1"))
        .collect();
    let (s, _) = app
        .post("/v1/payouts/batch", TRADER, None, &json!({"payouts": many}))
        .await;
    assert!(
        s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::PAYLOAD_TOO_LARGE,
        "{s}"
    );
    let (s, body) = app
        .post(
            "/v1/payouts/batch",
            TRADER,
            None,
            &json!({"payouts": [item("bad key", DESTINATION, "1")]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        body["results"][0]["error"]["code"], "invalid_idempotency_key",
        "{body}"
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}
