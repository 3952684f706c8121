//! Webhook deliveries to real HTTP receivers on this host that fail, hang, answer 500 or 410
//! and restart: every event delivered at least once and in order per endpoint, 410 disables,
//! the horizon dead-letters, replay redelivers, signatures verify with openssl (also during a
//! rotation), the SSRF guard holds at delivery time, the outbox is written with (and only
//! with) the change, and the metrics say what happened. The SIGKILL test runs the binary.

use crate::harness::*;
use crate::on_both_backends;
use crate::webhooks::openssl_hmac;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

on_both_backends!(
    a_flaky_receiver_gets_every_event_in_order,
    the_outbox_is_written_with_the_change_and_only_then
);

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    Status(u16),
    /// Never answers (the deliverer's timeout ends it).
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub event_type: String,
    pub timestamp: String,
    pub signature: String,
    pub attempt: u32,
    pub body: String,
    pub answered: Answer,
}

#[derive(Default)]
struct ReceiverState {
    /// Answers for the next requests, in order; then `default`.
    script: VecDeque<Answer>,
    default: Option<Answer>,
    received: Vec<Received>,
    delay: Duration,
}

/// A webhook receiver on 127.0.0.1 that can be scripted, stopped and started again on the
/// same port.
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut r = Self {
            addr,
            state: Arc::default(),
            stop: None,
            task: None,
        };
        r.serve(listener);
        r
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let state = self.state.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let h = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let (answer, delay) = {
                        let mut s = state.lock().unwrap();
                        let a = s.script.pop_front().or(s.default).unwrap_or(Answer::Ok);
                        s.received.push(Received {
                            event_id: h("treasuryd-event-id"),
                            event_type: h("treasuryd-event-type"),
                            timestamp: h("treasuryd-timestamp"),
                            signature: h("treasuryd-signature"),
                            attempt: h("treasuryd-delivery-attempt").parse().unwrap_or(0),
                            body,
                            answered: a,
                        });
                        (a, s.delay)
                    };
                    tokio::time::sleep(delay).await;
                    match answer {
                        Answer::Ok => (axum::http::StatusCode::OK, "thanks".to_owned()),
                        Answer::Status(code) => (
                            axum::http::StatusCode::from_u16(code).unwrap(),
                            format!("answer {code}"),
                        ),
                        Answer::Hang => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            (axum::http::StatusCode::OK, String::new())
                        }
                    }
                }
            }),
        );
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers for the next requests, then `default` for the rest.
    pub fn script(&self, answers: &[Answer], default: Answer) {
        let mut s = self.state.lock().unwrap();
        s.script = answers.iter().copied().collect();
        s.default = Some(default);
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Ids of the events acknowledged with a 2xx, in arrival order.
    pub fn acknowledged(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == Answer::Ok)
            .map(|r| r.event_id)
            .collect()
    }

    /// Stops listening (connections are refused) until `restart`.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub async fn restart(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
    }
}

/// Fast retries so a test sees several within seconds.
pub fn quick_webhooks(c: &mut treasuryd::config::Config) {
    c.webhooks.allow_private_networks = true;
    c.webhooks.retry_min_delay_ms = 50;
    c.webhooks.retry_max_delay_seconds = 1;
    c.webhooks.request_timeout_seconds = 1;
    c.webhooks.poll_ms = 20;
}

