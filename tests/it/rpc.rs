//! RPC failover under injected faults: the network has two endpoints, the first a proxy to
//! anvil that can be made to fail. Payouts go through the first while it is healthy, through
//! the second while it fails, and the metrics say which endpoint is up and in use.

use crate::engine::{app_with, destination, request, spawn_miner, wait_state};
use crate::harness::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use treasuryd::dev::chain::DevChain;

/// A JSON-RPC proxy in front of anvil that injects faults: every call fails while `failing`
/// is set, and with a `schedule` phase it misbehaves by the call's position (deterministic,
/// so a failure replays): every 7th call a 5xx, every 13th delayed, every 11th answer cut
/// off after the node acted, every 17th connection dropped after the node acted and every
/// 19th before, every 5th head read 5 blocks stale. While `down`, it behaves like a node
/// being restarted: connections are refused and open ones are cut.
#[derive(Clone)]
struct FaultyProxy {
    upstream: String,
    http: reqwest::Client,
    failing: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    count: Arc<std::sync::atomic::AtomicU64>,
    schedule: Option<u64>,
}

/// A response whose body breaks off: the client sees the connection dropped mid-answer.
fn dropped_connection() -> axum::response::Response {
    let parts: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"{\"jsonrpc\":\"2.0\",")),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected drop",
        )),
    ];
    axum::response::Response::new(axum::body::Body::from_stream(futures::stream::iter(parts)))
}

async fn forward(State(p): State<FaultyProxy>, body: Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    if p.down.load(Ordering::SeqCst) {
        return dropped_connection();
    }
    if p.failing.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Bytes::from_static(b"injected fault"),
        )
            .into_response();
    }
    let n = p
        .schedule
        .map(|phase| p.count.fetch_add(1, Ordering::SeqCst) + phase);
    if n.is_some_and(|n| n % 7 == 0) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if n.is_some_and(|n| n % 19 == 0) {
        // The request never reaches the node.
        return dropped_connection();
    }
    if n.is_some_and(|n| n % 13 == 0) {
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let Ok(response) = p
        .http
        .post(&p.upstream)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
    else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let bytes = response.bytes().await.unwrap_or_default();
    if n.is_some_and(|n| n % 11 == 0) {
        // The node did the work; the answer is cut off on the way back.
        return (StatusCode::OK, bytes.slice(..bytes.len() / 2)).into_response();
    }
    if n.is_some_and(|n| n % 17 == 0) {
        // The node did the work; the connection drops before the answer is through.
        return dropped_connection();
    }
    if n.is_some_and(|n| n % 5 == 0) && request["method"] == "eth_blockNumber" {
        // A node that lags: an older head.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if let Some(h) = v["result"]
            .as_str()
            .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok())
        {
            v["result"] = format!("0x{:x}", h.saturating_sub(5)).into();
        }
        return (StatusCode::OK, Bytes::from(v.to_string())).into_response();
    }
    (StatusCode::OK, bytes).into_response()
}

