//! The operations assets are real: alert rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`), each alert with a firing and a quiet case, a severity, a summary, a
//! description and a runbook that exists; every dashboard is Grafana JSON whose every query is
//! valid PromQL naming only metrics we export; every `treasuryd …` command and `/v1/…` path in
//! the runbooks exists. promtool comes from Debian's `prometheus` package, installed on first
//! use; these tests fail, never skip, without it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn promtool() -> &'static str {
    crate::harness::ensure_prometheus();
    "promtool"
}

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

#[derive(Debug, Default)]
struct Rule {
    severity: Option<String>,
    summary: bool,
    description: bool,
    runbook: Option<String>,
}

/// The alerts of a rules file, read line by line (our files keep one key per line).
fn alerts(text: &str) -> BTreeMap<String, Rule> {
    let mut out = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            current = Some(name.to_owned());
            out.insert(name.to_owned(), Rule::default());
            continue;
        }
        let Some(rule) = current.as_ref().and_then(|c| out.get_mut(c)) else {
            continue;
        };
        if let Some(v) = line.strip_prefix("severity: ") {
            rule.severity = Some(v.to_owned());
        } else if line.starts_with("summary: ") {
            rule.summary = true;
        } else if line.starts_with("description: ") {
            rule.description = true;
        } else if let Some(v) = line.strip_prefix("runbook_url: ") {
            rule.runbook = Some(v.to_owned());
        }
    }
    out
}

#[test]
fn alert_rules_pass_promtool_and_each_fires_and_stays_quiet_in_a_test() {
    let promtool = promtool();
    let rules = files("alerts", ".yml");
    assert!(rules.len() >= 5, "{rules:?}");
    run(Command::new(promtool)
        .arg("check")
        .arg("rules")
        .args(&rules));
    let tests = files("alerts/tests", ".test.yml");
    let output = run(Command::new(promtool).arg("test").arg("rules").args(&tests));
    assert!(!output.contains("FAILED"), "{output}");

    let mut all = BTreeMap::new();
    for f in &rules {
        all.extend(alerts(&std::fs::read_to_string(f).unwrap()));
    }
    assert!(all.len() >= 20, "{} alerts", all.len());
    for (name, rule) in &all {
        assert!(
            matches!(rule.severity.as_deref(), Some("critical" | "warning")),
            "{name}: severity {:?}",
            rule.severity
        );
        assert!(
            rule.summary && rule.description,
            "{name}: summary and description"
        );
        let runbook = rule
            .runbook
            .as_deref()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        assert!(
            repo().join(runbook).is_file(),
            "{name}: {runbook} does not exist"
        );
    }
    // Each alert has a case where it fires and one where it does not.
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for f in &tests {
        let text = std::fs::read_to_string(f).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            let Some(name) = line.strip_prefix("alertname: ") else {
                continue;
            };
            match lines.get(i + 1) {
                Some(&"exp_alerts: []") => quiet.insert(name.to_owned()),
                Some(&"exp_alerts:") => firing.insert(name.to_owned()),
                other => panic!("{}: {name} is followed by {other:?}", f.display()),
            };
        }
    }
    for name in all.keys() {
        assert!(firing.contains(name), "{name} has no firing test case");
        assert!(quiet.contains(name), "{name} has no quiet test case");
    }
    // And the launch plan's three rollback criteria are among them.
    for name in [
        "TreasurydPassThroughRollback",
        "TreasurydEodUnsettled",
        "TreasurydWebhookRollback",
    ] {
        assert!(all.contains_key(name), "{name}");
    }
}

/// Metric names a PromQL expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("treasuryd_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(expr[start..end].to_owned());
        i = end;
    }
    out
}

#[test]
fn dashboards_are_grafana_json_querying_only_what_we_export() {
    let promtool = promtool();
    let exported: BTreeSet<String> = treasuryd::metrics::Metrics::new()
        .unwrap()
        .catalogue()
        .into_iter()
        .map(|d| d.name)
        .collect();
    let boards = files("dashboards", ".json");
    let titles: Vec<String> = boards
        .iter()
        .map(|f| {
            let d: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
            d["title"].as_str().unwrap().to_owned()
        })
        .collect();
    for wanted in ["Executive", "Treasury", "Trust", "Webhooks", "Escrow"] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no {wanted} dashboard in {titles:?}"
        );
    }
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut n = 0;
    let mut thresholds = BTreeSet::new();
    for f in &boards {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            d["uid"]
                .as_str()
                .is_some_and(|u| u.starts_with("treasuryd-")),
            "{name}: uid"
        );
        assert!(
            d["schemaVersion"].as_i64().is_some_and(|v| v >= 30),
            "{name}: schemaVersion"
        );
        let panels = d["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{name}");
        let mut ids = BTreeSet::new();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: panel ids are unique"
            );
            let g = &p["gridPos"];
            assert!(
                g["w"].as_i64().unwrap() > 0
                    && g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24,
                "{name}: {g}"
            );
            if p["type"] == "row" {
                continue;
            }
            for step in p["fieldConfig"]["defaults"]["thresholds"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(v) = step["value"].as_f64() {
                    thresholds.insert((name.clone(), v.to_string()));
                }
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {} has no query", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{name}: {expr} names no metric of ours");
                for m in names {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| m.strip_suffix(s).filter(|b| exported.contains(*b)))
                        .unwrap_or(&m);
                    assert!(
                        exported.contains(base),
                        "{name}: {m} in `{expr}` is not exported"
                    );
                }
                // Grafana's variables, as a query runs them.
                let promql = expr.replace("$network", ".*");
                n += 1;
                rules.push_str(&format!(
                    "      - record: dashboard_query_{n}\n        expr: {}\n",
                    serde_json::to_string(&promql).unwrap()
                ));
            }
        }
    }
    // The SLO panels carry the launch plan's thresholds.
    for (board, value) in [
        ("executive.json", "900"),
        ("executive.json", "1800"),
        ("executive.json", "3600"),
        ("executive.json", "0.99"),
        ("trust.json", "5400"),
        ("webhooks.json", "0.98"),
    ] {
        assert!(
            thresholds.contains(&(board.to_owned(), value.to_owned())),
            "{board} has no threshold at {value}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.yml");
    std::fs::write(&file, rules).unwrap();
    let out = run(Command::new(promtool).arg("check").arg("rules").arg(&file));
    assert!(out.contains(&format!("SUCCESS: {n} rules found")), "{out}");
}

