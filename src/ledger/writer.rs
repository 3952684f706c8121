//! Group commit: single ledger commands from many callers are gathered into one database
//! transaction. Under load a commit carries as many commands as arrived while the previous one
//! was being written, so the per-transaction cost (the fsync, the journal-head lock that keeps
//! the hash chain linear) is paid once per batch instead of once per command. Each command is
//! still judged on its own: a rejected one never affects its neighbours (`ledger::batch`).

use super::model::{Command, LedgerError, Posted};
use crate::store::{LedgerStore, StoreError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, mpsc, oneshot};

pub type Reply = Result<Result<Posted, LedgerError>, StoreError>;

/// Called after every batch with its replies and how long the database transaction took.
pub type BatchObserver = Arc<dyn Fn(&[Reply], Duration) + Send + Sync>;

pub struct Submission {
    pub command: Command,
    pub reply: oneshot::Sender<Reply>,
}

/// How many commands one commit may carry, and how many commits may be in flight at once
/// (two lets one batch lock and plan its rows while the previous one commits).
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub max_batch: usize,
    pub writers: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            max_batch: 256,
            writers: 2,
        }
    }
}

impl WriterConfig {
    /// SQLite takes its one write lock before a batch reads anything, so a second writer
    /// could only wait for the first while splitting the queue into smaller commits: one
    /// writer, bigger batches.
    pub fn for_backend(backend: crate::store::Backend) -> Self {
        match backend {
            crate::store::Backend::Sqlite => Self {
                writers: 1,
                ..Self::default()
            },
            crate::store::Backend::Postgres => Self::default(),
        }
    }
}

