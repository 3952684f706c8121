//! The OpenAPI document is the partners' contract (issue 20): schemathesis, a property-based
//! API tester, reads `/openapi.json` and runs every check against the running daemon, once
//! with a staff Admin's token and once with a partner company Admin's. Any finding fails the
//! test with schemathesis's report.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::json;
use treasuryd::config::TokenConfig;
use treasuryd::domain::Role;

const COMPANY_ADMIN: &str = "tdk_test_contract_company_admin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_does_what_its_openapi_document_says() {
    let schemathesis = ensure_schemathesis();
    let first = TestApp::spawn(Backend::Sqlite).await;
    let (s, company) = first
        .post(
            "/v1/companies",
            ADMIN,
            None,
            &json!({"name": "Contract Co", "tier": "M", "reason": "contract test"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{company}");
    let company: uuid::Uuid = company["id"].as_str().unwrap().parse().unwrap();
    let db = first.db();
    first.stop().await.unwrap();
    let app = TestApp::spawn_on(db, move |c, _| {
        // schemathesis sends wrong tokens on purpose (ignored_auth): not brute force here.
        c.server.auth_failures_per_minute = 100_000;
        c.auth.tokens.push(TokenConfig {
            name: "contract-company-admin".into(),
            role: Role::Admin,
            sha256: hex::encode(treasuryd::api::auth::token_digest(COMPANY_ADMIN)),
            company: Some(company),
        });
    })
    .await;
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools/schemathesis/schemathesis.toml");
    for token in [ADMIN, COMPANY_ADMIN] {
        let out = tokio::process::Command::new(&schemathesis)
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(app.url("/openapi.json"))
            .args([
                "--checks",
                "all",
                "--max-examples",
                "25",
                "--seed",
                "20261207",
            ])
            .args(["--workers", "2", "--no-color"])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .output()
            .await
            .expect("schemathesis runs");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found failures with {token}:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}
