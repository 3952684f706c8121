//! Idempotency keys: 1,000 requests replayed create nothing new and return the first answers;
//! a used key with another body is 409 and changes nothing; concurrent duplicates commit once.

use crate::harness::*;
use crate::on_both_backends;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    replaying_a_thousand_requests_changes_nothing,
    concurrent_duplicates_commit_once
);

async fn replaying_a_thousand_requests_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_account("a").await;
    let b = app.create_account("b").await;

    // 1,000 requests of every money-moving kind, each with its own key.
    let mut requests: Vec<(String, String, Value)> = Vec::new();
    let mut first_answers = Vec::new();
    for i in 0..400 {
        requests.push((
            "/v1/deposits".into(),
            format!("dep-{i}"),
            json!({"account": a, "amount": format!("{}.5", i + 1), "reason": "funding"}),
        ));
    }
    for i in 0..100 {
        requests.push((
            "/v1/adjustments".into(),
            format!("adj-{i}"),
            json!({"account": b, "amount": "0.25", "direction": "credit", "reason": "correction"}),
        ));
    }
    for (path, key, body) in &requests {
        let (s, answer) = app.post(path, ADMIN, Some(key), body).await;
        assert_eq!(s, StatusCode::CREATED, "{answer}");
        first_answers.push(answer);
    }
    let mut holds = Vec::new();
    for i in 0..250 {
        let body = json!({"account": a, "amount": "10", "reason": "hold"});
        let key = format!("hold-{i}");
        let (s, answer) = app.post("/v1/holds", ADMIN, Some(&key), &body).await;
        assert_eq!(s, StatusCode::CREATED, "{answer}");
        holds.push(answer["hold"]["id"].as_str().unwrap().to_owned());
        requests.push(("/v1/holds".into(), key, body));
        first_answers.push(answer);
    }
    for (i, hold) in holds.iter().enumerate() {
        let (path, body) = if i % 2 == 0 {
            (
                format!("/v1/holds/{hold}/release"),
                json!({"amount": "4", "destination": b, "reason": "release"}),
            )
        } else {
            (format!("/v1/holds/{hold}/void"), json!({"reason": "void"}))
        };
        let key = format!("resolve-{i}");
        let (s, answer) = app.post(&path, ADMIN, Some(&key), &body).await;
        assert_eq!(s, StatusCode::CREATED, "{answer}");
        requests.push((path, key, body));
        first_answers.push(answer);
    }
    assert_eq!(requests.len(), 1000);

    let before = (
        app.footprint().await,
        app.account(&a).await,
        app.account(&b).await,
    );
    // Replay all of them, eight at a time, in reverse order.
    let replays: Vec<(StatusCode, Value)> = futures::stream::iter(requests.iter().rev())
        .map(|(path, key, body)| app.post(path, ADMIN, Some(key), body))
        .buffered(8)
        .collect()
        .await;
    for ((status, answer), first) in replays.into_iter().zip(first_answers.iter().rev()) {
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(&answer, first, "a replay must return the first answer");
    }
    assert_eq!(
        (
            app.footprint().await,
            app.account(&a).await,
            app.account(&b).await
        ),
        before
    );

    // A used key with a different body: 409, and nothing changes.
    for (path, key, body) in [
        (
            "/v1/deposits".to_owned(),
            "dep-0",
            json!({"account": a, "amount": "2", "reason": "funding"}),
        ),
        (
            "/v1/deposits".to_owned(),
            "dep-1",
            json!({"account": b, "amount": "2.5", "reason": "funding"}),
        ),
        (
            "/v1/holds".to_owned(),
            "hold-0",
            json!({"account": a, "amount": "10", "reason": "another reason"}),
        ),
        (
            format!("/v1/holds/{}/release", holds[0]),
            "resolve-0",
            json!({"amount": "5", "destination": b, "reason": "release"}),
        ),
        (
            "/v1/deposits".to_owned(),
            "hold-1",
            json!({"account": a, "amount": "10", "reason": "hold"}),
        ),
    ] {
        let (s, answer) = app.post(&path, ADMIN, Some(key), &body).await;
        assert_eq!(
            (s, answer["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("idempotency_conflict")),
            "{key}: {answer}"
        );
    }
    assert_eq!(
        (
            app.footprint().await,
            app.account(&a).await,
            app.account(&b).await
        ),
        before
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

async fn concurrent_duplicates_commit_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let a = app.create_account("a").await;
    app.deposit(&a, "100", "fund").await;
    for round in 0..5 {
        let key = format!("race-{round}");
        let body = json!({"account": a, "amount": "60", "reason": "race"});
        let answers: Vec<(StatusCode, Value)> = futures::future::join_all(
            (0..12).map(|_| app.post("/v1/holds", ADMIN, Some(&key), &body)),
        )
        .await;
        let first = &answers[0].1;
        for (s, answer) in &answers {
            // Never "insufficient funds": the duplicates see the winner's result, not its effect.
            assert_eq!(*s, StatusCode::CREATED, "{answer}");
            assert_eq!(answer, first);
        }
        let hold = first["hold"]["id"].as_str().unwrap();
        let (s, _) = app
            .post(
                &format!("/v1/holds/{hold}/void"),
                ADMIN,
                Some(&format!("void-{round}")),
                &json!({"reason": "reset"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    // fund + 5 × (hold + void)
    assert_eq!(app.footprint().await.0, 11);
    assert_eq!(app.account(&a).await["available"], "100.000000");
    app.verify_clean().await;
    app.stop().await.unwrap();
}