/// Starts the writer tasks; they stop once every sender is dropped and the queue is drained.
/// A batch that panics is refused whole (its database transaction rolled back) and the writer
/// goes on, after `on_panic`: writes never silently stall.
pub fn spawn(
    store: Arc<dyn LedgerStore>,
    config: WriterConfig,
    on_batch: BatchObserver,
    on_panic: Arc<dyn Fn() + Send + Sync>,
) -> mpsc::Sender<Submission> {
    let (tx, rx) = mpsc::channel::<Submission>(config.max_batch * 4);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..config.writers.max(1) {
        let (store, rx, on_batch, on_panic) = (
            store.clone(),
            rx.clone(),
            on_batch.clone(),
            on_panic.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (batch, turn) = {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { break };
                    // The turn first, the batch after: what arrives while this writer waits
                    // for SQLite's one write lock joins the batch instead of the next one.
                    let turn = store.write_turn().await;
                    let mut batch = vec![first];
                    while batch.len() < config.max_batch {
                        match rx.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                    (batch, turn)
                };
                let (commands, replies): (Vec<Command>, Vec<_>) =
                    batch.into_iter().map(|s| (s.command, s.reply)).unzip();
                let started = Instant::now();
                let attempt = std::panic::AssertUnwindSafe(store.post_batch(&commands, &turn));
                let outcome = futures::FutureExt::catch_unwind(attempt)
                    .await
                    .unwrap_or_else(|_| {
                        tracing::error!(
                            commands = commands.len(),
                            "a ledger batch panicked: its commands are refused, nothing of it was written"
                        );
                        on_panic();
                        Err(StoreError::Invariant("the ledger write failed".into()))
                    });
                let results: Vec<Reply> = match outcome {
                    Ok(results) => results.into_iter().map(Ok).collect(),
                    Err(e) => {
                        let shared = Arc::new(e);
                        replies
                            .iter()
                            .map(|_| Err(StoreError::Batch(shared.clone())))
                            .collect()
                    }
                };
                drop(turn);
                on_batch(&results, started.elapsed());
                for (reply, result) in replies.into_iter().zip(results) {
                    // The caller may have gone (timeout, disconnect); the result stands regardless.
                    let _ = reply.send(result);
                }
            }
        });
    }
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountId, AssetKey, AssetSpec, HoldId, TxId};
    use crate::ledger::model::{Account, AccountKind, Hold, JournalTx, NewAccount, Operation};
    use crate::ledger::{AccountFilter, JournalFilter};
    use crate::store::{AuditRecord, StoreResult};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A store without a database that refuses every command; its first batch panics when
    /// `panic_first`, and its writers take turns through `turn`, as SQLite's do.
    #[derive(Default)]
    struct RefusingStore {
        batches: AtomicUsize,
        panic_first: bool,
        turn: Arc<Mutex<()>>,
    }

    #[async_trait::async_trait]
    impl LedgerStore for RefusingStore {
        async fn write_turn(&self) -> crate::store::WriteTurn {
            crate::store::WriteTurn::held(self.turn.clone().lock_owned().await)
        }

        async fn post_batch(
            &self,
            commands: &[Command],
            _: &crate::store::WriteTurn,
        ) -> StoreResult<Vec<Result<Posted, LedgerError>>> {
            if self.batches.fetch_add(1, Ordering::SeqCst) == 0 && self.panic_first {
                panic!("a bug in a batch");
            }
            Ok(commands
                .iter()
                .map(|c| Err(LedgerError::UnknownAsset(c.asset.clone())))
                .collect())
        }
        async fn register_asset(&self, _: &AssetSpec) -> StoreResult<()> {
            unreachable!()
        }
        async fn ensure_system_account(
            &self,
            _: &AssetKey,
            _: AccountKind,
        ) -> StoreResult<Account> {
            unreachable!()
        }
        async fn create_account(&self, _: &NewAccount, _: &AuditRecord) -> StoreResult<Account> {
            unreachable!()
        }
        async fn get_account(&self, _: AccountId) -> StoreResult<Account> {
            unreachable!()
        }
        async fn list_accounts(&self, _: &AccountFilter) -> StoreResult<Vec<Account>> {
            unreachable!()
        }
        async fn get_transaction(&self, _: TxId) -> StoreResult<JournalTx> {
            unreachable!()
        }
        async fn list_journal(&self, _: &JournalFilter) -> StoreResult<Vec<JournalTx>> {
            unreachable!()
        }
        async fn get_hold(&self, _: HoldId) -> StoreResult<Hold> {
            unreachable!()
        }
        async fn list_holds(&self, _: Option<HoldId>, _: i64) -> StoreResult<Vec<Hold>> {
            unreachable!()
        }
        async fn journal_head(&self) -> StoreResult<(i64, [u8; 32])> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn a_panicking_batch_is_refused_and_the_writer_goes_on() {
        let panics = Arc::new(AtomicUsize::new(0));
        let counted = panics.clone();
        let submit = spawn(
            Arc::new(RefusingStore {
                panic_first: true,
                ..Default::default()
            }),
            WriterConfig {
                max_batch: 1,
                writers: 1,
            },
            Arc::new(|_: &[Reply], _| {}),
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
            }),
        );
        let asset = AssetKey::new("anvil", "USDC");
        let send = |key: &str| {
            let (reply, answer) = oneshot::channel();
            let command = Command::new(
                key,
                asset.clone(),
                Operation::Void {
                    hold: HoldId::new(),
                },
            );
            let submit = submit.clone();
            async move {
                submit.send(Submission { command, reply }).await.unwrap();
                answer.await.unwrap()
            }
        };
        let refused = send("first").await;
        assert!(
            matches!(&refused, Err(StoreError::Batch(e)) if matches!(**e, StoreError::Invariant(_))),
            "{refused:?}"
        );
        // The one writer is still there and answers the next command.
        assert!(matches!(
            send("second").await,
            Ok(Err(LedgerError::UnknownAsset(_)))
        ));
        assert_eq!(panics.load(Ordering::SeqCst), 1);
    }

    /// What arrives while the writer waits for its turn to write goes into the batch it is
    /// about to write, not the next one.
    #[tokio::test]
    async fn commands_that_arrive_while_the_writer_waits_for_its_turn_join_its_batch() {
        let store = Arc::new(RefusingStore::default());
        let elsewhere = store.turn.clone().lock_owned().await;
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let submit = spawn(
            store.clone(),
            WriterConfig::default(),
            Arc::new(move |replies: &[Reply], _| seen.lock().unwrap().push(replies.len())),
            Arc::new(|| {}),
        );
        let mut answers = Vec::new();
        for i in 0..3 {
            let (reply, answer) = oneshot::channel();
            let command = Command::new(
                format!("waiting-{i}"),
                AssetKey::new("anvil", "USDC"),
                Operation::Void {
                    hold: HoldId::new(),
                },
            );
            submit.send(Submission { command, reply }).await.unwrap();
            answers.push(answer);
            // The writer has taken the first and waits for its turn while the others arrive.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(elsewhere);
        for answer in answers {
            assert!(matches!(
                answer.await.unwrap(),
                Ok(Err(LedgerError::UnknownAsset(_)))
            ));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![3], "one batch of all three");
        assert_eq!(store.batches.load(Ordering::SeqCst), 1);
    }
}
