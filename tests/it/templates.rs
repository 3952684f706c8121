//! Deal templates and the pilot's scope flags through the API and the real binary: templates
//! are listed; the scope is closed until set, set by an Admin with a reason (audited, checked
//! against the templates, exported as metrics) or from `[pilot]` at start; SIGHUP reloads the
//! templates and the scope from disk, and a broken file changes nothing.

use crate::crash::binary;
use crate::engine_crash::{ADMIN_TOKEN, call};
use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use treasuryd::scope::PilotScope;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
}

fn scope_body(countries: &[&str], categories: &[&str], version: &str, reason: &str) -> Value {
    json!({"enabled": true, "country-allowlist": countries, "category-allowlist": categories,
           "template-version": version, "reason": reason})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_and_the_scope_is_set_by_an_admin() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (s, list) = app.get("/v1/templates", TRADER).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["items"].as_array().unwrap().len(), 5, "{list}");
    let (s, t) = app
        .get("/v1/templates/MN_REAL_ESTATE_SALE_v1", OPERATOR)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            t["inspectionTtlDays"].as_u64(),
            t["disputeTtlHours"].as_u64(),
            t["holdbackBps"].as_u64()
        ),
        (Some(7), Some(72), Some(2_500))
    );
    let (s, _) = app.get("/v1/templates/MN_BOATS_v1", ADMIN).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Closed until someone opens it.
    let (_, scope) = app.get("/v1/pilot/scope", TRADER).await;
    assert_eq!(scope["enabled"], false, "{scope}");
    assert_eq!(scope["admitted_templates"], json!([]));

    let body = scope_body(&["MN"], &["USED_CAR_PRIVATE"], "v1", "pilot day 0");
    let (s, _) = app
        .call(reqwest::Method::PUT, "/v1/pilot/scope", TRADER, Some(&body))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    for (bad, field) in [
        (
            scope_body(&["JP"], &["USED_CAR_PRIVATE"], "v1", "x"),
            "country-allowlist[0]",
        ),
        (
            scope_body(&["MN"], &["BOATS"], "v1", "x"),
            "category-allowlist[0]",
        ),
        (
            scope_body(&["MN"], &["USED_CAR_PRIVATE"], "1", "x"),
            "template-version",
        ),
        (
            scope_body(&["MN"], &["USED_CAR_PRIVATE"], "v1", " "),
            "reason",
        ),
    ] {
        let (s, e) = app
            .call(reqwest::Method::PUT, "/v1/pilot/scope", ADMIN, Some(&bad))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let (_, still) = app.get("/v1/pilot/scope", ADMIN).await;
    assert_eq!(still["enabled"], false, "refusals change nothing");

    let (s, set) = app
        .call(reqwest::Method::PUT, "/v1/pilot/scope", ADMIN, Some(&body))
        .await;
    assert_eq!(s, StatusCode::OK, "{set}");
    assert_eq!(set["admitted_templates"], json!(["MN_USED_CAR_PRIVATE_v1"]));
    assert_eq!(set["set_by"], "test-admin");
    assert_eq!(set["reason"], "pilot day 0");
    let text = app.metrics_text().await;
    assert_eq!(metric_value(&text, "treasuryd_pilot_enabled"), Some(1.0));
    assert_eq!(
        metric_value(
            &text,
            "treasuryd_pilot_scope{category=\"USED_CAR_PRIVATE\",country=\"MN\",template=\"MN_USED_CAR_PRIVATE_v1\"}"
        ),
        Some(1.0)
    );
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    assert!(
        audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"] == "pilot_scope.set" && a["reason"] == "pilot day 0"),
        "{audit}"
    );
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_files_pilot_section_is_applied_at_start() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c, _| {
        c.pilot = Some(PilotScope {
            enabled: true,
            country_allowlist: vec!["MN".into(), "KR".into()],
            category_allowlist: vec!["USED_CAR_PRIVATE".into()],
            template_version: "v1".into(),
        });
    })
    .await;
    let (_, scope) = app.get("/v1/pilot/scope", ADMIN).await;
    assert_eq!(scope["set_by"], "config", "{scope}");
    assert_eq!(
        scope["admitted_templates"],
        json!(["MN_USED_CAR_PRIVATE_v1", "KR_USED_CAR_PRIVATE_v1"])
    );
    app.stop().await.unwrap();
}

