//! Escrow deals through the API on a manual clock: the happy path, each dispute outcome, the
//! timers (at their deadline and not before, once, across a restart and across two
//! instances), the (state × action × role) matrix, template versions and scope changes.
//! Balances are checked in the ledger against the deal's money summary.

use crate::harness::*;
use crate::on_both_backends;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use treasuryd::clock::ManualClock;
use treasuryd::scope::PilotScope;

on_both_backends!(
    a_deal_runs_from_created_to_settled,
    auto_approve_fires_once_at_its_deadline,
    a_timer_due_while_down_fires_once_after_a_restart,
    releases_and_refunds_are_paid_out_on_chain
);

const DAY: Duration = Duration::from_secs(86_400);
const HOUR: Duration = Duration::from_secs(3_600);

fn scope(categories: &[&str], version: &str) -> PilotScope {
    PilotScope {
        enabled: true,
        country_allowlist: vec!["MN".into()],
        category_allowlist: categories.iter().map(|c| c.to_string()).collect(),
        template_version: version.into(),
    }
}

async fn escrow_app(db: Arc<TestDb>, clock: Arc<ManualClock>) -> TestApp {
    TestApp::spawn_clocked(db, clock, |c, _| {
        c.escrow.timer_poll_ms = 20;
        c.pilot = Some(scope(&["USED_CAR_PRIVATE", "REAL_ESTATE_SALE"], "v1"));
    })
    .await
}

fn clock() -> Arc<ManualClock> {
    use treasuryd::clock::Clock;
    ManualClock::starting_at(treasuryd::clock::SystemClock.now())
}

/// A buyer with 10,000 USDT and a seller with nothing.
async fn parties(app: &TestApp) -> (String, String) {
    let buyer = funded_partner(app, "buyer", "USDT", "10000").await;
    let seller = app.create_account("seller").await;
    (buyer, seller)
}

pub(crate) async fn new_deal(
    app: &TestApp,
    buyer: &str,
    seller: &str,
    amount: &str,
    category: &str,
) -> Value {
    let (s, deal) = app
        .post(
            "/v1/deals",
            TRADER,
            None,
            &json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": category, "amount": amount}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{deal}");
    deal
}

pub(crate) async fn act(
    app: &TestApp,
    id: &str,
    action: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    app.post(&format!("/v1/deals/{id}/{action}"), token, None, &body)
        .await
}

