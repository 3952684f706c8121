//! Webhook endpoints through the API: Admin only; SSRF targets and unknown event types refused
//! naming the field; the signing secret shown once and never again (not in lists, reads or the
//! audit log); signatures that `openssl dgst -hmac` verifies independently, with both secrets
//! during a rotation's overlap; endpoints switched off with a reason.

use crate::harness::*;
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};

/// `openssl dgst -sha256 -hmac KEY` over `data`, hex.
pub fn openssl_hmac(key: &str, data: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", key])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_registered_safely_and_sign_verifiably() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let body = |url: &str, types: Value| json!({"url": url, "event_types": types, "reason": "acme's payout hook"});
    let good = body(
        "https://hooks.acme.example/treasuryd",
        json!(["payout.*", "deal.settled"]),
    );
    let (s, _) = app
        .post("/v1/webhooks/endpoints", TRADER, None, &good)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (bad, field, code) in [
        (
            body("https://127.0.0.1/hook", json!(["*"])),
            "url",
            "invalid_url",
        ),
        (
            body("https://169.254.169.254/latest", json!(["*"])),
            "url",
            "invalid_url",
        ),
        (
            body("https://[::1]:8443/hook", json!(["*"])),
            "url",
            "invalid_url",
        ),
        (
            body("http://hooks.acme.example/x", json!(["*"])),
            "url",
            "invalid_url",
        ),
        (
            body("https://localhost/x", json!(["*"])),
            "url",
            "invalid_url",
        ),
        (
            body(
                "https://hooks.acme.example/x",
                json!(["payout.confirmed", "payout.exploded"]),
            ),
            "event_types[1]",
            "invalid_event_type",
        ),
    ] {
        let (s, e) = app.post("/v1/webhooks/endpoints", ADMIN, None, &bad).await;
        assert_eq!(
            (s, e["error"]["field"].as_str(), e["error"]["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field), Some(code)),
            "{bad}: {e}"
        );
    }
    let (_, list) = app.get("/v1/webhooks/endpoints", ADMIN).await;
    assert_eq!(list["items"], json!([]), "refusals store nothing");

    let (s, created) = app.post("/v1/webhooks/endpoints", ADMIN, None, &good).await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() == 70,
        "{secret}"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let (_, one) = app
        .get(&format!("/v1/webhooks/endpoints/{id}"), ADMIN)
        .await;
    let (_, list) = app.get("/v1/webhooks/endpoints", ADMIN).await;
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    for shown in [&one, &list, &audit] {
        assert!(
            !shown.to_string().contains(&secret),
            "the secret leaked: {shown}"
        );
    }
    assert_eq!(one["event_types"], json!(["payout.*", "deal.settled"]));

    // A delivery's signature, checked by an independent HMAC implementation.
    let payload = br#"{"id":"evt_1","type":"payout.confirmed"}"#;
    let s1 = SecretString::from(secret.clone());
    let header = treasuryd::webhooks::signature_header(&[&s1], 1_790_000_000, payload);
    let mut signed = b"1790000000.".to_vec();
    signed.extend_from_slice(payload);
    assert_eq!(
        header,
        format!("t=1790000000,v1={}", openssl_hmac(&secret, &signed))
    );

    // Rotation: a new secret, shown once; the old one still signs during the overlap.
    let (s, rotated) = app
        .post(
            &format!("/v1/webhooks/endpoints/{id}/rotate"),
            ADMIN,
            None,
            &json!({"overlap_seconds": 3600, "reason": "yearly rotation"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert!(
        rotated["previous_secret_valid_until"].is_string(),
        "{rotated}"
    );
    let stored = app
        .store
        .endpoint(uuid::Uuid::parse_str(&id).unwrap())
        .await
        .unwrap();
    let secrets =
        stored.signing_secrets(treasuryd::clock::Clock::now(&treasuryd::clock::SystemClock));
    assert_eq!(secrets.len(), 2);
    let header = treasuryd::webhooks::signature_header(&secrets, 1_790_000_000, payload);
    assert_eq!(
        header,
        format!(
            "t=1790000000,v1={},v1={}",
            openssl_hmac(&new_secret, &signed),
            openssl_hmac(&secret, &signed)
        )
    );
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    assert!(!audit.to_string().contains(&new_secret));

    let (s, off) = app
        .post(
            &format!("/v1/webhooks/endpoints/{id}/active"),
            ADMIN,
            None,
            &json!({"active": false, "reason": "partner migrating"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (off["active"].as_bool(), off["disabled_reason"].as_str()),
        (Some(false), Some("partner migrating"))
    );
    let (s, _) = app.get("/v1/webhooks/endpoints/not-an-id", ADMIN).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_on_this_host_needs_the_private_network_switch() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        c.webhooks.allow_private_networks = true
    })
    .await;
    let (s, e) = app
        .post("/v1/webhooks/endpoints", ADMIN, None, &json!({"url": "http://127.0.0.1:9/hook", "event_types": ["*"], "reason": "local receiver"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    app.stop().await.unwrap();
}
