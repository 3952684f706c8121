//! Model-based property test: random batches of deposits, holds, partial releases (release,
//! offset, payout, fee), voids, adjustments, replays and conflicting keys, invalid ones
//! included, run against the real store and a plain in-memory model. After every batch the
//! balances and holds must match the model; at the end `verify` must be clean. Both backends.

use crate::harness::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};
use treasuryd::domain::{AccountId, Amount, HoldId};
use treasuryd::ledger::{
    AccountKind, Command, Direction, Ledger, LedgerError, Operation, ReleaseKind,
};

const ACCOUNTS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Deposit(usize, i128),
    Adjust(usize, i128, bool),
    Hold(usize, i128),
    HoldOnSystemAccount(i128),
    Release(usize, i128, usize, ReleaseKind),
    ReleaseToSystemAccount(usize, i128),
    Void(usize),
    UnknownHold(i128),
    Replay(usize),
    ConflictingKey(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let acct = 0..ACCOUNTS;
    let units = 1i128..60;
    let hold = 0usize..8;
    let kind = prop_oneof![
        Just(ReleaseKind::Release),
        Just(ReleaseKind::Offset),
        Just(ReleaseKind::Payout),
        Just(ReleaseKind::Fee)
    ];
    prop_oneof![
        4 => (acct.clone(), units.clone()).prop_map(|(a, u)| Op::Deposit(a, u)),
        2 => (acct.clone(), units.clone(), any::<bool>()).prop_map(|(a, u, c)| Op::Adjust(a, u, c)),
        4 => (acct.clone(), units.clone()).prop_map(|(a, u)| Op::Hold(a, u)),
        1 => units.clone().prop_map(Op::HoldOnSystemAccount),
        4 => (hold.clone(), units.clone(), acct, kind).prop_map(|(h, u, d, k)| Op::Release(h, u, d, k)),
        1 => (hold.clone(), units.clone()).prop_map(|(h, u)| Op::ReleaseToSystemAccount(h, u)),
        2 => hold.prop_map(Op::Void),
        1 => units.prop_map(Op::UnknownHold),
        1 => (0usize..16).prop_map(Op::Replay),
        1 => (0usize..16).prop_map(Op::ConflictingKey),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelHold {
    account: usize,
    amount: i128,
    resolved: i128,
}

#[derive(Default)]
struct Model {
    available: [i128; ACCOUNTS],
    held: [i128; ACCOUNTS],
    holds: Vec<ModelHold>,
    /// Commands that succeeded, for replays and conflicts.
    accepted: Vec<Command>,
}

/// What the model expects: Ok, or the error code.
fn apply(model: &mut Model, op: &Op, known_holds: usize) -> Result<(), &'static str> {
    match *op {
        Op::Deposit(a, u) => model.available[a] += u,
        Op::Adjust(a, u, credit) => {
            if credit {
                model.available[a] += u
            } else if model.available[a] < u {
                return Err("insufficient_funds");
            } else {
                model.available[a] -= u
            }
        }
        Op::Hold(a, u) => {
            if model.available[a] < u {
                return Err("insufficient_funds");
            }
            model.available[a] -= u;
            model.held[a] += u;
            model.holds.push(ModelHold {
                account: a,
                amount: u,
                resolved: 0,
            });
        }
        Op::HoldOnSystemAccount(_) => return Err("wrong_account_kind"),
        Op::UnknownHold(_) => return Err("hold_not_found"),
        Op::Release(h, u, _, _) | Op::ReleaseToSystemAccount(h, u) if h < known_holds => {
            let hold = model.holds[h];
            let remaining = hold.amount - hold.resolved;
            if remaining == 0 {
                return Err("hold_resolved");
            }
            if matches!(op, Op::ReleaseToSystemAccount(..)) {
                return Err("wrong_account_kind");
            }
            if u > remaining {
                return Err("hold_exceeded");
            }
            model.holds[h].resolved += u;
            model.held[hold.account] -= u;
            if let Op::Release(_, _, d, ReleaseKind::Release | ReleaseKind::Offset) = *op {
                model.available[d] += u;
            }
        }
        Op::Release(..) | Op::ReleaseToSystemAccount(..) => return Err("hold_not_found"),
        Op::Void(h) if h < known_holds => {
            let hold = model.holds[h];
            let remaining = hold.amount - hold.resolved;
            if remaining == 0 {
                return Err("hold_resolved");
            }
            model.holds[h].resolved += remaining;
            model.held[hold.account] -= remaining;
            model.available[hold.account] += remaining;
        }
        Op::Void(_) => return Err("hold_not_found"),
        Op::Replay(_) => {}
        Op::ConflictingKey(_) => return Err("idempotency_conflict"),
    }
    Ok(())
}

struct Case<'a> {
    ledger: &'a Ledger,
    accounts: Vec<AccountId>,
    hold_ids: Vec<HoldId>,
    prefix: String,
    n: usize,
}

