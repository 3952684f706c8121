//! The module rules the code keeps: storage and the ledger sit below the features, so the
//! features can change without the store knowing them. Read from the source itself, so the
//! rules stay true.

use std::path::Path;

/// Every `.rs` file under `dir`: its path relative to `dir`, and its text.
fn rust_sources(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    out
}

/// Every `crate::<module>` a file under `dir` names, with where.
fn references(dir: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (file, text) in rust_sources(dir) {
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                found.push((module, format!("{}/{file}:{}", dir.display(), n + 1)));
            }
        }
    }
    found
}

fn assert_never_names(dir: &str, forbidden: &[&str]) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let found = references(&root);
    assert!(!found.is_empty(), "read nothing under {dir}");
    let broken: Vec<_> = found
        .iter()
        .filter(|(module, _)| forbidden.contains(&module.as_str()))
        .collect();
    assert!(
        broken.is_empty(),
        "{dir} names modules above it: {broken:#?}"
    );
}

#[test]
fn the_store_names_no_feature_module() {
    assert_never_names(
        "src/store",
        &[
            "api",
            "console",
            "payouts",
            "escrow",
            "trust",
            "webhooks",
            "operations",
        ],
    );
}

#[test]
fn the_ledger_names_neither_payouts_nor_escrow() {
    assert_never_names("src/ledger", &["payouts", "escrow"]);
}

/// Every part reads the time through the one injected `Clock` (`src/clock.rs`), so a moved
/// clock moves for all of them. The exceptions read another party's clock and say so in a
/// comment just above ("not the daemon's `Clock`": a Tron transaction's timestamp, TOTP codes);
/// the local Tron stand-in node is a chain of its own.
#[test]
fn the_time_is_read_only_through_the_clock() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = ["clock.rs", "dev/tron.rs"];
    let mut found = Vec::new();
    for (relative, text) in rust_sources(&root) {
        if allowed.contains(&relative.as_str()) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let reads = ["Utc::now()", "SystemTime::now()", "now_micros()"]
                .iter()
                .any(|read| line.contains(read));
            let explained = lines[n.saturating_sub(3)..n]
                .iter()
                .any(|l| l.contains("not the daemon's `Clock`"));
            if reads && !explained {
                found.push(format!("src/{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the time read beside the clock: {found:#?}"
    );
}
