//! The tier table (issue 19, item 5): a company's payouts stay within its tier's single,
//! daily and monthly limits however many arrive at once, a trust pair lets a company owe no
//! more than its tier's credit limit, and an Admin's tier change is audited and applies to
//! what comes after it.

use crate::harness::*;
use crate::tenancy::{A_ADMIN, A_TRADER, B_TRADER, Tenants, payout_of, tenants_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use treasuryd::config::{TierLimitsConfig, TiersConfig};
use treasuryd::domain::trust::Tier;

crate::on_both_backends!(
    concurrent_payouts_stop_exactly_at_the_tier_limit,
    a_pair_lets_a_company_owe_at_most_its_tier_credit
);

fn row(tier: Tier, max: &str, daily: &str, monthly: &str, credit: &str) -> TierLimitsConfig {
    TierLimitsConfig {
        tier,
        network: "ethereum".into(),
        asset: "USDT".into(),
        max_payout: max.into(),
        daily_volume: daily.into(),
        monthly_volume: monthly.into(),
        max_credit_limit: credit.into(),
    }
}

/// S: 1,000 a payout, 10,100 a day, 15,000 a month, owes at most 500. M: ten times that.
/// L has no row: an L company may not pay out USDT at all.
async fn tiered(backend: Backend) -> Tenants {
    tenants_with(backend, |c| {
        c.tiers = Some(TiersConfig {
            version: "v2".into(),
            timezone: "Europe/Warsaw".into(),
            limits: vec![
                row(Tier::S, "1000", "10100", "15000", "500"),
                row(Tier::M, "10000", "101000", "150000", "5000"),
            ],
        });
    })
    .await
}

async fn set_tier(app: &TestApp, token: &str, company: &str, tier: &str) -> (StatusCode, Value) {
    app.post(
        &format!("/v1/companies/{company}/tier"),
        token,
        None,
        &json!({"tier": tier, "reason": "tier review"}),
    )
    .await
}

fn refused(answer: &(StatusCode, Value), headroom: &str) {
    let (s, body) = answer;
    assert_eq!(*s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "tier_limit_exceeded", "{body}");
    assert_eq!(body["error"]["field"], "amount", "{body}");
    assert_eq!(body["error"]["headroom"], headroom, "{body}");
}

/// 32 payouts of 400 fired at once at a company whose day allows 10,100: exactly 25 pass
/// (10,000), the other 7 are refused naming the 100 left, and nothing else moves.
async fn concurrent_payouts_stop_exactly_at_the_tier_limit(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tiered(backend).await;
    let (s, body) = set_tier(&app, ADMIN, &a_company, "S").await;
    assert_eq!(
        (s, body["tier"].as_str()),
        (StatusCode::OK, Some("S")),
        "{body}"
    );

    let requests = (0..32).map(|i| {
        let (app, account) = (&app, &a_account);
        async move { payout_of(app, A_TRADER, account, &format!("edge-{i}"), "400").await }
    });
    let answers = futures::future::join_all(requests).await;
    let accepted = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 25, "{answers:?}");
    for answer in answers.iter().filter(|(s, _)| *s != StatusCode::ACCEPTED) {
        refused(answer, "100.000000");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("daily volume of 10100.000000"),
            "{message}"
        );
        assert!(message.contains("tier table v2"), "{message}");
    }
    // 200,000 funded, 25 × 400 reserved.
    assert_eq!(app.account(&a_account).await["available"], "190000.000000");
    let (_, page) = app
        .get(&format!("/v1/payouts?account={a_account}&limit=500"), ADMIN)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 25, "{page}");

    // The single-payout limit is checked too; the headroom is still the day's 100.
    refused(
        &payout_of(&app, A_TRADER, &a_account, "big", "1001").await,
        "100.000000",
    );
    // A replay of an accepted payout is answered as before, not judged again.
    let first = answers
        .iter()
        .position(|(s, _)| *s == StatusCode::ACCEPTED)
        .unwrap();
    let (s, again) = payout_of(&app, A_TRADER, &a_account, &format!("edge-{first}"), "400").await;
    assert_eq!(
        (s, &again["id"]),
        (StatusCode::ACCEPTED, &answers[first].1["id"]),
        "{again}"
    );
    // The last 100 fit exactly; then nothing does.
    let (s, body) = payout_of(&app, A_TRADER, &a_account, "last", "100").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    refused(
        &payout_of(&app, A_TRADER, &a_account, "over", "0.000001").await,
        "0.000000",
    );

    // The partner and on-call both see it.
    let (s, room) = app
        .get(&format!("/v1/companies/{a_company}/headroom"), A_TRADER)
        .await;
    assert_eq!(s, StatusCode::OK, "{room}");
    assert_eq!(
        (
            &room["tier"],
            &room["tier_table"],
            &room["assets"][0]["day"],
            &room["assets"][0]["month"]
        ),
        (
            &json!("S"),
            &json!("v2"),
            &json!("0.000000"),
            &json!("4900.000000")
        ),
        "{room}"
    );
    let (s, _) = app
        .get(&format!("/v1/companies/{a_company}/headroom"), B_TRADER)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let metrics = app.metrics_text().await;
    let series = |window: &str| {
        format!(
            "treasuryd_tier_headroom_units{{asset=\"USDT\",company=\"{a_company}\",network=\"ethereum\",tier=\"S\",window=\"{window}\"}}"
        )
    };
    assert_eq!(
        metric_value(&metrics, &series("day")),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(metric_value(&metrics, &series("month")), Some(4900.0));
    assert_eq!(
        metric_value(&metrics, "treasuryd_tier_table_info{version=\"v2\"}"),
        Some(1.0)
    );

    // Another company is not counted against A.
    let (s, body) = payout_of(&app, B_TRADER, &b_account, "b-1", "5000").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");

    // Only staff Admins move a company between tiers; the move is audited and applies next.
    let (s, _) = set_tier(&app, A_ADMIN, &a_company, "XL").await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, body) = set_tier(&app, ADMIN, &a_company, "M").await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let change = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|r| r["action"] == "company.tier")
        .cloned()
        .unwrap_or_default();
    assert_eq!(change["reason"], "tier review", "{audit}");
    assert_eq!(
        change["evidence"],
        json!({"from": "S", "to": "M", "tier_table": "v2"}),
        "{change}"
    );
    let (s, body) = payout_of(&app, A_TRADER, &a_account, "after-m", "5000").await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    // A tier with no row for the asset pays nothing out in it.
    let (s, _) = set_tier(&app, ADMIN, &b_company, "L").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = payout_of(&app, B_TRADER, &b_account, "b-2", "1").await;
    refused(&(s, body.clone()), "0.000000");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no limits for ethereum:USDT"),
        "{body}"
    );
    let (_, table) = app.get("/v1/tiers", B_TRADER).await;
    assert_eq!(table["version"], "v2", "{table}");
    assert_eq!(table["timezone"], "Europe/Warsaw", "{table}");
    assert_eq!(table["rows"][0]["daily_volume"], "10100.000000", "{table}");
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// A pair may let each side owe up to its own tier's credit limit, not beyond.
async fn a_pair_lets_a_company_owe_at_most_its_tier_credit(backend: Backend) {
    let Tenants {
        app,
        a_account,
        b_account,
        a_company,
        b_company,
    } = tiered(backend).await;
    let (s, _) = set_tier(&app, ADMIN, &a_company, "S").await;
    assert_eq!(s, StatusCode::OK);
    let pair = |a_to_b: &str, b_to_a: &str| {
        json!({"company_a": a_company, "company_b": b_company, "account_a": a_account,
            "account_b": b_account, "limit_a_to_b": a_to_b, "limit_b_to_a": b_to_a,
            "timezone": "Europe/Warsaw", "cutoff": "17:00", "mode": "full", "reason": "t"})
    };
    // A (S) may owe 500, B (M) 5,000.
    let (s, body) = app
        .post("/v1/trust/pairs", ADMIN, None, &pair("500.000001", "5000"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        (
            &body["error"]["code"],
            &body["error"]["field"],
            &body["error"]["headroom"]
        ),
        (
            &json!("tier_limit_exceeded"),
            &json!("limit_a_to_b"),
            &json!("500.000000")
        ),
        "{body}"
    );
    let (s, body) = app
        .post("/v1/trust/pairs", ADMIN, None, &pair("500", "5000.5"))
        .await;
    assert_eq!(body["error"]["field"], "limit_b_to_a", "{s} {body}");
    let (_, pairs) = app.get("/v1/trust/pairs", ADMIN).await;
    assert_eq!(pairs["items"], json!([]), "{pairs}");
    let (s, body) = app
        .post("/v1/trust/pairs", ADMIN, None, &pair("500", "5000"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    app.stop().await.unwrap();
}