impl Case<'_> {
    fn command(&mut self, model: &Model, op: &Op) -> Option<Command> {
        let asset = usdt();
        let amount = |u: i128| Amount::new(u).unwrap();
        let hold_id = |h: usize, ids: &Vec<HoldId>| ids.get(h).copied().unwrap_or_else(HoldId::new);
        let external = self
            .ledger
            .system_account(&asset, AccountKind::External)
            .unwrap();
        let operation = match *op {
            Op::Deposit(a, u) => Operation::Deposit {
                account: self.accounts[a],
                source: external,
                amount: amount(u),
            },
            Op::Adjust(a, u, credit) => Operation::Adjustment {
                account: self.accounts[a],
                counterparty: self
                    .ledger
                    .system_account(&asset, AccountKind::Adjustments)
                    .unwrap(),
                amount: amount(u),
                direction: if credit {
                    Direction::Credit
                } else {
                    Direction::Debit
                },
            },
            Op::Hold(a, u) => Operation::Hold {
                account: self.accounts[a],
                amount: amount(u),
            },
            Op::HoldOnSystemAccount(u) => Operation::Hold {
                account: external,
                amount: amount(u),
            },
            Op::Release(h, u, d, kind) => {
                let destination = match kind {
                    ReleaseKind::Release | ReleaseKind::Offset => self.accounts[d],
                    ReleaseKind::Payout => external,
                    ReleaseKind::Fee => self
                        .ledger
                        .system_account(&asset, AccountKind::Fees)
                        .unwrap(),
                };
                Operation::Release {
                    hold: hold_id(h, &self.hold_ids),
                    amount: amount(u),
                    kind,
                    destination,
                }
            }
            Op::ReleaseToSystemAccount(h, u) => Operation::Release {
                hold: hold_id(h, &self.hold_ids),
                amount: amount(u),
                kind: ReleaseKind::Release,
                destination: external,
            },
            Op::Void(h) => Operation::Void {
                hold: hold_id(h, &self.hold_ids),
            },
            Op::UnknownHold(u) => Operation::Release {
                hold: HoldId::new(),
                amount: amount(u),
                kind: ReleaseKind::Payout,
                destination: external,
            },
            Op::Replay(i) => return model.accepted.get(i % model.accepted.len().max(1)).cloned(),
            Op::ConflictingKey(i) => {
                let mut cmd = model
                    .accepted
                    .get(i % model.accepted.len().max(1))
                    .cloned()?;
                cmd.memo = Some("a different request".into());
                return Some(cmd);
            }
        };
        self.n += 1;
        let mut cmd = Command::new(format!("{}-{}", self.prefix, self.n), asset, operation);
        cmd.memo = Some("model".into());
        Some(cmd)
    }
}

