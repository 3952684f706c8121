//! Operating controls: canary payouts go green through the whole pipeline from the canary
//! wallet (never a hot one) and red when the canary wallet has no gas; the configuration
//! freeze refuses configuration changes and nothing else; `treasuryd backup` copies a running
//! daemon's database into a file that verifies and restores.

use crate::harness::*;
use crate::on_both_backends;
use alloy::primitives::U256;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use treasuryd::chains::evm::EvmClient;
use treasuryd::dev::chain::{DevChain, TestToken};

on_both_backends!(the_config_freeze_refuses_configuration_changes_only);

const HOT_VAR: &str = "TREASURYD_TEST_OPS_HOT_KEY";
const CANARY_VAR: &str = "TREASURYD_TEST_OPS_CANARY_KEY";

/// The daemon on `chain` with dev key 1 as hot wallet, dev key 2 as canary wallet (with
/// `canary_extra` in its declaration), canaries to dev key 5's address.
async fn app_with_canary(chain: &DevChain, config_extra: &str, canary_extra: &str) -> TestApp {
    let (hot, canary) = (chain.dev_key(1).unwrap(), chain.dev_key(2).unwrap());
    for who in [hot.address(), canary.address()] {
        chain
            .mint(TestToken::Usdt, who, 1_000_000_000_000)
            .await
            .unwrap();
    }
    let network = format!(
        "name = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\nconfirmations = 2\npoll_interval_ms = 50\n\
         canary_address = \"{}\"\n[[tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
        chain.chain_id,
        chain.url,
        chain.dev_key(5).unwrap().address().to_checksum(None),
        chain.usdt.to_checksum(None),
    );
    let wallets = format!(
        "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{HOT_VAR}\"\n\
         [[wallets]]\nnetwork = \"ethereum\"\nrole = \"canary\"\naddress = \"{}\"\nkey_env = \"{CANARY_VAR}\"\n{canary_extra}\n",
        hot.address().to_checksum(None),
        canary.address().to_checksum(None),
    );
    let keys = [
        (HOT_VAR, format!("0x{}", hex::encode(hot.to_bytes()))),
        (CANARY_VAR, format!("0x{}", hex::encode(canary.to_bytes()))),
    ];
    let extra: toml::Table = toml::from_str(config_extra).unwrap();
    TestApp::spawn_with(Backend::Sqlite, move |c, dir| {
        c.networks = vec![toml::from_str(&network).unwrap()];
        if let Some(canary) = extra.get("canary") {
            c.canary = canary.clone().try_into().unwrap();
        }
        let dir = dir.join("wallets");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ethereum.toml"), wallets).unwrap();
        c.wallets_dir = dir;
        for (var, key) in keys {
            c.secrets.insert(var.into(), key.into());
        }
    })
    .await
}

