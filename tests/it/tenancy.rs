//! Partner companies act only on their own money (issue 19, first part): a company token sees
//! and moves its company's accounts and payouts, another company's answer 404 exactly like
//! missing ones, and every route not yet scoped for companies answers 403 to a company token.

use crate::harness::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use treasuryd::config::TokenConfig;
use treasuryd::domain::Role;

pub(crate) const A_TRADER: &str = "tdk_test_alpha_trader";
pub(crate) const A_ADMIN: &str = "tdk_test_alpha_admin";
pub(crate) const A_APPROVER: &str = "tdk_test_alpha_approver";
pub(crate) const B_TRADER: &str = "tdk_test_beta_trader";
/// B's account's payout destination: an address no test wallet holds.
const DESTINATION: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

crate::on_both_backends!(
    a_company_sees_and_moves_only_its_own_money,
    every_company_route_refuses_another_companys_objects,
    webhooks_go_to_the_companies_an_event_concerns,
    deals_bind_the_buyer_and_the_seller,
    splitting_does_not_dodge_four_eyes,
    a_company_records_only_what_it_owes
);

pub(crate) struct Tenants {
    pub app: TestApp,
    pub a_account: String,
    pub b_account: String,
    pub a_company: String,
    pub b_company: String,
}

async fn company(app: &TestApp, name: &str) -> String {
    let (s, c) = app
        .post(
            "/v1/companies",
            ADMIN,
            None,
            &json!({"name": name, "tier": "M", "reason": "tenancy test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    c["id"].as_str().unwrap().to_owned()
}

async fn funded_account(app: &TestApp, owner: &str, company: &str) -> String {
    let (s, a) = app
        .post(
            "/v1/accounts",
            ADMIN,
            None,
            &json!({"owner": owner, "network": "ethereum", "asset": "USDT", "kind": "partner",
                "company": company, "reason": "tenancy test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{a}");
    assert_eq!(a["company"], company, "{a}");
    let id = a["id"].as_str().unwrap().to_owned();
    app.deposit(&id, "200000", &format!("fund-{owner}")).await;
    id
}

/// Companies A and B with a funded account each, and the daemon restarted with A's trader and
/// admin and B's trader among its tokens.
async fn tenants(backend: Backend) -> Tenants {
    tenants_with(backend, |_| {}).await
}

/// `tenants`, with `configure` applied to the restarted daemon's config.
pub(crate) async fn tenants_with(
    backend: Backend,
    configure: impl FnOnce(&mut treasuryd::config::Config),
) -> Tenants {
    let app = TestApp::spawn(backend).await;
    let a = company(&app, "Alpha Trading").await;
    let b = company(&app, "Beta Logistics").await;
    let a_account = funded_account(&app, "alpha", &a).await;
    let b_account = funded_account(&app, "beta", &b).await;
    let db = app.db();
    app.stop().await.unwrap();
    let tokens = [
        (A_TRADER, "alpha-trader", Role::Trader, &a),
        (A_ADMIN, "alpha-admin", Role::Admin, &a),
        (A_APPROVER, "alpha-approver", Role::Approver, &a),
        (B_TRADER, "beta-trader", Role::Trader, &b),
    ];
    let app = TestApp::spawn_on(db, move |c, _| {
        crate::webhook_delivery::quick_webhooks(c);
        // Four eyes from 100,000 per payout (the test network's), and from 250,000 a company's
        // payouts without approval reach in 24 h.
        c.networks[0].approval_rolling_total = Some("250000".into());
        c.pilot = Some(treasuryd::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
        for (token, name, role, company) in tokens {
            c.auth.tokens.push(TokenConfig {
                name: name.into(),
                role,
                sha256: hex::encode(treasuryd::api::auth::token_digest(token)),
                company: Some(company.parse().unwrap()),
            });
        }
        configure(c);
    })
    .await;
    Tenants {
        app,
        a_account,
        b_account,
        a_company: a.clone(),
        b_company: b,
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn payout(app: &TestApp, token: &str, account: &str, key: &str) -> (StatusCode, Value) {
    payout_of(app, token, account, key, "10").await
}

pub(crate) async fn payout_of(
    app: &TestApp,
    token: &str,
    account: &str,
    key: &str,
    amount: &str,
) -> (StatusCode, Value) {
    app.post(
        "/v1/payouts",
        token,
        Some(key),
        &json!({"account": account, "network": "ethereum", "asset": "USDT",
            "destination": DESTINATION, "amount": amount}),
    )
    .await
}

async fn a_company_sees_and_moves_only_its_own_money(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        b_company,
        ..
    } = tenants(backend).await;

    // The attack: A's trader pays out B's balance. It answers as if B's account did not exist
    // and changes nothing.
    let before = app.footprint().await;
    let (s, body) = payout(&app, A_TRADER, &b_account, "steal").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "account_not_found", "{body}");
    assert_eq!(app.footprint().await, before);
    assert_eq!(app.account(&b_account).await["available"], "200000.000000");

    // Its own account pays out.
    let (s, mine) = payout(&app, A_TRADER, &a_account, "own").await;
    assert!(s.is_success(), "{s} {mine}");
    let (s, theirs) = payout(&app, B_TRADER, &b_account, "theirs").await;
    assert!(s.is_success(), "{s} {theirs}");

    // Reads: A's lists hold only A's rows; B's objects answer 404 as missing ones do.
    let (s, accounts) = app.get("/v1/accounts?limit=500", A_TRADER).await;
    assert_eq!(s, StatusCode::OK, "{accounts}");
    assert_eq!(ids(&accounts), vec![a_account.clone()]);
    let (s, page) = app.get("/v1/payouts?limit=500", A_TRADER).await;
    assert_eq!(s, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), vec![mine["id"].as_str().unwrap().to_owned()]);
    let (s, page) = app
        .get(&format!("/v1/payouts?account={b_account}"), A_TRADER)
        .await;
    assert_eq!((s, ids(&page)), (StatusCode::OK, vec![]), "{page}");
    // The journal: only transactions touching A's accounts, and B's by id answers 404.
    let (s, journal) = app.get("/v1/journal?limit=500", A_TRADER).await;
    assert_eq!(s, StatusCode::OK, "{journal}");
    let entries = journal["items"].as_array().unwrap();
    assert!(!entries.is_empty());
    for tx in entries {
        assert!(
            tx["postings"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["account"] == a_account.as_str()),
            "A sees a transaction not touching its account: {tx}"
        );
    }
    let (_, b_journal) = app
        .get(&format!("/v1/journal?account={b_account}"), ADMIN)
        .await;
    let b_tx = b_journal["items"][0]["id"].as_str().unwrap().to_owned();
    let (s, body) = app.get(&format!("/v1/journal/{b_tx}"), B_TRADER).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (s, _) = app
        .get(
            &format!("/v1/holds/{}", mine["hold_id"].as_str().unwrap()),
            A_TRADER,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        format!("/v1/accounts/{b_account}"),
        format!("/v1/accounts/{b_account}/allowlist"),
        format!("/v1/accounts/{b_account}/deposit-addresses"),
        format!("/v1/payouts/{}", theirs["id"].as_str().unwrap()),
        format!("/v1/journal/{b_tx}"),
        format!("/v1/holds/{}", theirs["hold_id"].as_str().unwrap()),
    ] {
        let (s, body) = app.get(&path, A_TRADER).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        // The same path with the object's id swapped for one that never existed.
        let id = path.split('/').nth(3).unwrap();
        let missing = path.replace(id, &uuid::Uuid::now_v7().to_string());
        let (_, absent) = app.get(&missing, A_TRADER).await;
        assert_eq!(body["error"]["code"], absent["error"]["code"], "{path}");
    }
    // Four eyes inside the company: A's approver approves A's payout over the threshold
    // (100,000), and B's does not exist for A's approver.
    let (s, big_a) = payout_of(&app, A_TRADER, &a_account, "big-a", "150000").await;
    assert_eq!(
        (s, big_a["state"].as_str()),
        (StatusCode::ACCEPTED, Some("pending_approval")),
        "{big_a}"
    );
    let (s, big_b) = payout_of(&app, B_TRADER, &b_account, "big-b", "150000").await;
    assert_eq!(big_b["state"], "pending_approval", "{s} {big_b}");
    let approve = |p: &Value| format!("/v1/payouts/{}/approve", p["id"].as_str().unwrap());
    let (s, body) = app
        .post(&approve(&big_b), A_APPROVER, None, &json!({}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (_, still) = app
        .get(
            &format!("/v1/payouts/{}", big_b["id"].as_str().unwrap()),
            B_TRADER,
        )
        .await;
    assert_eq!(still["state"], "pending_approval", "{still}");
    let (s, body) = app
        .post(&approve(&big_a), A_APPROVER, None, &json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_ne!(body["state"], "pending_approval", "{body}");

    // Staff see both companies.
    let (_, all) = app.get("/v1/accounts?kind=partner&limit=500", ADMIN).await;
    let all = ids(&all);
    assert!(
        all.contains(&a_account) && all.contains(&b_account),
        "{all:?}"
    );

    // A's admin opens accounts for A only.
    let (s, body) = app
        .post(
            "/v1/accounts",
            A_ADMIN,
            None,
            &json!({"owner": "alpha-2", "network": "ethereum", "asset": "USDC", "kind": "partner",
                "company": b_company, "reason": "tenancy test"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "company", "{body}");
    let (s, own) = app
        .post(
            "/v1/accounts",
            A_ADMIN,
            None,
            &json!({"owner": "alpha-2", "network": "ethereum", "asset": "USDC", "kind": "partner",
                "reason": "tenancy test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{own}");
    assert_eq!(
        own["company"],
        app.account(&a_account).await["company"],
        "{own}"
    );

    // Every other route is staff's until it is scoped: read from the OpenAPI document, so a new
    // route fails here until it gets a rule. Each answers 403 and changes nothing.
    let before = app.footprint().await;
    let (_, doc) = app.get("/openapi.json", ADMIN).await;
    let mut refused = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            let upper = method.to_uppercase();
            // The document says who may call it, as the daemon enforces.
            let company =
                treasuryd::api::auth::COMPANY_ROUTES.contains(&(upper.as_str(), path.as_str()));
            let who = if company {
                json!(["staff", "company"])
            } else {
                json!(["staff"])
            };
            assert_eq!(op["x-principals"], who, "{upper} {path}");
            if company {
                continue;
            }
            let concrete = path
                .split('/')
                .map(|part| {
                    if part.starts_with('{') {
                        uuid::Uuid::now_v7().to_string()
                    } else {
                        part.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = Method::from_bytes(upper.as_bytes()).unwrap();
            let (s, body) = app
                .call(method, &concrete, A_TRADER, Some(&json!({})))
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{upper} {path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{upper} {path}: {body}");
            refused += 1;
        }
    }
    assert!(
        refused > 20,
        "only {refused} staff routes found in the OpenAPI document"
    );
    assert_eq!(app.footprint().await, before);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// The table: every route a company may call (`COMPANY_ROUTES`), called by each of A's users
/// against B's objects. Each answers 404 or 403 (a body naming B's account: 422 with a
/// not-found code or the `company` field) and changes nothing; A's lists never contain a row
/// of B's. A route added to `COMPANY_ROUTES` without a rule here fails the test.
async fn every_company_route_refuses_another_companys_objects(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tenants(backend).await;
    // B's objects: a payout (its hold, its journal transaction), a deal with the operator and
    // its evidence, a webhook endpoint, and a trust pair with a third company C.
    let (_, payout) = payout(&app, B_TRADER, &b_account, "b-payout").await;
    let b_payout = payout["id"].as_str().unwrap().to_owned();
    let b_hold = payout["hold_id"].as_str().unwrap().to_owned();
    let (_, journal) = app
        .get(&format!("/v1/journal?account={b_account}"), ADMIN)
        .await;
    let b_tx = journal["items"][0]["id"].as_str().unwrap().to_owned();
    let house = app.create_account("house").await;
    let (s, deal) = app
        .post(
            "/v1/deals",
            B_TRADER,
            None,
            &json!({"buyer_account": b_account, "seller_account": house, "country": "MN",
                "category": "USED_CAR_PRIVATE", "amount": "100"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{deal}");
    let b_deal = deal["id"].as_str().unwrap().to_owned();
    let (_, photo) = evidence(&app, B_TRADER, &b_deal).await;
    let b_evidence = photo["id"].as_str().unwrap().to_owned();
    let receiver = crate::webhook_delivery::Receiver::start().await;
    let endpoint = register(&app, ADMIN, receiver.url(), Some(&b_company)).await;
    let b_endpoint = endpoint["id"].as_str().unwrap().to_owned();
    let c_company = company(&app, "Gamma Freight").await;
    let c_account = funded_account(&app, "gamma", &c_company).await;
    let (s, pair) = app
        .post(
            "/v1/trust/pairs",
            ADMIN,
            None,
            &json!({"company_a": b_company, "company_b": c_company, "account_a": b_account,
                "account_b": c_account, "limit_a_to_b": "500", "limit_b_to_a": "500",
                "timezone": "UTC", "cutoff": "17:00", "mode": "full", "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    let b_pair = pair["id"].as_str().unwrap().to_owned();
    let b_session = pair["open_session"]["id"].as_str().unwrap().to_owned();
    let theirs = [
        &b_account,
        &b_payout,
        &b_hold,
        &b_tx,
        &b_deal,
        &b_evidence,
        &b_endpoint,
        &b_pair,
        &b_session,
    ];

    let before = app.footprint().await;
    let mut probes = 0;
    for &(method, route) in treasuryd::api::auth::COMPANY_ROUTES {
        let segments: Vec<&str> = route.split('/').collect();
        let path = segments
            .iter()
            .enumerate()
            .map(|(i, part)| match (*part, segments.get(i.wrapping_sub(1))) {
                ("{evidence}", _) => b_evidence.clone(),
                ("{id}", Some(&"accounts")) => b_account.clone(),
                ("{id}", Some(&"journal")) => b_tx.clone(),
                ("{id}", Some(&"holds")) => b_hold.clone(),
                ("{id}", Some(&"payouts")) => b_payout.clone(),
                ("{id}", Some(&"deals")) => b_deal.clone(),
                ("{id}", Some(&"pairs")) => b_pair.clone(),
                ("{id}", Some(&"sessions")) => b_session.clone(),
                ("{id}", Some(&"endpoints")) => b_endpoint.clone(),
                ("{id}", Some(&"companies")) => b_company.clone(),
                (p, _) if p.starts_with('{') => panic!("{method} {route}: no rule for {p}"),
                (p, _) => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        // A well-formed body for each write, naming B's objects where it names any.
        let body = match (method, route) {
            ("GET", _) => None,
            ("POST", "/v1/accounts") => Some(json!({"owner": "b-2", "network": "ethereum",
                "asset": "USDC", "kind": "partner", "company": b_company, "reason": "probe"})),
            ("POST", "/v1/payouts") => Some(json!({"account": b_account, "network": "ethereum",
                "asset": "USDT", "destination": DESTINATION, "amount": "1"})),
            ("POST", "/v1/deals") => Some(json!({"buyer_account": b_account,
                "seller_account": a_account, "country": "MN", "category": "USED_CAR_PRIVATE",
                "amount": "1"})),
            ("POST", "/v1/webhooks/endpoints") => Some(json!({"url": receiver.url(),
                "event_types": ["deposit.*"], "company": b_company, "reason": "probe"})),
            ("POST", "/v1/deeplinks") => Some(json!({"target": "payout", "id": b_payout})),
            ("POST", "/v1/payouts/batch") => Some(json!({"payouts": [{"idempotency_key": "b",
                "account": b_account, "network": "ethereum", "asset": "USDT",
                "destination": DESTINATION, "amount": "1"}]})),
            ("POST", "/v1/payouts/{id}/approve") => Some(json!({})),
            ("POST", "/v1/payouts/{id}/reject" | "/v1/payouts/{id}/cancel") => {
                Some(json!({"reason": "probe"}))
            }
            (
                "POST",
                "/v1/deals/{id}/fund" | "/v1/deals/{id}/deliver" | "/v1/deals/{id}/approve",
            ) => Some(json!({})),
            ("POST", "/v1/deals/{id}/issue") => {
                Some(json!({"reason_code": "NOT_AS_DESCRIBED", "detail": "probe"}))
            }
            ("POST", "/v1/deals/{id}/evidence") => Some(Value::Null),
            ("POST", "/v1/trust/pairs/{id}/obligations") => {
                Some(json!({"debtor": a_company, "amount": "1"}))
            }
            _ => panic!("{method} {route}: add a rule to this table"),
        };
        for token in [A_TRADER, A_ADMIN, A_APPROVER] {
            probes += 1;
            let (s, answer) = match &body {
                None => app.get(&path, token).await,
                Some(Value::Null) => evidence(&app, token, &b_deal).await,
                Some(b) => {
                    app.post(&path, token, Some(&format!("probe-{probes}")), b)
                        .await
                }
            };
            // A batch answers 200 with each payout's own answer: that one must be the refusal.
            let answer = match answer.pointer("/results/0") {
                Some(item) if route == "/v1/payouts/batch" => {
                    assert_eq!(item["status"], 422, "{path} by {token}: {answer}");
                    json!({"error": item["error"]})
                }
                _ => answer,
            };
            let s = if route == "/v1/payouts/batch" && s == StatusCode::OK {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                s
            };
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            let field = answer["error"]["field"].as_str().unwrap_or_default();
            let refused = s == StatusCode::NOT_FOUND
                || s == StatusCode::FORBIDDEN
                || (s == StatusCode::UNPROCESSABLE_ENTITY
                    && (code.ends_with("_not_found") || field == "company"));
            if refused {
                continue;
            }
            // A list or a read of A's own: it must not hold a row of B's.
            assert_eq!(s, StatusCode::OK, "{method} {path} by {token}: {answer}");
            assert_eq!(
                method, "GET",
                "{method} {path} by {token} went through: {answer}"
            );
            let text = answer.to_string();
            for id in theirs {
                assert!(
                    !text.contains(id.as_str()),
                    "{path} by {token} shows B's {id}: {text}"
                );
            }
        }
    }
    assert!(probes >= 3 * 30, "only {probes} probes");
    assert_eq!(app.footprint().await, before, "a probe changed something");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn register(app: &TestApp, token: &str, url: String, company: Option<&str>) -> Value {
    let mut body = json!({"url": url, "event_types": ["deposit.*"], "reason": "tenancy"});
    if let Some(c) = company {
        body["company"] = json!(c);
    }
    let (s, e) = app.post("/v1/webhooks/endpoints", token, None, &body).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    e
}

/// A mixed stream of 100 deposits, 50 for A and 50 for B: A's endpoint receives exactly A's,
/// B's exactly B's, a staff endpoint all of them.
async fn webhooks_go_to_the_companies_an_event_concerns(backend: Backend) {
    use crate::webhook_delivery::{Receiver, wait_for};
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tenants(backend).await;
    let receivers = [
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    ];
    // A's admin registers A's own; staff register B's and their own.
    let a_endpoint = register(&app, A_ADMIN, receivers[0].url(), None).await;
    assert_eq!(a_endpoint["company"], a_company.as_str());
    register(&app, ADMIN, receivers[1].url(), Some(&b_company)).await;
    let staff = register(&app, ADMIN, receivers[2].url(), None).await;
    assert!(staff.get("company").is_none(), "{staff}");
    // A's admin sees only A's endpoint, and not B's by id.
    let (_, list) = app.get("/v1/webhooks/endpoints", A_ADMIN).await;
    assert_eq!(
        ids(&list),
        vec![a_endpoint["id"].as_str().unwrap().to_owned()]
    );

    let (mut for_a, mut for_b) = (Vec::new(), Vec::new());
    for i in 0..50 {
        for (account, into) in [(&a_account, &mut for_a), (&b_account, &mut for_b)] {
            let posted = app
                .deposit(account, "1", &format!("mixed-{account}-{i}"))
                .await;
            into.push(posted["transaction"]["id"].as_str().unwrap().to_owned());
        }
    }
    // (transaction, account) of each deposit an endpoint received.
    let deposits = |r: &Receiver| -> Vec<(String, String)> {
        r.received()
            .iter()
            .map(|d| {
                let body: Value = serde_json::from_str(&d.body).unwrap();
                let deposit = &body["data"]["deposit"];
                (
                    deposit["transaction"].as_str().unwrap().to_owned(),
                    deposit["account"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let transactions =
        |r: &Receiver| -> Vec<String> { deposits(r).into_iter().map(|(t, _)| t).collect() };
    let all: Vec<String> = for_a.iter().chain(&for_b).cloned().collect();
    wait_for(60, "the staff endpoint receives all 100", || {
        let got = transactions(&receivers[2]);
        all.iter().all(|t| got.contains(t))
    })
    .await;
    wait_for(60, "A's and B's endpoints receive their 50", || {
        let (a, b) = (transactions(&receivers[0]), transactions(&receivers[1]));
        for_a.iter().all(|t| a.contains(t)) && for_b.iter().all(|t| b.contains(t))
    })
    .await;
    // A little longer, so a stray delivery would have arrived too.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for (receiver, mine, theirs) in [
        (&receivers[0], &for_a, &for_b),
        (&receivers[1], &for_b, &for_a),
    ] {
        let got = transactions(receiver);
        assert!(
            got.iter()
                .all(|t| !theirs.contains(t) && (mine.contains(t) || !all.contains(t))),
            "an endpoint received another company's deposit: {got:?}"
        );
        assert_eq!(
            got.iter().filter(|t| mine.contains(t)).count(),
            50,
            "{got:?}"
        );
    }
    app.stop().await.unwrap();
}

async fn evidence(app: &TestApp, token: &str, deal: &str) -> (StatusCode, Value) {
    let r = app
        .client
        .post(app.url(&format!("/v1/deals/{deal}/evidence")))
        .bearer_auth(token)
        .header("content-type", "image/jpeg")
        .header("x-evidence-type", "PHOTO")
        .body(format!("jpeg bytes of {deal}"))
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A deal binds a buyer company and a seller company: each takes only its side's steps, a
/// company opens deals only as the buyer, and nobody else sees the deal.
async fn deals_bind_the_buyer_and_the_seller(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        ..
    } = tenants(backend).await;
    let open = |buyer: &str, seller: &str| {
        json!({"buyer_account": buyer, "seller_account": seller, "country": "MN",
            "category": "USED_CAR_PRIVATE", "amount": "100"})
    };
    // The attack: A opens a deal that spends B's money (B as the buyer). Refused as if B's
    // account did not exist; nothing changes.
    let before = app.footprint().await;
    let (s, body) = app
        .post("/v1/deals", A_TRADER, None, &open(&b_account, &a_account))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "buyer_account", "{body}");
    assert_eq!(app.footprint().await, before);

    // A buys from B.
    let (s, deal) = app
        .post("/v1/deals", A_TRADER, None, &open(&a_account, &b_account))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{deal}");
    let id = deal["id"].as_str().unwrap().to_owned();
    let step = |action: &str, token: &'static str, body: Value| {
        let path = format!("/v1/deals/{id}/{action}");
        let app = &app;
        async move { app.post(&path, token, None, &body).await }
    };
    // Funding is the buyer's.
    let (s, body) = step("fund", B_TRADER, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = step("fund", A_TRADER, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Delivering is the seller's; either side brings evidence.
    let (s, photo) = evidence(&app, B_TRADER, &id).await;
    assert_eq!(s, StatusCode::CREATED, "{photo}");
    let delivered = json!({"evidence": [photo["id"]]});
    let (s, body) = step("deliver", A_TRADER, delivered.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = step("deliver", B_TRADER, delivered).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Raising an issue and approving are the buyer's; resolving is staff's.
    let (s, body) = step("approve", B_TRADER, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = step(
        "resolve",
        A_TRADER,
        json!({"outcome": "RELEASE", "reason": "mine"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = step("approve", A_TRADER, json!({})).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "SETTLED", "{body}");

    // Both sides see it; a deal of B with the operator's own account is not A's to see.
    let house = app.create_account("house").await;
    let (s, other) = app
        .post("/v1/deals", B_TRADER, None, &open(&b_account, &house))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{other}");
    let other_id = other["id"].as_str().unwrap();
    for token in [A_TRADER, B_TRADER] {
        let (s, body) = app.get(&format!("/v1/deals/{id}"), token).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    for path in [
        format!("/v1/deals/{other_id}"),
        format!("/v1/deals/{other_id}/timeline"),
        format!("/v1/deals/{other_id}/evidence/{}", uuid::Uuid::now_v7()),
    ] {
        let (s, body) = app.get(&path, A_TRADER).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (s, body) = evidence(&app, A_TRADER, other_id).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (_, list) = app.get("/v1/deals?limit=500", A_TRADER).await;
    assert_eq!(ids(&list), vec![id.clone()]);
    let (_, list) = app.get("/v1/deals?limit=500", B_TRADER).await;
    assert_eq!(ids(&list).len(), 2, "{list}");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// Twenty payouts just under the approval threshold, fired at once: the first ones up to the
/// rolling total go out, every one past it waits for an approver, however they interleave.
async fn splitting_does_not_dodge_four_eyes(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        ..
    } = tenants(backend).await;
    app.deposit(&a_account, "2000000", "a-lot").await;
    let requests = (0..20).map(|i| {
        let (app, account) = (&app, &a_account);
        async move { payout_of(app, A_TRADER, account, &format!("split-{i}"), "99999").await }
    });
    let answers = futures::future::join_all(requests).await;
    let mut states = std::collections::BTreeMap::<String, usize>::new();
    for (s, body) in &answers {
        assert_eq!(*s, StatusCode::ACCEPTED, "{body}");
        *states
            .entry(body["state"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    // 2 × 99,999 = 199,998 fits under 250,000; a third would pass it.
    assert_eq!(
        states,
        [
            ("pending_approval".to_owned(), 18),
            ("queued".to_owned(), 2)
        ]
        .into_iter()
        .collect(),
    );
    // The ones waiting say why, and A's approver releases one.
    let waiting = answers
        .iter()
        .map(|(_, b)| b)
        .find(|b| b["state"] == "pending_approval")
        .unwrap();
    let id = waiting["id"].as_str().unwrap();
    let (_, full) = app.get(&format!("/v1/payouts/{id}"), A_TRADER).await;
    let events = full["events"].to_string();
    assert!(events.contains("rolling total of 250000.000000"), "{full}");
    let (s, body) = app
        .post(
            &format!("/v1/payouts/{id}/approve"),
            A_APPROVER,
            None,
            &json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    // Another company is not counted against A: B's first payout goes straight out.
    let (s, b) = payout_of(&app, B_TRADER, &b_account, "b-first", "99999").await;
    assert_eq!(
        (s, b["state"].as_str()),
        (StatusCode::ACCEPTED, Some("queued")),
        "{b}"
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// In a trust pair, each company's trader records what its company owes and nothing the other
/// owes; a pair of other companies is not there for it.
async fn a_company_records_only_what_it_owes(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tenants(backend).await;
    let (s, pair) = app
        .post(
            "/v1/trust/pairs",
            ADMIN,
            None,
            &json!({"company_a": a_company, "company_b": b_company, "account_a": a_account,
                "account_b": b_account, "limit_a_to_b": "500", "limit_b_to_a": "500",
                "timezone": "Europe/Warsaw", "cutoff": "17:00", "mode": "partial", "reason": "t"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    let id = pair["id"].as_str().unwrap();
    let owe = |token: &'static str, debtor: &str, key: &str| {
        let (path, body) = (
            format!("/v1/trust/pairs/{id}/obligations"),
            json!({"debtor": debtor, "amount": "10"}),
        );
        let (app, key) = (&app, key.to_owned());
        async move { app.post(&path, token, Some(&key), &body).await }
    };
    let (s, body) = owe(A_TRADER, &a_company, "a-owes").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let (s, body) = owe(A_TRADER, &b_company, "b-owes-says-a").await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{body}");
    let (s, body) = owe(B_TRADER, &b_company, "b-owes").await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    for token in [A_TRADER, B_TRADER] {
        let (_, pairs) = app.get("/v1/trust/pairs", token).await;
        assert_eq!(ids(&pairs), vec![id.to_owned()], "{pairs}");
    }
    app.stop().await.unwrap();
}
