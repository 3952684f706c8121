//! Policy around sending, against anvil: an Operator's cancel (before signing, and on chain
//! with a same-nonce self-transfer), the rollout guardrail, destination allowlists, token
//! freezes, a revert that stops a split payout's unsigned chunks, and gas posted as FEE.
//! Both database backends.

use crate::engine::{app_on, destination, request, settled, spawn_miner, wait_state};
use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::U256;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::DevChain;
use treasuryd::domain::AssetKey;
use treasuryd::ledger::AccountKind;
use treasuryd::store::AccountFilter;

on_both_backends!(
    an_operator_cancels_queued_and_broadcast_payouts,
    the_rollout_guardrail_holds_back_what_exceeds_the_days_share,
    allowlists_and_freezes_hold_payouts_back,
    a_revert_stops_the_unsigned_chunks_of_a_split_payout
);

async fn audited(app: &TestApp) -> Vec<String> {
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap().to_owned())
        .collect()
}

/// The FEE entries in the journal, in ETH base units (wei).
async fn gas_fees(app: &TestApp) -> Vec<i128> {
    let mut out = Vec::new();
    for tx in app
        .store
        .list_journal(&treasuryd::store::JournalFilter {
            company: None,
            kind: Some(treasuryd::ledger::EntryKind::Fee),
            limit: 500,
            ..Default::default()
        })
        .await
        .unwrap()
    {
        assert_eq!(tx.asset, AssetKey::new("ethereum", "ETH"));
        out.push(
            tx.postings
                .iter()
                .map(|p| p.amount)
                .filter(|a| *a > 0)
                .sum(),
        );
    }
    out
}

