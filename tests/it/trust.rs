//! Trust pairs and end-of-day sessions through the API with an injected clock: obligations under
//! the credit limit, cut-offs in Warsaw (across the March DST change), Ulaanbaatar and Seoul
//! closing each session once at the right instant, netting and settlement (full, partial with
//! T+1 carry, T+1, unsettled then settled), safe-mode holding settlement back, the dry run
//! changing nothing, and the EOD metrics.

use crate::harness::*;
use crate::on_both_backends;
use crate::webhook_delivery::{metric, metrics_text};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use treasuryd::clock::ManualClock;

on_both_backends!(
    warsaw_sessions_close_once_at_cut_off_across_dst_and_settle,
    short_liquidity_settles_partly_carries_t_plus_1_or_waits,
    an_idempotency_key_is_the_callers_own,
    a_debt_is_recorded_by_the_side_that_owes_it,
    partial_and_t_plus_1_wait_for_the_canary_phase,
    new_terms_start_with_the_next_session_and_a_suspended_pair_takes_no_debts
);

fn at(text: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap()
        .timestamp_micros()
}

async fn trust_app(db: Arc<TestDb>, clock: Arc<ManualClock>) -> TestApp {
    TestApp::spawn_clocked(db, clock, |c, _| c.escrow.timer_poll_ms = 20).await
}

struct Parties {
    company_a: String,
    company_b: String,
    account_a: String,
    account_b: String,
}

