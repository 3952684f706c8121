//! Batching on chain end to end: with `[networks.batching]` the engine approves the disperse
//! contract once, pays queued USDT chunks many to a transaction (USDC, not listed, one at a
//! time), and the ledger still pays each chunk on its own with the batch's gas shared out to
//! the wei. A batch that reverts pays no one; its chunks go out alone, the failing destination
//! fails on its own and every other payout is paid exactly once. Both database backends.

use crate::engine::{app_on, destination, settled, spawn_miner};
use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::{Address, U256};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(
    batched_payouts_pay_each_chunk_once_and_share_the_gas_exactly,
    a_reverting_batch_falls_back_to_single_transfers_and_pays_no_one_twice,
    a_stuck_batch_is_replaced_whole_and_a_cancel_requeues_its_batch_mates
);

/// The network lines that turn batching on for USDT with `contract`.
pub(crate) fn batching_lines(contract: Address, max_transfers: u32) -> String {
    format!(
        "[batching]\ncontract = \"{}\"\ntokens = [\"USDT\"]\nmax_transfers = {max_transfers}\n",
        contract.to_checksum(None)
    )
}

/// The wallet's gas account moved by exactly what the chain took from the wallet since
/// `before` (the FEEs of every transaction and share of one).
async fn assert_gas_reconciled(app: &TestApp, client: &EvmClient, hot: Address, before: U256) {
    let burned = before - client.native_balance(hot).await.unwrap();
    assert_eq!(
        crate::policy::gas_spent(app, &hot.to_checksum(None)).await,
        i128::try_from(burned).unwrap()
    );
}

