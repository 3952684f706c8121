//! The incident register end to end: an incident opened, moved along its timeline and
//! resolved, with the page it raises checked by promtool against the daemon's own /metrics,
//! the audit trail, bad input refused without a trace, and the Go/No-Go report reading it.

use crate::harness::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

crate::on_both_backends!(an_incident_is_opened_moved_and_resolved_and_the_page_follows);

/// The alerts `alerts/incidents.yml` fires on these /metrics, as `promtool test rules` sees
/// them: every `treasuryd_incidents_open` series of the scrape held for ten minutes.
pub(crate) fn incident_alerts_fired(metrics: &str, expected: &[(&str, u64)]) {
    ensure_prometheus();
    let series: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with("treasuryd_incidents_open{"))
        .map(|l| {
            let (name, value) = l.rsplit_once(' ').unwrap();
            format!("      - series: '{name}'\n        values: '{value}x10'\n")
        })
        .collect();
    assert!(!series.is_empty(), "no incident series in {metrics}");
    let exp: String = expected
        .iter()
        .map(|(severity, n)| {
            format!(
                "          - exp_labels: {{severity: critical, incident_severity: {severity}}}\n            exp_annotations:\n              summary: \"{n} {severity} incident(s) open: rollback criterion\"\n              description: \"The incident register holds {n} open {severity} incident(s). The launch plan rolls back (network, wallet, volume or all) until each is mitigated or resolved.\"\n              runbook_url: runbooks/critical-incident-open.md\n"
            )
        })
        .collect();
    let exp = if exp.is_empty() {
        "        exp_alerts: []\n".to_owned()
    } else {
        format!("        exp_alerts:\n{exp}")
    };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("alerts/incidents.yml");
    let dir = tempfile::tempdir().unwrap();
    let test = dir.path().join("scraped.test.yml");
    std::fs::write(
        &test,
        format!(
            "rule_files:\n  - {}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n{}    alert_rule_test:\n      - eval_time: 5m\n        alertname: TreasurydCriticalIncidentOpen\n{exp}",
            rules.display(),
            series.concat()
        ),
    )
    .unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&test)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool disagrees with {expected:?}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn update(app: &TestApp, id: &str, body: Value) -> (StatusCode, Value) {
    app.post(
        &format!("/v1/incidents/{id}/updates"),
        OPERATOR,
        None,
        &body,
    )
    .await
}

