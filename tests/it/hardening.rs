//! Hardening the edges (issue 20), on the real binary where it takes a process: a token
//! removed from the config stops working on SIGHUP, even during a configuration freeze, and
//! ends the console sessions signed in with it.

use crate::console::Session;
use crate::harness::*;
use reqwest::StatusCode;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ADMIN_TOKEN: &str = "tdk_test_hardening_admin";
const DOOMED: &str = "tdk_test_hardening_doomed";
/// The night operator's token after rotation: same name and role, another secret.
const ROTATED: &str = "tdk_test_hardening_rotated";

/// The config with the admin's token and, if given, the night operator's.
fn write_config(dir: &Path, operator: Option<&str>) -> std::path::PathBuf {
    let entry = |name: &str, role: &str, token: &str| {
        format!(
            "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            hex::encode(treasuryd::api::auth::token_digest(token))
        )
    };
    let mut tokens = entry("admin", "admin", ADMIN_TOKEN);
    if let Some(token) = operator {
        tokens.push_str(&entry("night-operator", "operator", token));
    }
    let path = dir.join("treasuryd.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nwallets_dir = {wallets:?}\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n[console]\nsecret_env = \"{key}\"\n{tokens}",
            key = crate::engine_crash::KEY_VAR,
            data = dir.display().to_string(),
            wallets = dir.join("no-wallets").display().to_string(),
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_stops_working_on_sighup_even_during_a_freeze() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), Some(DOOMED));
    let console_key = crate::console::CONSOLE_KEY;
    let (mut daemon, addr, _logs) = crate::engine_crash::start(&config, &db.url, console_key, None);
    let api = format!("http://{addr}");
    let client = reqwest::Client::new();
    let get = |token: &'static str| {
        let (client, url) = (client.clone(), format!("{api}/v1/networks"));
        async move {
            client
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(get(DOOMED).await, StatusCode::OK);
    // The same token signs in to the console (an Operator: with a second factor).
    let mut browser = Session::at(api.clone());
    browser.sign_in(DOOMED).await;
    let (s, _, _) = browser.get("/admin").await;
    assert_eq!(s, StatusCode::OK);
    // A configuration freeze holds templates and scope, not revocation.
    let r = client
        .put(format!("{api}/v1/config-freeze"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"enabled": true, "reason": "launch window"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());

    let pid = daemon.id().to_string();
    let hang_up = || {
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success());
    };
    let until_refused = |token: &'static str| {
        let get = &get;
        async move {
            for _ in 0..400 {
                if get(token).await == StatusCode::UNAUTHORIZED {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            false
        }
    };
    // Rotation: the same user and role under a new token. The old token and the session it
    // signed in are gone; the new token works.
    write_config(dir.path(), Some(ROTATED));
    hang_up();
    assert!(
        until_refused(DOOMED).await,
        "the rotated-out token still works"
    );
    assert_eq!(get(ROTATED).await, StatusCode::OK);
    let (s, _, to) = browser.get("/admin").await;
    assert_eq!(
        (s, to.as_deref()),
        (StatusCode::SEE_OTHER, Some("/admin/login")),
        "a session outlived the token it signed in with"
    );
    // Removal.
    write_config(dir.path(), None);
    hang_up();
    assert!(
        until_refused(ROTATED).await,
        "the removed token still works"
    );
    assert_eq!(get(ADMIN_TOKEN).await, StatusCode::OK);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

/// The slow-header attack: 1,000 connections each sending a request header one byte at a
/// time (a byte a second here, against a 2 s header timeout, where the attacker sends
/// one every 10 s against the default 10 s). Meanwhile `/readyz`, reads, ledger writes and
/// payouts keep answering, and the server closes each slow connection once its header is
/// late (the attacker reconnects).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_clients_do_not_stop_the_api() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        c.server.header_read_timeout_seconds = 2;
    })
    .await;
    let account = app.create_account("steady").await;
    app.deposit(&account, "1000", "fund").await;
    let stop = tokio_util::sync::CancellationToken::new();
    // How many attackers have had a connection closed by the server at least once.
    let closed = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..1_000)
        .map(|_| {
            let (api, stop, closed) = (app.api, stop.clone(), closed.clone());
            tokio::spawn(async move {
                let header =
                    b"GET /v1/networks HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa";
                let mut was_closed = false;
                while !stop.is_cancelled() {
                    let Ok(mut conn) = tokio::net::TcpStream::connect(api).await else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    for byte in header {
                        if stop.is_cancelled() || conn.write_all(&[*byte]).await.is_err() {
                            break;
                        }
                        let mut buf = [0u8; 256];
                        match tokio::time::timeout(Duration::from_secs(1), conn.read(&mut buf))
                            .await
                        {
                            Err(_) => continue,
                            Ok(_) => {
                                if !was_closed {
                                    was_closed = true;
                                    closed.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..10 {
        let r = client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let (s, body) = app
            .post(
                "/v1/deposits",
                ADMIN,
                Some(&format!("during-{i}")),
                &json!({"account": account, "amount": "1", "reason": "under attack"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
        let (s, body) = app
            .post(
                "/v1/payouts",
                TRADER,
                Some(&format!("payout-{i}")),
                &json!({"account": account, "network": "ethereum", "asset": "USDT",
                    "destination": "0x70997970C51812dc3A010C7d01b50e0d17dc79C8", "amount": "1"}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every attacker's connection meets the 2 s header timeout. On a loaded machine the last
    // ones may only have connected late (the listen backlog is finite), so wait for them with a
    // bound far above the timeout instead of assuming a fixed moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while closed.load(Ordering::Relaxed) < 1_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = closed.load(Ordering::Relaxed);
    assert_eq!(
        seen, 1_000,
        "only {seen} of 1,000 slow clients were ever closed"
    );
    stop.cancel();
    for a in attackers {
        a.await.unwrap();
    }
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// The console's routes sit under the API's layers: a request id, the HTTP metrics, the body
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_routes_get_the_api_layers() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        crate::console::with_console(c);
        c.server.max_body_bytes = 2048;
    })
    .await;
    let r = app
        .client
        .get(app.url("/admin/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("x-request-id"));
    let r = app
        .client
        .post(app.url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "x".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("route=\"/admin/login\""),
        "console requests are not counted: {metrics}"
    );
    app.stop().await.unwrap();
}

/// Evidence: at most `evidence_max_per_deal` files a deal (409 past it, nothing stored);
/// a download is an attachment the browser must not sniff; the console's evidence links work
/// in a signed-in browser, which sends no bearer token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_is_bounded_downloaded_as_attachments_and_linked_in_the_console() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        crate::console::with_console(c);
        c.escrow.evidence_max_per_deal = 2;
        c.pilot = Some(treasuryd::scope::PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
    })
    .await;
    let buyer = funded_partner(&app, "buyer", "USDT", "10000").await;
    let seller = app.create_account("seller").await;
    let deal = crate::deals::new_deal(&app, &buyer, &seller, "100", "USED_CAR_PRIVATE").await;
    let id = deal["id"].as_str().unwrap().to_owned();
    let first = crate::deals::upload(&app, &id, "PHOTO").await;
    crate::deals::upload(&app, &id, "PHOTO").await;
    let before = app.footprint().await;
    let r = app
        .client
        .post(app.url(&format!("/v1/deals/{id}/evidence")))
        .bearer_auth(TRADER)
        .header("content-type", "image/jpeg")
        .header("x-evidence-type", "PHOTO")
        .body("a third photo")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "evidence_limit_reached", "{body}");
    assert_eq!(app.footprint().await, before);

    let r = app
        .client
        .get(app.url(&format!("/v1/deals/{id}/evidence/{first}")))
        .bearer_auth(TRADER)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let disposition = r.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");

    // The deal page links each file under /admin, where the session cookie goes.
    let mut browser = Session::new(&app);
    browser.sign_in(ADMIN).await;
    let (s, page, _) = browser.get(&format!("/admin/deals/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    let link = format!("/admin/deals/{id}/evidence/{first}");
    assert!(page.contains(&link), "{page}");
    let (s, file, _) = browser.get(&link).await;
    assert_eq!(s, StatusCode::OK);
    assert!(file.starts_with("jpeg bytes of"), "{file}");
    app.stop().await.unwrap();
}

/// Exports take a time range and defuse what a spreadsheet would run: a deposit whose reason
/// is a formula comes out as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_take_a_range_and_never_carry_a_live_formula() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let account = app.create_account("csv").await;
    let (s, early) = app
        .post(
            "/v1/deposits",
            ADMIN,
            Some("early"),
            &json!({"account": account, "amount": "1", "reason": "=HYPERLINK(\"http://x\",\"pay\")"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{early}");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let cut = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.deposit(&account, "2", "late").await;

    let all = app.get_text("/v1/exports/journal?format=csv", ADMIN).await;
    assert!(all.contains("'=HYPERLINK"), "{all}");
    assert!(
        !all.contains(",=HYPERLINK") && !all.contains("\"=HYPERLINK"),
        "{all}"
    );
    let late = app
        .get_text(
            &format!(
                "/v1/exports/journal?format=csv&from={}",
                cut.replace('+', "%2B")
            ),
            ADMIN,
        )
        .await;
    let early_tx = early["transaction"]["id"].as_str().unwrap();
    assert!(all.contains(early_tx) && !late.contains(early_tx), "{late}");
    assert_eq!(
        late.lines().count(),
        1 + 2,
        "the header and the late deposit's two postings: {late}"
    );
    let (s, body) = app.get("/v1/exports/journal?from=yesterday", ADMIN).await;
    assert_eq!(
        (s, &body["error"]["field"]),
        (StatusCode::UNPROCESSABLE_ENTITY, &json!("from"))
    );
    app.stop().await.unwrap();
}