/// Inline code spans and fenced blocks of a Markdown text.
fn code(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            out.push(line.to_owned());
            continue;
        }
        for (i, part) in line.split('`').enumerate() {
            if i % 2 == 1 {
                out.push(part.to_owned());
            }
        }
    }
    out
}

/// Whether `mentioned` (e.g. `/v1/payouts/{id}/approve`, `/v1/canary/tron`) matches one of the
/// API's path templates.
fn is_api_path(mentioned: &str, templates: &[String]) -> bool {
    let path = mentioned
        .split(['?', ' '])
        .next()
        .unwrap_or(mentioned)
        .trim_end_matches([',', '.', ')', ':']);
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    templates.iter().any(|t| {
        let ts: Vec<&str> = t.trim_matches('/').split('/').collect();
        ts.len() == segments.len()
            && ts.iter().zip(&segments).all(|(t, s)| {
                t.starts_with('{') || t == s || s.starts_with('{') || s.starts_with('<')
            })
    })
}

#[test]
fn runbooks_name_real_commands_and_paths() {
    use utoipa::OpenApi;
    let templates: Vec<String> = treasuryd::api::openapi::ApiDoc::openapi()
        .paths
        .paths
        .keys()
        .cloned()
        .collect();
    let binary = crate::crash::binary();
    let mut commands = BTreeSet::new();
    let mut paths = 0;
    for f in files("runbooks", ".md") {
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        // Links to other runbooks resolve.
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            if target.ends_with(".md") && !target.contains("://") {
                assert!(
                    Path::new(&repo().join("runbooks").join(target)).is_file(),
                    "{name}: link to {target}"
                );
            }
        }
        for snippet in code(&text) {
            for (i, _) in snippet.match_indices("/v1/") {
                let mentioned = &snippet[i..];
                assert!(
                    is_api_path(mentioned, &templates),
                    "{name}: {mentioned} is not an API path"
                );
                paths += 1;
            }
            let mut words = snippet.split_whitespace().peekable();
            while let Some(w) = words.next() {
                if w != "treasuryd" {
                    continue;
                }
                // `treasuryd [--config X] sub [subsub]`: the subcommand words, flags skipped.
                let mut sub = Vec::new();
                while let Some(next) = words.peek() {
                    if *next == "--config" {
                        words.next();
                        words.next();
                        continue;
                    }
                    if next.starts_with('-') || next.starts_with('<') || sub.len() == 2 {
                        break;
                    }
                    if !next.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                        break;
                    }
                    sub.push(words.next().unwrap().to_owned());
                }
                if !sub.is_empty() {
                    commands.insert((name.clone(), sub));
                }
            }
        }
    }
    assert!(paths > 50, "the runbooks name {paths} API paths");
    assert!(commands.len() > 10, "{commands:?}");
    for (runbook, sub) in commands {
        // clap refuses an unknown subcommand (or a stray word) even with --help.
        let known = Command::new(binary)
            .args(&sub)
            .arg("--help")
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            known,
            "{runbook}: `treasuryd {}` is not a command",
            sub.join(" ")
        );
    }
}

/// The systemd unit an operator installs runs the daemon as its own user, restarts it on
/// failure, and sandboxes it down to its data directory; `systemd-analyze verify` (when the
/// machine has it) finds nothing to say about it, and its command line is one the binary takes.
#[test]
fn the_service_unit_is_sandboxed_and_verifies() {
    let unit_path = repo().join("packaging/treasuryd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let directives: BTreeSet<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "User=treasuryd",
        "Group=treasuryd",
        "ExecStart=/usr/bin/treasuryd --config /etc/treasuryd.toml run",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/treasuryd",
        "CapabilityBoundingSet=",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            directives.contains(wanted),
            "{wanted} missing from the unit"
        );
    }
    // The command line parses: `run --help` with the same global flag answers.
    let help = Command::new(crate::crash::binary())
        .args(["--config", "/etc/treasuryd.toml", "run", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success(), "{help:?}");

    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!(
            "systemd-analyze is not on this machine: the unit's directives were checked, not verified"
        );
        return;
    };
    assert!(version.status.success());
    // verify wants the ExecStart binary to exist: the built one stands in for /usr/bin's.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("treasuryd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/treasuryd", crate::crash::binary()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    // It exits 0 on unknown keys and bad values, and says so on stderr: silence is the pass.
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
