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

/// Starts the writer tasks; they stop once every sender is dropped and the queue is drained.
pub fn spawn(
    store: Arc<dyn LedgerStore>,
    config: WriterConfig,
    on_batch: BatchObserver,
) -> mpsc::Sender<Submission> {
    let (tx, rx) = mpsc::channel::<Submission>(config.max_batch * 4);
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..config.writers.max(1) {
        let (store, rx, on_batch) = (store.clone(), rx.clone(), on_batch.clone());
        tokio::spawn(async move {
            loop {
                let batch = {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { break };
                    let mut batch = vec![first];
                    while batch.len() < config.max_batch {
                        match rx.try_recv() {
                            Ok(s) => batch.push(s),
                            Err(_) => break,
                        }
                    }
                    batch
                };
                let (commands, replies): (Vec<Command>, Vec<_>) =
                    batch.into_iter().map(|s| (s.command, s.reply)).unzip();
                let started = Instant::now();
                let results: Vec<Reply> = match store.post_batch(&commands).await {
                    Ok(results) => results.into_iter().map(Ok).collect(),
                    Err(e) => {
                        let shared = Arc::new(e);
                        replies
                            .iter()
                            .map(|_| Err(StoreError::Batch(shared.clone())))
                            .collect()
                    }
                };
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