/// Submits `payouts` (account, asset, destination, units) in one batch request; every one
/// must be accepted.
async fn submit(app: &TestApp, payouts: &[(String, &str, Address, u128)]) {
    let items: Vec<Value> = payouts
        .iter()
        .enumerate()
        .map(|(i, (account, asset, to, units))| {
            json!({
                "idempotency_key": format!("batch-{i}"),
                "account": account,
                "network": "ethereum",
                "asset": asset,
                "destination": to.to_checksum(None),
                "amount": format!("{}.{:06}", units / 1_000_000, units % 1_000_000),
            })
        })
        .collect();
    let (s, answer) = app
        .post(
            "/v1/payouts/batch",
            TRADER,
            None,
            &json!({ "payouts": items }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{answer}");
    for r in answer["results"].as_array().unwrap() {
        assert_eq!(r["status"], 202, "{r}");
    }
}

/// Every transaction hash a payout's chunks were sent with (the last attempt of each).
async fn hashes(app: &TestApp, id: &str) -> Vec<String> {
    let (_, story) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    story["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["attempts"].as_array()?.last()?["hash"].as_str())
        .map(str::to_owned)
        .collect()
}

async fn batched_payouts_pay_each_chunk_once_and_share_the_gas_exactly(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let contract = chain.deploy_disperse().await.unwrap();
    let app = app_on(backend, &chain, &batching_lines(contract, 20)).await;
    let miner = spawn_miner(&chain, Duration::from_millis(200));
    let usdt = funded_partner(&app, "acme", "USDT", "1000000").await;
    let usdc = funded_partner(&app, "acme", "USDC", "1000000").await;
    let hot = chain.dev_key(1).unwrap().address();
    let client = EvmClient::new(&chain.url).unwrap();
    let eth_before = client.native_balance(hot).await.unwrap();
    let nonce_before = client.nonce(hot, false).await.unwrap();

    // 45 USDT payouts (some destinations paid twice) and 5 USDC ones.
    let mut payouts = Vec::new();
    let mut expected: HashMap<(Address, TestToken), u128> = HashMap::new();
    for i in 0..50u64 {
        let (account, asset, token) = if i % 10 == 9 {
            (&usdc, "USDC", TestToken::Usdc)
        } else {
            (&usdt, "USDT", TestToken::Usdt)
        };
        let to = destination(200 + i % 40);
        let units = 1_000_000 + u128::from(i) * 1_111;
        payouts.push((account.clone(), asset, to, units));
        *expected.entry((to, token)).or_default() += units;
    }
    submit(&app, &payouts).await;
    let settled = settled(&app, 50).await;
    miner.abort();
    assert!(
        settled.values().all(|p| p["state"] == "confirmed"),
        "{settled:?}"
    );
    for ((to, token), units) in &expected {
        assert_eq!(
            client
                .token_balance(chain.token(*token), *to)
                .await
                .unwrap(),
            U256::from(*units),
            "{to} in {token:?} paid exactly"
        );
    }
    // USDT went in batches of at most 20, USDC one transfer each; the wallet used one nonce
    // per transaction plus the approval.
    let mut usdt_txs = HashSet::new();
    let mut usdc_txs = HashSet::new();
    for p in settled.values() {
        let txs = hashes(&app, p["id"].as_str().unwrap()).await;
        assert_eq!(txs.len(), 1, "{p}");
        if p["asset"] == "USDT" {
            usdt_txs.extend(txs);
        } else {
            usdc_txs.extend(txs);
        }
    }
    assert_eq!(usdc_txs.len(), 5);
    assert!(
        (3..=10).contains(&usdt_txs.len()),
        "45 USDT payouts in batches of at most 20: {} transactions",
        usdt_txs.len()
    );
    assert_eq!(
        client.nonce(hot, false).await.unwrap(),
        nonce_before + 1 + (usdt_txs.len() + usdc_txs.len()) as u64,
        "one nonce per transaction and one for the approval"
    );
    // The queue may be read between two of the request's group commits: a round's last chunk
    // of a token, alone, goes as a plain transfer. Every USDT transfer is in one of them.
    let mut sizes = Vec::new();
    for tx in &usdt_txs {
        let hash: alloy::primitives::B256 = tx.parse().unwrap();
        let inclusion = client.inclusion(hash).await.unwrap().unwrap();
        assert!(inclusion.success);
        sizes.push(inclusion.transfers.len());
    }
    assert_eq!(sizes.iter().sum::<usize>(), 45, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 20), "{sizes:?}");
    assert!(sizes.iter().filter(|n| **n > 1).count() >= 2, "{sizes:?}");
    // The ledger pays each chunk on its own; the gas FEEs (each chunk's share of its batch,
    // each USDC transfer's, and the approval's) add up to what the chain took, to the wei.
    let (_, paid) = app.get("/v1/journal?kind=PAYOUT&limit=500", ADMIN).await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 50);
    let (_, fees) = app.get("/v1/journal?kind=FEE&limit=500", ADMIN).await;
    assert_eq!(fees["items"].as_array().unwrap().len(), 51);
    assert_gas_reconciled(&app, &client, hot, eth_before).await;
    let text = app.metrics_text().await;
    let in_batches: usize = sizes.iter().filter(|n| **n > 1).sum();
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_batched_chunks_total{network=\"ethereum\"}"
        ),
        Some(in_batches as f64)
    );
    assert_eq!(app.account(&usdt).await["held"], "0.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_reverting_batch_falls_back_to_single_transfers_and_pays_no_one_twice(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let contract = chain.deploy_disperse().await.unwrap();
    let app = app_on(backend, &chain, &batching_lines(contract, 50)).await;
    let usdt = funded_partner(&app, "acme", "USDT", "1000000").await;
    let hot = chain.dev_key(1).unwrap().address();
    let client = EvmClient::new(&chain.url).unwrap();
    let eth_before = client.native_balance(hot).await.unwrap();
    // One of ten destinations is blacklisted by the token: the batch paying all ten reverts.
    let refused = destination(307);
    chain.blacklist_usdt(refused).await.unwrap();
    let payouts: Vec<_> = (0..10u64)
        .map(|i| (usdt.clone(), "USDT", destination(300 + i), 2_000_000u128))
        .collect();
    submit(&app, &payouts).await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let settled = settled(&app, 10).await;
    miner.abort();
    for p in settled.values() {
        let expected = if p["destination"] == refused.to_checksum(None) {
            "failed"
        } else {
            "confirmed"
        };
        assert_eq!(p["state"], expected, "{p}");
    }
    for i in 0..10u64 {
        let to = destination(300 + i);
        let want = if to == refused { 0u64 } else { 2_000_000 };
        assert_eq!(
            client.token_balance(chain.usdt, to).await.unwrap(),
            U256::from(want),
            "destination {i} paid exactly once, or not at all"
        );
    }
    // Each chunk's story: a batch that reverted, requeued alone, then its own transfer.
    let failed = settled.values().find(|p| p["state"] == "failed").unwrap();
    let (_, story) = app
        .get(
            &format!("/v1/payouts/{}", failed["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    let kinds = event_kinds(&story);
    assert!(kinds.iter().any(|k| k == "requeued_alone"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "signed").count(),
        2,
        "{kinds:?}"
    );
    let attempts = story["chunks"][0]["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        2,
        "the batch, then its own transfer: {story}"
    );
    assert_eq!(attempts[0]["batch_size"], 10, "{story}");
    assert!(attempts[0]["batch_index"].as_u64().unwrap() < 10, "{story}");
    assert!(attempts[1].get("batch_size").is_none(), "{story}");
    // The refused payout's hold is back; the other nine are paid from theirs.
    let account = app.account(&usdt).await;
    assert_eq!(account["held"], "0.000000", "{account}");
    assert_eq!(account["available"], "999982.000000", "{account}");
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_payouts_requeued_alone_total{network=\"ethereum\"}"
        ),
        Some(10.0)
    );
    // Gas: ten shares of the reverted batch, ten single transfers and the approval, to the wei.
    let (_, fees) = app.get("/v1/journal?kind=FEE&limit=500", ADMIN).await;
    assert_eq!(fees["items"].as_array().unwrap().len(), 21);
    assert_gas_reconciled(&app, &client, hot, eth_before).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Nothing is mined while a batch of three payouts is stuck: it is replaced whole (every
/// chunk gets the same new transaction), then an Operator cancels one of the three, which can
/// only cancel the batch's nonce. Once blocks come, the cancel is mined: that payout ends
/// cancelled with its hold back, the other two go out alone and are paid exactly once.
async fn a_stuck_batch_is_replaced_whole_and_a_cancel_requeues_its_batch_mates(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let contract = chain.deploy_disperse().await.unwrap();
    let extra = format!(
        "stuck_after_seconds = 1\nstuck_after_blocks = 100000\n{}",
        batching_lines(contract, 10)
    );
    let app = app_on(backend, &chain, &extra).await;
    let usdt = funded_partner(&app, "acme", "USDT", "1000").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let eth_before = client.native_balance(hot).await.unwrap();
    let nonce_before = client.nonce(hot, false).await.unwrap();
    chain.set_automine(false).await.unwrap();
    let payouts: Vec<_> = (0..3u64)
        .map(|i| (usdt.clone(), "USDT", destination(400 + i), 7_000_000u128))
        .collect();
    submit(&app, &payouts).await;
    let (_, page) = app.get("/v1/payouts?limit=10", ADMIN).await;
    let ids: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    // Wait for a replacement: every chunk then has the same two (or more) transactions.
    let mut stories = Vec::new();
    for _ in 0..200 {
        stories.clear();
        for id in &ids {
            let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
            stories.push(p);
        }
        if stories
            .iter()
            .all(|p| p["chunks"][0]["attempts"].as_array().map_or(0, Vec::len) >= 2)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hashes_of = |p: &Value| -> Vec<String> {
        p["chunks"][0]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["hash"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = hashes_of(&stories[0]);
    assert!(
        first.len() >= 2,
        "no replacement was sent: {:?}",
        stories[0]
    );
    for p in &stories[1..] {
        let theirs = hashes_of(p);
        let common = theirs.len().min(first.len());
        assert_eq!(
            theirs[..common],
            first[..common],
            "one batch, replaced whole"
        );
    }
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{}/cancel", ids[1]),
            OPERATOR,
            None,
            &json!({"reason": "wrong beneficiary"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // The cancel is signed for the whole batch before anything is mined.
    for _ in 0..200 {
        let (_, p) = app.get(&format!("/v1/payouts/{}", ids[0]), ADMIN).await;
        let last = p["chunks"][0]["attempts"]
            .as_array()
            .and_then(|a| a.last().cloned())
            .unwrap_or_default();
        if last["kind"] == "cancel" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    chain.set_automine(true).await.unwrap();
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let settled = settled_with_cancels(&app, 3).await;
    miner.abort();
    for (i, id) in ids.iter().enumerate() {
        let want = if i == 1 { "cancelled" } else { "confirmed" };
        assert_eq!(settled[id]["state"], want, "{}", settled[id]);
    }
    for i in 0..3u64 {
        let want = if i == 1 { 0u64 } else { 7_000_000 };
        let p = &settled[&ids[i as usize]];
        let to: Address = p["destination"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            client.token_balance(chain.usdt, to).await.unwrap(),
            U256::from(want),
            "{p}"
        );
    }
    // The approval, the batch's nonce (taken by the cancel), and the two lone transfers.
    assert_eq!(client.nonce(hot, false).await.unwrap(), nonce_before + 4);
    let account = app.account(&usdt).await;
    assert_eq!(
        (account["available"].as_str(), account["held"].as_str()),
        (Some("986.000000"), Some("0.000000")),
        "{account}"
    );
    assert_gas_reconciled(&app, &client, hot, eth_before).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Like `settled`, counting cancelled payouts as final too.
async fn settled_with_cancels(app: &TestApp, expected: usize) -> HashMap<String, Value> {
    for _ in 0..1200 {
        let (_, page) = app.get("/v1/payouts?limit=500", ADMIN).await;
        let items = page["items"].as_array().unwrap();
        let done = items
            .iter()
            .filter(|p| {
                ["confirmed", "failed", "cancelled"].contains(&p["state"].as_str().unwrap())
            })
            .count();
        if done == expected {
            return items
                .iter()
                .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("payouts did not settle");
}
