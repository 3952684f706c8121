//! Treasury controls at runtime: the Incident Commander changes the per-transaction cap and
//! the fee mode during the configuration freeze under an open incident (the launch's incident
//! story, paged and cleared under promtool), and a paused wallet signs nothing new while
//! another wallet of the network carries the queue, every destination paid exactly once.

use crate::engine::{destination, settled, spawn_miner};
use crate::harness::*;
use crate::incidents::incident_alerts_fired;
use crate::on_both_backends;
use alloy::primitives::U256;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(
    the_incident_commander_changes_the_cap_during_the_freeze,
    a_paused_wallet_signs_nothing_new_while_another_carries_the_queue
);

async fn put(app: &TestApp, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.call(Method::PUT, path, token, Some(&body)).await
}

fn metric(text: &str, series: &str) -> f64 {
    metric_value(text, series).unwrap_or(f64::NAN)
}

async fn the_incident_commander_changes_the_cap_during_the_freeze(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let account = funded_partner(&app, "acme", "USDT", "1000").await;
    let (_, controls) = app.get("/v1/networks/ethereum/controls", OPERATOR).await;
    assert_eq!(
        controls["per_tx_caps"][1],
        json!({"token": "USDT", "cap": "250000.000000", "configured": "250000.000000", "set": null}),
        "{controls}"
    );
    assert_eq!(controls["fee_mode"]["mode"], "normal");

    // SEV1 opened: the page fires.
    let (s, incident) = app
        .post(
            "/v1/incidents",
            OPERATOR,
            None,
            &json!({"severity": "SEV1", "summary": "payouts to one exchange bounce",
                "links": [{"kind": "network", "id": "ethereum"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{incident}");
    let incident = incident["id"].as_str().unwrap().to_owned();
    incident_alerts_fired(&app.metrics_text().await, &[("SEV1", 1)]);

    // The configuration freeze: a cap change needs the incident.
    let (s, f) = put(
        &app,
        "/v1/config-freeze",
        ADMIN,
        json!({"enabled": true, "reason": "T-3 launch freeze"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let cap_body = |incident: Option<&str>| {
        let mut b = json!({"token": "USDT", "cap": "100", "reason": "smaller transfers while the exchange bounces"});
        if let Some(i) = incident {
            b["incident"] = json!(i);
        }
        b
    };
    let (s, e) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        OPERATOR,
        cap_body(None),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (
            StatusCode::CONFLICT,
            Some("config_frozen"),
            Some("incident")
        ),
        "{e}"
    );
    let (s, e) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        OPERATOR,
        cap_body(Some(&uuid::Uuid::now_v7().to_string())),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_incident")),
        "{e}"
    );
    for (body, field) in [
        (
            json!({"token": "USDT", "cap": "0", "reason": "x", "incident": incident}),
            "cap",
        ),
        (
            json!({"token": "USDT", "cap": "1.0000001", "reason": "x", "incident": incident}),
            "cap",
        ),
        (
            json!({"token": "DAI", "cap": "5", "reason": "x", "incident": incident}),
            "token",
        ),
    ] {
        let (s, e) = put(
            &app,
            "/v1/networks/ethereum/controls/per-tx-cap",
            OPERATOR,
            body.clone(),
        )
        .await;
        assert_eq!(
            (s, e["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body} → {e}"
        );
    }
    let (s, e) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        TRADER,
        cap_body(Some(&incident)),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    // Nothing above changed the cap in force.
    assert_eq!(
        metric(
            &app.metrics_text().await,
            r#"treasuryd_per_tx_cap_units{asset="USDT",network="ethereum"}"#
        ),
        250_000.0
    );

    let (s, c) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        OPERATOR,
        cap_body(Some(&incident)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["per_tx_caps"][1]["cap"], "100.000000");
    assert_eq!(c["per_tx_caps"][1]["configured"], "250000.000000");
    assert_eq!(c["per_tx_caps"][1]["set"]["incident"], incident.as_str());
    let (s, c) = put(
        &app,
        "/v1/networks/ethereum/controls/fee-mode",
        OPERATOR,
        json!({"mode": "urgent", "reason": "land the queue before the cut-off", "incident": incident}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(
        (
            c["fee_mode"]["mode"].as_str(),
            c["fee_mode"]["configured"].as_str()
        ),
        (Some("urgent"), Some("normal"))
    );
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric(
            &metrics,
            r#"treasuryd_per_tx_cap_units{asset="USDT",network="ethereum"}"#
        ),
        100.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"treasuryd_fee_mode{mode="urgent",network="ethereum"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &metrics,
            r#"treasuryd_fee_mode{mode="normal",network="ethereum"}"#
        ),
        0.0
    );

    // The next payout is split under the new cap.
    let (s, p) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some("after-cap"),
            &json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "250.5"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{p}");
    let (_, p) = app
        .get(&format!("/v1/payouts/{}", p["id"].as_str().unwrap()), ADMIN)
        .await;
    let amounts: Vec<&str> = p["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["amount"].as_str().unwrap())
        .collect();
    assert_eq!(amounts, ["100.000000", "100.000000", "50.500000"], "{p}");

    // The incident's timeline says what was done under it; the audit log has both changes.
    let (_, story) = app
        .get(&format!("/v1/incidents/{incident}"), OPERATOR)
        .await;
    let notes: Vec<&str> = story["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["note"].as_str().unwrap())
        .collect();
    assert_eq!(
        notes,
        [
            "per-transaction cap of USDT on ethereum set to 100.000000 by test-operator: smaller transfers while the exchange bounces",
            "fee mode on ethereum set to urgent by test-operator: land the queue before the cut-off",
        ]
    );
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .filter(|a| a.starts_with("control."))
        .collect();
    assert_eq!(actions, ["control.per_tx_cap", "control.fee_mode"]);

    // Resolved: the page clears, and a resolved incident justifies nothing more.
    let (s, r) = app
        .post(
            &format!("/v1/incidents/{incident}/updates"),
            OPERATOR,
            None,
            &json!({"note": "exchange fixed its deposit contract", "status": "resolved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    incident_alerts_fired(&app.metrics_text().await, &[]);
    let (s, e) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        OPERATOR,
        json!({"token": "USDT", "cap": null, "reason": "back to normal", "incident": incident}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("incident_resolved")),
        "{e}"
    );
    let (_, c) = app.get("/v1/networks/ethereum/controls", OPERATOR).await;
    assert_eq!(
        c["per_tx_caps"][1]["cap"], "100.000000",
        "the refused change left the cap"
    );

    // After the freeze, the configured cap comes back without an incident.
    let (s, _) = put(
        &app,
        "/v1/config-freeze",
        ADMIN,
        json!({"enabled": false, "reason": "T+1"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, c) = put(
        &app,
        "/v1/networks/ethereum/controls/per-tx-cap",
        ADMIN,
        json!({"token": "USDT", "cap": null, "reason": "back to the configured cap"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["per_tx_caps"][1]["cap"], "250000.000000");
    assert_eq!(c["per_tx_caps"][1]["set"], Value::Null);

    // The Go/No-Go report of the period shows the incident.
    let today = chrono::Utc::now().date_naive();
    let (s, report) = app
        .get(
            &format!(
                "/v1/reports/go-no-go?from={today}&to={}",
                today.succ_opt().unwrap()
            ),
            ADMIN,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["critical_incidents"], 1, "{report}");
}

const FIRST_KEY_VAR: &str = "TREASURYD_TEST_CONTROLS_FIRST_KEY";
const SECOND_KEY_VAR: &str = "TREASURYD_TEST_CONTROLS_SECOND_KEY";

async fn a_paused_wallet_signs_nothing_new_while_another_carries_the_queue(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let (first, second) = (chain.dev_key(1).unwrap(), chain.dev_key(3).unwrap());
    for who in [first.address(), second.address()] {
        chain
            .mint(TestToken::Usdt, who, 1_000_000_000_000)
            .await
            .unwrap();
    }
    chain.set_automine(false).await.unwrap();
    let network = format!(
        "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 1\npoll_interval_ms = 50\nmax_in_flight = 2\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
        chain.chain_id,
        chain.url,
        chain.usdt.to_checksum(None),
    );
    let (first_id, second_id) = (
        first.address().to_checksum(None),
        second.address().to_checksum(None),
    );
    let wallets = format!(
        "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{first_id}\"\nkey_env = \"{FIRST_KEY_VAR}\"\n\
         [[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{second_id}\"\nkey_env = \"{SECOND_KEY_VAR}\"\n"
    );
    let keys = [
        (
            FIRST_KEY_VAR,
            format!("0x{}", hex::encode(first.to_bytes())),
        ),
        (
            SECOND_KEY_VAR,
            format!("0x{}", hex::encode(second.to_bytes())),
        ),
    ];
    let app = TestApp::spawn_with(backend, move |c, dir| {
        c.networks = vec![toml::from_str(&network).unwrap()];
        let dir = dir.join("wallets");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ethereum.toml"), wallets).unwrap();
        c.wallets_dir = dir;
        for (var, key) in keys {
            c.secrets.insert(var.into(), key.into());
        }
    })
    .await;
    let client = EvmClient::new(&chain.url).unwrap();
    let pending = |who| {
        let client = client.clone();
        async move { client.nonce(who, true).await.unwrap() }
    };
    let account = funded_partner(&app, "acme", "USDT", "1000").await;
    let pay = |i: u64| {
        let (app, account) = (&app, account.clone());
        async move {
            let body = json!({"account": account, "network": "ethereum", "asset": "USDT",
                "destination": destination(i).to_checksum(None), "amount": format!("{}", i + 1)});
            let (s, p) = app
                .post("/v1/payouts", TRADER, Some(&format!("pause-{i}")), &body)
                .await;
            assert_eq!(s, StatusCode::ACCEPTED, "{p}");
        }
    };
    // Four payouts go out from both wallets, two each (max_in_flight 2), into a node that
    // does not mine yet.
    for i in 0..4 {
        pay(i).await;
    }
    for _ in 0..200 {
        if pending(first.address()).await == 2 && pending(second.address()).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        (
            pending(first.address()).await,
            pending(second.address()).await
        ),
        (2, 2)
    );

    // The first wallet is paused; four more payouts wait for the second one's room.
    let (s, c) = put(
        &app,
        &format!("/v1/networks/ethereum/wallets/{first_id}/pause"),
        OPERATOR,
        json!({"paused": true, "reason": "rollback by wallet: key under review"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["paused_wallets"][0]["wallet"], first_id.as_str());
    assert_eq!(
        metric(
            &app.metrics_text().await,
            &format!(r#"treasuryd_wallet_paused{{network="ethereum",wallet="{first_id}"}}"#)
        ),
        1.0
    );
    let (s, _) = put(
        &app,
        "/v1/networks/ethereum/wallets/0x0000000000000000000000000000000000000001/pause",
        OPERATOR,
        json!({"paused": true, "reason": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for i in 4..8 {
        pay(i).await;
    }
    // Mining resumes: the paused wallet's two in flight finish, the second wallet carries the
    // other six.
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let payouts = settled(&app, 8).await;
    miner.abort();
    assert!(
        payouts.values().all(|p| p["state"] == "confirmed"),
        "{payouts:?}"
    );
    assert_eq!(
        client.nonce(first.address(), false).await.unwrap(),
        2,
        "the paused wallet signed nothing new"
    );
    assert_eq!(client.nonce(second.address(), false).await.unwrap(), 6);
    for i in 0..8u64 {
        let balance = client
            .token_balance(chain.usdt, destination(i))
            .await
            .unwrap();
        assert_eq!(
            balance,
            U256::from((i + 1) * 1_000_000),
            "destination {i} paid once"
        );
    }
    // Resumed, it takes its share again.
    let (s, c) = put(
        &app,
        &format!("/v1/networks/ethereum/wallets/{first_id}/pause"),
        OPERATOR,
        json!({"paused": false, "reason": "key cleared"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["paused_wallets"], json!([]));
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    for i in 8..12 {
        pay(i).await;
    }
    settled(&app, 12).await;
    miner.abort();
    assert!(
        client.nonce(first.address(), false).await.unwrap() > 2,
        "the resumed wallet sends again"
    );
    app.verify_clean().await;
}
