//! How fast the real binary comes back after SIGKILL, the timings the crash tests used to
//! assert and now only wait for:
//! - restart (SQLite): a daemon killed and started again at once, before the killed process is
//!   reaped, until it serves; side by side with the baseline of a start after a clean stop on
//!   the same database. The ratio is what the instance-lock wait costs a supervisor that
//!   restarts at once.
//! - takeover (PostgreSQL): two daemons on one database and one anvil; the lease owner is
//!   killed; until the standby owns the network. The baseline is the lease itself, the floor of
//!   any lease-based takeover: the ratio says how close the standby gets to it.
//!
//!   cargo bench --bench failover                       # 5 rounds each
//!   TREASURYD_BENCH_ROUNDS=2 cargo bench --bench failover
//!
//! PostgreSQL comes from TREASURYD_TEST_POSTGRES_URL (the takeover is skipped when unset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use treasuryd::dev::chain::DevChain;

const ADMIN: &str = "tdk_failover_bench_admin";
const KEY_VAR: &str = "TREASURYD_BENCH_HOT_KEY";
const LEASE_SECONDS: u64 = 3;

fn write_config(dir: &Path, network: Option<&DevChain>) -> PathBuf {
    let digest = hex::encode(treasuryd::api::auth::token_digest(ADMIN));
    let mut text = format!(
        "data_dir = {dir:?}\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
         [log]\nformat = \"json\"\n[[auth.tokens]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n",
        dir = dir.display().to_string()
    );
    if let Some(chain) = network {
        let wallets = dir.join("wallets");
        std::fs::create_dir_all(&wallets).unwrap();
        std::fs::write(
            wallets.join("ethereum.toml"),
            format!(
                "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{}\"\nkey_env = \"{KEY_VAR}\"\n",
                chain.dev_key(1).unwrap().address().to_checksum(None)
            ),
        )
        .unwrap();
        text = format!(
            "wallets_dir = {wallets:?}\n{text}[[networks]]\nname = \"ethereum\"\nchain_id = {}\nrpc_urls = [\"{}\"]\n\
             confirmations = 2\npoll_interval_ms = 50\nlease_seconds = {LEASE_SECONDS}\n\
             [[networks.tokens]]\ncode = \"USDT\"\naddress = \"{}\"\ndecimals = 6\n",
            chain.chain_id,
            chain.url,
            chain.usdt.to_checksum(None),
            wallets = wallets.display().to_string(),
        );
    }
    let path = dir.join("treasuryd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts `treasuryd run`; returns it and its API address once it listens.
fn start(config: &Path, db_url: &str, key: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_treasuryd"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("TREASURYD__DATABASE__URL", db_url)
        .env(KEY_VAR, key)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "treasuryd listening"
            {
                let _ = tx.send(v["api"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let api = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    (child, api)
}

fn stop(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// (after a clean stop, right after SIGKILL) start-to-serving seconds, alternating.
fn restart(rounds: usize) -> (Vec<f64>, Vec<f64>) {
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let config = write_config(dir.path(), None);
    let (mut daemon, _) = start(&config, &db_url, "");
    let (mut clean, mut killed) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        stop(&mut daemon);
        let t = Instant::now();
        let (d, _) = start(&config, &db_url, "");
        clean.push(t.elapsed().as_secs_f64());
        daemon = d;

        daemon.kill().unwrap();
        let t = Instant::now();
        let (d, _) = start(&config, &db_url, "");
        killed.push(t.elapsed().as_secs_f64());
        daemon.wait().unwrap();
        daemon = d;
    }
    stop(&mut daemon);
    (clean, killed)
}

async fn owner(client: &reqwest::Client, api: &str) -> String {
    let nets: serde_json::Value = client
        .get(format!("http://{api}/v1/networks"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    nets[0]["engine"]["owner"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Seconds from SIGKILL of the lease owner to the standby owning the network, per round.
async fn takeover(admin_url: &str, rounds: usize) -> Vec<f64> {
    let chain = DevChain::start(&["--block-time", "1"]).await.unwrap();
    let key = format!("0x{}", hex::encode(chain.dev_key(1).unwrap().to_bytes()));
    let admin = sqlx::PgPool::connect(admin_url).await.unwrap();
    let name = format!("treasuryd_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(&admin)
        .await
        .unwrap();
    let db_url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("TREASURYD_TEST_POSTGRES_URL has no database part"),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(&chain));
    let client = reqwest::Client::new();
    let mut owner_daemon = start(&config, &db_url, &key);
    while !owner(&client, &owner_daemon.1)
        .await
        .contains(&format!("-{}-", owner_daemon.0.id()))
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut took = Vec::new();
    for _ in 0..rounds {
        let standby = start(&config, &db_url, &key);
        owner_daemon.0.kill().unwrap();
        let t = Instant::now();
        owner_daemon.0.wait().unwrap();
        while !owner(&client, &standby.1)
            .await
            .contains(&format!("-{}-", standby.0.id()))
        {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        took.push(t.elapsed().as_secs_f64());
        owner_daemon = standby;
    }
    stop(&mut owner_daemon.0);
    drop(chain);
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE \"{name}\" WITH (FORCE)"
    )))
    .execute(&admin)
    .await;
    took
}

#[tokio::main]
async fn main() {
    let rounds = std::env::var("TREASURYD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (clean, killed) = tokio::task::spawn_blocking(move || restart(rounds))
        .await
        .unwrap();
    let (c, k) = (median(clean.clone()), median(killed.clone()));
    println!(
        "restart (SQLite, {rounds} rounds): after a clean stop {c:.3} s, right after SIGKILL {k:.3} s \
         (median); ratio {:.2}; all clean {clean:.3?}, all killed {killed:.3?}",
        k / c
    );
    match std::env::var("TREASURYD_TEST_POSTGRES_URL") {
        Ok(url) => {
            let took = takeover(&url, rounds).await;
            let m = median(took.clone());
            println!(
                "takeover (PostgreSQL, {rounds} rounds, lease {LEASE_SECONDS} s): median {m:.3} s, \
                 ratio to the lease {:.2}; all {took:.3?}",
                m / LEASE_SECONDS as f64
            );
        }
        Err(_) => println!("takeover: skipped (TREASURYD_TEST_POSTGRES_URL unset)"),
    }
}