async fn run_case(ledger: &Ledger, batches: Vec<Vec<Op>>) {
    let store = ledger.store();
    let mut accounts = Vec::new();
    let prefix = uuid::Uuid::new_v4().simple().to_string();
    for i in 0..ACCOUNTS {
        accounts.push(open_partner(store, &format!("{prefix}-{i}")).await.id);
    }
    let mut case = Case {
        ledger,
        accounts,
        hold_ids: Vec::new(),
        prefix,
        n: 0,
    };
    let mut model = Model::default();

    for batch in batches {
        let mut commands = Vec::new();
        let mut expected = Vec::new();
        // Holds created in this batch get their ids only when it commits; ops in the batch can
        // name only holds that existed before it.
        let known_holds = case.hold_ids.len();
        for op in &batch {
            let Some(cmd) = case.command(&model, op) else {
                continue;
            };
            // A replay/conflict with nothing accepted yet degenerates to a plain retry.
            let outcome = match op {
                Op::Replay(_) | Op::ConflictingKey(_) if model.accepted.is_empty() => continue,
                _ => apply(&mut model, op, known_holds),
            };
            expected.push((op.clone(), outcome));
            if outcome.is_ok() && !matches!(op, Op::Replay(_)) {
                model.accepted.push(cmd.clone());
            }
            commands.push(cmd);
        }
        if commands.is_empty() {
            continue;
        }
        let results = ledger.post(commands).await.expect("store works");
        assert_eq!(results.len(), expected.len());
        for (result, (op, outcome)) in results.iter().zip(&expected) {
            match (result, outcome) {
                (Ok(posted), Ok(())) => {
                    assert_eq!(posted.replayed, matches!(op, Op::Replay(_)), "{op:?}");
                    if let (Op::Hold(..), false) = (op, posted.replayed) {
                        case.hold_ids.push(posted.hold.as_ref().unwrap().id);
                    }
                }
                (Err(e), Err(code)) => assert_eq!(e.code(), *code, "{op:?}: {e}"),
                (got, want) => panic!("{op:?}: store gave {got:?}, model expected {want:?}"),
            }
            if let Err(LedgerError::InsufficientFunds {
                available,
                requested,
                ..
            }) = result
            {
                assert!(requested > available);
            }
        }
        for (i, id) in case.accounts.iter().enumerate() {
            let a = store.get_account(*id).await.unwrap();
            assert_eq!(
                (a.available, a.held),
                (model.available[i], model.held[i]),
                "account {i} after {batch:?}"
            );
        }
        for (i, id) in case.hold_ids.iter().enumerate() {
            let h = store.get_hold(*id).await.unwrap();
            let m = model.holds[i];
            assert_eq!(
                (h.amount, h.released + h.voided),
                (m.amount, m.resolved),
                "hold {i}"
            );
            assert!(h.remaining() >= 0);
        }
    }
}

fn run_model(backend: Backend) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (db, store, ledger) = rt.block_on(async {
        let db = TestDb::new(backend).await;
        let store = treasuryd::store::open(&db.url, 4, treasuryd::clock::SystemClock::shared())
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let specs = treasuryd::config::Config::defaults().asset_specs();
        (
            db,
            store.clone(),
            Ledger::open(store, &specs).await.unwrap(),
        )
    });
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40);
    let mut runner = TestRunner::new(PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let strategy = proptest::collection::vec(proptest::collection::vec(op(), 1..5), 1..14);
    let result = runner.run(&strategy, |batches| {
        rt.block_on(run_case(&ledger, batches));
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    rt.block_on(async {
        let report = treasuryd::ledger::verify::verify(ledger.store())
            .await
            .unwrap();
        assert!(report.is_clean(), "{report}");
        assert!(
            report.transactions > 100,
            "the model run should have written plenty: {report}"
        );
        store.close().await;
    });
    drop(db);
}

#[test]
fn ledger_matches_model_sqlite() {
    run_model(Backend::Sqlite);
}

#[test]
#[cfg_attr(
    treasuryd_skip_postgres,
    ignore = "built with TREASURYD_TEST_POSTGRES=skip"
)]
fn ledger_matches_model_postgres() {
    run_model(Backend::Postgres);
}