pub(crate) async fn upload(app: &TestApp, id: &str, kind: &str) -> String {
    let r = app
        .client
        .post(app.url(&format!("/v1/deals/{id}/evidence")))
        .bearer_auth(TRADER)
        .header("content-type", "image/jpeg")
        .header("x-evidence-type", kind)
        .body(format!("jpeg bytes of {id} {kind}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let e: Value = r.json().await.unwrap();
    e["id"].as_str().unwrap().to_owned()
}

async fn deal(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/v1/deals/{id}"), TRADER).await.1
}

async fn kinds(app: &TestApp, id: &str) -> Vec<String> {
    let (_, t) = app.get(&format!("/v1/deals/{id}/timeline"), OPERATOR).await;
    t["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

async fn balances(app: &TestApp, account: &str) -> (String, String) {
    let a = app.account(account).await;
    (
        a["available"].as_str().unwrap().to_owned(),
        a["held"].as_str().unwrap().to_owned(),
    )
}

fn b(available: &str, held: &str) -> (String, String) {
    (available.to_owned(), held.to_owned())
}

/// Funds and delivers (with a photo) a new 1,000 USDT MN used-car deal; returns its id.
async fn delivered(app: &TestApp, buyer: &str, seller: &str) -> String {
    let id = new_deal(app, buyer, seller, "1000", "USED_CAR_PRIVATE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, d) = act(app, &id, "fund", TRADER, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    let photo = upload(app, &id, "PHOTO").await;
    let (s, d) = act(app, &id, "deliver", TRADER, json!({"evidence": [photo]})).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    id
}

async fn wait_state(app: &TestApp, id: &str, state: &str) -> Value {
    for _ in 0..200 {
        let d = deal(app, id).await;
        if d["state"] == state {
            return d;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("deal {id} never reached {state}: {}", deal(app, id).await);
}

async fn a_deal_runs_from_created_to_settled(backend: Backend) {
    let app = escrow_app(Arc::new(TestDb::new(backend).await), clock()).await;
    let (buyer, seller) = parties(&app).await;
    let created = new_deal(&app, &buyer, &seller, "1000", "USED_CAR_PRIVATE").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "CREATED");
    assert_eq!(created["template"]["id"], "MN_USED_CAR_PRIVATE_v1");
    assert_eq!(created["template"]["currency"]["code"], "MNT");
    assert_eq!(
        (
            created["money"]["immediate"].as_str(),
            created["money"]["holdback"].as_str()
        ),
        (Some("850.000000"), Some("150.000000"))
    );
    assert_eq!(created["allowed_actions"], json!(["fund"]));

    let (s, d) = act(&app, &id, "fund", TRADER, json!({})).await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("FUNDED")),
        "{d}"
    );
    assert_eq!(
        balances(&app, &buyer).await,
        b("9000.000000", "1000.000000")
    );

    // The template wants evidence for delivery.
    let (s, e) = act(&app, &id, "deliver", TRADER, json!({})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("evidence_required"))
    );
    let photo = upload(&app, &id, "PHOTO").await;
    let (s, d) = act(&app, &id, "deliver", TRADER, json!({"evidence": [photo]})).await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("INSPECTION")),
        "{d}"
    );
    assert_eq!(balances(&app, &seller).await, b("850.000000", "0.000000"));
    assert_eq!(balances(&app, &buyer).await, b("9000.000000", "150.000000"));
    assert_eq!(d["timers"][0]["kind"], "AUTO_APPROVE");
    assert_eq!(d["timers"][0]["remaining_seconds"], 3 * 86_400);
    assert_eq!(d["money"]["released"], "850.000000");
    assert_eq!(d["money"]["held"], "150.000000");
    assert_eq!(d["evidence"][0]["type"], "PHOTO");
    assert_eq!(d["allowed_actions"], json!(["approve", "raise_issue"]));

    let (s, d) = act(&app, &id, "approve", TRADER, json!({})).await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("SETTLED")),
        "{d}"
    );
    assert_eq!(balances(&app, &seller).await, b("1000.000000", "0.000000"));
    assert_eq!(balances(&app, &buyer).await, b("9000.000000", "0.000000"));
    assert_eq!(d["money"]["released"], "1000.000000");
    assert_eq!(d["money"]["held"], "0.000000");
    assert_eq!(d["timers"][0]["state"], "cancelled");
    assert_eq!(
        kinds(&app, &id).await,
        [
            "CREATED",
            "LEDGER",
            "FUNDED",
            "EVIDENCE",
            "LEDGER",
            "DELIVERED",
            "INSPECTION",
            "TIMER_SET",
            "TIMER_CANCELLED",
            "LEDGER",
            "APPROVED",
            "SETTLED"
        ]
    );
    // Partners hear of each step through the webhook outbox, in order.
    assert_eq!(
        crate::webhook_delivery::outbox_types(&app.store, &id).await,
        [
            "deal.created",
            "deal.funded",
            "deal.delivered",
            "deal.inspection",
            "deal.timer_set",
            "deal.approved",
            "deal.settled"
        ]
    );
    // The evidence is kept by content.
    let bytes = app
        .get_text(&format!("/v1/deals/{id}/evidence/{photo}"), OPERATOR)
        .await;
    assert_eq!(bytes, format!("jpeg bytes of {id} PHOTO"));
    // Lists narrow by state, country, category and template version.
    let ids = |page: Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = app
        .get(
            "/v1/deals?state=SETTLED&country=MN&category=USED_CAR_PRIVATE&template_version=1",
            OPERATOR,
        )
        .await;
    assert_eq!(ids(page), vec![id.clone()]);
    for miss in [
        "state=ISSUE",
        "country=KR",
        "category=REAL_ESTATE_SALE",
        "template_version=2",
    ] {
        let (_, page) = app.get(&format!("/v1/deals?{miss}"), OPERATOR).await;
        assert_eq!(ids(page), Vec::<String>::new(), "{miss}");
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn auto_approve_fires_once_at_its_deadline(backend: Backend) {
    let clock = clock();
    let app = escrow_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let (buyer, seller) = parties(&app).await;
    let id = delivered(&app, &buyer, &seller).await;
    clock.advance(3 * DAY - Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let d = deal(&app, &id).await;
    assert_eq!(d["state"], "INSPECTION", "not before its deadline");
    assert_eq!(d["timers"][0]["remaining_seconds"], 1);
    clock.advance(Duration::from_secs(1));
    let d = wait_state(&app, &id, "SETTLED").await;
    assert_eq!(d["timers"][0]["state"], "fired");
    assert_eq!(balances(&app, &seller).await, b("1000.000000", "0.000000"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let k = kinds(&app, &id).await;
    assert_eq!(k.iter().filter(|k| *k == "TIMER_FIRED").count(), 1, "{k:?}");
    assert_eq!(k.iter().filter(|k| *k == "SETTLED").count(), 1);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_timer_due_while_down_fires_once_after_a_restart(backend: Backend) {
    let clock = clock();
    let first = escrow_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let (buyer, seller) = parties(&first).await;
    let id = delivered(&first, &buyer, &seller).await;
    let db = first.db();
    first.stop().await.unwrap();
    clock.advance(5 * DAY);
    let app = escrow_app(db, clock.clone()).await;
    let d = wait_state(&app, &id, "SETTLED").await;
    assert_eq!(d["money"]["released"], "1000.000000");
    assert_eq!(balances(&app, &seller).await, b("1000.000000", "0.000000"));
    let k = kinds(&app, &id).await;
    assert_eq!(k.iter().filter(|k| *k == "TIMER_FIRED").count(), 1, "{k:?}");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Two instances on one PostgreSQL, one clock: 12 deals come due at once; each timer fires
/// once and each seller is paid exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    treasuryd_skip_postgres,
    ignore = "built with TREASURYD_TEST_POSTGRES=skip"
)]
async fn two_instances_never_fire_a_timer_twice() {
    let clock = clock();
    let db = Arc::new(TestDb::new(Backend::Postgres).await);
    let a = escrow_app(db.clone(), clock.clone()).await;
    let b_app = escrow_app(db, clock.clone()).await;
    let buyer = funded_partner(&a, "buyer", "USDT", "20000").await;
    let mut deals = Vec::new();
    for i in 0..12 {
        let seller = a.create_account(&format!("seller-{i}")).await;
        let app = if i % 2 == 0 { &a } else { &b_app };
        deals.push((delivered(app, &buyer, &seller).await, seller));
    }
    clock.advance(4 * DAY);
    for (id, seller) in &deals {
        wait_state(&a, id, "SETTLED").await;
        assert_eq!(balances(&a, seller).await, b("1000.000000", "0.000000"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (id, _) in &deals {
        let k = kinds(&a, id).await;
        assert_eq!(k.iter().filter(|k| *k == "TIMER_FIRED").count(), 1, "{k:?}");
    }
    assert_eq!(balances(&a, &buyer).await, b("8000.000000", "0.000000"));
    a.verify_clean().await;
    a.stop().await.unwrap();
    b_app.stop().await.unwrap();
}

/// Each outcome kind settles every unit held; outcomes outside the template, offsets above
/// the cap, a missing reason and the wrong role are refused and change nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disputes_resolve_only_as_the_template_allows() {
    let app = escrow_app(Arc::new(TestDb::new(Backend::Sqlite).await), clock()).await;
    let (buyer, seller) = parties(&app).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = delivered(&app, &buyer, &seller).await;
        let (s, e) = act(
            &app,
            &id,
            "issue",
            TRADER,
            json!({"reason_code": "BOGUS", "detail": "x"}),
        )
        .await;
        assert_eq!(
            (s, e["error"]["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("reason_code"))
        );
        let photo = upload(&app, &id, "PHOTO").await;
        let (s, d) = act(&app, &id, "issue", TRADER, json!({"reason_code": "MISSING_DOCUMENTS", "detail": "no registration papers", "evidence": [photo]})).await;
        assert_eq!(
            (s, d["state"].as_str()),
            (StatusCode::OK, Some("ISSUE")),
            "{d}"
        );
        assert_eq!(d["issue"]["offset_cap"], "50.000000");
        assert_eq!(d["timers"][1]["kind"], "DISPUTE_TTL");
        assert_eq!(
            d["timers"][0]["state"], "cancelled",
            "AUTO_APPROVE ends with the issue"
        );
        ids.push(id);
    }
    assert_eq!(balances(&app, &seller).await, b("2550.000000", "0.000000"));
    assert_eq!(balances(&app, &buyer).await, b("7000.000000", "450.000000"));
    let before = kinds(&app, &ids[0]).await.len();
    for (token, body, status, code) in [
        (
            TRADER,
            json!({"outcome": "RELEASE_FULL", "reason": "x"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            ADMIN,
            json!({"outcome": "RELEASE_FULL", "reason": "x"}),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            OPERATOR,
            json!({"outcome": "RELEASE_FULL"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
        ),
        (
            OPERATOR,
            json!({"outcome": "RELEASE_FULL", "reason": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "reason_required",
        ),
        (
            OPERATOR,
            json!({"outcome": "SPLIT_EVENLY", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            OPERATOR,
            json!({"outcome": "OFFSET", "offset": "50.000001", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "offset_above_cap",
        ),
        (
            OPERATOR,
            json!({"outcome": "OFFSET", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing_field",
        ),
        (
            OPERATOR,
            json!({"outcome": "REFUND_FULL", "offset": "1", "reason": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ] {
        let (s, e) = act(&app, &ids[0], "resolve", token, body.clone()).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}: {e}"
        );
    }
    assert_eq!(
        kinds(&app, &ids[0]).await.len(),
        before,
        "refusals change nothing"
    );
    assert_eq!(deal(&app, &ids[0]).await["state"], "ISSUE");

    let (s, d) = act(
        &app,
        &ids[0],
        "resolve",
        OPERATOR,
        json!({"outcome": "OFFSET", "offset": "50", "reason": "papers missing, seller agreed"}),
    )
    .await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("SETTLED")),
        "{d}"
    );
    assert_eq!(
        (
            d["money"]["released"].as_str(),
            d["money"]["offset"].as_str(),
            d["money"]["held"].as_str()
        ),
        (Some("950.000000"), Some("50.000000"), Some("0.000000"))
    );
    assert_eq!(d["resolution"]["by"], "test-operator");
    let (_, d) = act(
        &app,
        &ids[1],
        "resolve",
        OPERATOR,
        json!({"outcome": "REFUND_FULL", "reason": "car never delivered"}),
    )
    .await;
    assert_eq!(
        (
            d["money"]["refunded"].as_str(),
            d["money"]["released"].as_str()
        ),
        (Some("150.000000"), Some("850.000000"))
    );
    let (_, d) = act(
        &app,
        &ids[2],
        "resolve",
        OPERATOR,
        json!({"outcome": "RELEASE_FULL", "reason": "claim unfounded"}),
    )
    .await;
    assert_eq!(d["money"]["released"], "1000.000000");
    // Seller: 950 + 850 + 1000; buyer: 7000 + 50 + 150.
    assert_eq!(balances(&app, &seller).await, b("2800.000000", "0.000000"));
    assert_eq!(balances(&app, &buyer).await, b("7200.000000", "0.000000"));
    let (_, offsets) = app
        .get(&format!("/v1/journal?kind=OFFSET&account={buyer}"), ADMIN)
        .await;
    assert_eq!(offsets["items"].as_array().unwrap().len(), 1);
    let (_, refunds) = app
        .get(&format!("/v1/journal?kind=REFUND&account={buyer}"), ADMIN)
        .await;
    assert_eq!(refunds["items"].as_array().unwrap().len(), 1);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// DISPUTE_TTL runs out: the template says escalate, so funds stay held, the deal stays in
/// ISSUE marked escalated, and the dispute queue puts the most urgent first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_dispute_escalates_and_the_queue_is_sorted_by_ttl() {
    let clock = clock();
    let app = escrow_app(Arc::new(TestDb::new(Backend::Sqlite).await), clock.clone()).await;
    let (buyer, seller) = parties(&app).await;
    let raise = |id: String| {
        let app = &app;
        async move {
            let photo = upload(app, &id, "PHOTO").await;
            let (s, _) = act(app, &id, "issue", TRADER, json!({"reason_code": "UNDISCLOSED_DAMAGE", "detail": "bent frame", "evidence": [photo]})).await;
            assert_eq!(s, StatusCode::OK);
            id
        }
    };
    let older = raise(delivered(&app, &buyer, &seller).await).await;
    clock.advance(10 * HOUR);
    let newer = raise(delivered(&app, &buyer, &seller).await).await;
    let (s, _) = app.get("/v1/admin/disputes", TRADER).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (_, q) = app.get("/v1/admin/disputes", OPERATOR).await;
    let order: Vec<&str> = q["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deal"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [older.as_str(), newer.as_str()]);
    assert_eq!(q["items"][0]["remaining_seconds"], 38 * 3_600);

    clock.advance(38 * HOUR);
    for _ in 0..100 {
        if deal(&app, &older).await["issue"]["escalated"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = deal(&app, &older).await;
    assert_eq!(
        (d["state"].as_str(), d["issue"]["escalated"].as_bool()),
        (Some("ISSUE"), Some(true)),
        "{d}"
    );
    assert_eq!(d["money"]["held"], "150.000000", "funds stay held");
    assert!(kinds(&app, &older).await.contains(&"ESCALATED".to_owned()));
    assert_eq!(deal(&app, &newer).await["issue"]["escalated"], false);
    let (_, q) = app.get("/v1/admin/disputes", OPERATOR).await;
    assert_eq!(q["items"][0]["deal"]["id"], older.as_str(), "expired first");
    assert_eq!(q["items"][0]["remaining_seconds"], 0);
    // An Operator can still resolve it.
    let (s, d) = act(
        &app,
        &older,
        "resolve",
        OPERATOR,
        json!({"outcome": "OFFSET", "offset": "150", "reason": "frame damage confirmed"}),
    )
    .await;
    assert_eq!(
        (s, d["state"].as_str()),
        (StatusCode::OK, Some("SETTLED")),
        "{d}"
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Every (state × action × role): exactly the rule's cell is allowed (and listed in
/// `allowed_actions`); every other is refused with 403 or 409 and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_action_role_matrix() {
    let app = escrow_app(Arc::new(TestDb::new(Backend::Sqlite).await), clock()).await;
    let (buyer, seller) = parties(&app).await;
    let created = new_deal(&app, &buyer, &seller, "100", "USED_CAR_PRIVATE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let funded = new_deal(&app, &buyer, &seller, "100", "USED_CAR_PRIVATE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    act(&app, &funded, "fund", TRADER, json!({})).await;
    let inspection = delivered(&app, &buyer, &seller).await;
    let issue = delivered(&app, &buyer, &seller).await;
    let photo = upload(&app, &issue, "PHOTO").await;
    act(
        &app,
        &issue,
        "issue",
        TRADER,
        json!({"reason_code": "NOT_AS_DESCRIBED", "detail": "x", "evidence": [photo]}),
    )
    .await;
    let settled = delivered(&app, &buyer, &seller).await;
    act(&app, &settled, "approve", TRADER, json!({})).await;
    let actions = [
        ("fund", "CREATED", TRADER),
        ("deliver", "FUNDED", TRADER),
        ("approve", "INSPECTION", TRADER),
        ("issue", "INSPECTION", TRADER),
        ("resolve", "ISSUE", OPERATOR),
    ];
    let roles = [
        (ADMIN, "admin"),
        (TRADER, "trader"),
        (APPROVER, "approver"),
        (OPERATOR, "operator"),
    ];
    for (id, state) in [
        (&created, "CREATED"),
        (&funded, "FUNDED"),
        (&inspection, "INSPECTION"),
        (&issue, "ISSUE"),
        (&settled, "SETTLED"),
    ] {
        assert_eq!(deal(&app, id).await["state"], state);
        for (token, role) in roles {
            let listed =
                app.get(&format!("/v1/deals/{id}"), token).await.1["allowed_actions"].clone();
            let expected: Vec<&str> = actions
                .iter()
                .filter(|(_, s, t)| *s == state && *t == token)
                .map(|(a, _, _)| if *a == "issue" { "raise_issue" } else { *a })
                .collect();
            assert_eq!(listed, json!(expected), "{state} as {role}");
            for (action, allowed_state, allowed_token) in actions {
                if allowed_state == state && allowed_token == token {
                    continue;
                }
                let before = (
                    deal(&app, id).await,
                    kinds(&app, id).await.len(),
                    balances(&app, &buyer).await,
                    balances(&app, &seller).await,
                );
                let (s, e) = act(&app, id, action, token, json!({"evidence": [], "reason_code": "NOT_AS_DESCRIBED", "detail": "x", "outcome": "RELEASE_FULL", "reason": "x"})).await;
                let want = if allowed_token == token {
                    StatusCode::CONFLICT
                } else {
                    StatusCode::FORBIDDEN
                };
                assert_eq!(s, want, "{action} on {state} as {role}: {e}");
                assert!(
                    e["error"]["message"]
                        .as_str()
                        .unwrap()
                        .contains("allowed for you"),
                    "{e}"
                );
                let after = (
                    deal(&app, id).await,
                    kinds(&app, id).await.len(),
                    balances(&app, &buyer).await,
                    balances(&app, &seller).await,
                );
                assert_eq!(
                    before, after,
                    "{action} on {state} as {role} changed something"
                );
            }
        }
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// A v2 template and a wider scope arrive while deals run: deals created before keep v1's
/// parameters; new ones take v2; narrowing the scope refuses new deals only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_versions_and_scope_changes_touch_new_deals_only() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
    let v1 = std::fs::read_to_string(shipped.join("MN_USED_CAR_PRIVATE_v1.json")).unwrap();
    std::fs::write(dir.path().join("MN_USED_CAR_PRIVATE_v1.json"), &v1).unwrap();
    std::fs::write(
        dir.path().join("MN_USED_CAR_PRIVATE_v2.json"),
        v1.replace("\"version\": 1", "\"version\": 2")
            .replace("\"holdbackRatio\": 0.15", "\"holdbackRatio\": 0.2")
            .replace("\"immediateRatio\": 0.85", "\"immediateRatio\": 0.8")
            .replace(
                "\"UNDISCLOSED_DAMAGE\": 0.15",
                "\"UNDISCLOSED_DAMAGE\": 0.2",
            ),
    )
    .unwrap();
    let templates = dir.path().to_owned();
    let app = TestApp::spawn_clocked(
        Arc::new(TestDb::new(Backend::Sqlite).await),
        clock(),
        move |c, _| {
            c.escrow.templates_dir = templates;
            c.escrow.timer_poll_ms = 20;
        },
    )
    .await;
    let (buyer, seller) = parties(&app).await;
    let body = |v: &str| json!({"enabled": true, "country-allowlist": ["MN"], "category-allowlist": ["USED_CAR_PRIVATE"], "template-version": v, "reason": "rollout"});
    let (s, e) = app.post("/v1/deals", TRADER, None, &json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": "USED_CAR_PRIVATE", "amount": "100"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("out_of_scope")),
        "closed until set"
    );
    app.call(
        reqwest::Method::PUT,
        "/v1/pilot/scope",
        ADMIN,
        Some(&body("v1")),
    )
    .await;
    let old = new_deal(&app, &buyer, &seller, "1000", "USED_CAR_PRIVATE").await;
    assert_eq!(old["template"]["id"], "MN_USED_CAR_PRIVATE_v1");
    let old_id = old["id"].as_str().unwrap().to_owned();
    act(&app, &old_id, "fund", TRADER, json!({})).await;

    app.call(
        reqwest::Method::PUT,
        "/v1/pilot/scope",
        ADMIN,
        Some(&body("v2")),
    )
    .await;
    let new = new_deal(&app, &buyer, &seller, "1000", "USED_CAR_PRIVATE").await;
    assert_eq!(new["template"]["id"], "MN_USED_CAR_PRIVATE_v2");
    assert_eq!(new["money"]["holdback"], "200.000000");
    let photo = upload(&app, &old_id, "PHOTO").await;
    let (_, d) = act(
        &app,
        &old_id,
        "deliver",
        TRADER,
        json!({"evidence": [photo]}),
    )
    .await;
    assert_eq!(
        (
            d["template"]["id"].as_str(),
            d["money"]["released"].as_str()
        ),
        (Some("MN_USED_CAR_PRIVATE_v1"), Some("850.000000")),
        "{d}"
    );

    // Narrowed: no new deals, the running one completes.
    let closed = json!({"enabled": false, "country-allowlist": ["MN"], "category-allowlist": ["USED_CAR_PRIVATE"], "template-version": "v2", "reason": "rollback"});
    app.call(
        reqwest::Method::PUT,
        "/v1/pilot/scope",
        ADMIN,
        Some(&closed),
    )
    .await;
    let (s, e) = app.post("/v1/deals", TRADER, None, &json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": "USED_CAR_PRIVATE", "amount": "100"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("out_of_scope"))
    );
    let (s, d) = act(&app, &old_id, "approve", TRADER, json!({})).await;
    assert_eq!((s, d["state"].as_str()), (StatusCode::OK, Some("SETTLED")));
    assert_eq!(balances(&app, &seller).await, b("1000.000000", "0.000000"));
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Seven deals on a manual clock with known outcomes; the Go/No-Go report's figures equal
/// the ones computed by hand here, through the API (JSON and Markdown) and the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_no_go_report_matches_figures_computed_by_hand() {
    let clock = clock();
    let t0 = treasuryd::clock::Clock::now(clock.as_ref());
    let db = Arc::new(TestDb::new(Backend::Sqlite).await);
    let app = escrow_app(db.clone(), clock.clone()).await;
    let (buyer, seller) = parties(&app).await;
    let (a, b_deal, c, d, e) = (
        delivered(&app, &buyer, &seller).await,
        delivered(&app, &buyer, &seller).await,
        delivered(&app, &buyer, &seller).await,
        delivered(&app, &buyer, &seller).await,
        delivered(&app, &buyer, &seller).await,
    );
    let f = new_deal(&app, &buyer, &seller, "1000", "USED_CAR_PRIVATE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = new_deal(&app, &buyer, &seller, "1000", "REAL_ESTATE_SALE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    act(&app, &g, "fund", TRADER, json!({})).await;
    let contract = upload(&app, &g, "CONTRACT_PDF").await;
    act(&app, &g, "deliver", TRADER, json!({"evidence": [contract]})).await;
    for id in [&d, &e] {
        let photo = upload(&app, id, "PHOTO").await;
        let (s, _) = act(
            &app,
            id,
            "issue",
            TRADER,
            json!({"reason_code": "MISSING_DOCUMENTS", "detail": "no papers", "evidence": [photo]}),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
    }
    clock.advance(HOUR);
    act(&app, &a, "approve", TRADER, json!({})).await; // settles in 3,600 s
    clock.advance(HOUR);
    act(
        &app,
        &d,
        "resolve",
        OPERATOR,
        json!({"outcome": "OFFSET", "offset": "50", "reason": "agreed"}),
    )
    .await; // 7,200 s, within TTL
    clock.advance(3 * DAY - 2 * HOUR);
    // AUTO_APPROVE settles b and c at 259,200 s; e's DISPUTE_TTL (48 h) escalates it.
    wait_state(&app, &b_deal, "SETTLED").await;
    wait_state(&app, &c, "SETTLED").await;
    for _ in 0..100 {
        if deal(&app, &e).await["issue"]["escalated"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    act(
        &app,
        &e,
        "resolve",
        OPERATOR,
        json!({"outcome": "RELEASE_FULL", "reason": "papers arrived late"}),
    )
    .await; // 259,200 s, after its TTL
    act(&app, &g, "approve", TRADER, json!({})).await; // 259,200 s
    assert_eq!(deal(&app, &f).await["state"], "CREATED");
    for (severity, at) in [
        ("SEV2", t0 + 1),
        ("SEV1", t0 + 2),
        ("SEV0", t0 - 10_000_000),
    ] {
        let at = treasuryd::domain::micros_to_rfc3339(at);
        let (s, i) = app
            .post(
                "/v1/incidents",
                OPERATOR,
                None,
                &json!({"severity": severity, "summary": "timer runner lag", "at": at}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{i}");
    }
    let (from, to) = (
        treasuryd::domain::micros_to_rfc3339(t0 - 1_000_000),
        treasuryd::domain::micros_to_rfc3339(t0 + 10 * 86_400_000_000),
    );
    let path = format!(
        "/v1/reports/go-no-go?from={}&to={}",
        urlencode(&from),
        urlencode(&to)
    );
    let (s, _) = app.get(&path, TRADER).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, r2) = app.get(&path, OPERATOR).await;
    assert_eq!(s, StatusCode::OK, "{r2}");
    let o = &r2["overall"];
    assert_eq!(o["deals"], 7);
    assert_eq!(o["by_state"], json!({"CREATED": 1, "SETTLED": 6}));
    assert_eq!(
        o["settlement_completion"],
        json!({"count": 6, "of": 7, "ratio": "0.8571"})
    );
    // (3,600 + 7,200 + 4 × 259,200) / 6 = 174,600; p95 by nearest rank: the 6th of 6.
    assert_eq!(o["average_time_to_settle_seconds"], 174_600);
    assert_eq!(o["p95_time_to_settle_seconds"], 259_200);
    assert_eq!(
        o["dispute_rate"],
        json!({"count": 2, "of": 7, "ratio": "0.2857"})
    );
    assert_eq!(
        o["evidence_completeness"],
        json!({"count": 2, "of": 2, "ratio": "1"})
    );
    assert_eq!(
        o["admin_intervention"],
        json!({"count": 2, "of": 7, "ratio": "0.2857"})
    );
    assert_eq!(
        o["disputes_within_ttl"],
        json!({"count": 1, "of": 2, "ratio": "0.5"})
    );
    assert_eq!(
        r2["critical_incidents"], 1,
        "SEV1 inside the period; SEV0 before it"
    );
    let passes: Vec<(&str, &str, bool)> = r2["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap(),
                c["actual"].as_str().unwrap(),
                c["pass"].as_bool().unwrap(),
            )
        })
        .collect();
    // Each category against its own target (real estate 30 days, used cars 7); the overall
    // 2.02 days of the earlier single criterion is (259,200 + 5 × 157,680) / 6 s.
    assert_eq!(
        passes,
        [
            ("Settlement completion rate", "85.71% (6/7)", false),
            (
                "Average time to settle (REAL_ESTATE_SALE)",
                "3.00 days (259200 s)",
                true
            ),
            (
                "Average time to settle (USED_CAR_PRIVATE)",
                "1.82 days (157680 s)",
                true
            ),
            ("Dispute rate", "28.57% (2/7)", false),
            ("No critical incidents (SEV0/SEV1) recorded", "1", false),
            ("Would use again (survey)", "n/a (no survey given)", false),
        ]
    );
    assert_eq!(r2["go"], false);
    let scopes = r2["by_scope"].as_array().unwrap();
    assert_eq!(scopes.len(), 2);
    assert_eq!(
        (
            scopes[0]["category"].as_str(),
            scopes[0]["figures"]["deals"].as_u64()
        ),
        (Some("REAL_ESTATE_SALE"), Some(1))
    );
    assert_eq!(
        scopes[1]["figures"]["settlement_completion"]["ratio"],
        "0.8333"
    );

    let md = app
        .get_text(&format!("{path}&format=markdown"), ADMIN)
        .await;
    assert!(md.contains("Decision: **NO-GO**"), "{md}");
    assert!(
        md.contains("| Settlement completion rate | > 90% | 85.71% (6/7) | FAIL |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| Average time to settle (USED_CAR_PRIVATE) | < 7 days | 1.82 days (157680 s) | PASS |"
        ),
        "{md}"
    );
    // One scope judged alone, with the survey.
    let (s, used_cars) = app
        .get(
            &format!(
                "{path}&category=USED_CAR_PRIVATE&survey_respondents=10&survey_would_use_again=8"
            ),
            ADMIN,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{used_cars}");
    assert_eq!(used_cars["overall"]["deals"], 6, "{used_cars}");
    let survey = used_cars["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "Would use again (survey)")
        .unwrap()
        .clone();
    assert_eq!(
        (survey["actual"].as_str(), survey["pass"].as_bool()),
        (Some("80.0% (8/10)"), Some(true))
    );
    let (s, e) = app
        .get(
            &format!("{path}&survey_respondents=3&survey_would_use_again=4"),
            ADMIN,
        )
        .await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("survey_would_use_again")
        )
    );

    // The CLI prints the same report from the database.
    let out = std::process::Command::new(crate::crash::binary())
        .args(["report", "go-no-go", "--from", &from, "--to", &to, "--json"])
        .env("TREASURYD__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli, r2);

    // The audit exports: one timeline line per event, one journal row per posting.
    let (_, t) = app.get(&format!("/v1/deals/{a}/timeline"), OPERATOR).await;
    let events_of_a = t["items"].as_array().unwrap().len();
    let csv = app
        .get_text("/v1/exports/timelines?format=csv", ADMIN)
        .await;
    assert!(
        csv.starts_with("deal_id,template,at,kind,actor,detail\n"),
        "{csv}"
    );
    assert_eq!(
        csv.lines().filter(|l| l.starts_with(a.as_str())).count(),
        events_of_a
    );
    let (s, _) = app.get("/v1/exports/journal", OPERATOR).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::crash::binary())
        .args(["export", "--out", dir.path().to_str().unwrap()])
        .env("TREASURYD__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = std::fs::read_to_string(dir.path().join("journal.jsonl")).unwrap();
    let seller_released: i128 = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["account"] == seller.as_str() && r["kind"] == "RELEASE")
        .map(|r| r["amount"].as_str().unwrap().parse::<i128>().unwrap())
        .sum();
    // Everything released to the seller: six settled deals of 1,000 less d's offset of 50.
    assert_eq!(seller_released, 5_950_000_000);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("timelines.csv")).unwrap(),
        csv
    );
    app.stop().await.unwrap();
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

/// Against anvil, four deals with on-chain addresses: approved, offset, refunded in full and
/// released in full after an issue. Every release, offset and refund is paid out through the
/// payout engine; chain balances, ledger balances and the money summaries agree.
async fn releases_and_refunds_are_paid_out_on_chain(backend: Backend) {
    use alloy::primitives::U256;
    use treasuryd::chains::evm::EvmClient;
    use treasuryd::dev::chain::DevChain;
    let chain = DevChain::start(&[]).await.unwrap();
    let app = crate::engine::app_on(backend, &chain, "").await;
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(100));
    let (s, _) = app
        .call(
            reqwest::Method::PUT,
            "/v1/pilot/scope",
            ADMIN,
            Some(&json!({"enabled": true, "country-allowlist": ["MN"], "category-allowlist": ["USED_CAR_PRIVATE"], "template-version": "v1", "reason": "pilot"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (buyer, seller) = parties(&app).await;
    let (seller_wallet, buyer_wallet) = (
        crate::engine::destination(0xABCD_EF00),
        crate::engine::destination(0xABCD_EF01),
    );
    let sloppy = seller_wallet.to_checksum(None).to_lowercase();
    assert_ne!(sloppy, seller_wallet.to_checksum(None));
    let request = |seller_address: String| {
        json!({"buyer_account": buyer, "seller_account": seller, "country": "MN", "category": "USED_CAR_PRIVATE", "amount": "1000",
               "seller_payout_address": seller_address, "buyer_refund_address": buyer_wallet.to_checksum(None)})
    };
    let (s, bad) = app.post("/v1/deals", TRADER, None, &request(sloppy)).await;
    assert_eq!(
        (s, bad["error"]["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("seller_payout_address")
        )
    );
    // (outcome after an issue, or None for the buyer's approval), with what each side gets.
    let paths = [
        (None, 1000, 0),
        (
            Some(json!({"outcome": "OFFSET", "offset": "50", "reason": "papers missing"})),
            950,
            50,
        ),
        (
            Some(json!({"outcome": "REFUND_FULL", "reason": "not the car described"})),
            850,
            150,
        ),
        (
            Some(json!({"outcome": "RELEASE_FULL", "reason": "claim unfounded"})),
            1000,
            0,
        ),
    ];
    let mut ids = Vec::new();
    for (resolution, to_seller, to_buyer) in &paths {
        let (s, created) = app
            .post(
                "/v1/deals",
                TRADER,
                None,
                &request(seller_wallet.to_checksum(None)),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{created}");
        let id = created["id"].as_str().unwrap().to_owned();
        act(&app, &id, "fund", TRADER, json!({})).await;
        let photo = upload(&app, &id, "PHOTO").await;
        let (s, d) = act(&app, &id, "deliver", TRADER, json!({"evidence": [photo]})).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        let d = match resolution {
            None => act(&app, &id, "approve", TRADER, json!({})).await.1,
            Some(body) => {
                let photo = upload(&app, &id, "PHOTO").await;
                act(&app, &id, "issue", TRADER, json!({"reason_code": "MISSING_DOCUMENTS", "detail": "no papers", "evidence": [photo]})).await;
                act(&app, &id, "resolve", OPERATOR, body.clone()).await.1
            }
        };
        assert_eq!(d["state"], "SETTLED", "{d}");
        let units = |v: &Value| {
            v.as_str()
                .unwrap()
                .replace('.', "")
                .parse::<i128>()
                .unwrap()
        };
        assert_eq!(d["money"]["released"], format!("{to_seller}.000000"));
        assert_eq!(
            units(&d["money"]["offset"]) + units(&d["money"]["refunded"]),
            to_buyer * 1_000_000
        );
        ids.push(id);
    }
    // Payouts: the seller's immediate part of each deal (4), the seller's rest where there is
    // one (approve, offset, release: 3), the buyer's offset and refund (2).
    let mut payouts = Value::Null;
    for _ in 0..600 {
        payouts = app.get("/v1/payouts?limit=500", ADMIN).await.1;
        let items = payouts["items"].as_array().unwrap();
        if items.len() == 9 && items.iter().all(|p| p["state"] == "confirmed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    miner.abort();
    let items = payouts["items"].as_array().unwrap();
    assert!(
        items.len() == 9 && items.iter().all(|p| p["state"] == "confirmed"),
        "{payouts}"
    );
    let client = EvmClient::new(&chain.url).unwrap();
    assert_eq!(
        client
            .token_balance(chain.usdt, seller_wallet)
            .await
            .unwrap(),
        U256::from(3_800_000_000u64),
        "1000 + 950 + 850 + 1000"
    );
    assert_eq!(
        client
            .token_balance(chain.usdt, buyer_wallet)
            .await
            .unwrap(),
        U256::from(200_000_000u64),
        "50 + 150"
    );
    // Everything released went out: the seller's account is empty; the buyer's is back to
    // 10,000 less the 4,000 it paid in, the offset and the refund having been paid out too.
    assert_eq!(balances(&app, &seller).await, b("0.000000", "0.000000"));
    assert_eq!(balances(&app, &buyer).await, b("6000.000000", "0.000000"));
    let k = kinds(&app, &ids[1]).await;
    assert_eq!(
        k.iter().filter(|k| *k == "PAYOUT_REQUESTED").count(),
        3,
        "{k:?}"
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Evidence limits: only the accepted content types, only the template's evidence types, at
/// most `evidence_max_bytes`; a refused upload stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_uploads_are_limited_by_type_and_size() {
    let app = TestApp::spawn_clocked(
        Arc::new(TestDb::new(Backend::Sqlite).await),
        clock(),
        |c, _| {
            c.pilot = Some(scope(&["USED_CAR_PRIVATE"], "v1"));
            c.escrow.evidence_max_bytes = 1_000;
        },
    )
    .await;
    let (buyer, seller) = parties(&app).await;
    let id = new_deal(&app, &buyer, &seller, "100", "USED_CAR_PRIVATE").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = |content_type: &str, kind: &str, body: Vec<u8>, token: &str| {
        app.client
            .post(app.url(&format!("/v1/deals/{id}/evidence")))
            .bearer_auth(token)
            .header("content-type", content_type)
            .header("x-evidence-type", kind)
            .body(body)
            .send()
    };
    let r = send("text/plain", "PHOTO", b"hi".to_vec(), TRADER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = send("image/png", "SELFIE", b"hi".to_vec(), TRADER)
        .await
        .unwrap();
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_evidence_type", "{e}");
    let r = send("image/png", "PHOTO", vec![7; 1_001], TRADER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = send("image/png", "PHOTO", b"hi".to_vec(), OPERATOR)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        deal(&app, &id).await["evidence"],
        json!([]),
        "refusals store nothing"
    );
    let r = send("image/png", "PHOTO", vec![7; 1_000], TRADER)
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        (e["size"].as_u64(), e["type"].as_str()),
        (Some(1_000), Some("PHOTO"))
    );
    app.stop().await.unwrap();
}
