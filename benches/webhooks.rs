//! Webhook delivery: events delivered per second to a receiver on loopback and outbox lag
//! (outbox write → receiver), side by side with a baseline measured in the same run: the same
//! signed bodies POSTed one after another straight to the same receiver (no database, no
//! outbox) — the transport's limit for one endpoint, whose deliveries are sequential.
//!
//! Two workloads per backend:
//! - burst: N deposits posted at once (N events), delivery drains them: events/s;
//! - paced: events at a steady rate below capacity: lag p50 / p95 with the default poll.
//!
//!   cargo bench --bench webhooks                          # 2,000 events, 3 rounds
//!   TREASURYD_BENCH_EVENTS=500 TREASURYD_BENCH_ROUNDS=1 cargo bench --bench webhooks
//!
//! PostgreSQL comes from TREASURYD_TEST_POSTGRES_URL (skipped when unset).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use secrecy::SecretString;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use treasuryd::app::App;
use treasuryd::config::Config;
use treasuryd::domain::{Amount, AssetKey, Role};
use treasuryd::ledger::{AccountKind, Command, NewAccount};
use treasuryd::store::AuditRecord;

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

type Arrivals = Arc<Mutex<Vec<(String, i64)>>>;

/// A receiver answering 200 and noting (event id, arrival in unix µs).
async fn receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::default();
    let seen = arrivals.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, _body: String| {
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("treasuryd-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                seen.lock().unwrap().push((id, now_micros()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), arrivals)
}

fn pct(sorted: &[i64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .map(|v| *v as f64 / 1000.0)
        .unwrap_or(0.0)
}

/// `n` signed bodies of a deposit event's size, POSTed one at a time with the same headers.
async fn baseline(n: usize, url: &str) -> f64 {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let secret = SecretString::from("whsec_bench");
    let started = Instant::now();
    for i in 0..n {
        let body = format!(
            "{{\"id\":\"{}\",\"type\":\"deposit.credited\",\"created_at\":\"2026-11-23T00:00:00Z\",\"data\":{{\"deposit\":{{\"transaction\":\"{}\",\"account\":\"{}\",\"network\":\"ethereum\",\"asset\":\"USDT\",\"amount\":\"1.000000\",\"reference\":null,\"chain\":null,\"journal_seq\":{i},\"created_at\":\"2026-11-23T00:00:00Z\"}}}}}}",
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7(),
            uuid::Uuid::now_v7()
        );
        let t = now_micros() / 1_000_000;
        let sig = treasuryd::webhooks::signature_header(&[&secret], t, body.as_bytes());
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("Treasuryd-Event-Id", i.to_string())
            .header("Treasuryd-Signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

struct Subject {
    app_task: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: tokio::sync::oneshot::Sender<()>,
    ledger: treasuryd::ledger::Ledger,
    store: treasuryd::store::DynStore,
    account: treasuryd::ledger::Account,
    _dir: tempfile::TempDir,
}

async fn start(db_url: &str, receiver_url: &str) -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::defaults();
    config.data_dir = dir.path().to_owned();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.database.url = Some(SecretString::from(db_url.to_owned()));
    config.webhooks.allow_private_networks = true;
    // No wallets: the network's node is never contacted.
    config.networks = vec![
        toml::from_str(
            "name = \"ethereum\"\nchain_id = 31337\nrpc_urls = [\"http://127.0.0.1:9\"]\n\
             [[tokens]]\ncode = \"USDT\"\naddress = \"0xdAC17F958D2ee523a2206206994597C13D831ec7\"\ndecimals = 6\n",
        )
        .unwrap(),
    ];
    let app = App::build(config, Vec::new()).await.unwrap();
    let ledger = app.state().ledger.clone();
    let store = app.state().store.clone();
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let app_task = tokio::spawn(app.run_until_stopped(async {
        let _ = rx.await;
    }));
    let audit = AuditRecord {
        actor: "bench".into(),
        role: Role::Admin,
        action: "bench.setup".into(),
        target: String::new(),
        reason: None,
        request_id: String::new(),
        at: now_micros(),
        evidence: None,
    };
    let asset = AssetKey::new("ethereum", "USDT");
    let account = store
        .create_account(
            &NewAccount {
                owner: "bench".into(),
                company: None,
                asset,
                kind: AccountKind::Partner,
                allow_negative: false,
            },
            &audit,
        )
        .await
        .unwrap();
    let now = now_micros();
    store
        .create_endpoint(
            &treasuryd::webhooks::Endpoint {
                company: None,
                id: uuid::Uuid::now_v7(),
                url: receiver_url.to_owned(),
                event_types: vec!["deposit.credited".into()],
                active: true,
                secret: treasuryd::webhooks::new_secret(),
                previous_secret: None,
                previous_until: None,
                disabled_reason: None,
                created_by: "bench".into(),
                created_at: now,
                updated_at: now,
            },
            &audit,
        )
        .await
        .unwrap();
    Subject {
        app_task,
        stop,
        ledger,
        store,
        account,
        _dir: dir,
    }
}

impl Subject {
    /// `n` deposits (one event each) in batches of `batch` ledger commands.
    async fn events(&self, from: usize, n: usize, batch: usize) {
        let mut i = from;
        while i < from + n {
            let cmds: Vec<Command> = (i..(i + batch).min(from + n))
                .map(|k| {
                    let op = self
                        .ledger
                        .deposit(&self.account, Amount::new(1_000_000).unwrap())
                        .unwrap();
                    Command::new(format!("bench-{k}"), self.account.asset.clone(), op)
                })
                .collect();
            i += cmds.len();
            for r in self.ledger.post(cmds).await.unwrap() {
                r.unwrap();
            }
        }
    }

    /// Waits for `n` arrivals; returns (events/s from first outbox write to last arrival,
    /// lag p50 ms, lag p95 ms).
    async fn measure(&self, arrivals: &Arrivals, n: usize) -> (f64, f64, f64) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while arrivals.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "deliveries stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = arrivals.lock().unwrap().clone();
        let events = self
            .store
            .webhook_events_between(0, i64::MAX, 1_000_000)
            .await
            .unwrap();
        let written: std::collections::HashMap<String, i64> = events
            .iter()
            .map(|e| (e.id.to_string(), e.created_at))
            .collect();
        let mut lags: Vec<i64> = got
            .iter()
            .filter_map(|(id, at)| written.get(id).map(|w| at - w))
            .collect();
        lags.sort_unstable();
        let first = events.iter().map(|e| e.created_at).min().unwrap_or(0);
        let last = got.iter().map(|(_, at)| *at).max().unwrap_or(0);
        let rate = n as f64 / ((last - first) as f64 / 1e6);
        (rate, pct(&lags, 0.5), pct(&lags, 0.95))
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.app_task.await;
    }
}

async fn database(backend: &str, round: usize) -> Option<String> {
    match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!(
                "treasuryd-bench-webhooks-{}-{round}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Some(format!("sqlite://{}/bench.db", dir.display()))
        }
        _ => {
            let base = std::env::var("TREASURYD_TEST_POSTGRES_URL").ok()?;
            let name = format!("bench_webhooks_{}_{round}", std::process::id());
            let admin = sqlx::PgPool::connect(&base).await.ok()?;
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name}"
            )))
            .execute(&admin)
            .await;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&admin)
                .await
                .ok()?;
            let (prefix, _) = base.rsplit_once('/')?;
            Some(format!("{prefix}/{name}"))
        }
    }
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("TREASURYD_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rounds: usize = std::env::var("TREASURYD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("webhooks: {n} events per burst, {rounds} rounds, poll 100 ms (default)");
    for backend in ["sqlite", "postgres"] {
        for round in 0..rounds {
            let Some(url) = database(backend, round).await else {
                println!("{backend}: skipped (TREASURYD_TEST_POSTGRES_URL unset or unreachable)");
                break;
            };
            // Baseline first, on its own receiver, then the subject on a fresh one.
            let (base_url, _) = receiver().await;
            let base = baseline(n, &base_url).await;

            let (hook, arrivals) = receiver().await;
            let subject = start(&url, &hook).await;
            subject.events(0, n, 50).await;
            let (rate, _, burst_p95) = subject.measure(&arrivals, n).await;

            // Paced: 20 events every 100 ms (200/s) for 5 s, after the burst drained.
            arrivals.lock().unwrap().clear();
            let paced = 1000;
            let started = Instant::now();
            for step in 0..paced / 20 {
                subject.events(n + step * 20, 20, 20).await;
                let due = Duration::from_millis(100 * (step as u64 + 1));
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            let (_, p50, p95) = subject.measure(&arrivals, paced).await;
            subject.stop().await;
            println!(
                "{backend} round {round}: burst {rate:.0} events/s vs baseline {base:.0} POST/s (ratio {:.2}), \
                 burst lag p95 {burst_p95:.0} ms; paced 200/s lag p50 {p50:.1} ms, p95 {p95:.1} ms",
                rate / base
            );
        }
    }
}
