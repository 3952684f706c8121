//! The command line: config errors name the key and stop start-up; print-config is a valid
//! config; token new prints a usable entry; migrate and verify work on a fresh database; a
//! tampered journal makes verify exit non-zero.

use crate::crash::binary;
use crate::harness::*;
use std::process::Command;

fn run(args: &[&str], envs: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args).env_remove("TREASURYD_CONFIG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn config_errors_stop_startup_and_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    for (text, key) in [
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        (
            "[database]\nmax_connections = 0\n",
            "database.max_connections",
        ),
        ("[database]\npool = 3\n", "database.pool"),
    ] {
        std::fs::write(&path, text).unwrap();
        for sub in ["check-config", "run"] {
            let (ok, out) = run(&["--config", path.to_str().unwrap(), sub], &[]);
            assert!(!ok, "{sub} accepted {text:?}");
            assert!(out.contains(key), "{sub}: {out}");
        }
    }
    let (ok, out) = run(&["check-config"], &[("TREASURYD__LOG__FORMAT", "xml")]);
    assert!(!ok && out.contains("log.format"), "{out}");
}

#[test]
fn print_config_is_the_documented_example_and_valid() {
    let (ok, out) = run(&["print-config"], &[]);
    assert!(ok);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("example.toml");
    std::fs::write(&path, &out).unwrap();
    let (ok, out) = run(&["--config", path.to_str().unwrap(), "check-config"], &[]);
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"));
}

#[test]
fn token_new_prints_a_matching_entry() {
    let (ok, out) = run(
        &["token", "new", "--name", "desk", "--role", "approver"],
        &[],
    );
    assert!(ok, "{out}");
    let token = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("tdk_"))
        .map(|t| format!("tdk_{t}"))
        .unwrap();
    let digest = hex::encode(treasuryd::api::auth::token_digest(&token));
    assert!(out.contains(&format!("sha256 = \"{digest}\"")), "{out}");
    assert!(out.contains("role = \"approver\""));
    let (ok, _) = run(&["token", "new", "--name", "x", "--role", "king"], &[]);
    assert!(!ok);
}

#[tokio::test]
async fn migrate_then_verify_and_detect_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (ok, out) = run(&["migrate"], &[("TREASURYD__DATA_DIR", data)]);
    assert!(ok, "{out}");
    let (ok, out) = run(&["ledger", "verify"], &[("TREASURYD__DATA_DIR", data)]);
    assert!(ok && out.contains("CLEAN"), "{out}");

    // Write through the library, then corrupt a cached balance behind the ledger's back.
    let url = format!("sqlite://{}/treasuryd.db", data);
    let store = treasuryd::store::open(&url, 1, treasuryd::clock::SystemClock::shared())
        .await
        .unwrap();
    let ledger = treasuryd::ledger::Ledger::open(
        store.clone(),
        &treasuryd::config::Config::defaults().asset_specs(),
    )
    .await
    .unwrap();
    let account = open_partner(store.as_ref(), "o").await;
    let op = ledger
        .deposit(&account, treasuryd::domain::Amount::new(5).unwrap())
        .unwrap();
    ledger
        .post_one(treasuryd::ledger::Command::new("k", usdt(), op))
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    let (ok, out) = run(&["ledger", "verify"], &[("TREASURYD__DATA_DIR", data)]);
    assert!(ok, "{out}");

    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE accounts SET available = '6' WHERE owner = 'o'")
        .execute(&pool)
        .await
        .unwrap();
    // The journal itself refuses edits.
    assert!(
        sqlx::query("UPDATE postings SET amount = '6'")
            .execute(&pool)
            .await
            .is_err()
    );
    assert!(
        sqlx::query("DELETE FROM journal_transactions")
            .execute(&pool)
            .await
            .is_err()
    );
    pool.close().await;
    let (ok, out) = run(&["ledger", "verify"], &[("TREASURYD__DATA_DIR", data)]);
    assert!(!ok, "verify must fail on a tampered balance: {out}");
    assert!(out.contains("cached available 6"), "{out}");
}