fn write_config(dir: &Path, templates: &Path, categories: &str, version: &str) -> PathBuf {
    let digest = hex::encode(treasuryd::api::auth::token_digest(ADMIN_TOKEN));
    let path = dir.join("treasuryd.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = {data:?}\nwallets_dir = {wallets:?}\n[server]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n\
             [log]\nformat = \"json\"\n[[auth.tokens]]\nname = \"admin\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n\
             [escrow]\ntemplates_dir = {templates:?}\n\
             [pilot]\nenabled = true\ncountry-allowlist = [\"MN\"]\ncategory-allowlist = [{categories}]\ntemplate-version = \"{version}\"\n",
            data = dir.display().to_string(),
            wallets = dir.join("no-wallets").display().to_string(),
            templates = templates.display().to_string(),
        ),
    )
    .unwrap();
    path
}

fn hang_up(pid: u32) {
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
}

async fn scope_until(client: &reqwest::Client, api: &str, want: &Value) -> Value {
    let mut scope = Value::Null;
    for _ in 0..200 {
        scope = call(client, api, ADMIN_TOKEN, "/v1/pilot/scope", None, None)
            .await
            .1;
        if &scope["admitted_templates"] == want {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    scope
}

/// A v2 template and a wider scope arrive on disk; SIGHUP refuses the wider scope (it has not
/// stood 7 days) and makes the v2 template current without a restart. A broken template then
/// arrives; SIGHUP refuses it and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_templates_and_scope_and_refuses_a_broken_file() {
    let db = TestDb::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    for name in ["MN_USED_CAR_PRIVATE_v1.json", "MN_USED_CAR_DEALER_v1.json"] {
        std::fs::copy(shipped().join(name), templates.join(name)).unwrap();
    }
    let config = write_config(dir.path(), &templates, "\"USED_CAR_PRIVATE\"", "v1");
    let (mut daemon, api, logs) = crate::engine_crash::start(&config, &db.url, "", None);
    let client = reqwest::Client::new();
    let scope = scope_until(&client, &api, &json!(["MN_USED_CAR_PRIVATE_v1"])).await;
    assert_eq!(scope["set_by"], "config", "{scope}");

    let v1 = std::fs::read_to_string(templates.join("MN_USED_CAR_PRIVATE_v1.json")).unwrap();
    let v2 = v1
        .replace("\"version\": 1", "\"version\": 2")
        .replace("\"inspectionTtlDays\": 3", "\"inspectionTtlDays\": 5");
    std::fs::write(templates.join("MN_USED_CAR_PRIVATE_v2.json"), v2).unwrap();
    // A wider scope by reload is an expansion: refused as a whole (the new template too) while
    // the scope in force is younger than 7 days.
    write_config(
        dir.path(),
        &templates,
        "\"USED_CAR_PRIVATE\", \"USED_CAR_DEALER\"",
        "v2",
    );
    hang_up(daemon.id());
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon answers the SIGHUP");
        if line.contains("SIGHUP: reload refused") {
            assert!(
                line.contains("USED_CAR_DEALER needs the scope in force stable for 7 days"),
                "{line}"
            );
            break;
        }
    }
    let (_, list) = call(&client, &api, ADMIN_TOKEN, "/v1/templates", None, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    // The new version of an admitted scope is not an expansion: it goes live.
    write_config(dir.path(), &templates, "\"USED_CAR_PRIVATE\"", "v2");
    hang_up(daemon.id());
    let want = json!(["MN_USED_CAR_PRIVATE_v2"]);
    let scope = scope_until(&client, &api, &want).await;
    assert_eq!(scope["admitted_templates"], want, "{scope}");
    let (_, t) = call(
        &client,
        &api,
        ADMIN_TOKEN,
        "/v1/templates/MN_USED_CAR_PRIVATE_v2",
        None,
        None,
    )
    .await;
    assert_eq!(t["inspectionTtlDays"], 5);

    // A broken file: the reload is refused as a whole.
    let broken = v1
        .replace("\"version\": 1", "\"version\": 3")
        .replace("\"immediateRatio\": 0.85", "\"immediateRatio\": 0.9");
    std::fs::write(templates.join("MN_USED_CAR_PRIVATE_v3.json"), broken).unwrap();
    write_config(dir.path(), &templates, "\"USED_CAR_PRIVATE\"", "v3");
    hang_up(daemon.id());
    // Proof that the reload ran (and was refused) before checking that it changed nothing.
    loop {
        let line = logs
            .recv_timeout(Duration::from_secs(60))
            .expect("the daemon answers the SIGHUP");
        if line.contains("SIGHUP: reload refused") {
            assert!(line.contains("MN_USED_CAR_PRIVATE_v3"), "{line}");
            break;
        }
    }
    let (_, list) = call(&client, &api, ADMIN_TOKEN, "/v1/templates", None, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    let scope = call(&client, &api, ADMIN_TOKEN, "/v1/pilot/scope", None, None)
        .await
        .1;
    assert_eq!(scope["admitted_templates"], want, "unchanged: {scope}");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    // `templates check` names the file and the field; the daemon refuses to start on it.
    let out = Command::new(binary())
        .args(["templates", "check", "--dir", templates.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MN_USED_CAR_PRIVATE_v3.json: immediateRatio:"),
        "{err}"
    );
    let out = Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("TREASURYD__DATABASE__URL", &db.url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("MN_USED_CAR_PRIVATE_v3.json: immediateRatio"),
        "{err}"
    );
}

crate::on_both_backends!(a_new_scope_waits_for_seven_stable_days_without_critical_incidents);

/// Seeds 000 and 001: each expansion step only after the one before has stood 7 days with no
/// SEV0/SEV1. On an injected clock: refused at 6 days, admitted at 7; a SEV1 in the window holds
/// the next step back until it is resolved and 7 days old; narrowing is never held back.
async fn a_new_scope_waits_for_seven_stable_days_without_critical_incidents(backend: Backend) {
    let day = 86_400_000_000i64;
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-06-01T09:00:00Z")
        .unwrap()
        .timestamp_micros();
    let clock = treasuryd::clock::ManualClock::starting_at(t0);
    let app = TestApp::spawn_clocked(
        std::sync::Arc::new(TestDb::new(backend).await),
        clock.clone(),
        |_, _| {},
    )
    .await;
    let put = |body: Value| {
        let app = &app;
        async move {
            app.call(reqwest::Method::PUT, "/v1/pilot/scope", ADMIN, Some(&body))
                .await
        }
    };
    let used_cars = scope_body(&["MN"], &["USED_CAR_PRIVATE"], "v1", "pilot day 0");
    let dealers = scope_body(
        &["MN"],
        &["USED_CAR_PRIVATE", "USED_CAR_DEALER"],
        "v1",
        "step 2",
    );
    let (s, v) = put(used_cars.clone()).await;
    assert_eq!(s, StatusCode::OK, "the first opening is not held back: {v}");

    clock.set(t0 + 6 * day);
    let (s, e) = put(dealers.clone()).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("expansion_not_stable")),
        "{e}"
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("MN × USED_CAR_DEALER needs the scope in force stable for 7 days without SEV0/SEV1 incidents: it has stood 6 days 0 h"),
        "{e}"
    );
    let (_, still) = app.get("/v1/pilot/scope", ADMIN).await;
    assert_eq!(
        still["admitted_templates"],
        json!(["MN_USED_CAR_PRIVATE_v1"])
    );
    // The same scope again admits nothing new and changes nothing: the count goes on.
    let (s, _) = put(used_cars.clone()).await;
    assert_eq!(s, StatusCode::OK);

    clock.set(t0 + 7 * day);
    let (s, v) = put(dealers.clone()).await;
    assert_eq!(s, StatusCode::OK, "seven days stable: {v}");

    // A SEV1 two days later: the next step waits until it is resolved and a week old.
    let (s, incident) = app
        .post(
            "/v1/incidents",
            OPERATOR,
            None,
            &json!({"severity": "SEV1", "summary": "timer runner stalled",
                "at": treasuryd::domain::micros_to_rfc3339(t0 + 9 * day)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{incident}");
    let houses = scope_body(
        &["MN"],
        &["USED_CAR_PRIVATE", "USED_CAR_DEALER", "REAL_ESTATE_SALE"],
        "v1",
        "step 3",
    );
    clock.set(t0 + 15 * day);
    let (s, e) = put(houses.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("with 1 critical incident(s) since and 1 unresolved"),
        "{e}"
    );
    let (s, _) = app
        .post(
            &format!("/v1/incidents/{}/updates", incident["id"].as_str().unwrap()),
            OPERATOR,
            None,
            &json!({"note": "fixed", "status": "resolved"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = put(houses.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "resolved but inside the week: {e}");
    clock.set(t0 + 16 * day + 1);
    let (s, v) = put(houses).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Narrowing (a rollback) is never held back.
    let (s, v) = put(used_cars).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.stop().await.unwrap();
}
