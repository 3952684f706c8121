//! The README's first command: `treasuryd demo` starts on embedded defaults with its own chain,
//! and its tour works as printed. SIGTERM then stops it cleanly.

use crate::crash::binary;
use crate::harness::DESTINATION;
use serde_json::{Value, json};
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
async fn the_demo_tour_works_as_printed() {
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
        .recv_timeout(Duration::from_secs(120))
        .expect("the demo printed its tour");
    let api = field(&tour, "control API")
        .trim_start_matches("http://")
        .to_owned();
    let trader = field(&tour, "trader token").to_owned();
    let admin = field(&tour, "admin token").to_owned();
    let account = tour
        .lines()
        .filter_map(|l| l.split_once(" : "))
        .find(|(name, _)| name.trim() == "partner acme")
        .and_then(|(_, value)| value.split_whitespace().nth(1))
        .unwrap()
        .to_owned();

    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{api}/v1/payouts"))
        .bearer_auth(&trader)
        .header("Idempotency-Key", "demo-test-1")
        .json(&json!({"account": account, "network": "ethereum", "asset": "USDT", "destination": DESTINATION, "amount": "600000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    assert_eq!(accepted["chunks"].as_array().unwrap().len(), 3);
    let story: Value = client
        .get(format!(
            "http://{api}/v1/payouts/{}",
            accepted["id"].as_str().unwrap()
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(story["state"], "pending_approval");

    // Approve it as the tour says, and watch it confirm on the demo's own chain.
    let approver = field(&tour, "approver token").to_owned();
    let r = client
        .post(format!(
            "http://{api}/v1/payouts/{}/approve",
            accepted["id"].as_str().unwrap()
        ))
        .bearer_auth(&approver)
        .json(&json!({"reason": "checked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut state = String::new();
    for _ in 0..300 {
        let story: Value = client
            .get(format!(
                "http://{api}/v1/payouts/{}",
                accepted["id"].as_str().unwrap()
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = story["state"].as_str().unwrap().to_owned();
        if state == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "confirmed", "the demo pays out on its local chain");

    // And on its Tron stand-in, as the tour prints it.
    let tron_account = tour
        .lines()
        .filter_map(|l| l.split_once(" : "))
        .find(|(name, _)| name.trim() == "partner tron")
        .and_then(|(_, value)| value.split_whitespace().nth(1))
        .unwrap()
        .to_owned();
    let tron_line = tour
        .lines()
        .find(|l| l.contains("\"network\":\"tron\""))
        .expect("the tour shows a Tron payout");
    let destination = tron_line
        .split("\"destination\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap();
    let r = client
        .post(format!("http://{api}/v1/payouts"))
        .bearer_auth(&trader)
        .header("Idempotency-Key", "demo-test-2")
        .json(&json!({"account": tron_account, "network": "tron", "asset": "USDT", "destination": destination, "amount": "25000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.unwrap();
    let mut state = String::new();
    for _ in 0..300 {
        let story: Value = client
            .get(format!(
                "http://{api}/v1/payouts/{}",
                accepted["id"].as_str().unwrap()
            ))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = story["state"].as_str().unwrap().to_owned();
        if state == "confirmed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "confirmed", "the demo pays out on its Tron stand-in");

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