pub async fn register(app: &TestApp, url: &str, types: Value) -> (String, String) {
    let (s, b) = app
        .post(
            "/v1/webhooks/endpoints",
            ADMIN,
            None,
            &json!({"url": url, "event_types": types, "reason": "partner receiver"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    (
        b["id"].as_str().unwrap().to_owned(),
        b["secret"].as_str().unwrap().to_owned(),
    )
}

/// Waits until `done` holds, or fails after `secs` with `what`.
pub async fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Each distinct event in the order it was first seen; panics if an event is seen again after
/// a later one (out of order).
pub fn first_seen_in_order(ids: &[String]) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    for id in ids {
        match order.iter().position(|o| o == id) {
            None => order.push(id.clone()),
            Some(i) => assert_eq!(
                i,
                order.len() - 1,
                "event {id} came again after a later event: {ids:?}"
            ),
        }
    }
    order
}

pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub async fn metrics_text(app: &TestApp) -> String {
    reqwest::get(format!("http://{}/metrics", app.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Checks the signature header of `r` with openssl against every secret in `secrets`: each
/// must have signed it.
pub fn assert_signed_by(r: &Received, secrets: &[&str]) {
    let (t, sigs) = r.signature.split_once(",v1=").unwrap();
    let t = t.strip_prefix("t=").unwrap();
    assert_eq!(t, r.timestamp);
    let sigs: Vec<&str> = sigs.split(",v1=").collect();
    let signed = format!("{t}.{}", r.body);
    for s in secrets {
        let expected = openssl_hmac(s, signed.as_bytes());
        assert!(
            sigs.contains(&expected.as_str()),
            "no v1 signature by this secret: {}",
            r.signature
        );
    }
    assert_eq!(sigs.len(), secrets.len(), "{}", r.signature);
}

async fn a_flaky_receiver_gets_every_event_in_order(backend: Backend) {
    let mut receiver = Receiver::start().await;
    let app = TestApp::spawn_with(backend, |c, _| quick_webhooks(c)).await;
    let (endpoint, secret) = register(&app, &receiver.url(), json!(["deposit.*"])).await;
    // Two 500s, a hang past the 1 s timeout, a 503, then acknowledgements.
    receiver.script(
        &[
            Answer::Status(500),
            Answer::Status(500),
            Answer::Hang,
            Answer::Status(503),
        ],
        Answer::Ok,
    );
    let account = app.create_account("acme").await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let posted = app
            .deposit(&account, &format!("{}.5", i + 1), &format!("wh-dep-{i}"))
            .await;
        expected.push(posted["transaction"]["id"].as_str().unwrap().to_owned());
        if i == 14 {
            // The receiver goes away for a while in the middle of the stream.
            wait_for(20, "the first events", || {
                receiver.acknowledged().len() >= 5
            })
            .await;
            receiver.stop().await;
            tokio::time::sleep(Duration::from_millis(700)).await;
            receiver.restart().await;
        }
    }
    wait_for(60, "every deposit event acknowledged", || {
        first_seen_in_order(&receiver.acknowledged()).len() == 30
    })
    .await;
    let received = receiver.received();
    let ids: Vec<String> = received.iter().map(|r| r.event_id.clone()).collect();
    assert_eq!(first_seen_in_order(&ids), expected, "journal order");
    assert_eq!(first_seen_in_order(&receiver.acknowledged()), expected);

    // The first event carries what a partner needs, and its signature verifies.
    let first = received.iter().find(|r| r.answered == Answer::Ok).unwrap();
    let body: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["id"], expected[0]);
    assert_eq!(body["type"], "deposit.credited");
    assert_eq!(first.event_type, "deposit.credited");
    assert_eq!(body["data"]["deposit"]["account"], account);
    assert_eq!(body["data"]["deposit"]["amount"], "1.500000");
    assert_eq!(body["data"]["deposit"]["asset"], "USDT");
    assert_eq!(first.attempt, 5, "four failed attempts came before");
    for r in &received {
        assert_signed_by(r, &[&secret]);
    }

    // After a rotation both secrets sign, and each verifies independently.
    let (s, rotated) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/rotate"),
            ADMIN,
            None,
            &json!({"overlap_seconds": 600, "reason": "scheduled rotation"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    let posted = app.deposit(&account, "99", "wh-dep-rotated").await;
    let rotated_id = posted["transaction"]["id"].as_str().unwrap().to_owned();
    wait_for(20, "the event after rotation", || {
        receiver.acknowledged().contains(&rotated_id)
    })
    .await;
    let after = receiver
        .received()
        .into_iter()
        .find(|r| r.event_id == rotated_id)
        .unwrap();
    assert_signed_by(&after, &[&new_secret, &secret]);

    // The deliveries API and the metrics tell the same story.
    let (s, page) = app
        .get(
            &format!("/v1/webhooks/endpoints/{endpoint}/deliveries?state=delivered&limit=100"),
            ADMIN,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 31);
    assert_eq!(items[0]["attempts"], 5);
    assert_eq!(items[0]["event_id"], expected[0]);
    let text = metrics_text(&app).await;
    let m = |outcome: &str| {
        metric(
            &text,
            "treasuryd_webhook_attempts_total",
            &[("endpoint", &endpoint), ("outcome", outcome)],
        )
    };
    assert_eq!(m("http_error"), 3.0, "two 500s and a 503");
    assert_eq!(m("timeout"), 1.0);
    assert_eq!(m("success"), 31.0);
    // The series exists (published at zero); the 0.7 s outage may or may not meet an attempt.
    assert!(!m("connect_error").is_nan(), "connect_error series missing");
    assert_eq!(
        metric(
            &text,
            "treasuryd_webhook_deliveries_total",
            &[("endpoint", &endpoint), ("outcome", "delivered")]
        ),
        31.0
    );
    let all = m("success") + m("http_error") + m("timeout") + m("connect_error");
    let ratio = metric(&text, "treasuryd_webhook_success_ratio_15m", &[]);
    assert!(
        (ratio - 31.0 / all).abs() < 1e-9,
        "ratio {ratio} vs {}/{all}",
        31.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_webhook_delivery_latency_seconds_count",
            &[]
        ),
        31.0
    );
    app.stop().await.unwrap();
}

async fn the_outbox_is_written_with_the_change_and_only_then(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c, _| quick_webhooks(c)).await;
    let store = app.store.clone();
    let count = || async { outbox(&store).await.len() };
    let account = app.create_account("acme").await;
    let before = count().await;
    // Refused changes leave no event: a payout beyond the balance, an unknown account.
    let (s, _) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some("wh-refused"),
            &json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "5", "reference": "too much"}),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    let (s, _) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some("wh-bad"),
            &json!({"account": uuid::Uuid::now_v7().to_string(), "amount": "1", "reason": "x"}),
        )
        .await;
    assert!(s.is_client_error(), "{s}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count().await, before, "no event for a refused change");

    // Each accepted change writes exactly its events.
    app.deposit(&account, "100", "wh-fund").await;
    let (s, p) = app
        .post(
            "/v1/payouts",
            TRADER,
            Some("wh-payout"),
            &json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "5", "reference": "inv-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{p}");
    let payout = p["id"].as_str().unwrap().to_owned();
    for enabled in [true, false] {
        let (s, b) = app
            .post(
                "/v1/networks/ethereum/safe-mode",
                ADMIN,
                None,
                &json!({"enabled": enabled, "reason": "drill"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    // The same idempotent deposit again writes nothing new.
    app.deposit(&account, "100", "wh-fund").await;
    let mut types = Vec::new();
    for _ in 0..100 {
        let events = store
            .webhook_events_between(0, i64::MAX, 1000)
            .await
            .unwrap();
        if events.len() == before + 4 {
            types = events.iter().map(|e| e.event_type.clone()).collect();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        types[before..],
        [
            "deposit.credited",
            "payout.accepted",
            "safe_mode.entered",
            "safe_mode.left"
        ]
    );
    let events = store
        .webhook_events_between(0, i64::MAX, 1000)
        .await
        .unwrap();
    let accepted = &events[before + 1];
    let (s, view) = app
        .get(&format!("/v1/webhooks/events/{}", accepted.id), ADMIN)
        .await;
    assert_eq!(s, StatusCode::OK, "{view}");
    assert_eq!(view["body"]["data"]["payout"]["id"], payout);
    assert_eq!(view["body"]["data"]["payout"]["amount"], "5.000000");
    assert_eq!(view["body"]["data"]["payout"]["reference"], "inv-1");
    let safe = &events[before + 2];
    assert_eq!(safe.network.as_deref(), Some("ethereum"));
    assert_eq!(safe.detail.as_deref(), Some("drill"));
    // Retention on this database too: dispatched events nobody waits for are deleted.
    for _ in 0..100 {
        if store
            .undispatched_webhook_events(10)
            .await
            .unwrap()
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let later = chrono::Utc::now().timestamp_micros() + 1_000_000;
    let all = store
        .webhook_events_between(0, i64::MAX, 1000)
        .await
        .unwrap()
        .len() as u64;
    assert_eq!(store.prune_webhooks(later).await.unwrap(), (all, 0));
    assert_eq!(count().await, 0);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_horizon_dead_letters_and_replay_redelivers() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        quick_webhooks(c);
        c.webhooks.retry_horizon_seconds = 1;
    })
    .await;
    let (endpoint, _) = register(&app, &receiver.url(), json!(["deposit.credited"])).await;
    let account = app.create_account("acme").await;

    // 410: the endpoint is switched off with the reason; its event waits.
    receiver.script(&[Answer::Status(410)], Answer::Status(500));
    let first = app.deposit(&account, "1", "gone-1").await["transaction"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut view = Value::Null;
    for _ in 0..200 {
        view = app
            .get(&format!("/v1/webhooks/endpoints/{endpoint}"), ADMIN)
            .await
            .1;
        if view["active"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(view["active"], false, "{view}");
    assert!(
        view["disabled_reason"].as_str().unwrap().contains("410"),
        "{view}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "nothing sent while disabled");

    // Back on: the receiver now fails everything, so within the 1 s horizon both events die,
    // in order, and the later one was not held up forever.
    let second = app.deposit(&account, "2", "gone-2").await["transaction"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The event that happens while the endpoint is off is queued for it too, behind the first.
    let in_state = |state: &'static str| {
        let path = format!("/v1/webhooks/endpoints/{endpoint}/deliveries?state={state}");
        let app = &app;
        async move {
            app.get(&path, ADMIN).await.1["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let wait_until = |state: &'static str, n: usize| async move {
        for _ in 0..400 {
            if in_state(state).await == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        in_state(state).await
    };
    assert_eq!(
        wait_until("pending", 2).await,
        2,
        "the second event waits while the endpoint is off"
    );
    let (s, _) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/active"),
            ADMIN,
            None,
            &json!({"active": true, "reason": "partner fixed their receiver"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(wait_until("dead", 2).await, 2);
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| r.event_id.clone())
        .collect();
    assert_eq!(
        first_seen_in_order(&ids),
        vec![first.clone(), second.clone()]
    );
    // Metrics after the scripted run: one gone, two dead, no success, ratio 0. The gauges are
    // refreshed by the dispatcher: wait until they show both dead letters.
    let ep = [("endpoint", endpoint.as_str())];
    let mut text = String::new();
    for _ in 0..200 {
        text = metrics_text(&app).await;
        if metric(&text, "treasuryd_webhook_dead_letter", &ep) == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            &text,
            "treasuryd_webhook_attempts_total",
            &[ep[0], ("outcome", "gone")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_webhook_deliveries_total",
            &[ep[0], ("outcome", "dead")]
        ),
        2.0
    );
    assert_eq!(metric(&text, "treasuryd_webhook_dead_letter", &ep), 2.0);
    assert_eq!(metric(&text, "treasuryd_webhook_pending", &ep), 0.0);
    assert_eq!(
        metric(&text, "treasuryd_webhook_success_ratio_15m", &[]),
        0.0
    );

    // Replay: refused without exactly one selector; the dead-lettered ones come back and are
    // delivered in order; replaying one event again sends it once more under the same id.
    receiver.script(&[], Answer::Ok);
    let (s, e) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            ADMIN,
            None,
            &json!({"dead_lettered": true, "event_id": first, "reason": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "invalid_replay");
    let (s, r) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            ADMIN,
            None,
            &json!({"dead_lettered": true, "reason": "receiver fixed"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"matched": 2, "replayed": 2}));
    wait_for(20, "the replayed events", || {
        receiver.acknowledged() == vec![first.clone(), second.clone()]
    })
    .await;
    let (s, r) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            ADMIN,
            None,
            &json!({"event_id": second, "reason": "partner lost it"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["replayed"], 1);
    wait_for(20, "the single replay", || {
        receiver.acknowledged().len() == 3
    })
    .await;
    assert_eq!(receiver.acknowledged()[2], second);
    // A time range covering both: both again, in order.
    let (s, r) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            ADMIN,
            None,
            &json!({"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z", "reason": "partner restored a backup"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r, json!({"matched": 2, "replayed": 2}));
    wait_for(20, "the range replay", || {
        receiver.acknowledged().len() == 5
    })
    .await;
    assert_eq!(
        receiver.acknowledged()[3..],
        [first.clone(), second.clone()]
    );
    let (s, e) = app
        .post(
            &format!("/v1/webhooks/endpoints/{endpoint}/replay"),
            ADMIN,
            None,
            &json!({"event_id": uuid::Uuid::now_v7().to_string(), "reason": "x"}),
        )
        .await;
    // A missing event named in the body is the caller's mistake about a field.
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(
        (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
        (Some("not_found"), Some("event_id"))
    );
    // Retention: what was delivered goes, with the events nobody waits for any more.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = chrono::Utc::now().timestamp_micros() + 1_000_000;
    assert_eq!(app.store.prune_webhooks(later).await.unwrap(), (2, 2));
    let (_, page) = app
        .get(
            &format!("/v1/webhooks/endpoints/{endpoint}/deliveries"),
            ADMIN,
        )
        .await;
    assert_eq!(page["items"], json!([]));
    let (s, _) = app
        .get(&format!("/v1/webhooks/events/{first}"), ADMIN)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_refuse_internal_addresses_unless_allowed() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| quick_webhooks(c)).await;
    let db = app.db();
    let (endpoint, _) = register(&app, &receiver.url(), json!(["*"])).await;
    app.stop().await.unwrap();
    // The same endpoint after the switch is turned off: nothing may reach it.
    let app = TestApp::spawn_on(db, |c, _| {
        quick_webhooks(c);
        c.webhooks.allow_private_networks = false;
    })
    .await;
    let account = app.create_account("acme").await;
    app.deposit(&account, "1", "ssrf-1").await;
    let mut refused = 0.0;
    for _ in 0..200 {
        let text = metrics_text(&app).await;
        refused = metric(
            &text,
            "treasuryd_webhook_attempts_total",
            &[("endpoint", &endpoint), ("outcome", "refused")],
        );
        if refused >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(refused >= 2.0, "refused attempts: {refused}");
    assert!(receiver.received().is_empty(), "the receiver got nothing");
    let (_, page) = app
        .get(
            &format!("/v1/webhooks/endpoints/{endpoint}/deliveries?state=pending"),
            ADMIN,
        )
        .await;
    let err = page["items"][0]["last_error"].as_str().unwrap();
    // Plain http to 127.0.0.1 fails the scheme check first; a name resolving to an internal
    // address is refused by the resolver (unit test in `webhooks::delivery`).
    assert!(err.contains("https") || err.contains("SSRF"), "{err}");
    app.stop().await.unwrap();
}

on_both_backends!(sigkill_mid_delivery_loses_nothing_and_keeps_order);

async fn sigkill_mid_delivery_loses_nothing_and_keeps_order(backend: Backend) {
    use crate::crash;
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crash::write_config(dir.path(), &db.url);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        "[webhooks]\nallow_private_networks = true\nretry_min_delay_ms = 50\nretry_max_delay_seconds = 1\n\
         request_timeout_seconds = 2\npoll_ms = 20\nlease_seconds = 2\n",
    );
    std::fs::write(&config, text).unwrap();
    let receiver = Receiver::start().await;
    receiver.set_delay(Duration::from_millis(20));
    let (mut child, api) = crash::start(&config, &db.url);
    let client = reqwest::Client::new();
    let post = |path: &str, key: Option<String>, body: Value| {
        let mut req = client
            .post(format!("http://{api}{path}"))
            .bearer_auth(crash::TOKEN)
            .json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        async move {
            let r = req.send().await.unwrap();
            let s = r.status();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = post(
        "/v1/webhooks/endpoints",
        None,
        json!({"url": receiver.url(), "event_types": ["deposit.credited"], "reason": "crash test"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, account) = post(
        "/v1/accounts",
        None,
        json!({"owner": "acme", "network": "ethereum", "asset": "USDT", "kind": "partner", "reason": "crash test"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let account = account["id"].as_str().unwrap().to_owned();
    let mut expected = Vec::new();
    for i in 0..80 {
        let (s, b) = post(
            "/v1/deposits",
            Some(format!("kill-{i}")),
            json!({"account": account, "amount": "1", "reason": "crash test"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        expected.push(b["transaction"]["id"].as_str().unwrap().to_owned());
    }
    wait_for(30, "deliveries under way", || {
        receiver.acknowledged().len() >= 20
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let distinct = |ids: Vec<String>| {
        ids.into_iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    assert!(
        distinct(receiver.acknowledged()) < 80,
        "the kill came mid-delivery"
    );

    let (mut child, _) = crash::start(&config, &db.url);
    wait_for(60, "every event after the restart", || {
        distinct(receiver.acknowledged()) == 80
    })
    .await;
    // In order before and after the kill; the restart goes back to the first delivery whose
    // outcome was not yet written (at most one group of outcomes) and resends from there.
    let position: std::collections::HashMap<&String, usize> =
        expected.iter().enumerate().map(|(i, id)| (id, i)).collect();
    let seen: Vec<usize> = receiver
        .received()
        .iter()
        .map(|r| position[&r.event_id])
        .collect();
    let rewinds: Vec<(usize, usize)> = seen
        .windows(2)
        .filter(|w| w[1] < w[0])
        .map(|w| (w[0], w[1]))
        .collect();
    assert!(
        rewinds.len() <= 1,
        "out of order beyond the restart: {seen:?}"
    );
    for (from, to) in &rewinds {
        assert!(
            from - to < treasuryd::webhooks::delivery::RECORD_GROUP,
            "went back {from} -> {to}"
        );
    }
    assert!(
        seen.windows(2).all(|w| w[1] <= w[0] + 1),
        "an event was skipped: {seen:?}"
    );
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct, (0..80).collect::<Vec<_>>(), "every event arrived");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The outbox's event types about `subject` (payout, deal or journal transaction id), in
/// outbox order, rendered or not.
pub async fn outbox_types(store: &treasuryd::store::DynStore, subject: &str) -> Vec<String> {
    let subject = uuid::Uuid::parse_str(subject).unwrap();
    outbox(store)
        .await
        .into_iter()
        .filter(|e| e.subject_id == Some(subject))
        .map(|e| e.event_type)
        .collect()
}

/// Every outbox event, rendered or not, in outbox order. Undispatched ones are read first: an
/// event only ever moves from undispatched to dispatched, so none slips between the two reads.
pub async fn outbox(
    store: &treasuryd::store::DynStore,
) -> Vec<treasuryd::webhooks::outbox::OutboxEvent> {
    let mut events = store.undispatched_webhook_events(100_000).await.unwrap();
    events.extend(
        store
            .webhook_events_between(0, i64::MAX, 100_000)
            .await
            .unwrap(),
    );
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    events
}