/// The hot wallet's gas account balance in wei (negative: gas burned beyond recorded top-ups).
/// What the wallet's gas account has paid in gas: its deposits (the opening balance read when
/// the watcher started, recorded top-ups) less its balance.
pub(crate) async fn gas_spent(app: &TestApp, wallet: &str) -> i128 {
    let store = &app.store;
    let accounts = store
        .list_accounts(&AccountFilter {
            owner: Some(format!("wallet:{wallet}")),
            company: None,
            asset: Some(AssetKey::new("ethereum", "ETH")),
            kind: Some(AccountKind::Operating),
            after: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(accounts.len(), 1, "one gas account per hot wallet");
    let account = &accounts[0];
    let deposits: i128 = store
        .list_journal(&treasuryd::store::JournalFilter {
            company: None,
            account: Some(account.id),
            kind: Some(treasuryd::ledger::EntryKind::Deposit),
            from: None,
            to: None,
            after_seq: 0,
            limit: 500,
        })
        .await
        .unwrap()
        .iter()
        .flat_map(|t| t.postings.iter())
        .filter(|p| p.account == account.id)
        .map(|p| p.amount)
        .sum();
    deposits - account.available
}

async fn cancel(app: &TestApp, id: &str, token: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/payouts/{id}/cancel"), token, None, &body)
        .await
}

async fn an_operator_cancels_queued_and_broadcast_payouts(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    // Nothing is replaced as stuck here: the only replacement is the cancel.
    let app = app_on(
        backend,
        &chain,
        "stuck_after_seconds = 600\nstuck_after_blocks = 100000",
    )
    .await;
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();

    // Before anything is signed: the hold goes back at once.
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "hold everything"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let queued = request(&app, &acme, destination(1), "100", "c-queued").await;
    let (s, _) = cancel(&app, &queued, TRADER, json!({"reason": "x"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "a Trader cannot cancel");
    let (s, body) = cancel(&app, &queued, OPERATOR, json!({"reason": " "})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_required"))
    );
    assert_eq!(app.account(&acme).await["held"], "100.000000");
    let (s, body) = cancel(
        &app,
        &queued,
        OPERATOR,
        json!({"reason": "wrong beneficiary"}),
    )
    .await;
    assert_eq!(
        (
            s,
            body["state"].as_str(),
            body["chunks"][0]["state"].as_str()
        ),
        (StatusCode::OK, Some("cancelled"), Some("cancelled")),
        "{body}"
    );
    let (s, body) = cancel(&app, &queued, OPERATOR, json!({"reason": "again"})).await;
    assert_eq!(
        (s, body["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "a repeated cancel answers the payout as it is"
    );
    let acct = app.account(&acme).await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000.000000"), Some("0.000000"))
    );
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "done"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // On the network but not mined: a same-nonce self-transfer replaces the transfer.
    chain.set_automine(false).await.unwrap();
    let nonce_before = client.nonce(hot, false).await.unwrap();
    let sent = request(&app, &acme, destination(2), "200", "c-sent").await;
    wait_state(&app, &sent, "broadcast").await;
    for _ in 0..100 {
        let (_, p) = app.get(&format!("/v1/payouts/{sent}"), ADMIN).await;
        if p["chunks"][0]["attempts"][0]["broadcast_at"].is_string() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, body) = cancel(
        &app,
        &sent,
        OPERATOR,
        json!({"reason": "partner asked to stop"}),
    )
    .await;
    assert_eq!(
        (
            s,
            body["cancel"]["reason"].as_str(),
            body["cancel"]["by"].as_str()
        ),
        (
            StatusCode::OK,
            Some("partner asked to stop"),
            Some("test-operator")
        ),
        "{body}"
    );
    let mut attempts = Vec::new();
    for _ in 0..200 {
        let (_, p) = app.get(&format!("/v1/payouts/{sent}"), ADMIN).await;
        attempts = p["chunks"][0]["attempts"].as_array().unwrap().clone();
        if attempts
            .iter()
            .any(|a| a["kind"] == "cancel" && a["broadcast_at"].is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancels: Vec<&Value> = attempts.iter().filter(|a| a["kind"] == "cancel").collect();
    assert_eq!(cancels.len(), 1, "{attempts:?}");
    assert_eq!(cancels[0]["nonce"].as_u64(), Some(nonce_before));
    let fee = |a: &Value| -> u128 { a["max_fee_per_gas"].as_str().unwrap().parse().unwrap() };
    assert!(
        fee(cancels[0]) * 10_000 >= fee(&attempts[0]) * 11_250,
        "the cancel outbids the transfer by the bump: {attempts:?}"
    );

    chain.set_automine(true).await.unwrap();
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let done = wait_state(&app, &sent, "cancelled").await;
    assert_eq!(done["chunks"][0]["state"], "cancelled", "{done}");
    assert!(
        event_kinds(&done).contains(&"chunk_cancelled".to_owned()),
        "{done}"
    );
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(2))
            .await
            .unwrap(),
        U256::ZERO,
        "the transfer never landed"
    );
    assert_eq!(client.nonce(hot, false).await.unwrap(), nonce_before + 1);
    let acct = app.account(&acme).await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000.000000"), Some("0.000000"))
    );
    // The cancel burned gas: one FEE posting, from the wallet's gas account.
    let fees = gas_fees(&app).await;
    assert_eq!(fees.len(), 1, "{fees:?}");
    assert!(fees[0] > 0);
    assert_eq!(gas_spent(&app, &hot.to_checksum(None)).await, fees[0]);

    // Mined and confirmed: nothing left to cancel.
    let paid = request(&app, &acme, destination(3), "10", "c-paid").await;
    wait_state(&app, &paid, "confirmed").await;
    miner.abort();
    let (s, body) = cancel(&app, &paid, OPERATOR, json!({"reason": "too late"})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("not_cancellable")),
        "{body}"
    );

    assert!(
        audited(&app)
            .await
            .iter()
            .filter(|a| *a == "payout.cancel")
            .count()
            >= 2
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_cancels_total{network=\"ethereum\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_finished_total{network=\"ethereum\",state=\"cancelled\"}"
        ),
        Some(2.0)
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn the_rollout_guardrail_holds_back_what_exceeds_the_days_share(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    // Pilot: 10% of 1,000 per asset per day.
    let app = app_on(
        backend,
        &chain,
        "[rollout]\nphase = \"pilot\"\ndaily_volume_target = \"1000\"\ntimezone = \"Asia/Ulaanbaatar\"",
    )
    .await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let usdt = funded_partner(&app, "acme", "USDT", "1000").await;
    let usdc = funded_partner(&app, "acme", "USDC", "1000").await;
    let client = EvmClient::new(&chain.url).unwrap();

    let first = request(&app, &usdt, destination(1), "60", "g-1").await;
    wait_state(&app, &first, "confirmed").await;
    let second = request(&app, &usdt, destination(1), "30", "g-2").await;
    wait_state(&app, &second, "confirmed").await;
    let third = request(&app, &usdt, destination(1), "20", "g-3").await;
    let body = json!({"account": usdc, "network": "ethereum", "asset": "USDC", "destination": destination(2).to_checksum(None), "amount": "50"});
    let (s, other) = app.post("/v1/payouts", TRADER, Some("g-usdc"), &body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Another asset has its own share.
    wait_state(&app, other["id"].as_str().unwrap(), "confirmed").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{third}"), ADMIN).await;
    assert_eq!(
        p["state"], "queued",
        "90 of 100 used; 20 more would exceed: {p}"
    );
    assert!(event_kinds(&p).contains(&"rollout_wait".to_owned()), "{p}");
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::from(90_000_000u64)
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_rollout_remaining_units{asset=\"USDT\",network=\"ethereum\"}"
        ),
        Some(10.0)
    );
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_rollout_percent{network=\"ethereum\"}"
        ),
        Some(10.0)
    );
    // Refreshed once a second.
    wait_metric(
        &app,
        "treasuryd_payouts_by_state{network=\"ethereum\",state=\"queued\"}",
        1.0,
    )
    .await;
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert_eq!(
        (
            nets[0]["rollout"]["phase"].as_str(),
            nets[0]["rollout"]["percent"].as_u64()
        ),
        (Some("pilot"), Some(10)),
        "{nets}"
    );

    // Canary widens the share to 30%: the waiting payout goes out, in order.
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/rollout",
            TRADER,
            None,
            &json!({"phase": "canary", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "wide", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (s, net) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "canary", "reason": "pilot went well"}),
        )
        .await;
    assert_eq!(
        (
            s,
            net["rollout"]["phase"].as_str(),
            net["rollout"]["set_by"].as_str()
        ),
        (StatusCode::OK, Some("canary"), Some("test-admin")),
        "{net}"
    );
    wait_state(&app, &third, "confirmed").await;
    miner.abort();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::from(110_000_000u64)
    );
    assert!(audited(&app).await.contains(&"rollout.canary".to_owned()));
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn allowlists_and_freezes_hold_payouts_back(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let usdt = funded_partner(&app, "acme", "USDT", "1000").await;
    let usdc = funded_partner(&app, "acme", "USDC", "1000").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let list = format!("/v1/accounts/{usdt}/allowlist");
    let to = destination(1).to_checksum(None);

    let (s, body) = app.get(&list, TRADER).await;
    assert_eq!(
        (s, body["enforced"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let enforce = json!({"enforced": true, "reason": "partner asked for it"});
    let (s, _) = app.call(Method::PUT, &list, TRADER, Some(&enforce)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = app.call(Method::PUT, &list, ADMIN, Some(&enforce)).await;
    assert_eq!(
        (s, body["enforced"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{body}"
    );

    // Not on the list: refused at the door, nothing held.
    let body = json!({"account": usdt, "network": "ethereum", "asset": "USDT", "destination": to, "amount": "10"});
    let (s, answer) = app.post("/v1/payouts", TRADER, Some("a-1"), &body).await;
    assert_eq!(
        (
            s,
            answer["error"]["code"].as_str(),
            answer["error"]["field"].as_str()
        ),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("destination_not_allowed"),
            Some("destination")
        ),
        "{answer}"
    );
    assert_eq!(app.account(&usdt).await["held"], "0.000000");
    // The batch route reads the whole allowlist once and judges each payout by it the same way.
    let mut item = body.clone();
    item["idempotency_key"] = json!("a-batch");
    let (s, answer) = app
        .post(
            "/v1/payouts/batch",
            TRADER,
            None,
            &json!({"payouts": [item]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    assert_eq!(
        (
            answer["results"][0]["status"].as_u64(),
            answer["results"][0]["error"]["code"].as_str()
        ),
        (Some(422), Some("destination_not_allowed")),
        "{answer}"
    );
    assert_eq!(app.account(&usdt).await["held"], "0.000000");
    let add = |address: String| json!({"network": "ethereum", "address": address, "label": "acme cold", "reason": "verified by call-back"});
    let (s, body) = app
        .post(
            &format!("{list}/destinations"),
            ADMIN,
            None,
            &add(to.to_lowercase()),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_address")),
        "a checksum is required"
    );
    let (s, body) = app
        .post(
            &format!("{list}/destinations"),
            ADMIN,
            None,
            &add(to.clone()),
        )
        .await;
    assert_eq!(
        (s, body["destinations"][0]["address"].as_str()),
        (StatusCode::OK, Some(to.as_str())),
        "{body}"
    );
    let first = request(&app, &usdt, destination(1), "10", "a-2").await;
    wait_state(&app, &first, "confirmed").await;

    // Freeze USDT: its payouts queue, USDC still goes.
    let freeze =
        |frozen: bool| json!({"asset": "USDT", "frozen": frozen, "reason": "issuer incident"});
    let (s, net) = app
        .post("/v1/networks/ethereum/freezes", ADMIN, None, &freeze(true))
        .await;
    assert_eq!(
        (s, net["frozen"][0]["asset"].as_str()),
        (StatusCode::OK, Some("USDT")),
        "{net}"
    );
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/freezes",
            ADMIN,
            None,
            &json!({"asset": "DAI", "frozen": true, "reason": "x"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("unknown_asset"))
    );
    let held = request(&app, &usdt, destination(1), "20", "a-3").await;
    let body = json!({"account": usdc, "network": "ethereum", "asset": "USDC", "destination": destination(2).to_checksum(None), "amount": "5"});
    let (s, other) = app.post("/v1/payouts", TRADER, Some("a-usdc"), &body).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    wait_state(&app, other["id"].as_str().unwrap(), "confirmed").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{held}"), ADMIN).await;
    assert_eq!(p["state"], "queued", "{p}");
    wait_metric(
        &app,
        "treasuryd_payouts_frozen{asset=\"USDT\",network=\"ethereum\"}",
        1.0,
    )
    .await;

    // Taken off the list while queued: unfreezing does not send it.
    let (s, body) = app
        .call(
            Method::DELETE,
            &format!("{list}/destinations/ethereum/{to}?reason=rotated"),
            ADMIN,
            None,
        )
        .await;
    assert_eq!(
        (s, body["destinations"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0)),
        "{body}"
    );
    let (s, _) = app
        .post("/v1/networks/ethereum/freezes", ADMIN, None, &freeze(false))
        .await;
    assert_eq!(s, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{held}"), ADMIN).await;
    assert_eq!(p["state"], "queued", "{p}");
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::from(10_000_000u64)
    );

    // Allowed again: it goes.
    let (s, _) = app
        .post(
            &format!("{list}/destinations"),
            ADMIN,
            None,
            &add(to.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    wait_state(&app, &held, "confirmed").await;
    miner.abort();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::from(30_000_000u64)
    );
    let actions = audited(&app).await;
    for action in [
        "allowlist.enforce",
        "allowlist.add",
        "allowlist.remove",
        "asset.freeze",
        "asset.unfreeze",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action}: {actions:?}"
        );
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_revert_stops_the_unsigned_chunks_of_a_split_payout(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    // One transaction in flight at a time: the second chunk waits for the first to be final.
    let app = app_on(backend, &chain, "max_in_flight = 1").await;
    let acme = funded_partner(&app, "acme", "USDT", "1000000").await;
    chain.pause_usdt(true).await.unwrap();
    let id = request(&app, &acme, destination(4), "600000", "split-revert").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let payouts = settled(&app, 1).await;
    miner.abort();
    assert_eq!(payouts[&id]["state"], "failed");
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    let states: Vec<&str> = p["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["failed", "cancelled", "cancelled"], "{p}");
    let attempts: usize = p["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attempts"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(attempts, 1, "only the first chunk was ever signed: {p}");
    let acct = app.account(&acme).await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000000.000000"), Some("0.000000"))
    );
    // The reverted transfer still burned gas.
    assert_eq!(gas_fees(&app).await.len(), 1);
    app.verify_clean().await;
    app.stop().await.unwrap();
}