async fn parties(app: &TestApp, funds_a: &str, funds_b: &str) -> Parties {
    let mut ids = Vec::new();
    for (name, tier) in [("Acme Trading", "S"), ("Beta Logistics", "M")] {
        let (s, c) = app
            .post(
                "/v1/companies",
                ADMIN,
                None,
                &json!({"name": name, "tier": tier, "reason": "pilot partner"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        ids.push(c["id"].as_str().unwrap().to_owned());
    }
    // test-trader trades for Acme, test-trader-2 for Beta.
    for (company, user) in [(&ids[0], "test-trader"), (&ids[1], "test-trader-2")] {
        let (s, m) = app
            .post(
                &format!("/v1/companies/{company}/members"),
                ADMIN,
                None,
                &json!({"user": user, "role": "trader", "reason": "the company's desk"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{m}");
    }
    let account_a = app.create_account_for("acme", &ids[0]).await;
    let account_b = app.create_account_for("beta", &ids[1]).await;
    for (account, funds, key) in [
        (&account_a, funds_a, "fund-a"),
        (&account_b, funds_b, "fund-b"),
    ] {
        if funds != "0" {
            app.deposit(account, funds, key).await;
        }
    }
    Parties {
        company_a: ids[0].clone(),
        company_b: ids[1].clone(),
        account_a,
        account_b,
    }
}

async fn new_pair(app: &TestApp, p: &Parties, tz: &str, cutoff: &str, mode: &str) -> Value {
    let (s, pair) = app
        .post(
            "/v1/trust/pairs",
            ADMIN,
            None,
            &json!({"company_a": p.company_a, "company_b": p.company_b, "account_a": p.account_a, "account_b": p.account_b,
                    "limit_a_to_b": "500", "limit_b_to_a": "500", "timezone": tz, "cutoff": cutoff, "mode": mode,
                    "reason": "pilot pair"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    pair
}

/// `debtor` owes `amount`, recorded by the debtor's own trader (Acme's `TRADER`, Beta's
/// `OTHER_TRADER`): a debt is recorded by the side that owes it.
async fn owe(
    app: &TestApp,
    pair: &str,
    debtor: &str,
    amount: &str,
    key: &str,
) -> (StatusCode, Value) {
    // test-trader trades for Acme, test-trader-2 for Beta (`parties`).
    let (_, companies) = app.get("/v1/companies", ADMIN).await;
    let beta = companies["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["id"] == debtor && c["name"] == "Beta Logistics");
    let token = if beta { OTHER_TRADER } else { TRADER };
    app.post(
        &format!("/v1/trust/pairs/{pair}/obligations"),
        token,
        Some(key),
        &json!({"debtor": debtor, "amount": amount, "reference": key}),
    )
    .await
}

async fn available(app: &TestApp, account: &str) -> String {
    app.account(account).await["available"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn sessions(app: &TestApp, pair: &str) -> Vec<Value> {
    let (s, page) = app
        .get(&format!("/v1/trust/sessions?pair={pair}"), OPERATOR)
        .await;
    assert_eq!(s, StatusCode::OK, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// Waits until the pair has `n` sessions whose state is not open... and returns them all.
async fn wait_closed(app: &TestApp, pair: &str, n: usize, state: &str) -> Vec<Value> {
    for _ in 0..400 {
        let all = sessions(app, pair).await;
        if all.iter().filter(|s| s["state"] == state).count() >= n {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "{n} sessions never reached {state}: {:?}",
        sessions(app, pair).await
    );
}

async fn warsaw_sessions_close_once_at_cut_off_across_dst_and_settle(backend: Backend) {
    // Friday 2026-03-27, 12:00 UTC (13:00 in Warsaw, CET).
    let clock = ManualClock::starting_at(at("2026-03-27T12:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let p = parties(&app, "1000", "1000").await;
    let pair = new_pair(&app, &p, "Europe/Warsaw", "18:00", "partial").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    assert_eq!(pair["open_session"]["business_date"], "2026-03-27");
    assert_eq!(
        pair["open_session"]["cutoff_at"],
        "2026-03-27T17:00:00.000000Z"
    );

    // Obligations; the limit is on net exposure and the refusal names the headroom.
    for (debtor, amount, key) in [
        (&p.company_a, "300", "o-1"),
        (&p.company_b, "100", "o-2"),
        (&p.company_a, "150", "o-3"),
    ] {
        let (s, o) = owe(&app, &id, debtor, amount, key).await;
        assert_eq!(s, StatusCode::CREATED, "{o}");
    }
    let (s, e) = owe(&app, &id, &p.company_a, "200", "o-4").await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert_eq!(e["error"]["code"], "credit_limit_exceeded");
    assert_eq!(e["error"]["field"], "amount");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("headroom left in this session: 150.000000"),
        "{e}"
    );
    // The same key again is the same obligation; the operator role cannot record.
    let (s, again) = owe(&app, &id, &p.company_a, "300", "o-1").await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = app
        .post(
            &format!("/v1/trust/pairs/{id}/obligations"),
            OPERATOR,
            Some("o-5"),
            &json!({"debtor": p.company_a, "amount": "1"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Dry run: exactly what would settle, and nothing changes.
    let session = pair["open_session"]["id"].as_str().unwrap().to_owned();
    let journal_before = app.get("/v1/journal?limit=500", ADMIN).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    let (s, dry) = app
        .post(
            &format!("/v1/trust/sessions/{session}/close?dry_run=true"),
            OPERATOR,
            None,
            &json!({"reason": "T-3 checklist"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(
        (
            dry["obligations"].as_u64(),
            dry["gross_a_to_b"].as_str(),
            dry["gross_b_to_a"].as_str(),
            dry["debtor"].as_str(),
            dry["net_amount"].as_str(),
            dry["outcome"].as_str(),
            dry["settle"].as_str(),
            dry["carry"].as_str()
        ),
        (
            Some(3),
            Some("450.000000"),
            Some("100.000000"),
            Some(p.company_a.as_str()),
            Some("350.000000"),
            Some("full"),
            Some("350.000000"),
            Some("0.000000")
        )
    );
    assert_eq!(again["seq"], dry["frozen_seq"].as_i64().unwrap() - 2);
    let journal_after = app.get("/v1/journal?limit=500", ADMIN).await.1["items"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(journal_before, journal_after, "the dry run posted nothing");
    assert_eq!(sessions(&app, &id).await.len(), 1);
    assert_eq!(sessions(&app, &id).await[0]["state"], "open");
    assert_eq!(available(&app, &p.account_a).await, "1000.000000");

    // One second before the cut-off nothing happens; at it the session closes and settles.
    clock.set(at("2026-03-27T16:59:59Z"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sessions(&app, &id).await[0]["state"], "open");
    clock.set(at("2026-03-27T17:00:00Z"));
    let all = wait_closed(&app, &id, 1, "settled").await;
    let first = &all[0];
    assert_eq!(
        (
            first["outcome"].as_str(),
            first["settled_amount"].as_str(),
            first["closed_by"].as_str(),
            first["closed_at"].as_str()
        ),
        (
            Some("full"),
            Some("350.000000"),
            Some("cut-off"),
            Some("2026-03-27T17:00:00.000000Z")
        )
    );
    assert_eq!(available(&app, &p.account_a).await, "650.000000");
    assert_eq!(available(&app, &p.account_b).await, "1350.000000");
    // Partners hear of it through the webhook outbox.
    assert_eq!(
        crate::webhook_delivery::outbox_types(&app.store, &session).await,
        ["eod.session_closed", "eod.session_settled"]
    );
    let mut body = Value::Null;
    for _ in 0..200 {
        let events = app
            .store
            .webhook_events_between(0, i64::MAX, 1000)
            .await
            .unwrap();
        if let Some(e) = events
            .iter()
            .find(|e| e.event_type == "eod.session_settled")
        {
            body = serde_json::from_str(e.body.as_deref().unwrap()).unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        body["data"]["session"]["net_amount"], "350.000000",
        "{body}"
    );
    assert_eq!(body["data"]["session"]["debtor"], p.company_a.as_str());
    // The next session took over at once; obligations now land there.
    assert_eq!(all[1]["business_date"], "2026-03-28");
    assert_eq!(all[1]["cutoff_at"], "2026-03-28T17:00:00.000000Z");
    let (s, _) = owe(&app, &id, &p.company_b, "40", "o-6").await;
    assert_eq!(s, StatusCode::CREATED);

    // Saturday closes at 17:00 UTC; Sunday 2026-03-29 is the DST change: 18:00 CEST is 16:00 UTC.
    clock.set(at("2026-03-28T17:00:00Z"));
    let all = wait_closed(&app, &id, 2, "settled").await;
    assert_eq!(all[1]["settled_amount"], "40.000000");
    assert_eq!(all[2]["business_date"], "2026-03-29");
    assert_eq!(all[2]["cutoff_at"], "2026-03-29T16:00:00.000000Z");
    clock.set(at("2026-03-29T15:59:59Z"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(sessions(&app, &id).await[2]["state"], "open");
    clock.set(at("2026-03-29T16:00:00Z"));
    let all = wait_closed(&app, &id, 3, "settled").await;
    assert_eq!(all[2]["outcome"], "nothing");
    assert_eq!(all[3]["cutoff_at"], "2026-03-30T16:00:00.000000Z");
    // Each session closed exactly once, whatever the runner's passes did meanwhile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, audit) = app.get("/v1/journal?limit=500", ADMIN).await;
    let eod: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("EOD "))
        })
        .collect();
    assert_eq!(
        eod.len(),
        4,
        "two sessions with money: one HOLD and one RELEASE each"
    );
    assert_eq!(available(&app, &p.account_a).await, "690.000000");
    assert_eq!(available(&app, &p.account_b).await, "1310.000000");
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_sessions_settled_total",
            &[("outcome", "full")]
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_sessions_settled_total",
            &[("outcome", "nothing")]
        ),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_eod_duration_seconds_count",
            &[("network", "ethereum")]
        ),
        3.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_netted_amount_total",
            &[("network", "ethereum")]
        ),
        590.0
    );
    assert_eq!(
        metric(&text, "treasuryd_trust_eod_unsettled_sessions", &[]),
        0.0
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn short_liquidity_settles_partly_carries_t_plus_1_or_waits(backend: Backend) {
    let clock = ManualClock::starting_at(at("2026-06-01T00:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let p = parties(&app, "100", "0").await;
    // Ulaanbaatar, 17:00 local = 09:00 UTC, partial allowed.
    let pair = new_pair(&app, &p, "Asia/Ulaanbaatar", "17:00", "partial").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pair["open_session"]["cutoff_at"],
        "2026-06-01T09:00:00.000000Z"
    );
    owe(&app, &id, &p.company_a, "300", "p-1").await;
    clock.set(at("2026-06-01T09:00:00Z"));
    let all = wait_closed(&app, &id, 1, "settled").await;
    assert_eq!(
        (
            all[0]["outcome"].as_str(),
            all[0]["settled_amount"].as_str(),
            all[0]["carried_amount"].as_str()
        ),
        (Some("partial"), Some("100.000000"), Some("200.000000"))
    );
    // The rest is an explicit T+1 obligation in the next session.
    let (_, next) = app
        .get(
            &format!("/v1/trust/sessions/{}", all[1]["id"].as_str().unwrap()),
            OPERATOR,
        )
        .await;
    assert_eq!(next["items"][0]["kind"], "t_plus_1");
    assert_eq!(next["items"][0]["amount"], "200.000000");
    assert_eq!(next["items"][0]["debtor"], p.company_a);
    assert_eq!(available(&app, &p.account_a).await, "0.000000");
    assert_eq!(available(&app, &p.account_b).await, "100.000000");
    // Funds arrive; the next cut-off pays the carried 200.
    app.deposit(&p.account_a, "500", "top-up").await;
    clock.set(at("2026-06-02T09:00:00Z"));
    let all = wait_closed(&app, &id, 2, "settled").await;
    assert_eq!(all[1]["outcome"], "full");
    assert_eq!(all[1]["settled_amount"], "200.000000");
    assert_eq!(available(&app, &p.account_a).await, "300.000000");
    assert_eq!(available(&app, &p.account_b).await, "300.000000");

    // Seoul, 23:30 local = 14:30 UTC, full only: short → unsettled and counted, then settled
    // on the first pass after funds arrive.
    let q = Parties {
        company_a: p.company_b.clone(),
        company_b: p.company_a.clone(),
        account_a: p.account_b.clone(),
        account_b: p.account_a.clone(),
    };
    let seoul = new_pair(&app, &q, "Asia/Seoul", "23:30", "full").await;
    let sid = seoul["id"].as_str().unwrap().to_owned();
    assert_eq!(
        seoul["open_session"]["cutoff_at"],
        "2026-06-02T14:30:00.000000Z"
    );
    owe(&app, &sid, &q.company_a, "400", "s-1").await;
    clock.set(at("2026-06-02T14:30:00Z"));
    let all = wait_closed(&app, &sid, 1, "unsettled").await;
    assert_eq!(all[0]["settled_amount"], "0.000000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(&text, "treasuryd_trust_eod_unsettled_sessions", &[]),
        1.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_eod_unsettled_units",
            &[("network", "ethereum"), ("asset", "USDT")]
        ),
        400.0,
        "what the unsettled session owes, for the rollback's \"without improvement\""
    );
    // Safe-mode on the network: funds arrive but settlement waits.
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": true, "reason": "drill"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    app.deposit(&q.account_a, "200", "beta-top-up").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sessions(&app, &sid).await[0]["state"], "unsettled");
    let (s, _) = app
        .post(
            "/v1/networks/ethereum/safe-mode",
            ADMIN,
            None,
            &json!({"enabled": false, "reason": "drill over"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let all = wait_closed(&app, &sid, 1, "settled").await;
    assert_eq!(all[0]["outcome"], "full");
    assert_eq!(all[0]["settled_amount"], "400.000000");
    // Beta had 300 from the first pair and 200 topped up; Acme 300 and now 400 more.
    assert_eq!(available(&app, &q.account_a).await, "100.000000");
    assert_eq!(available(&app, &q.account_b).await, "700.000000");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = metrics_text(&app).await;
    assert_eq!(
        metric(&text, "treasuryd_trust_eod_unsettled_sessions", &[]),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "treasuryd_trust_eod_unsettled_units",
            &[("network", "ethereum"), ("asset", "USDT")]
        ),
        0.0,
        "settled: exported at 0, not dropped"
    );
    // Settled with something owed: partial, full (the carried 200), full (Seoul): 1/3 short.
    let share = metric(&text, "treasuryd_trust_partial_t_plus_1_share", &[]);
    assert!((share - 1.0 / 3.0).abs() < 1e-9, "{share}");
    // The first full-only session took from its cut-off to the top-up to settle: observed.
    assert!(metric(&text, "treasuryd_trust_eod_duration_seconds_count", &[]) >= 3.0);
    app.verify_clean().await;
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t_plus_1_mode_carries_everything_when_short() {
    let clock = ManualClock::starting_at(at("2026-06-01T00:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(Backend::Sqlite).await), clock.clone()).await;
    let p = parties(&app, "50", "0").await;
    let pair = new_pair(&app, &p, "Asia/Seoul", "18:00", "t_plus_1").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    owe(&app, &id, &p.company_a, "80", "t-1").await;
    clock.set(at("2026-06-01T09:00:00Z"));
    let all = wait_closed(&app, &id, 1, "settled").await;
    assert_eq!(
        (
            all[0]["outcome"].as_str(),
            all[0]["settled_amount"].as_str(),
            all[0]["carried_amount"].as_str()
        ),
        (Some("carried"), Some("0.000000"), Some("80.000000"))
    );
    assert_eq!(available(&app, &p.account_a).await, "50.000000");
    // Closing by hand twice: the second is refused, nothing more happens.
    let open = all[1]["id"].as_str().unwrap().to_owned();
    let (s, closed) = app
        .post(
            &format!("/v1/trust/sessions/{open}/close"),
            OPERATOR,
            None,
            &json!({"reason": "early close"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["state"], "settled");
    assert_eq!(closed["outcome"], "carried");
    assert_eq!(closed["closed_by"], "test-operator");
    let (s, e) = app
        .post(
            &format!("/v1/trust/sessions/{open}/close"),
            OPERATOR,
            None,
            &json!({"reason": "again"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["error"]["code"], "session_not_open");
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pairs_and_obligations_are_refused_naming_the_field() {
    let clock = ManualClock::starting_at(at("2026-06-01T00:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(Backend::Sqlite).await), clock).await;
    let p = parties(&app, "0", "0").await;
    let base = json!({"company_a": p.company_a, "company_b": p.company_b, "account_a": p.account_a, "account_b": p.account_b,
        "limit_a_to_b": "500", "limit_b_to_a": "500", "timezone": "Europe/Warsaw", "cutoff": "18:00", "mode": "full", "reason": "x"});
    // Settlement would move this account's money for Acme's debts: it is not Acme's.
    let not_acmes = app.create_account("house").await;
    for (field, value, expected) in [
        ("account_a", json!(not_acmes), "account_a"),
        ("timezone", json!("Europe/Atlantis"), "timezone"),
        ("cutoff", json!("25:00"), "cutoff"),
        ("mode", json!("sometimes"), "mode"),
        ("limit_a_to_b", json!("1.1234567"), "limit_a_to_b"),
        ("company_b", json!(p.company_a), "company_b"),
        ("account_b", json!(p.account_a), "account_b"),
    ] {
        let mut body = base.clone();
        body[field] = value;
        let (s, e) = app.post("/v1/trust/pairs", ADMIN, None, &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{field}: {e}");
        assert_eq!(e["error"]["field"], expected, "{e}");
    }
    let (s, _) = app.post("/v1/trust/pairs", TRADER, None, &base).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, pair) = app.post("/v1/trust/pairs", ADMIN, None, &base).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = pair["id"].as_str().unwrap();
    let (s, e) = owe(&app, id, "not-a-company", "1", "b-1").await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("debtor"))
    );
    let (s, e) = owe(&app, id, &p.company_a, "-1", "b-2").await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("amount"))
    );
    let (s, e) = app
        .post(
            &format!("/v1/trust/pairs/{id}/obligations"),
            TRADER,
            None,
            &json!({"debtor": p.company_a, "amount": "1"}),
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("missing_idempotency_key")
        )
    );
    assert!(sessions(&app, id).await[0]["obligations"] == 0);
    app.stop().await.unwrap();
}

on_both_backends!(
    net_amounts_land_on_chain_and_the_ledger_matches,
    a_crash_during_settlement_settles_once_after_restart
);

async fn net_amounts_land_on_chain_and_the_ledger_matches(backend: Backend) {
    use alloy::primitives::U256;
    use treasuryd::chains::evm::EvmClient;
    use treasuryd::dev::chain::{DevChain, TestToken};
    let chain = DevChain::start(&[]).await.unwrap();
    let app = crate::engine::app_on(backend, &chain, "").await;
    let miner = crate::engine::spawn_miner(&chain, Duration::from_millis(200));
    let p = parties(&app, "1000", "1000").await;
    let beta_address = crate::engine::destination(77).to_checksum(None);
    let (s, pair) = app
        .post(
            "/v1/trust/pairs",
            ADMIN,
            None,
            &json!({"company_a": p.company_a, "company_b": p.company_b, "account_a": p.account_a, "account_b": p.account_b,
                    "limit_a_to_b": "500", "limit_b_to_a": "500", "timezone": "Europe/Warsaw", "cutoff": "18:00",
                    "mode": "full", "payout_address_b": beta_address, "reason": "pilot pair paid on chain"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    let id = pair["id"].as_str().unwrap().to_owned();
    for (debtor, amount, key) in [
        (&p.company_a, "300.25", "c-1"),
        (&p.company_b, "100", "c-2"),
        (&p.company_a, "150", "c-3"),
    ] {
        let (s, o) = owe(&app, &id, debtor, amount, key).await;
        assert_eq!(s, StatusCode::CREATED, "{o}");
    }
    let session = pair["open_session"]["id"].as_str().unwrap().to_owned();
    let (s, closed) = app
        .post(
            &format!("/v1/trust/sessions/{session}/close"),
            OPERATOR,
            None,
            &json!({"reason": "pilot EOD by hand"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["state"], "settled");
    assert_eq!(closed["settled_amount"], "350.250000");
    let payout = closed["payout"]
        .as_str()
        .expect("the creditor is paid on chain")
        .to_owned();
    let payouts = crate::engine::settled(&app, 1).await;
    miner.abort();
    assert_eq!(payouts[&payout]["state"], "confirmed");
    assert_eq!(payouts[&payout]["destination"], beta_address);
    let client = EvmClient::new(&chain.url).unwrap();
    let on_chain = client
        .token_balance(chain.token(TestToken::Usdt), beta_address.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(on_chain, U256::from(350_250_000u64));
    // The ledger: A paid 350.25 net, B received it and paid it out.
    assert_eq!(available(&app, &p.account_a).await, "649.750000");
    assert_eq!(available(&app, &p.account_b).await, "1000.000000");
    assert_eq!(app.account(&p.account_b).await["held"], "0.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn a_crash_during_settlement_settles_once_after_restart(backend: Backend) {
    use crate::crash;
    let db = TestDb::new(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crash::write_config(dir.path(), &db.url);
    let trader = "tdk_crash_test_trader";
    let base = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "[[auth.tokens]]\nname = \"desk\"\nrole = \"trader\"\nsha256 = \"{}\"\n",
            hex::encode(treasuryd::api::auth::token_digest(trader))
        );
    std::fs::write(
        &config,
        format!("{base}[debug]\npause_at = \"trust.before_release\"\n"),
    )
    .unwrap();
    let (mut child, api) = crash::start(&config, &db.url);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let call = |token: &'static str, path: String, key: Option<&'static str>, body: Value| {
        let mut req = client
            .post(format!("http://{api}{path}"))
            .bearer_auth(token)
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
    let get = |path: String| {
        let req = client
            .get(format!("http://{api}{path}"))
            .bearer_auth(crash::TOKEN);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut companies = Vec::new();
    for name in ["Acme", "Beta"] {
        let (s, c) = call(
            crash::TOKEN,
            "/v1/companies".into(),
            None,
            json!({"name": name, "tier": "L", "reason": "crash test"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{c}");
        companies.push(c["id"].as_str().unwrap().to_owned());
    }
    let (s, _) = call(
        crash::TOKEN,
        format!("/v1/companies/{}/members", companies[0]),
        None,
        json!({"user": "desk", "role": "trader", "reason": "crash test"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let mut accounts = Vec::new();
    for ((owner, key), company) in [("acme", Some("fund-acme")), ("beta", None)]
        .into_iter()
        .zip(&companies)
    {
        let (s, a) = call(crash::TOKEN, "/v1/accounts".into(), None, json!({"owner": owner, "network": "ethereum", "asset": "USDT", "kind": "partner", "company": company, "reason": "crash test"})).await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        let id = a["id"].as_str().unwrap().to_owned();
        if let Some(key) = key {
            let (s, _) = call(
                crash::TOKEN,
                "/v1/deposits".into(),
                Some(key),
                json!({"account": id, "amount": "1000", "reason": "crash test"}),
            )
            .await;
            assert_eq!(s, StatusCode::CREATED);
        }
        accounts.push(id);
    }
    let (s, pair) = call(crash::TOKEN, "/v1/trust/pairs".into(), None, json!({"company_a": companies[0], "company_b": companies[1],
        "account_a": accounts[0], "account_b": accounts[1], "limit_a_to_b": "500", "limit_b_to_a": "500",
        "timezone": "Asia/Seoul", "cutoff": "18:00", "mode": "full", "reason": "crash test"})).await;
    assert_eq!(s, StatusCode::CREATED, "{pair}");
    let (s, o) = call(
        trader,
        format!(
            "/v1/trust/pairs/{}/obligations",
            pair["id"].as_str().unwrap()
        ),
        Some("k-1"),
        json!({"debtor": companies[0], "amount": "350"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    let session = pair["open_session"]["id"].as_str().unwrap().to_owned();
    // The T-3 dry run from the command line: exactly what would settle, nothing changed.
    let journal_before = get("/v1/journal?limit=500".into()).await["items"]
        .as_array()
        .unwrap()
        .len();
    let out = std::process::Command::new(crash::binary())
        .args(["--config", config.to_str().unwrap(), "eod", "dry-run"])
        .env("TREASURYD__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            line["session"].as_str(),
            line["outcome"].as_str(),
            line["settle"].as_str(),
            line["available"].as_str()
        ),
        (
            Some(session.as_str()),
            Some("full"),
            Some("350.000000"),
            Some("1000.000000")
        ),
        "{line}"
    );
    assert_eq!(
        get("/v1/journal?limit=500".into()).await["items"]
            .as_array()
            .unwrap()
            .len(),
        journal_before
    );
    assert_eq!(
        get(format!("/v1/trust/sessions/{session}")).await["state"],
        "open"
    );
    // The close stops before the RELEASE (the pause point); the request never answers.
    let hung = client
        .post(format!("http://{api}/v1/trust/sessions/{session}/close"))
        .bearer_auth(crash::TOKEN)
        .json(&json!({"reason": "crash test"}))
        .send()
        .await;
    assert!(hung.is_err(), "the close should hang at the pause point");
    let s = get(format!("/v1/trust/sessions/{session}")).await;
    assert_eq!(s["state"], "settling", "{s}");
    child.kill().unwrap();
    child.wait().unwrap();

    // Restart without the pause point: the runner finishes what was started, once.
    std::fs::write(&config, &base).unwrap();
    let (mut child, api2) = crash::start(&config, &db.url);
    let get = |path: String| {
        let req = client
            .get(format!("http://{api2}{path}"))
            .bearer_auth(crash::TOKEN);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut settled = Value::Null;
    for _ in 0..200 {
        settled = get(format!("/v1/trust/sessions/{session}")).await;
        if settled["state"] == "settled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(settled["state"], "settled", "{settled}");
    assert_eq!(settled["settled_amount"], "350.000000");
    let a = get(format!("/v1/accounts/{}", accounts[0])).await;
    let b = get(format!("/v1/accounts/{}", accounts[1])).await;
    assert_eq!(
        (a["available"].as_str(), a["held"].as_str()),
        (Some("650.000000"), Some("0.000000"))
    );
    assert_eq!(b["available"], "350.000000");
    let journal = get("/v1/journal?limit=500".into()).await;
    let kinds: Vec<&str> = journal["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("EOD "))
        })
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["HOLD", "RELEASE"], "one hold, one release");
    child.kill().unwrap();
    child.wait().unwrap();
    let (ok, out) = crash::verify_cli(&config, &db.url);
    assert!(ok, "{out}");
}

/// Beta's trader reusing the key Acme's trader used records Beta's own obligation: a key never
/// hands one caller another caller's obligation.
async fn an_idempotency_key_is_the_callers_own(backend: Backend) {
    let clock = ManualClock::starting_at(at("2026-03-27T12:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock).await;
    let p = parties(&app, "1000", "1000").await;
    let pair = new_pair(&app, &p, "Europe/Warsaw", "18:00", "partial").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    let (s, acme) = owe(&app, &id, &p.company_a, "300", "same-key").await;
    assert_eq!(s, StatusCode::CREATED, "{acme}");
    let (s, beta) = app
        .post(
            &format!("/v1/trust/pairs/{id}/obligations"),
            OTHER_TRADER,
            Some("same-key"),
            &json!({"debtor": p.company_b, "amount": "1", "reference": "same-key"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{beta}");
    assert_ne!(beta["id"], acme["id"], "{beta}");
    assert_eq!(beta["amount"], "1.000000", "{beta}");
    // Each caller's own retry is still the same obligation.
    let (_, again) = owe(&app, &id, &p.company_a, "300", "same-key").await;
    assert_eq!(again["id"], acme["id"], "{again}");
    app.stop().await.unwrap();
}

/// Acme's trader cannot put a debt on Beta: an obligation is recorded by its debtor's side, and
/// the refusal writes nothing.
async fn a_debt_is_recorded_by_the_side_that_owes_it(backend: Backend) {
    let clock = ManualClock::starting_at(at("2026-03-27T12:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock).await;
    let p = parties(&app, "1000", "1000").await;
    let pair = new_pair(&app, &p, "Europe/Warsaw", "18:00", "partial").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    let before = app.footprint().await;
    for (token, debtor) in [(TRADER, &p.company_b), (OTHER_TRADER, &p.company_a)] {
        let (s, e) = app
            .post(
                &format!("/v1/trust/pairs/{id}/obligations"),
                token,
                Some("not-mine"),
                &json!({"debtor": debtor, "amount": "100"}),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("debtor's side"),
            "{e}"
        );
    }
    assert_eq!(app.footprint().await, before);
    assert_eq!(sessions(&app, &id).await[0]["obligations"], 0);
    let (s, own) = owe(&app, &id, &p.company_b, "100", "mine").await;
    assert_eq!(s, StatusCode::CREATED, "{own}");
    app.stop().await.unwrap();
}

/// Launch plan §7: partial and T+1 settlement start with Canary. In Pilot a pair may only be
/// `full`; once the network is raised to Canary, partial is accepted.
async fn partial_and_t_plus_1_wait_for_the_canary_phase(backend: Backend) {
    let clock = ManualClock::starting_at(at("2026-06-01T00:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let p = parties(&app, "100", "0").await;
    set_phase(&app, "pilot").await;
    for mode in ["partial", "t_plus_1"] {
        let (s, e) = app
            .post(
                "/v1/trust/pairs",
                ADMIN,
                None,
                &json!({"company_a": p.company_a, "company_b": p.company_b, "account_a": p.account_a, "account_b": p.account_b,
                        "limit_a_to_b": "500", "limit_b_to_a": "500", "timezone": "Europe/Warsaw", "cutoff": "18:00", "mode": mode,
                        "reason": "pilot pair"}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(
            (e["error"]["code"].as_str(), e["error"]["field"].as_str()),
            (Some("mode_not_in_phase"), Some("mode")),
            "{e}"
        );
    }
    let (_, pairs) = app.get("/v1/trust/pairs", ADMIN).await;
    assert_eq!(
        pairs["items"],
        json!([]),
        "a refused pair leaves nothing: {pairs}"
    );
    let full = new_pair(&app, &p, "Europe/Warsaw", "18:00", "full").await;
    assert_eq!(full["mode"], "full");
    set_phase(&app, "canary").await;
    let partial = new_pair(&app, &p, "Europe/Warsaw", "18:00", "partial").await;
    assert_eq!(partial["mode"], "partial");
    app.stop().await.unwrap();
}

async fn set_phase(app: &TestApp, phase: &str) {
    let (s, v) = app
        .post(
            "/v1/networks/ethereum/rollout",
            ADMIN,
            None,
            &json!({"phase": phase, "reason": "launch plan"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A pair's cut-off and limit changed mid-session: the open session keeps the cut-off and
/// limit it opened with; the next one runs on the new terms. A suspended pair takes no new
/// debts until resumed; terms are configuration (refused in the freeze), a suspension is not.
async fn new_terms_start_with_the_next_session_and_a_suspended_pair_takes_no_debts(
    backend: Backend,
) {
    let clock = ManualClock::starting_at(at("2026-06-01T00:00:00Z"));
    let app = trust_app(Arc::new(TestDb::new(backend).await), clock.clone()).await;
    let p = parties(&app, "1000", "1000").await;
    // Warsaw 18:00 in summer = 16:00 UTC; limits 500 each way.
    let pair = new_pair(&app, &p, "Europe/Warsaw", "18:00", "full").await;
    let id = pair["id"].as_str().unwrap().to_owned();
    assert_eq!(
        pair["open_session"]["cutoff_at"],
        "2026-06-01T16:00:00.000000Z"
    );
    let terms = |body: Value| {
        let (app, id) = (&app, id.clone());
        async move {
            app.call(
                reqwest::Method::PUT,
                &format!("/v1/trust/pairs/{id}/terms"),
                ADMIN,
                Some(&body),
            )
            .await
        }
    };
    let (s, e) = terms(json!({"reason": "nothing named"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    let (s, e) = terms(json!({"cutoff": "25:00", "reason": "x"})).await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cutoff"))
    );
    let (s, changed) = terms(json!({"cutoff": "20:00", "limit_a_to_b": "100", "reason": "partner asked for a later cut-off"})).await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(
        (changed["cutoff"].as_str(), changed["limit_a_to_b"].as_str()),
        (Some("20:00"), Some("100.000000"))
    );
    // The open session keeps what it opened with.
    let open = &changed["open_session"];
    assert_eq!(open["cutoff_at"], "2026-06-01T16:00:00.000000Z", "{open}");
    assert_eq!(open["limit_a_to_b"], "500.000000", "{open}");
    let (s, o) = owe(&app, &id, &p.company_a, "300", "before-cut-off").await;
    assert_eq!(
        s,
        StatusCode::CREATED,
        "the session's own limit (500) still applies: {o}"
    );

    // The cut-off comes at 18:00 Warsaw as the session said; the next one is at 20:00.
    clock.set(at("2026-06-01T16:00:00Z"));
    let all = wait_closed(&app, &id, 1, "settled").await;
    let next = all
        .iter()
        .find(|s| s["state"] == "open")
        .unwrap_or_else(|| panic!("no open session: {all:?}"));
    assert_eq!(next["cutoff_at"], "2026-06-02T18:00:00.000000Z", "{all:?}");
    assert_eq!(next["limit_a_to_b"], "100.000000");
    let (s, e) = owe(&app, &id, &p.company_a, "150", "after-cut-off").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("credit_limit_exceeded")
        ),
        "{e}"
    );

    // Suspended: no new debts, even during the freeze; terms wait for the freeze to end.
    let (s, f) = app
        .call(
            reqwest::Method::PUT,
            "/v1/config-freeze",
            ADMIN,
            Some(&json!({"enabled": true, "reason": "launch"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{f}");
    let (s, e) = terms(json!({"limit_b_to_a": "50", "reason": "x"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("config_frozen")),
        "{e}"
    );
    let suspend = |suspended: bool| {
        let (app, id) = (&app, id.clone());
        async move {
            app.call(
                reqwest::Method::PUT,
                &format!("/v1/trust/pairs/{id}/suspension"),
                ADMIN,
                Some(&json!({"suspended": suspended, "reason": "rollback by pair"})),
            )
            .await
        }
    };
    let (s, v) = suspend(true).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["suspended"]["by"], "test-admin");
    let (s, e) = owe(&app, &id, &p.company_a, "10", "while-suspended").await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("pair_suspended")),
        "{e}"
    );
    let (s, v) = suspend(false).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("suspended").is_none(), "{v}");
    let (s, o) = owe(&app, &id, &p.company_a, "10", "resumed").await;
    assert_eq!(s, StatusCode::CREATED, "{o}");

    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .filter(|a| a.starts_with("trust_pair."))
        .collect();
    assert_eq!(
        actions,
        [
            "trust_pair.create",
            "trust_pair.terms",
            "trust_pair.suspend",
            "trust_pair.resume"
        ]
    );
    app.stop().await.unwrap();
}
