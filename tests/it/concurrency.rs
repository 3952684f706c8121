//! Concurrency: 16 tasks hammer three hot accounts with holds, partial releases to each other
//! and voids. Afterwards every balance equals what the tasks were told succeeded, and `verify`
//! is clean (sum-zero, chain, cached balances, holds).

use crate::harness::*;
use crate::on_both_backends;
use std::collections::HashMap;
use treasuryd::domain::{AccountId, Amount};
use treasuryd::ledger::{Command, Ledger, Operation, ReleaseKind};

on_both_backends!(sixteen_tasks_on_hot_accounts_conserve_money);

const TASKS: usize = 16;
const ROUNDS: usize = 40;
const HOT: usize = 3;
/// Small enough that concurrent holds regularly run an account dry.
const FUNDING: i128 = 500;

async fn sixteen_tasks_on_hot_accounts_conserve_money(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ledger = app.ledger.clone();
    let mut hot = Vec::new();
    for i in 0..HOT {
        let account = open_partner(ledger.store(), &format!("hot-{i}")).await;
        let op = ledger
            .deposit(&account, Amount::new(FUNDING).unwrap())
            .unwrap();
        ledger
            .post_one(Command::new(format!("fund-{i}"), usdt(), op))
            .await
            .unwrap()
            .unwrap();
        hot.push(account.id);
    }

    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (ledger, hot) = (ledger.clone(), hot.clone());
            tokio::spawn(async move { hammer(t, ledger, hot).await })
        })
        .collect();
    // Expected (available, held) deltas per account, summed over what succeeded.
    let mut expected: HashMap<AccountId, (i128, i128)> =
        hot.iter().map(|a| (*a, (FUNDING, 0))).collect();
    let (mut succeeded, mut rejected) = (0, 0);
    for t in tasks {
        let (deltas, ok, refused) = t.await.unwrap();
        succeeded += ok;
        rejected += refused;
        for (a, (av, held)) in deltas {
            let e = expected.get_mut(&a).unwrap();
            e.0 += av;
            e.1 += held;
        }
    }
    assert!(
        succeeded > TASKS * ROUNDS,
        "most operations should succeed, got {succeeded}"
    );
    for a in &hot {
        let acc = ledger.store().get_account(*a).await.unwrap();
        assert_eq!((acc.available, acc.held), expected[a], "account {a}");
    }
    let total: i128 = expected.values().map(|(a, h)| a + h).sum();
    assert_eq!(
        total,
        FUNDING * HOT as i128,
        "money moved only between the hot accounts"
    );
    // Every command went through the group-commit writer, each counted in exactly one batch.
    let metrics = app.metrics_text().await;
    assert_eq!(
        metric_value(&metrics, "treasuryd_ledger_batch_commands_sum"),
        Some((HOT + succeeded + rejected) as f64)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "treasuryd_ledger_rejections_total{code=\"insufficient_funds\"}"
        )
        .unwrap_or(0.0),
        rejected as f64
    );
    app.verify_clean().await;
    app.stop().await.unwrap();
}

/// One task: hold on one hot account, release part of it to the next, void the rest.
async fn hammer(
    task: usize,
    ledger: Ledger,
    hot: Vec<AccountId>,
) -> (HashMap<AccountId, (i128, i128)>, usize, usize) {
    let mut deltas: HashMap<AccountId, (i128, i128)> = HashMap::new();
    let (mut ok, mut rejected) = (0, 0);
    let asset = usdt();
    for round in 0..ROUNDS {
        let src = hot[(task + round) % HOT];
        let dst = hot[(task + round + 1) % HOT];
        let units = 1 + ((task * 31 + round * 17) % 97) as i128;
        let key = |what: &str| format!("t{task}-r{round}-{what}");
        let hold = Command::new(
            key("hold"),
            asset.clone(),
            Operation::Hold {
                account: src,
                amount: Amount::new(units).unwrap(),
            },
        );
        let posted = match ledger.post_one(hold).await.expect("store") {
            Ok(p) => p,
            Err(e) => {
                assert_eq!(e.code(), "insufficient_funds");
                rejected += 1;
                continue;
            }
        };
        ok += 1;
        let e = deltas.entry(src).or_default();
        e.0 -= units;
        e.1 += units;
        let hold = posted.hold.unwrap();
        let part = (units / 2).max(1);
        let release = Operation::Release {
            hold: hold.id,
            amount: Amount::new(part).unwrap(),
            kind: ReleaseKind::Release,
            destination: dst,
        };
        ledger
            .post_one(Command::new(key("release"), asset.clone(), release))
            .await
            .unwrap()
            .unwrap();
        ok += 1;
        deltas.entry(src).or_default().1 -= part;
        deltas.entry(dst).or_default().0 += part;
        if units > part {
            ledger
                .post_one(Command::new(
                    key("void"),
                    asset.clone(),
                    Operation::Void { hold: hold.id },
                ))
                .await
                .unwrap()
                .unwrap();
            ok += 1;
            let e = deltas.entry(src).or_default();
            e.1 -= units - part;
            e.0 += units - part;
        }
    }
    (deltas, ok, rejected)
}
