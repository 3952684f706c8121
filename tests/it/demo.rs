//! The README's first command: `treasuryd demo` starts on embedded defaults with its own anvil
//! and Tron stand-in, runs its tour (canaries, split payouts on both chains, a deal through the
//! happy path and one through a dispute, an EOD session), and prints a summary whose figures
//! match the ledger the daemon then serves. SIGTERM stops it cleanly.

use crate::crash::binary;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The first word after `label : ` in the tour.
fn field<'a>(tour: &'a str, label: &str) -> &'a str {
    tour.lines()
        .filter_map(|l| l.split_once(" : "))
        .find(|(name, _)| name.trim() == label)
        .and_then(|(_, value)| value.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label} in:\n{tour}"))
}

#[tokio::test]
async fn the_demo_tour_completes_and_its_summary_matches_the_ledger() {
    let mut child = Command::new(binary())
        .arg("demo")
        .env_remove("TREASURYD_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tour = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            tour.push_str(&line);
            tour.push('\n');
            if line.starts_with("Ctrl-C") {
                let _ = tx.send(tour.clone());
            }
        }
    });
    let tour = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("the demo printed its tour");
    assert!(!tour.contains("The tour stopped"), "{tour}");
    let api = field(&tour, "control API").to_owned();
    let admin = field(&tour, "admin token").to_owned();
    let summary = tour
        .split("\nSummary\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{tour}"));
    for expected in [
        "canary ethereum: green",
        "canary tron: green",
        "payout 600000 USDT on ethereum: confirmed in 3 transfer(s) (250000.000000 + 250000.000000 + 100000.000000)",
        "holds 600000.000000 on chain",
        "payout 250000 USDT on tron: confirmed in 2 transfer(s) (200000.000000 + 50000.000000)",
        "holds 250000.000000 on chain",
        "SETTLED after AUTO_APPROVE fired; released 10000.000000",
        "OFFSET of 500 to the buyer: SETTLED",
        "netted to 349.750000, 349.750000 settled (full)",
        "ledger verify: clean",
    ] {
        assert!(
            summary.contains(expected),
            "{expected:?} not in:\n{summary}"
        );
    }

    // Every balance the summary prints is what the daemon's ledger says.
    let client = reqwest::Client::new();
    let mut checked = 0;
    for line in summary
        .lines()
        .filter(|l| l.trim_start().starts_with("account "))
    {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (id, available, held) = (words[1], words[5], words[7]);
        let a: Value = client
            .get(format!("{api}/v1/accounts/{id}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            (a["available"].as_str(), a["held"].as_str()),
            (Some(available), Some(held)),
            "{line}"
        );
        checked += 1;
    }
    assert_eq!(checked, 6, "{summary}");
    // What the summary says follows from the tour: acme paid 600,000 out, the buyer paid 18,000
    // into deals and got 500 back, Alpha paid Beta the net 349.75.
    for (owner, available) in [
        ("acme", "400000.000000"),
        ("buyer", "2500.000000"),
        ("seller", "17500.000000"),
        ("alpha", "4650.250000"),
        ("beta", "5349.750000"),
    ] {
        assert!(
            summary.lines().any(|l| l.contains(&format!(" {owner} "))
                && l.contains(&format!("available {available} "))),
            "{owner} {available} not in:\n{summary}"
        );
    }

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0));
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    panic!("the demo did not stop on SIGTERM");
}
