//! The store's contract, run on both databases: the same script of operations on SQLite and
//! on PostgreSQL must give the same answers. Each step asserts what the product promises,
//! and the two transcripts (states, codes, orders; ids and clocks left out) must be equal, so
//! a backend that drifts from the other fails here first.
//!
//! Covered: engine lease takeover and fencing, payout compare-and-set transitions (also under
//! concurrent requests), idempotency lookups, allowlist changes, timer claims and their order,
//! and the order of the webhook outbox.

use crate::deals::{act, new_deal, upload};
use crate::harness::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use treasuryd::clock::{Clock, ManualClock};
use treasuryd::timers::CLAIM_MICROS;

/// What one backend answered, step by step.
#[derive(Default)]
struct Transcript(Vec<(String, Value)>);

impl Transcript {
    fn note(&mut self, step: &str, answer: Value) {
        self.0.push((step.to_owned(), answer));
    }
}

async fn app(backend: Backend, clock: Arc<ManualClock>) -> TestApp {
    TestApp::spawn_clocked(Arc::new(TestDb::new(backend).await), clock, |c, _| {
        c.escrow.timer_poll_ms = 20;
        c.pilot = Some(treasuryd::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
    })
    .await
}

async fn leases(app: &TestApp, t: &mut Transcript) {
    let store = &app.store;
    let now = || treasuryd::clock::SystemClock.now();
    let lease = |l: Option<treasuryd::store::Lease>| {
        l.map_or(Value::Null, |l| json!({"owner": l.owner, "fence": l.fence}))
    };
    let ttl = 400_000;
    let a = store
        .acquire_lease("contract", "a", now(), ttl)
        .await
        .unwrap();
    assert_eq!(lease(a.clone()), json!({"owner": "a", "fence": 1}));
    t.note("lease: a takes a free lease", lease(a));
    let b = store
        .acquire_lease("contract", "b", now(), ttl)
        .await
        .unwrap();
    assert_eq!(
        lease(b.clone()),
        Value::Null,
        "b waits while a's lease runs"
    );
    t.note("lease: b while a holds it", lease(b));
    let a = store
        .acquire_lease("contract", "a", now(), ttl)
        .await
        .unwrap();
    assert_eq!(lease(a.clone()), json!({"owner": "a", "fence": 1}));
    t.note("lease: a renews, same fence", lease(a));
    tokio::time::sleep(Duration::from_micros(2 * ttl as u64)).await;
    let b = store
        .acquire_lease("contract", "b", now(), ttl)
        .await
        .unwrap();
    assert_eq!(lease(b.clone()), json!({"owner": "b", "fence": 2}));
    t.note("lease: b takes an expired lease, next fence", lease(b));
    let a = store
        .acquire_lease("contract", "a", now(), ttl)
        .await
        .unwrap();
    assert_eq!(lease(a.clone()), Value::Null, "a was fenced out");
    t.note("lease: a after losing it", lease(a));
    store.release_lease("contract", "a").await.unwrap();
    let held = store.lease("contract").await.unwrap();
    assert_eq!(lease(held.clone()), json!({"owner": "b", "fence": 2}));
    t.note("lease: a cannot release b's lease", lease(held));
    store.release_lease("contract", "b").await.unwrap();
    let a = store
        .acquire_lease("contract", "a", now(), ttl)
        .await
        .unwrap();
    t.note("lease: a after b released", lease(a));
}

async fn payout(app: &TestApp, account: &str, amount: &str, key: &str) -> String {
    let body = json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": amount});
    let (s, p) = app.post("/v1/payouts", TRADER, Some(key), &body).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

async fn state(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/payouts/{id}"), ADMIN).await.1["state"].clone()
}

fn code(s: StatusCode, body: &Value) -> Value {
    json!([s.as_u16(), body["error"]["code"]])
}

async fn payout_transitions(app: &TestApp, account: &str, t: &mut Transcript) {
    let big = payout(app, account, "150000", "contract-big").await;
    t.note("payout: above four-eyes", state(app, &big).await);
    let approve = |token: &'static str, id: String| async move {
        let (s, b) = app
            .post(
                &format!("/v1/payouts/{id}/approve"),
                token,
                None,
                &json!({}),
            )
            .await;
        code(s, &b)
    };
    let own = approve(TRADER_AS_APPROVER, big.clone()).await;
    assert_eq!(own[0], 403, "{own}");
    t.note("payout: its creator approves", own);
    // Two approvers at once: exactly one moves it.
    let (x, y) = tokio::join!(
        approve(APPROVER, big.clone()),
        approve(APPROVER, big.clone())
    );
    let mut both = vec![x[0].as_u64().unwrap(), y[0].as_u64().unwrap()];
    both.sort();
    assert_eq!(both, vec![200, 409], "{x} {y}");
    t.note("payout: two approvals at once", json!(both));
    t.note("payout: approved", state(app, &big).await);

    let cancel = |id: String| async move {
        let (s, b) = app
            .post(
                &format!("/v1/payouts/{id}/cancel"),
                OPERATOR,
                None,
                &json!({"reason": "contract test"}),
            )
            .await;
        json!([s.as_u16(), b["error"]])
    };
    let small = payout(app, account, "10", "contract-small").await;
    // Cancelling is idempotent: two at once both see the payout cancelled, once.
    let (x, y) = tokio::join!(cancel(small.clone()), cancel(small.clone()));
    assert_eq!((&x, &y), (&json!([200, null]), &json!([200, null])));
    t.note("payout: two cancels at once", json!([x, y]));
    let cancelled = state(app, &small).await;
    assert_eq!(cancelled, "cancelled");
    t.note("payout: cancelled", cancelled);
    let again = approve(APPROVER, small.clone()).await;
    t.note("payout: approving a cancelled payout", again);
    let held = app.account(account).await["held"].clone();
    t.note("payout: held after the cancel", held);
}

async fn idempotency(app: &TestApp, account: &str, t: &mut Transcript) {
    let body = json!({"account": account, "amount": "5", "reason": "contract"});
    let (s1, first) = app
        .post("/v1/deposits", ADMIN, Some("contract-dep"), &body)
        .await;
    let (s2, again) = app
        .post("/v1/deposits", ADMIN, Some("contract-dep"), &body)
        .await;
    assert_eq!(first["id"], again["id"], "{first} {again}");
    t.note(
        "idempotency: the same request twice",
        json!([s1.as_u16(), s2.as_u16()]),
    );
    let other = json!({"account": account, "amount": "6", "reason": "contract"});
    let (s, b) = app
        .post("/v1/deposits", ADMIN, Some("contract-dep"), &other)
        .await;
    assert!(s.is_client_error(), "{b}");
    t.note("idempotency: the key with another body", code(s, &b));
}

async fn allowlists(app: &TestApp, account: &str, t: &mut Transcript) {
    let list = format!("/v1/accounts/{account}/allowlist");
    let (s, b) = app
        .call(
            Method::PUT,
            &list,
            ADMIN,
            Some(&json!({"enforced": true, "reason": "contract"})),
        )
        .await;
    t.note("allowlist: enforce", json!([s.as_u16(), b["enforced"]]));
    let addresses = [DESTINATION, USDT_CONTRACT, USDC_CONTRACT];
    for a in addresses {
        let (s, b) = app
            .post(&format!("{list}/destinations"), ADMIN, None, &json!({"network": "ethereum", "address": a, "label": "contract", "reason": "contract"}))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let remove = |a: &str| {
        let path = format!("{list}/destinations/ethereum/{a}?reason=contract");
        async move { app.call(Method::DELETE, &path, ADMIN, None).await }
    };
    let (s, b) = remove(USDT_CONTRACT).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    t.note("allowlist: remove one", json!(s.as_u16()));
    let (s, b) = remove(USDT_CONTRACT).await;
    t.note("allowlist: remove it again", code(s, &b));
    let (s, b) = app
        .post(&format!("{list}/destinations"), ADMIN, None, &json!({"network": "ethereum", "address": DESTINATION, "label": "again", "reason": "contract"}))
        .await;
    t.note(
        "allowlist: add one already there",
        json!([s.as_u16(), b["error"]["code"]]),
    );
    let (_, b) = app.get(&list, TRADER).await;
    let listed: Vec<Value> = b["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!([d["address"], d["label"]]))
        .collect();
    assert_eq!(listed.len(), 2, "{b}");
    t.note(
        "allowlist: what is listed, in order",
        json!([b["enforced"], listed]),
    );
}

/// Three delivered deals a minute apart; their auto-approve timers are claimed straight from
/// the store at a moment after all are due (the app's own runner, on a clock that stands
/// still, never claims them).
async fn timers(app: &TestApp, clock: &ManualClock, t: &mut Transcript) {
    let buyer = funded_partner(app, "contract-buyer", "USDT", "10000").await;
    let seller = app.create_account("contract-seller").await;
    let mut deals = Vec::new();
    for _ in 0..3 {
        let id = new_deal(app, &buyer, &seller, "100", "USED_CAR_PRIVATE").await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let (s, d) = act(app, &id, "fund", TRADER, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        let photo = upload(app, &id, "PHOTO").await;
        let (s, d) = act(app, &id, "deliver", TRADER, json!({"evidence": [photo]})).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        deals.push(id);
        clock.advance(Duration::from_secs(60));
    }
    let store = &app.store;
    let late = clock.now() + 365 * 86_400_000_000;
    let order = |claimed: &[treasuryd::timers::Timer]| -> Value {
        claimed
            .iter()
            .map(|c| {
                json!([
                    deals.iter().position(|d| *d == c.deal.0.to_string()),
                    c.kind.as_str()
                ])
            })
            .collect()
    };
    let first = store.claim_due_timers(late, "runner-a", 2).await.unwrap();
    assert_eq!(
        order(&first),
        json!([[0, "AUTO_APPROVE"], [1, "AUTO_APPROVE"]])
    );
    t.note("timers: the two due first", order(&first));
    let rest = store.claim_due_timers(late, "runner-b", 10).await.unwrap();
    assert_eq!(
        order(&rest),
        json!([[2, "AUTO_APPROVE"]]),
        "claimed ones are skipped"
    );
    t.note("timers: another runner gets the rest", order(&rest));
    let none = store.claim_due_timers(late, "runner-b", 10).await.unwrap();
    assert!(none.is_empty());
    t.note("timers: nothing left to claim", order(&none));
    let lapsed = store
        .claim_due_timers(late + CLAIM_MICROS + 1, "runner-c", 10)
        .await
        .unwrap();
    assert_eq!(lapsed.len(), 3, "claims lapse");
    t.note("timers: after the claims lapsed", order(&lapsed));
    let id = treasuryd::domain::DealId(deals[0].parse().unwrap());
    let of_deal = store.deal_timers(id).await.unwrap();
    t.note("timers: of one deal", order(&of_deal));
}

/// Event types in outbox order: each undispatched or dispatched event once, by sequence.
async fn outbox(app: &TestApp, t: &mut Transcript) {
    let store = &app.store;
    // Undispatched first: one dispatched meanwhile shows up in both reads, never in neither.
    let mut events = store.undispatched_webhook_events(10_000).await.unwrap();
    events.extend(
        store
            .webhook_events_between(0, i64::MAX, 10_000)
            .await
            .unwrap(),
    );
    events.sort_by_key(|e| e.seq);
    events.dedup_by_key(|e| e.seq);
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert!(!types.is_empty());
    t.note("outbox: event types in order", json!(types));
}

async fn script(backend: Backend) -> Transcript {
    let clock = ManualClock::starting_at(treasuryd::clock::SystemClock.now());
    let app = app(backend, clock.clone()).await;
    let mut t = Transcript::default();
    leases(&app, &mut t).await;
    let account = funded_partner(&app, "contract", "USDT", "1000000").await;
    payout_transitions(&app, &account, &mut t).await;
    idempotency(&app, &account, &mut t).await;
    allowlists(&app, &account, &mut t).await;
    timers(&app, &clock, &mut t).await;
    outbox(&app, &mut t).await;
    app.verify_clean().await;
    app.stop().await.unwrap();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    treasuryd_skip_postgres,
    ignore = "built with TREASURYD_TEST_POSTGRES=skip"
)]
async fn both_databases_keep_the_same_contract() {
    let sqlite = script(Backend::Sqlite).await;
    let postgres = script(Backend::Postgres).await;
    for (i, (s, p)) in sqlite.0.iter().zip(&postgres.0).enumerate() {
        assert_eq!(
            s, p,
            "step {i}: SQLite answered differently from PostgreSQL"
        );
    }
    assert_eq!(sqlite.0.len(), postgres.0.len());
}

crate::on_both_backends!(a_database_made_before_the_re_cut_opens_and_works);

/// A database written by the code before the store re-cut (its dump in `tests/fixtures/`, one
/// per backend: an account, a deposit, a hold and a queued payout) opens under this code with
/// its migrations as they were, reads the same, verifies, and takes new writes.
async fn a_database_made_before_the_re_cut_opens_and_works(backend: Backend) {
    let (db, account, payout) = match backend {
        Backend::Sqlite => (
            TestDb::sqlite_from(include_str!("../fixtures/sqlite-before-store-recut.sql")).await,
            "01a24dfc-6c27-71ca-89bc-29ddec650e95",
            "01a24dfc-8af4-77e4-a6a5-e2b6d810415a",
        ),
        Backend::Postgres => (
            TestDb::postgres_from(include_str!("../fixtures/postgres-before-store-recut.sql"))
                .await,
            "01a24e72-f745-7124-a0d4-106826786ede",
            "01a24e72-fd9c-704a-9c39-f6f3f572fdbf",
        ),
    };
    let app = TestApp::spawn_on(Arc::new(db), |_, _| {}).await;
    let a = app.account(account).await;
    assert_eq!(
        (
            a["owner"].as_str(),
            a["available"].as_str(),
            a["held"].as_str()
        ),
        (Some("acme"), Some("650.000000"), Some("350.000000")),
        "{a}"
    );
    // Migration 0019: the partner account moved to a company named like its owner.
    let (_, companies) = app.get("/v1/companies", ADMIN).await;
    let acme = companies["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "acme")
        .cloned()
        .unwrap_or_else(|| panic!("no company acme: {companies}"));
    assert_eq!(a["company"], acme["id"], "{a}");
    let (s, p) = app.get(&format!("/v1/payouts/{payout}"), ADMIN).await;
    assert_eq!(
        (s, p["state"].as_str()),
        (StatusCode::OK, Some("queued")),
        "{p}"
    );
    let (_, journal) = app.get("/v1/journal?limit=100", ADMIN).await;
    assert_eq!(journal["items"].as_array().unwrap().len(), 3, "{journal}");
    app.deposit(account, "5", "after-the-re-cut").await;
    assert_eq!(app.account(account).await["available"], "655.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}
