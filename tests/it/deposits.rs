//! Deposits against anvil: token transfers to a partner's deposit address are credited once
//! each at the confirmation depth; a transfer of another token, or to an unknown address, is
//! not; reading the same blocks again credits nothing twice; a transfer whose block a reorg
//! (anvil_reorg) replaces is never credited, and one the new branch includes again is
//! credited once, across a restart too. Both database backends.

use crate::engine::{app_on, destination, spawn_miner};
use crate::harness::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::json;
use std::time::Duration;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(
    transfers_to_deposit_addresses_are_credited_once,
    a_reorged_deposit_is_credited_only_if_included_again,
    deposits_through_reorgs_and_a_restart_are_credited_once
);

const DEPTH: &str = "confirmations = 4";

/// Declares `address` a deposit address of a new USDT account of `owner`; returns the account.
async fn deposit_account(
    app: &TestApp,
    owner: &str,
    address: alloy::primitives::Address,
) -> String {
    let account = app.create_account(owner).await;
    let (s, body) = app
        .post(
            &format!("/v1/accounts/{account}/deposit-addresses"),
            ADMIN,
            None,
            &json!({"address": address.to_checksum(None), "reason": "collection address"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    account
}

/// Waits until the watcher has set its cursor (it starts at the confirmed head it first sees).
async fn watcher_started(app: &TestApp) {
    for _ in 0..200 {
        if app
            .store
            .deposit_cursor("ethereum")
            .await
            .unwrap()
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the deposit watcher never started");
}

/// The DEPOSIT transactions of `account`, as (tx hash, amount).
async fn credited(app: &TestApp, account: &str) -> Vec<(String, String)> {
    let (_, page) = app
        .get(
            &format!("/v1/journal?kind=DEPOSIT&account={account}&limit=500"),
            ADMIN,
        )
        .await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["reference"].as_str().unwrap().to_owned(),
                t["postings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|p| p["account"] == account)
                    .map(|p| p["amount"].as_str().unwrap().to_owned())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// Two transfers in one block, which a reorg below the confirmation depth replaces; the new
/// branch includes only the first (the same signed bytes, so the same hash). Only it is
/// credited, once.
async fn a_reorged_deposit_is_credited_only_if_included_again(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, DEPTH).await;
    let acme = deposit_account(&app, "acme", destination(510)).await;
    watcher_started(&app).await;
    chain.set_automine(false).await.unwrap();
    // Same sender: the one kept comes first, or its nonce would have a gap in the new branch.
    let nonce = chain.owner_nonce().await.unwrap();
    let kept = chain
        .send_mint(TestToken::Usdt, destination(510), 2_000_000, nonce)
        .await
        .unwrap();
    let dropped = chain
        .send_mint(TestToken::Usdt, destination(510), 1_000_000, nonce + 1)
        .await
        .unwrap();
    chain.mine(2).await.unwrap();
    let raw = chain.raw_transaction(kept).await.unwrap();
    // Both blocks replaced; the transfer to keep lands in the second new one.
    chain.reorg(2, &[(raw, 1)]).await.unwrap();
    let client = treasuryd::chains::evm::EvmClient::new(&chain.url).unwrap();
    assert!(client.inclusion(dropped).await.unwrap().is_none());
    assert!(client.inclusion(kept).await.unwrap().is_some());
    chain.mine(6).await.unwrap();
    wait_available(&app, &acme, "2.000000").await;
    chain.mine(6).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(app.account(&acme).await["available"], "2.000000");
    assert_eq!(
        credited(&app, &acme).await,
        vec![(kept.to_string(), "2.000000".to_owned())]
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// 200 transfers to four deposit addresses in ten blocks of twenty. Three of those blocks are
/// replaced by a reorg whose new branch carries only the first ten of their transfers; the
/// daemon is down for two of the blocks (and one of the reorgs) and restarted on the same
/// database. Exactly the 170 surviving transfers are credited, once each, to the right account.
async fn deposits_through_reorgs_and_a_restart_are_credited_once(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let first = app_on(backend, &chain, DEPTH).await;
    let mut accounts = Vec::new();
    for i in 0..4u64 {
        accounts.push(deposit_account(&first, &format!("partner-{i}"), destination(520 + i)).await);
    }
    watcher_started(&first).await;
    let mut app = Some(first);
    chain.set_automine(false).await.unwrap();
    let mut expected = [0u128; 4];
    let mut expected_count = [0usize; 4];
    let mut stopped = None;
    for round in 0..10u128 {
        if round == 5 {
            let running = app.take().unwrap();
            stopped = Some(running.db());
            running.stop().await.unwrap();
        }
        if round == 7 {
            let db = stopped.take().unwrap();
            app = Some(
                crate::engine::app_on_db(db, &chain, std::slice::from_ref(&chain.url), DEPTH, "")
                    .await,
            );
        }
        let mut sent = Vec::new();
        let nonce = chain.owner_nonce().await.unwrap();
        for k in 0..20u128 {
            let to = (k % 4) as usize;
            let units = 1_000_000 + round * 1_000 + k;
            let hash = chain
                .send_mint(
                    TestToken::Usdt,
                    destination(520 + to as u64),
                    units,
                    nonce + k as u64,
                )
                .await
                .unwrap();
            sent.push((hash, to, units));
        }
        chain.mine(1).await.unwrap();
        let surviving = if [2, 5, 8].contains(&round) {
            chain.mine(1).await.unwrap();
            let mut again = Vec::new();
            for (hash, _, _) in &sent[..10] {
                again.push((chain.raw_transaction(*hash).await.unwrap(), 0));
            }
            chain.reorg(2, &again).await.unwrap();
            10
        } else {
            20
        };
        for (_, to, units) in &sent[..surviving] {
            expected[*to] += units;
            expected_count[*to] += 1;
        }
    }
    let app = app.unwrap();
    chain.mine(6).await.unwrap();
    let show = |units: u128| format!("{}.{:06}", units / 1_000_000, units % 1_000_000);
    for (i, account) in accounts.iter().enumerate() {
        wait_available(&app, account, &show(expected[i])).await;
    }
    chain.mine(6).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut total = 0;
    for (i, account) in accounts.iter().enumerate() {
        assert_eq!(app.account(account).await["available"], show(expected[i]));
        let deposits = credited(&app, account).await;
        assert_eq!(deposits.len(), expected_count[i], "{deposits:?}");
        total += deposits.len();
    }
    assert_eq!(total, 170);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn wait_available(app: &TestApp, account: &str, amount: &str) {
    for _ in 0..200 {
        if app.account(account).await["available"] == amount {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "{account} never had {amount}: {}",
        app.account(account).await
    );
}

async fn transfers_to_deposit_addresses_are_credited_once(backend: Backend) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(backend, &chain, "").await;
    let acme = app.create_account("acme").await;
    let address = destination(500).to_checksum(None);
    let path = format!("/v1/accounts/{acme}/deposit-addresses");

    let (s, _) = app
        .post(
            &path,
            TRADER,
            None,
            &json!({"address": address, "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = app
        .post(
            &path,
            ADMIN,
            None,
            &json!({"address": address.to_lowercase(), "reason": "x"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_address"))
    );
    let (s, body) = app
        .post(
            &path,
            ADMIN,
            None,
            &json!({"address": address, "reason": "acme's collection address"}),
        )
        .await;
    assert_eq!(
        (s, body[0]["address"].as_str()),
        (StatusCode::OK, Some(address.as_str())),
        "{body}"
    );
    // The watcher starts from the confirmed head it first sees.
    let mut started = false;
    for _ in 0..600 {
        started = app
            .store
            .deposit_cursor("ethereum")
            .await
            .unwrap()
            .is_some();
        if started {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started, "the deposit watcher set its cursor");

    let miner = spawn_miner(&chain, Duration::from_millis(100));
    chain
        .mint(TestToken::Usdt, destination(500), 7_000_000)
        .await
        .unwrap();
    // USDC to the same address: acme's account is USDT, so it is not credited.
    chain
        .mint(TestToken::Usdc, destination(500), 9_000_000)
        .await
        .unwrap();
    // USDT to an address nobody declared.
    chain
        .mint(TestToken::Usdt, destination(501), 5_000_000)
        .await
        .unwrap();
    wait_available(&app, &acme, "7.000000").await;
    chain
        .mint(TestToken::Usdt, destination(500), 3_500_000)
        .await
        .unwrap();
    wait_available(&app, &acme, "10.500000").await;
    // More blocks, more reads: nothing is credited twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    miner.abort();
    assert_eq!(app.account(&acme).await["available"], "10.500000");
    let (_, deposits) = app
        .get(&format!("/v1/journal?kind=DEPOSIT&account={acme}"), ADMIN)
        .await;
    let items = deposits["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{deposits}");
    assert!(
        items
            .iter()
            .all(|t| t["reference"].as_str().unwrap().starts_with("0x")),
        "{deposits}"
    );
    let text = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_deposits_credited_total{asset=\"USDT\",network=\"ethereum\"}"
        ),
        Some(2.0)
    );
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "deposit_address.add")
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// A network whose hot wallet has paid one payout of its own, with reconciliation having run
/// over it without finding anything amiss; blocks keep coming.
async fn reconciled_after_one_payout(
    to: alloy::primitives::Address,
) -> (DevChain, TestApp, tokio::task::JoinHandle<()>) {
    let chain = DevChain::start(&[]).await.unwrap();
    let app = app_on(Backend::Sqlite, &chain, "").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let ours = crate::engine::request(&app, &acme, to, "10", "ours").await;
    crate::engine::wait_state(&app, &ours, "confirmed").await;
    // Proof that the check ran over the payout's block: the watcher checks each range's
    // outflows and balances before its cursor moves past it.
    let paid_by = treasuryd::chains::evm::EvmClient::new(&chain.url)
        .unwrap()
        .head()
        .await
        .unwrap();
    let mut cursor = 0;
    for _ in 0..600 {
        cursor = app
            .store
            .deposit_cursor("ethereum")
            .await
            .unwrap()
            .unwrap_or(0);
        if cursor > paid_by {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cursor > paid_by,
        "the watcher read past block {paid_by} (cursor {cursor})"
    );
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    assert!(
        nets[0].get("safe_mode").is_none(),
        "our own transfer is explained: {nets}"
    );
    (chain, app, miner)
}

/// Every token transfer out of a hot wallet must be one treasuryd signed: one sent with the key
/// from elsewhere (a leak) puts the network in safe-mode at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outflow_treasuryd_did_not_sign_enters_safe_mode() {
    use treasuryd::chains::evm::{EvmClient, FeeMode, TransferTx, sign_transfer};
    let (chain, app, miner) = reconciled_after_one_payout(destination(600)).await;

    // The hot key, used outside treasuryd.
    let hot = chain.dev_key(1).unwrap();
    let client = EvmClient::new(&chain.url).unwrap();
    let fees = client
        .suggest_fees(FeeMode::Urgent, 1_000_000_000, 300_000_000_000)
        .await
        .unwrap();
    let tx = TransferTx {
        chain_id: chain.chain_id,
        nonce: client.nonce(hot.address(), true).await.unwrap(),
        token: chain.usdt,
        to: destination(666),
        value: alloy::primitives::U256::from(1_000_000u64),
        gas_limit: 100_000,
        fees,
    };
    client
        .broadcast(&sign_transfer(&hot, &tx).unwrap().raw)
        .await
        .unwrap();
    let wallet = hot.address().to_checksum(None);
    wait_metric(
        &app,
        &format!(
            "treasuryd_wallet_unexpected_outflows_total{{network=\"ethereum\",wallet=\"{wallet}\"}}"
        ),
        1.0,
    )
    .await;
    miner.abort();
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    let reason = nets[0]["safe_mode"]["reason"].as_str().unwrap_or_default();
    // The outflow check or the periodic reconciliation, whichever looks first, names the wallet:
    // "sent 1000000 … which treasuryd never signed" or "holds …; the ledger … says …".
    assert!(
        reason.starts_with(&format!("automatic: hot wallet {wallet} sent 1000000"))
            || reason.starts_with(&format!("automatic: hot wallet {wallet} holds")),
        "{nets}"
    );
    app.stop().await.unwrap();
}

/// `deposits_from_block` reads history: a transfer made before the daemon ever started is
/// credited once its address is declared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposits_from_block_credits_history() {
    let chain = DevChain::start(&[]).await.unwrap();
    chain
        .mint(TestToken::Usdt, destination(700), 2_500_000)
        .await
        .unwrap();
    let app = app_on(Backend::Sqlite, &chain, "deposits_from_block = 0").await;
    let acme = app.create_account("acme").await;
    let (s, _) = app
        .post(
            &format!("/v1/accounts/{acme}/deposit-addresses"),
            ADMIN,
            None,
            &json!({"address": destination(700).to_checksum(None), "reason": "migrated partner"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    wait_available(&app, &acme, "2.500000").await;
    miner.abort();
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// A hot wallet's token balance must move by exactly its transfers: a change without one (here
/// the balance slot rewritten, as an issuer seizing funds would) puts the network in safe-mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_change_without_a_transfer_enters_safe_mode() {
    use alloy::primitives::{B256, U256, keccak256};
    use alloy::providers::Provider;
    use treasuryd::chains::evm::EvmClient;
    let (chain, app, miner) = reconciled_after_one_payout(destination(800)).await;

    // TestUSDT keeps balanceOf in storage slot 2.
    let hot = chain.dev_key(1).unwrap().address();
    let client = EvmClient::new(&chain.url).unwrap();
    let mut key = [0u8; 64];
    key[12..32].copy_from_slice(hot.as_slice());
    key[63] = 2;
    let slot = keccak256(key);
    let now = client.token_balance(chain.usdt, hot).await.unwrap();
    let seized = now - U256::from(1_000_000u64);
    client
        .provider()
        .raw_request::<_, bool>(
            "anvil_setStorageAt".into(),
            (chain.usdt, slot, B256::from(seized)),
        )
        .await
        .unwrap();
    let wallet = hot.to_checksum(None);
    wait_metric(
        &app,
        &format!(
            "treasuryd_wallet_balance_mismatches_total{{network=\"ethereum\",wallet=\"{wallet}\"}}"
        ),
        1.0,
    )
    .await;
    miner.abort();
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    let reason = nets[0]["safe_mode"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with(&format!("automatic: hot wallet {wallet} holds")),
        "{nets}"
    );
    app.stop().await.unwrap();
}