async fn an_incident_is_opened_moved_and_resolved_and_the_page_follows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let began = "2026-12-08T09:30:00Z";

    // Bad input is refused, naming the field, and leaves nothing behind.
    for (body, field) in [
        (json!({"severity": "SEV9", "summary": "x"}), "severity"),
        (json!({"severity": "SEV1", "summary": "  "}), "summary"),
        (
            json!({"severity": "SEV1", "summary": "x", "links": [{"kind": "server", "id": "a"}]}),
            "links[0].kind",
        ),
        (
            json!({"severity": "SEV1", "summary": "x", "links": [{"kind": "network", "id": "ethereum"}, {"kind": "wallet", "id": DESTINATION}]}),
            "links[1].id",
        ),
        (
            json!({"severity": "SEV1", "summary": "x", "links": [{"kind": "payout", "id": uuid::Uuid::now_v7().to_string()}]}),
            "links[0].id",
        ),
    ] {
        let (s, e) = app.post("/v1/incidents", OPERATOR, None, &body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {e}");
        assert_eq!(e["error"]["field"], field, "{e}");
    }
    let (s, e) = app
        .post(
            "/v1/incidents",
            TRADER,
            None,
            &json!({"severity": "SEV1", "summary": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (_, list) = app.get("/v1/incidents", OPERATOR).await;
    assert_eq!(list["incidents"], json!([]), "{list}");

    // Opened: SEV1, naming the network, and a SEV3 beside it that never pages.
    let (s, sev1) = app
        .post(
            "/v1/incidents",
            OPERATOR,
            None,
            &json!({"severity": "SEV1", "summary": "RPC provider returns stale blocks", "at": began,
                "links": [{"kind": "network", "id": "ethereum"}, {"kind": "network", "id": "ethereum"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sev1}");
    assert_eq!(sev1["status"], "open");
    assert_eq!(sev1["severity"], "SEV1");
    assert_eq!(sev1["recorded_by"], "test-operator");
    assert_eq!(sev1["at"], "2026-12-08T09:30:00.000000Z");
    assert_eq!(sev1["resolved_at"], Value::Null);
    assert_eq!(
        sev1["links"],
        json!([{"kind": "network", "id": "ethereum"}]),
        "{sev1}"
    );
    assert_eq!(sev1["timeline"], json!([]));
    let id = sev1["id"].as_str().unwrap().to_owned();
    let (s, sev3) = app
        .post(
            "/v1/incidents",
            ADMIN,
            None,
            &json!({"severity": "SEV3", "summary": "dashboard panel empty", "at": "2026-12-08T08:00:00Z"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let metrics = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"treasuryd_incidents_open{severity="SEV1",status="open"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"treasuryd_incidents_open{severity="SEV3",status="open"}"#
        ),
        Some(1.0)
    );
    incident_alerts_fired(&metrics, &[("SEV1", 1)]);

    let (s, open) = app.get("/v1/incidents?status=open", OPERATOR).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(open["incidents"].as_array().unwrap().len(), 2, "{open}");
    let (s, one) = app.get("/v1/incidents?status=open&limit=1", ADMIN).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["incidents"][0]["id"], id.as_str(), "newest first");
    let next = one["next"].as_str().unwrap().to_owned();
    let (_, rest) = app
        .get(&format!("/v1/incidents?status=open&before={next}"), ADMIN)
        .await;
    assert_eq!(rest["incidents"][0]["id"], sev3["id"], "the older one next");
    assert_eq!(rest["next"], Value::Null);
    let (s, e) = app.get("/v1/incidents?status=closed", ADMIN).await;
    assert_eq!(
        (s, e["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("status"))
    );

    // Mitigated: the page stops, the incident stays in the register.
    let (s, m) = update(
        &app,
        &id,
        json!({"note": "safe-mode on ethereum; second provider primary", "status": "mitigated"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["status"], "mitigated");
    assert_eq!(m["timeline"][0]["status"], "mitigated");
    assert_eq!(m["timeline"][0]["author"], "test-operator");
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            r#"treasuryd_incidents_open{severity="SEV1",status="open"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            r#"treasuryd_incidents_open{severity="SEV1",status="mitigated"}"#
        ),
        Some(1.0)
    );
    incident_alerts_fired(&metrics, &[]);

    // Re-graded upwards while mitigated does not page; opened again, it does, as SEV0.
    let (s, r) = update(
        &app,
        &id,
        json!({"note": "funds at risk", "severity": "SEV0", "status": "open"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(
        (r["severity"].as_str(), r["status"].as_str()),
        (Some("SEV0"), Some("open"))
    );
    incident_alerts_fired(&app.metrics_text().await, &[("SEV0", 1)]);

    // Resolved: the series clear, only notes are taken afterwards.
    let (s, r) = update(
        &app,
        &id,
        json!({"note": "provider fixed; safe-mode off after a green canary", "status": "resolved"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "resolved");
    assert!(r["resolved_at"].is_string(), "{r}");
    let metrics = app.metrics_text().await;
    for status in ["open", "mitigated"] {
        assert_eq!(
            metric_value(
                &metrics,
                &format!(r#"treasuryd_incidents_open{{severity="SEV0",status="{status}"}}"#)
            ),
            Some(0.0)
        );
    }
    incident_alerts_fired(&metrics, &[]);
    let (s, e) = update(&app, &id, json!({"note": "reopen", "status": "open"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, r) = update(
        &app,
        &id,
        json!({"note": "postmortem: docs/postmortems/2026-12-08.md", "links": [{"kind": "network", "id": "ethereum"}]}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let (s, _) = app.get(&format!("/v1/incidents/{id}"), TRADER).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, stored) = app.get(&format!("/v1/incidents/{id}"), OPERATOR).await;
    assert_eq!(s, StatusCode::OK);
    let timeline: Vec<(Value, Value)> = stored["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["status"].clone(), n["severity"].clone()))
        .collect();
    assert_eq!(
        timeline,
        vec![
            (json!("mitigated"), Value::Null),
            (json!("open"), json!("SEV0")),
            (json!("resolved"), Value::Null),
            (Value::Null, Value::Null),
        ],
        "the refused reopening left no note: {stored}"
    );
    assert_eq!(stored["links"].as_array().unwrap().len(), 1);
    for missing in [uuid::Uuid::now_v7().to_string(), "not-an-id".to_owned()] {
        let (s, _) = app.get(&format!("/v1/incidents/{missing}"), OPERATOR).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = update(&app, &missing, json!({"note": "x"})).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    // Every change is in the audit log.
    let (_, audit) = app.get("/v1/audit?limit=500", ADMIN).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["target"] == format!("incident:{id}"))
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "incident.open",
            "incident.update",
            "incident.update",
            "incident.resolve",
            "incident.update"
        ]
    );

    // The Go/No-Go report of the day counts the critical incident, resolved or not.
    let (s, report) = app
        .get("/v1/reports/go-no-go?from=2026-12-08&to=2026-12-09", ADMIN)
        .await;
    assert_eq!(s, StatusCode::OK, "{report}");
    assert_eq!(report["critical_incidents"], 1, "{report}");
}