/// A real Prometheus on loopback scraping `app` every second with our rule files.
struct Prometheus {
    child: std::process::Child,
    url: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(app: &TestApp) -> Self {
        ensure_prometheus();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let rules: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/alerts"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml"))
            .map(|p| format!("  - {}", p.display()))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n{}\n\
                 scrape_configs:\n  - job_name: treasuryd\n    static_configs:\n      - targets: [\"{}\"]\n",
                rules.join("\n"),
                app.metrics
            ),
        )
        .unwrap();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is needed: apt-get install prometheus (.ci/run installs it)");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Option<Value> {
        let r = self
            .client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// The state (`pending`, `firing`) of `alert` with `network`, or None when inactive.
    async fn alert(&self, alert: &str, network: &str) -> Option<String> {
        let v = self.get("/api/v1/alerts").await?;
        v["data"]["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["labels"]["alertname"] == alert && a["labels"]["network"] == network)
            .and_then(|a| a["state"].as_str().map(str::to_owned))
    }

    async fn names(&self) -> Vec<String> {
        let v = self.get("/api/v1/alerts").await.unwrap_or(Value::Null);
        v["data"]["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["labels"]["alertname"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Each rule group's last evaluation time, by group name.
    async fn evaluations(&self) -> std::collections::HashMap<String, String> {
        let v = self.get("/api/v1/rules").await.unwrap_or(Value::Null);
        v["data"]["groups"]
            .as_array()
            .map(|groups| {
                groups
                    .iter()
                    .map(|g| {
                        (
                            g["name"].as_str().unwrap_or_default().to_owned(),
                            g["lastEvaluation"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until every rule group has been evaluated `times` more times from now: proof
    /// that Prometheus looked, before asserting that nothing fired.
    async fn wait_evaluations(&self, times: usize) {
        let mut seen = self.evaluations().await;
        let mut count: std::collections::HashMap<String, usize> =
            seen.keys().map(|g| (g.clone(), 0)).collect();
        for _ in 0..600 {
            if !count.is_empty() && count.values().all(|&n| n >= times) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.evaluations().await;
            for (group, at) in &now {
                if seen.get(group) != Some(at) {
                    *count.entry(group.clone()).or_default() += 1;
                }
            }
            seen = now;
        }
        panic!("Prometheus did not evaluate every group {times} times: {count:?}");
    }

    async fn wait_for(&self, alert: &str, network: &str, state: Option<&str>) {
        for _ in 0..300 {
            if self.alert(alert, network).await.as_deref() == state {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "{alert}{{network={network}}} never became {state:?}; active: {:?}",
            self.names().await
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon and a real Prometheus with our rule files: safe-mode and a red canary make their
/// alerts fire through Prometheus' own evaluation, and nothing fires while all is well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_our_alerts_when_their_condition_holds() {
    let chain = DevChain::start(&[]).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let app = app_with_canary(
        &chain,
        "[canary]\ntimeout_seconds = 3\ninterval_seconds = 0\n",
        "min_gas_wei = 1000000000000000",
    )
    .await;
    let prometheus = Prometheus::start(&app);
    // Scraped, rules loaded.
    let mut ready = false;
    for _ in 0..600 {
        let up = prometheus
            .get("/api/v1/query?query=up%7Bjob%3D%22treasuryd%22%7D")
            .await;
        let rules = prometheus.get("/api/v1/rules").await;
        let loaded = rules
            .as_ref()
            .and_then(|r| r["data"]["groups"].as_array().map(Vec::len))
            .unwrap_or(0);
        ready = up.is_some_and(|v| v["data"]["result"][0]["value"][1] == "1") && loaded >= 6;
        if ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Quiet below means nothing fired, not that Prometheus never looked.
    assert!(
        ready,
        "Prometheus scrapes the daemon and has loaded our rules"
    );
    let (s, run) = canary(&app, OPERATOR, "", json!({"reason": "green first"})).await;
    assert_eq!(
        (s, run["result"].as_str()),
        (StatusCode::OK, Some("green")),
        "{run}"
    );
    // Two evaluations of every group after the green run, with everything well: nothing of
    // ours is active.
    prometheus.wait_evaluations(2).await;
    let active = prometheus.names().await;
    for quiet in [
        "TreasurydSafeModeOn",
        "TreasurydCanaryFailing",
        "TreasurydDown",
        "TreasurydGasBufferLow",
    ] {
        assert!(
            !active.iter().any(|a| a == quiet),
            "{quiet} is active: {active:?}"
        );
    }

    // Safe-mode on: the alert fires (no `for`), and clears when it is left.
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "alerting drill"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    prometheus
        .wait_for("TreasurydSafeModeOn", "ethereum", Some("firing"))
        .await;
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "drill over"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    prometheus
        .wait_for("TreasurydSafeModeOn", "ethereum", None)
        .await;

    // A canary wallet without gas: the canary goes red and its alert fires; the wallet's
    // buffer alert is pending (it waits 5 minutes before firing).
    chain
        .set_native_balance(chain.dev_key(2).unwrap().address(), U256::ZERO)
        .await
        .unwrap();
    let (s, run) = canary(&app, OPERATOR, "?wait_seconds=10", json!({"reason": "red"})).await;
    assert_eq!(
        (s, run["result"].as_str()),
        (StatusCode::OK, Some("red")),
        "{run}"
    );
    prometheus
        .wait_for("TreasurydCanaryFailing", "ethereum", Some("firing"))
        .await;
    prometheus
        .wait_for("TreasurydGasBufferLow", "ethereum", Some("pending"))
        .await;
    assert!(
        !prometheus
            .names()
            .await
            .iter()
            .any(|a| a == "TreasurydSafeModeOn")
    );
    miner.abort();
    app.stop().await.unwrap();
}

async fn canary(app: &TestApp, token: &str, query: &str, body: Value) -> (StatusCode, Value) {
    app.post(&format!("/v1/canary/ethereum{query}"), token, None, &body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canaries_go_green_from_the_canary_wallet_and_red_without_gas() {
    let chain = DevChain::start(&[]).await.unwrap();
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let app = app_with_canary(
        &chain,
        "[canary]\ntimeout_seconds = 4\ninterval_seconds = 0\n",
        "min_gas_wei = 1000000000000000",
    )
    .await;
    let rpc = EvmClient::new(&chain.url).unwrap();
    let (hot, canary_wallet) = (
        chain.dev_key(1).unwrap().address(),
        chain.dev_key(2).unwrap().address(),
    );
    let target = chain.dev_key(5).unwrap().address();
    let hot_nonce = rpc.nonce(hot, false).await.unwrap();

    // Refusals: role, reason, network.
    let (s, _) = canary(&app, TRADER, "", json!({"reason": "go-live check"})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = canary(&app, OPERATOR, "", json!({"reason": " "})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_required")),
        "{body}"
    );
    let (s, body) = app
        .post("/v1/canary/solana", ADMIN, None, &json!({"reason": "x"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");

    // Green: one unit from the canary wallet to the canary address, confirmed.
    let (s, run) = canary(&app, OPERATOR, "", json!({"reason": "T-3 canary"})).await;
    assert_eq!(s, StatusCode::OK, "{run}");
    assert_eq!(run["result"], "green", "{run}");
    assert_eq!(
        rpc.token_balance(chain.usdt, target).await.unwrap(),
        U256::from(1_000_000u64)
    );
    assert_eq!(
        rpc.token_balance(chain.usdt, canary_wallet).await.unwrap(),
        U256::from(1_000_000_000_000u64 - 1_000_000),
        "paid by the canary wallet"
    );
    assert_eq!(
        rpc.nonce(hot, false).await.unwrap(),
        hot_nonce,
        "the hot wallet sent nothing"
    );
    let (_, p) = app
        .get(
            &format!("/v1/payouts/{}", run["payout"].as_str().unwrap()),
            ADMIN,
        )
        .await;
    assert_eq!(
        (&p["state"], &p["amount"]),
        (&json!("confirmed"), &json!("1.000000")),
        "{p}"
    );
    wait_metric(
        &app,
        "treasuryd_canary_last_result{network=\"ethereum\"}",
        1.0,
    )
    .await;

    // A partner's payout never goes from the canary wallet.
    let account = funded_partner(&app, "acme", "USDT", "100").await;
    let (s, body) = app
        .post("/v1/payouts", TRADER, Some("p-1"), &json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "10"}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().unwrap();
    for _ in 0..200 {
        if app.get(&format!("/v1/payouts/{id}"), ADMIN).await.1["state"] == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rpc.nonce(hot, false).await.unwrap(), hot_nonce + 1);
    assert_eq!(
        rpc.token_balance(chain.usdt, canary_wallet).await.unwrap(),
        U256::from(1_000_000_000_000u64 - 1_000_000)
    );

    // Red: the canary wallet has no gas left; not confirmed within the 4 s timeout.
    chain
        .set_native_balance(canary_wallet, U256::ZERO)
        .await
        .unwrap();
    let (s, started) = canary(&app, ADMIN, "?wait_seconds=0", json!({"reason": "again"})).await;
    assert_eq!(
        (s, started.get("result")),
        (StatusCode::ACCEPTED, None),
        "{started}"
    );
    // One at a time per network.
    let (s, body) = canary(&app, ADMIN, "", json!({"reason": "once more"})).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("canary_running")),
        "{body}"
    );
    wait_metric(
        &app,
        "treasuryd_canary_last_result{network=\"ethereum\"}",
        0.0,
    )
    .await;
    let (_, status) = app.get("/v1/canary/ethereum", OPERATOR).await;
    assert_eq!(status["configured"], true, "{status}");
    let runs = status["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{status}");
    assert_eq!(runs[0]["result"], "red", "{status}");
    let reason = runs[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not confirmed within 4 s") && reason.contains("queued"),
        "{reason}"
    );
    assert_eq!(runs[1]["result"], "green");
    assert_eq!(
        rpc.token_balance(chain.usdt, target).await.unwrap(),
        U256::from(1_000_000u64),
        "the red one paid nothing"
    );
    let text = app.metrics_text().await;
    for (series, value) in [
        (
            "treasuryd_canary_runs_total{network=\"ethereum\",result=\"green\"}",
            1.0,
        ),
        (
            "treasuryd_canary_runs_total{network=\"ethereum\",result=\"red\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric_value(&text, series), Some(value), "{series}");
    }
    let canary_wallet_id = canary_wallet.to_checksum(None);
    assert_eq!(
        metric_value(
            &text,
            &format!(
                "treasuryd_wallet_below_gas_buffer{{network=\"ethereum\",wallet=\"{canary_wallet_id}\"}}"
            )
        ),
        Some(1.0)
    );
    // Audited, and the canary account carries what canaries cost.
    let (_, audit) = app.get("/v1/audit?limit=100", ADMIN).await;
    let canary_audits = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "canary.run")
        .count();
    assert_eq!(canary_audits, 2, "{audit}");
    miner.abort();
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_without_a_canary_says_so() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (s, body) = app
        .post(
            "/v1/canary/ethereum",
            ADMIN,
            None,
            &json!({"reason": "check"}),
        )
        .await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("canary_not_configured")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("canary_address"),
        "{body}"
    );
    let (_, status) = app.get("/v1/canary/ethereum", ADMIN).await;
    assert_eq!(
        (
            &status["configured"],
            status["runs"].as_array().map(Vec::len)
        ),
        (&json!(false), Some(0))
    );
    app.stop().await.unwrap();
}

async fn the_config_freeze_refuses_configuration_changes_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "canary", "reason": "canary go-live"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let account = funded_partner(&app, "acme", "USDT", "100").await;
    let put = |path: &str, body: Value| {
        let (app, path) = (&app, path.to_owned());
        async move {
            app.call(reqwest::Method::PUT, &path, ADMIN, Some(&body))
                .await
        }
    };
    // Only an Admin, with a reason, and a future `until`.
    let (s, _) = app.post("/v1/config-freeze", ADMIN, None, &json!({})).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    let (s, body) = put(
        "/v1/config-freeze",
        json!({"enabled": true, "until": "2020-01-01T00:00:00Z", "reason": "launch"}),
    )
    .await;
    assert_eq!(
        (s, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("until")),
        "{body}"
    );
    let (s, body) = put(
        "/v1/config-freeze",
        json!({"enabled": true, "reason": "T-3 launch freeze"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["active"], true);
    let (_, body) = app.get("/v1/config-freeze", TRADER).await;
    assert_eq!(
        (&body["active"], &body["set_by"]),
        (&json!(true), &json!("test-admin")),
        "{body}"
    );

    let frozen = |(s, body): (StatusCode, Value)| {
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("config_frozen")),
            "{body}"
        );
        // The refusal says who froze it, why, and until when.
        let message = body["error"]["message"].as_str().unwrap().to_owned();
        assert!(message.contains("set by test-admin"), "{body}");
        message
    };
    let audit_before = app.get("/v1/audit?limit=500", ADMIN).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    let message = frozen(put("/v1/pilot/scope", json!({"enabled": true, "country-allowlist": ["MN"], "category-allowlist": ["USED_CAR_PRIVATE"], "template-version": "v1", "reason": "x"})).await);
    frozen(
        app.post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "full", "reason": "x"}),
        )
        .await,
    );
    frozen(
        put(
            &format!("/v1/accounts/{account}/allowlist"),
            json!({"enforced": true, "reason": "x"}),
        )
        .await,
    );
    frozen(
        app.post(
            &format!("/v1/accounts/{account}/allowlist/destinations"),
            ADMIN,
            None,
            &json!({"network": "ethereum", "address": DESTINATION, "reason": "x"}),
        )
        .await,
    );
    frozen(
        app.post(
            &format!("/v1/accounts/{account}/deposit-addresses"),
            ADMIN,
            None,
            &json!({"address": DESTINATION, "reason": "x"}),
        )
        .await,
    );
    frozen(
        app.post(
            "/v1/webhooks/endpoints",
            ADMIN,
            None,
            &json!({"url": "https://partner.example/hooks", "event_types": ["*"], "reason": "x"}),
        )
        .await,
    );
    frozen(
        app.post(
            "/v1/companies",
            ADMIN,
            None,
            &json!({"name": "Acme", "tier": "S", "reason": "x"}),
        )
        .await,
    );
    assert!(
        message.contains("T-3 launch freeze") && message.contains("until an Admin lifts it"),
        "{message}"
    );
    let audit_after = app.get("/v1/audit?limit=500", ADMIN).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(audit_before, audit_after, "refusals change nothing");

    // Safe-mode, token freezes and money still work: they are how a launch is rolled back.
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/freezes",
            ADMIN,
            None,
            &json!({"asset": "USDT", "frozen": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some("during-freeze"),
            &json!({"account": account, "amount": "1", "reason": "top-up"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    // So does lowering the rollout phase: that is a rollback, not a configuration change.
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "pilot", "reason": "rollback"}),
        )
        .await;
    assert_eq!(
        (s, &body["rollout"]["phase"]),
        (StatusCode::OK, &json!("pilot")),
        "{body}"
    );
    wait_metric(&app, "treasuryd_config_freeze_active", 1.0).await;

    // Lifted: the same change is accepted.
    let (s, body) = put(
        "/v1/config-freeze",
        json!({"enabled": false, "reason": "T+1"}),
    )
    .await;
    assert_eq!(
        (s, &body["active"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "canary", "reason": "go"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // A freeze with an end lifts itself.
    let until = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (s, body) = put(
        "/v1/config-freeze",
        json!({"enabled": true, "until": until, "reason": "short"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    frozen(
        app.post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "full", "reason": "x"}),
        )
        .await,
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (s, body) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": "full", "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"config_freeze.enter") && actions.contains(&"config_freeze.leave"),
        "{actions:?}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_running_daemon_verifies_and_restores() {
    use crate::crash::{TOKEN, binary, start, verify_cli, write_config};
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("live.db").display());
    let config = write_config(dir.path(), &db_url);
    let (mut child, api) = start(&config, &db_url);
    let client = reqwest::Client::new();
    let post = {
        let (client, api) = (client.clone(), api.clone());
        move |path: &str, key: Option<String>, body: Value| {
            let (client, url) = (client.clone(), format!("http://{api}{path}"));
            async move {
                let mut r = client.post(url).bearer_auth(TOKEN).json(&body);
                if let Some(k) = key {
                    r = r.header("Idempotency-Key", k);
                }
                let r = r.send().await.unwrap();
                (r.status(), r.json::<Value>().await.unwrap())
            }
        }
    };
    let (_, account) = post("/v1/accounts", None, json!({"owner": "acme", "network": "ethereum", "asset": "USDT", "kind": "partner", "reason": "t"})).await;
    let account = account["id"].as_str().unwrap().to_owned();
    for i in 0..40 {
        let (s, _) = post(
            "/v1/deposits",
            Some(format!("d-{i}")),
            json!({"account": account, "amount": "2.5", "reason": "t"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    // Writes keep coming while the backup is taken.
    let writer = {
        let post = post.clone();
        let account = account.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                post(
                    "/v1/deposits",
                    Some(format!("w-{i}")),
                    json!({"account": account, "amount": "1", "reason": "t"}),
                )
                .await;
            }
        })
    };
    let out = dir.path().join("backup.db");
    let backup = std::process::Command::new(binary())
        .args([
            "--config",
            config.to_str().unwrap(),
            "backup",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("TREASURYD__DATABASE__URL", &db_url)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&backup.stdout).into_owned()
        + &String::from_utf8_lossy(&backup.stderr);
    assert!(backup.status.success(), "{said}");
    assert!(said.contains("the copy verifies"), "{said}");
    writer.await.unwrap();
    // Never over an existing file.
    let again = std::process::Command::new(binary())
        .args([
            "--config",
            config.to_str().unwrap(),
            "backup",
            "--out",
            out.to_str().unwrap(),
        ])
        .env("TREASURYD__DATABASE__URL", &db_url)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    crate::engine_crash::stop(&mut child);

    // Restore: a daemon on the copy serves the ledger as it was at the backup, and verifies.
    let backup_url = format!("sqlite://{}", out.display());
    let (clean, report) = verify_cli(&config, &backup_url);
    assert!(clean, "{report}");
    let seq: i64 = said
        .split("journal head seq ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let (mut restored, api) = start(&config, &backup_url);
    let r = client
        .get(format!("http://{api}/v1/accounts/{account}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let a: Value = r.json().await.unwrap();
    let (_, head) = {
        let r = client
            .get(format!("http://{api}/v1/journal?limit=500"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        (r.status(), r.json::<Value>().await.unwrap())
    };
    let last = head["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["seq"].as_i64())
        .max()
        .unwrap();
    assert_eq!(last, seq, "the restored journal ends where the backup said");
    let total: rust_decimal::Decimal = a["available"].as_str().unwrap().parse().unwrap();
    // 40 × 2.5 before the backup, and some of the 200 × 1 written during it.
    assert!(
        total >= rust_decimal::Decimal::from(100) && total <= rust_decimal::Decimal::from(300),
        "{a}"
    );
    crate::engine_crash::stop(&mut restored);

    // PostgreSQL is backed up with its own tools.
    let pg = std::process::Command::new(binary())
        .args([
            "--config",
            config.to_str().unwrap(),
            "backup",
            "--out",
            dir.path().join("pg.db").to_str().unwrap(),
        ])
        .env(
            "TREASURYD__DATABASE__URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .output()
        .unwrap();
    assert!(!pg.status.success());
    assert!(String::from_utf8_lossy(&pg.stderr).contains("pg_basebackup"));
}
