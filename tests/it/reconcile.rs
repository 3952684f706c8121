//! `treasuryd reconcile` against a real daemon and anvil: after payouts the hot wallet's token
//! and native balances agree with the ledger to the unit; a transfer out of the hot wallet
//! that treasuryd never signed puts the network in safe-mode, and `reconcile` reports the
//! difference and exits 1.

use crate::crash::binary;
use crate::engine_crash::{
    ADMIN_TOKEN, Rig, TRADER_TOKEN, call, confirmed_via, funded_account, rig, start,
};
use crate::harness::*;
use alloy::primitives::{Address, U256};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use treasuryd::chains::evm::{FeeMode, TransferTx, sign_transfer};
use treasuryd::dev::chain::TestToken;

/// Runs `treasuryd reconcile --json`: its exit code and one JSON object per line.
pub(crate) fn reconcile_cli(config: &Path, db_url: &str) -> (i32, Vec<Value>) {
    let out = Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "reconcile", "--json"])
        .env("TREASURYD__DATABASE__URL", db_url)
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

fn line<'a>(lines: &'a [Value], asset: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["asset"] == asset)
        .unwrap_or_else(|| panic!("no {asset} line in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_agrees_after_payouts_and_reports_a_foreign_outflow() {
    let Rig {
        db,
        _dir,
        chain,
        hot,
        key,
        config,
        client,
        rpc,
    } = rig(Backend::Sqlite, "reconcile_interval_seconds = 1", true).await;
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));

    // Before the daemon has posted the openings there is nothing to compare: `not_opened`,
    // exit 2, never a mismatch.
    let (mut first, _, logs) = start(&config, &db.url, &key, Some("watcher.before_opening"));
    crate::engine_crash::wait_for_point(&logs, "watcher.before_opening");
    let (code, lines) = reconcile_cli(&config, &db.url);
    assert_eq!(code, 2, "{lines:?}");
    for asset in ["USDT", "ETH"] {
        assert_eq!(line(&lines, asset)["verdict"], "not_opened", "{lines:?}");
    }
    first.kill().unwrap();
    first.wait().unwrap();

    let (mut daemon, api, _logs) = start(&config, &db.url, &key, None);

    let account = funded_account(&client, &api).await;
    let to = Address::from_word(U256::from(0x5EC0u64).into());
    let (s, payout) = call(&client, &api, TRADER_TOKEN, "/v1/payouts", Some("rec-1"), Some(json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": to.to_checksum(None), "amount": "300000"}))).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{payout}");
    let id = payout["id"].as_str().unwrap().to_owned();
    assert_eq!(
        confirmed_via(&client, &api, &id).await["state"],
        "confirmed"
    );
    // More tokens reach the hot wallet after the opening: an inflow the ledger records.
    chain
        .mint(TestToken::Usdt, hot.address(), 5_000_000)
        .await
        .unwrap();
    let mined_at = rpc.head().await.unwrap();

    // Once the watcher has read past the payout and the inflow, chain and ledger agree.
    let mut report = (0, Vec::new());
    for _ in 0..200 {
        report = reconcile_cli(&config, &db.url);
        if report
            .1
            .first()
            .is_some_and(|l| l["block"].as_u64() >= Some(mined_at))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, lines) = report;
    assert_eq!(code, 0, "{lines:?}");
    let usdt = line(&lines, "USDT");
    assert_eq!(usdt["verdict"], "ok", "{lines:?}");
    assert_eq!(usdt["chain"], "9700005.000000");
    assert_eq!(usdt["ledger"], "9700005.000000");
    assert_eq!(usdt["difference"], "0.000000");
    let eth = line(&lines, "ETH");
    assert_eq!(eth["verdict"], "ok", "gas is posted to the wei: {lines:?}");
    assert_eq!(eth["chain"], eth["ledger"]);

    // The hot key used outside treasuryd.
    let fees = rpc
        .suggest_fees(FeeMode::Urgent, 1_000_000_000, 300_000_000_000)
        .await
        .unwrap();
    let tx = TransferTx {
        chain_id: chain.chain_id,
        nonce: rpc.nonce(hot.address(), true).await.unwrap(),
        token: chain.usdt,
        to: Address::from_word(U256::from(0xBAD).into()),
        value: U256::from(1_000_000u64),
        gas_limit: 100_000,
        fees,
    };
    rpc.broadcast(&sign_transfer(&hot, &tx).unwrap().raw)
        .await
        .unwrap();
    let mut nets = Value::Null;
    for _ in 0..200 {
        nets = call(&client, &api, ADMIN_TOKEN, "/v1/networks", None, None)
            .await
            .1;
        if nets[0]["safe_mode"].is_object() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reason = nets[0]["safe_mode"]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("automatic: hot wallet"), "{nets}");

    let mut report = (0, Vec::new());
    for _ in 0..200 {
        report = reconcile_cli(&config, &db.url);
        if report.0 != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    miner.abort();
    let (code, lines) = report;
    assert_eq!(code, 1, "a mismatch exits 1: {lines:?}");
    let usdt = line(&lines, "USDT");
    assert_eq!(usdt["verdict"], "mismatch", "{lines:?}");
    assert_eq!(usdt["difference"], "-1.000000", "{lines:?}");
    assert_eq!(usdt["ledger"], "9700005.000000");
    // Its gas left the wallet too, and nothing in the ledger explains it.
    assert_eq!(line(&lines, "ETH")["verdict"], "mismatch", "{lines:?}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