/// A running proxy: its URL, its fail-everything switch, and what it needs to restart.
struct Proxy {
    url: String,
    failing: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
    addr: std::net::SocketAddr,
    state: FaultyProxy,
    serving: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str, schedule: Option<u64>) -> Self {
        let state = FaultyProxy {
            upstream: upstream.to_owned(),
            http: reqwest::Client::new(),
            failing: Arc::new(AtomicBool::new(false)),
            down: Arc::new(AtomicBool::new(false)),
            count: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            schedule,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        Self {
            url: format!("http://{addr}/"),
            failing: state.failing.clone(),
            down: state.down.clone(),
            addr,
            serving: Self::serve(listener, state.clone()),
            state,
        }
    }

    fn serve(listener: tokio::net::TcpListener, state: FaultyProxy) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new()
            .route("/", axum::routing::post(forward))
            .with_state(state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    /// The node restarts: for `down_for` new connections are refused and open ones cut, then
    /// it listens on the same address again.
    async fn reset(&mut self, down_for: Duration) {
        self.down.store(true, Ordering::SeqCst);
        self.serving.abort();
        tokio::time::sleep(down_for).await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serving = Self::serve(listener, self.state.clone());
        self.down.store(false, Ordering::SeqCst);
    }
}

async fn proxy(upstream: &str) -> (String, Arc<AtomicBool>) {
    let p = Proxy::start(upstream, None).await;
    (p.url, p.failing)
}

fn series(name: &str, endpoint: &str) -> String {
    format!("treasuryd_rpc_{name}{{endpoint=\"{endpoint}\",network=\"ethereum\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_fail_over_to_a_healthy_endpoint() {
    let chain = DevChain::start(&[]).await.unwrap();
    let (flaky, failing) = proxy(&chain.url).await;
    let app = app_with(Backend::Sqlite, &chain, &[flaky, chain.url.clone()], "", "").await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let acme = funded_partner(&app, "acme", "USDT", "100").await;

    let first = request(&app, &acme, destination(20), "10", "rpc-1").await;
    wait_state(&app, &first, "confirmed").await;
    wait_metric(&app, &series("selected", "0"), 1.0).await;
    wait_metric(&app, &series("up", "1"), 1.0).await;

    // The first endpoint starts failing every call.
    failing.store(true, Ordering::SeqCst);
    let second = request(&app, &acme, destination(21), "20", "rpc-2").await;
    wait_state(&app, &second, "confirmed").await;
    wait_metric(&app, &series("up", "0"), 0.0).await;
    wait_metric(&app, &series("selected", "1"), 1.0).await;
    let text = app.metrics_text().await;
    assert!(metric_value(&text, &series("errors_total", "0")).unwrap() >= 1.0);
    assert!(
        metric_value(&text, "treasuryd_rpc_failovers_total{network=\"ethereum\"}").unwrap() >= 1.0
    );

    // Healthy again: it is back up, and the engine stays where it is rather than flapping.
    failing.store(false, Ordering::SeqCst);
    wait_metric(&app, &series("up", "0"), 1.0).await;
    let third = request(&app, &acme, destination(22), "30", "rpc-3").await;
    wait_state(&app, &third, "confirmed").await;
    miner.abort();
    assert_eq!(
        metric_value(&app.metrics_text().await, &series("selected", "1")),
        Some(1.0)
    );
    assert_eq!(app.account(&acme).await["available"], "40.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// With no healthy endpoint for `rpc_outage_safe_mode_seconds` the network enters safe-mode on
/// its own; when the node recovers it stays there until an Admin leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_rpc_outage_puts_the_network_in_safe_mode() {
    let chain = DevChain::start(&[]).await.unwrap();
    let (only, failing) = proxy(&chain.url).await;
    let app = app_with(
        Backend::Sqlite,
        &chain,
        &[only],
        "rpc_outage_safe_mode_seconds = 1",
        "",
    )
    .await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    let first = request(&app, &acme, destination(30), "10", "outage-1").await;
    wait_state(&app, &first, "confirmed").await;

    failing.store(true, Ordering::SeqCst);
    wait_metric(
        &app,
        "treasuryd_payouts_auto_safe_mode_total{cause=\"rpc_outage\",network=\"ethereum\"}",
        1.0,
    )
    .await;
    let (_, nets) = app.get("/v1/networks", ADMIN).await;
    let reason = nets[0]["safe_mode"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("automatic: no healthy RPC endpoint"),
        "{nets}"
    );

    // The node is back; safe-mode is not left without an Admin.
    failing.store(false, Ordering::SeqCst);
    let held = request(&app, &acme, destination(31), "20", "outage-2").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, p) = app.get(&format!("/v1/payouts/{held}"), ADMIN).await;
    assert_eq!(p["state"], "queued", "{p}");
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &serde_json::json!({"enabled": false, "reason": "provider incident over"}),
        )
        .await;
    assert_eq!(s, reqwest::StatusCode::OK);
    wait_state(&app, &held, "confirmed").await;
    miner.abort();
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// With `cross_check_inclusions` a chunk at depth is paid only once a second healthy endpoint
/// shows the same block: while the second endpoint fails, the payout waits mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inclusions_wait_for_a_second_endpoint_when_cross_checked() {
    let chain = DevChain::start(&[]).await.unwrap();
    let (second, failing) = proxy(&chain.url).await;
    let app = app_with(
        Backend::Sqlite,
        &chain,
        &[chain.url.clone(), second],
        "cross_check_inclusions = true",
        "",
    )
    .await;
    let acme = funded_partner(&app, "acme", "USDT", "100").await;
    failing.store(true, Ordering::SeqCst);
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let id = request(&app, &acme, destination(40), "15", "cross-1").await;
    // Mined, then deep enough on the first node (two blocks past the depth, with the engine
    // ticking every 50 ms) before looking: still waiting for the second.
    let node = treasuryd::chains::evm::EvmClient::new(&chain.url).unwrap();
    let mut deep = false;
    for _ in 0..600 {
        let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
        if p["chunks"][0]["state"] == "mined" {
            let hash: alloy::primitives::B256 = p["chunks"][0]["attempts"][0]["hash"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            if let Some(i) = node.inclusion(hash).await.unwrap() {
                deep = node.head().await.unwrap() >= i.block_number + 4;
            }
        }
        if deep {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(deep, "the payout is mined and at depth on the first node");
    let (_, p) = app.get(&format!("/v1/payouts/{id}"), ADMIN).await;
    assert_eq!(
        (p["state"].as_str(), p["chunks"][0]["state"].as_str()),
        (Some("broadcast"), Some("mined")),
        "deep enough on one node, not yet confirmed by a second: {p}"
    );
    assert_eq!(app.account(&acme).await["held"], "15.000000");
    failing.store(false, Ordering::SeqCst);
    wait_state(&app, &id, "confirmed").await;
    miner.abort();
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Every endpoint misbehaves (every 7th call a 5xx, every 11th answer cut off and every 17th
/// connection dropped after the node acted, every 19th dropped before it, every 13th delayed,
/// every 5th head read 5 blocks stale), and the first node restarts twice mid-run: 500 payouts
/// still confirm exactly once, no nonce is skipped or used twice, the failovers show in the
/// metrics, and the ledger verifies. Transient failures are retried per call; what still fails
/// fails the tick, which starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_survive_endpoints_that_misbehave() {
    use alloy::primitives::U256;
    use treasuryd::chains::evm::EvmClient;
    const PAYOUTS: u64 = 500;
    let chain = DevChain::start(&[]).await.unwrap();
    let mut a = Proxy::start(&chain.url, Some(0)).await;
    let b = Proxy::start(&chain.url, Some(3)).await;
    let app = app_with(
        Backend::Sqlite,
        &chain,
        &[a.url.clone(), b.url.clone()],
        "stuck_after_seconds = 5",
        "",
    )
    .await;
    let miner = spawn_miner(&chain, Duration::from_millis(100));
    let acme = funded_partner(&app, "acme", "USDT", "10000").await;
    let client = EvmClient::new(&chain.url).unwrap();
    let hot = chain.dev_key(1).unwrap().address();
    let nonce_before = client.nonce(hot, false).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..PAYOUTS {
        ids.push(
            request(
                &app,
                &acme,
                destination(1000 + i),
                "1.5",
                &format!("chaos-{i}"),
            )
            .await,
        );
        if i == 150 || i == 350 {
            a.reset(Duration::from_secs(2)).await;
        }
    }
    for id in &ids {
        wait_state(&app, id, "confirmed").await;
    }
    miner.abort();
    for i in 0..PAYOUTS {
        assert_eq!(
            client
                .token_balance(chain.usdt, destination(1000 + i))
                .await
                .unwrap(),
            U256::from(1_500_000u64),
            "destination {i} paid exactly once"
        );
    }
    assert_eq!(
        client.nonce(hot, false).await.unwrap(),
        nonce_before + PAYOUTS,
        "one nonce per payout, none skipped"
    );
    let text = app.metrics_text().await;
    assert!(
        metric_value(&text, "treasuryd_rpc_failovers_total{network=\"ethereum\"}").unwrap() >= 1.0,
        "the resets moved the engine to the other endpoint"
    );
    assert!(metric_value(&text, &series("errors_total", "0")).unwrap() >= 1.0);
    assert_eq!(app.account(&acme).await["available"], "9250.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}
