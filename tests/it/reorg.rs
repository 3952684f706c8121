//! Reorgs against anvil (anvil_reorg replaces the last blocks with a competing branch; snapshot
//! and revert take blocks off the chain): a transfer whose block leaves the chain before its depth is re-sent with the same bytes and paid once; one that
//! leaves after it was paid puts the network in safe-mode, is re-sent and lands again, and the
//! ledger still pays it once.

use crate::engine::{app_on, destination, request, spawn_miner, wait_state};
use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::U256;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::DevChain;

on_both_backends!(a_reorg_before_depth_resends_and_pays_once);

async fn wait_chunk_state(app: &TestApp, id: &str, state: &str) -> Value {
    for _ in 0..400 {
        let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        if p["chunks"][0]["state"] == state {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("chunk of {id} never reached {state}");
}

async fn a_reorg_before_depth_resends_and_pays_once(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    // Depth 2: with automine and no other traffic the transfer stays one block short.
    let app = app_on(backend, &chain, "").await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let nonce_before = client.nonce(hot, false).await.unwrap();

    let id = request(&app, &acme, destination(7), "25", "reorg-shallow").await;
    let mined = wait_chunk_state(&app, &id, "mined").await;
    let hash = mined["chunks"][0]["attempts"][0]["hash"].clone();
    // A competing branch of the same height without the transfer: the node forgets it.
    chain.set_automine(false).await.unwrap();
    let tx: alloy::primitives::B256 = hash.as_str().unwrap().parse().unwrap();
    let included = client.inclusion(tx).await.unwrap().unwrap();
    assert_eq!(included.block_number, client.head().await.unwrap());
    chain.reorg(1, &[]).await.unwrap();
    assert!(client.inclusion(tx).await.unwrap().is_none());
    chain.set_automine(true).await.unwrap();
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let done = wait_state(&app, &id, "confirmed").await;
    miner.abort();

    assert!(event_kinds(&done).contains(&"reorged".to_owned()), "{done}");
    let attempts = done["chunks"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "re-sent, never re-signed: {done}");
    assert_eq!(attempts[0]["hash"], hash);
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(7))
            .await
            .unwrap(),
        U256::from(25_000_000u64)
    );
    assert_eq!(client.nonce(hot, false).await.unwrap(), nonce_before + 1);
    let text = app.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "treasuryd_payouts_reorgs_total{network=\"ethereum\"}"
        )
        .unwrap()
            >= 1.0
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// After payment a reorg is no longer routine: the network goes into safe-mode on its own, the
/// stored transaction is re-sent until it lands again, and the ledger pays it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_after_payment_enters_safe_mode_and_resends() {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(Backend::Sqlite, &chain, "").await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let snapshot = chain.snapshot().await.unwrap();

    let id = request(&app, &acme, destination(8), "40", "reorg-deep").await;
    wait_chunk_state(&app, &id, "mined").await;
    chain.mine(2).await.unwrap();
    wait_state(&app, &id, "confirmed").await;
    chain.revert_to(snapshot).await.unwrap();
    chain.mine(1).await.unwrap();

    let mut net = Value::Null;
    for _ in 0..200 {
        let (_, nets) = app.get("/v1/networks", ADMIN).await;
        net = nets[0].clone();
        if net.get("safe_mode").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reason = net["safe_mode"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("automatic:"), "{net}");
    assert_eq!(net["safe_mode"]["actor"], "treasuryd");
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_deep_reorgs_total{network=\"ethereum\"}"
        ),
        Some(1.0)
    );
    // Re-sent with the same bytes and included again.
    let mut p = Value::Null;
    for _ in 0..200 {
        let (_, story) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        p = story;
        if event_kinds(&p).contains(&"reincluded".to_owned()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = event_kinds(&p);
    assert!(
        events.contains(&"reorged_after_confirmation".to_owned()),
        "{p}"
    );
    assert!(events.contains(&"reincluded".to_owned()), "{p}");
    assert_eq!(p["state"], "confirmed");
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(8))
            .await
            .unwrap(),
        U256::from(40_000_000u64)
    );
    let (_, paid) = app.get("/v1/journal?kind=PAYOUT", ADMIN).await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 1);
    // Leaving safe-mode is an Admin's call.
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "reorg reviewed, payout re-included"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.verify_clean().await;
    app.stop().await.unwrap();
}
