//! Broadcasting: the wire between a stored signing round and the node.
//!
//! A new round goes out from a task of its own (`Broadcaster`), so that while the node takes
//! one round the engine already tracks, settles and signs the next: the node, not the engine's
//! own bookkeeping, sets the pace. Rounds go out one after another in the order they were
//! handed over (nonce order); the task marks what went out in the database and reports it back,
//! and the engine applies the reports at the start of its next tick. Until its report arrives,
//! an attempt handed over is neither re-sent nor taken for stuck.
//!
//! Nothing here decides anything about money: the bytes were stored under their nonce before
//! they were handed over, sending them twice is harmless (the node answers "already known"),
//! and a crash at any point leaves them stored and unsent, which the next owner sends.
//! Re-sends and replacements (`tracking`) go out inline, as they are few.

use super::*;
use std::collections::HashSet;
use tokio::sync::mpsc;

/// A stored signing round handed to the broadcaster.
pub(super) struct Round {
    /// The endpoint chosen for the tick that signed it.
    pub(super) client: EvmClient,
    pub(super) attempts: Vec<(ChunkId, Attempt)>,
    pub(super) head: u64,
    /// When the payout of each payout's first chunk was accepted, by attempt: the
    /// accepted-to-first-broadcast histogram is observed when they go out.
    pub(super) firsts: HashMap<uuid::Uuid, UnixMicros>,
}

/// What became of a round: every attempt of it is out of the broadcaster's hands, and `sent`
/// (chunk, attempt) are stored as broadcast at `at`, head `head`.
pub(super) struct RoundSent {
    handed: Vec<uuid::Uuid>,
    pub(super) sent: Vec<(ChunkId, uuid::Uuid)>,
    pub(super) at: UnixMicros,
    pub(super) head: u64,
}

/// The engine's end of its broadcasting task.
pub(super) struct Broadcaster {
    rounds: mpsc::UnboundedSender<Round>,
    reports: mpsc::UnboundedReceiver<RoundSent>,
    /// Attempts handed over whose report has not come back.
    pending: HashSet<uuid::Uuid>,
}

/// What the broadcasting task needs of the engine, cloned once.
pub(super) struct BroadcastContext {
    pub(super) network: String,
    pub(super) payouts: Arc<dyn crate::store::PayoutStore>,
    pub(super) metrics: PayoutMetrics,
    pub(super) clock: crate::clock::DynClock,
}

impl Broadcaster {
    /// Starts the task; it ends when this end is dropped, after the round it is sending.
    pub(super) fn spawn(context: BroadcastContext) -> Self {
        let (rounds, mut incoming) = mpsc::unbounded_channel::<Round>();
        let (report, reports) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(round) = incoming.recv().await {
                let handed = round.attempts.iter().map(|(_, a)| a.id).collect();
                // Reported as sent only once stored as sent, so that memory never runs ahead
                // of the database: an unmarked attempt is sent again ("already known") and
                // marked then.
                let (sent, at) = match send_and_mark(
                    &round.client,
                    &round.attempts,
                    round.head,
                    context.payouts.as_ref(),
                    &context.metrics,
                    &context.network,
                    &context.clock,
                )
                .await
                {
                    Ok((sent, at)) => {
                        observe_first_broadcasts(&context, &round.firsts, &sent, at);
                        (sent, at)
                    }
                    Err(e) => {
                        tracing::warn!(network = %context.network, error = %e, "broadcasts not stored; they will be sent again");
                        (Vec::new(), context.clock.now())
                    }
                };
                let done = RoundSent {
                    handed,
                    sent,
                    at,
                    head: round.head,
                };
                if report.send(done).is_err() {
                    break;
                }
            }
        });
        Self {
            rounds,
            reports,
            pending: HashSet::new(),
        }
    }

    /// Hands a stored round over; false if the task is gone (the round stays stored and is
    /// sent by the next tick's tracking).
    pub(super) fn hand_over(&mut self, round: Round) -> bool {
        let ids: Vec<uuid::Uuid> = round.attempts.iter().map(|(_, a)| a.id).collect();
        if self.rounds.send(round).is_err() {
            return false;
        }
        self.pending.extend(ids);
        true
    }

    /// Waits until every round handed over is reported, and returns the reports.
    pub(super) async fn drained(&mut self) -> Vec<RoundSent> {
        let mut out = self.reports();
        while !self.pending.is_empty() {
            match self.reports.recv().await {
                Some(r) => out.push(self.received(r)),
                None => self.task_gone(),
            }
        }
        out
    }

    /// The reports that came back since the last call.
    pub(super) fn reports(&mut self) -> Vec<RoundSent> {
        let mut out = Vec::new();
        loop {
            match self.reports.try_recv() {
                Ok(r) => out.push(self.received(r)),
                Err(mpsc::error::TryRecvError::Empty) => return out,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.task_gone();
                    return out;
                }
            }
        }
    }

    fn received(&mut self, r: RoundSent) -> RoundSent {
        for id in &r.handed {
            self.pending.remove(id);
        }
        r
    }

    /// The task ended without reporting everything: what it held is stored and unsent as far
    /// as the database knows, so tracking sends it again instead of waiting for it forever.
    fn task_gone(&mut self) {
        if !self.pending.is_empty() {
            tracing::warn!(
                attempts = self.pending.len(),
                "the broadcasting task ended with rounds unreported; tracking sends them again"
            );
        }
        self.pending.clear();
    }

    /// Whether `attempt` is with the task, not yet reported.
    pub(super) fn holds(&self, attempt: uuid::Uuid) -> bool {
        self.pending.contains(&attempt)
    }
}

fn observe_first_broadcasts(
    context: &BroadcastContext,
    firsts: &HashMap<uuid::Uuid, UnixMicros>,
    sent: &[(ChunkId, uuid::Uuid)],
    at: UnixMicros,
) {
    let histogram = context
        .metrics
        .first_broadcast_seconds
        .with_label_values(&[context.network.as_str()]);
    for (_, id) in sent {
        if let Some(accepted) = firsts.get(id) {
            histogram.observe((at - accepted).max(0) as f64 / 1e6);
        }
    }
}

/// Sends stored attempts, answered in order (a node pools a nonce that arrives before its
/// predecessor until the gap is filled); a batch's chunks share their bytes, which go out once.
/// Returns the (chunk, attempt) that went out or that the node already had. Other failures are
/// counted and logged, and left for tracking to send again.
pub(super) async fn send_round(
    client: &EvmClient,
    attempts: &[(ChunkId, Attempt)],
    metrics: &PayoutMetrics,
    network: &str,
) -> Vec<(ChunkId, uuid::Uuid)> {
    let mut raws: Vec<&[u8]> = Vec::new();
    let mut slot_of: HashMap<[u8; 32], usize> = HashMap::new();
    for (_, a) in attempts {
        slot_of.entry(a.hash).or_insert_with(|| {
            raws.push(a.raw.as_slice());
            raws.len() - 1
        });
    }
    let results: Vec<Result<(), (RpcErrorClass, String)>> = match client.broadcast_all(&raws).await
    {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map(|_| ()).map_err(|e| (e.class, e.message)))
            .collect(),
        // The batch was lost as a whole: each transaction is retried like a failed one.
        Err(e) => vec![Err((e.class, e.message)); raws.len()],
    };
    for (i, result) in results.iter().enumerate() {
        if let Err((class, message)) = result
            && *class != RpcErrorClass::AlreadyKnown
        {
            metrics
                .rpc_errors_total
                .with_label_values(&[network, class.as_str()])
                .inc();
            let nonce = attempts
                .iter()
                .find(|(_, a)| slot_of.get(&a.hash) == Some(&i))
                .map(|(_, a)| a.nonce);
            tracing::warn!(?nonce, class = class.as_str(), error = %message, "broadcast failed; will retry");
        }
    }
    attempts
        .iter()
        .filter(|(_, a)| {
            slot_of
                .get(&a.hash)
                .and_then(|&i| results.get(i))
                .is_some_and(|r| {
                    r.as_ref()
                        .map_or_else(|(class, _)| *class == RpcErrorClass::AlreadyKnown, |_| true)
                })
        })
        .map(|(chunk, a)| (*chunk, a.id))
        .collect()
}

/// Sends stored attempts (`send_round`) and stores those that went out as broadcast at the
/// returned time, with the chain at `head`.
async fn send_and_mark(
    client: &EvmClient,
    attempts: &[(ChunkId, Attempt)],
    head: u64,
    payouts: &dyn crate::store::PayoutStore,
    metrics: &PayoutMetrics,
    network: &str,
    clock: &crate::clock::DynClock,
) -> Result<(Vec<(ChunkId, uuid::Uuid)>, UnixMicros), StoreError> {
    let sent = send_round(client, attempts, metrics, network).await;
    let at = clock.now();
    if !sent.is_empty() {
        let ids: Vec<uuid::Uuid> = sent.iter().map(|(_, id)| *id).collect();
        payouts.mark_broadcast(&ids, head, at).await?;
    }
    Ok((sent, at))
}

impl NetworkEngine {
    /// Sends stored attempts now and stores them as broadcast: re-sends and replacements.
    pub(super) async fn broadcast(
        &mut self,
        attempts: &[(ChunkId, Attempt)],
        head: u64,
    ) -> anyhow::Result<()> {
        let (sent, at) = send_and_mark(
            &self.client,
            attempts,
            head,
            self.core.payouts.as_ref(),
            &self.core.metrics,
            &self.core.name,
            &self.core.clock,
        )
        .await?;
        self.note_broadcast(&sent, at, head);
        Ok(())
    }

    /// Hands a stored signing round to the broadcasting task, started on first use.
    pub(super) fn broadcast_in_background(
        &mut self,
        attempts: Vec<(ChunkId, Attempt)>,
        head: u64,
        firsts: HashMap<uuid::Uuid, UnixMicros>,
    ) {
        let core = &self.core;
        let broadcaster = self.broadcaster.get_or_insert_with(|| {
            Broadcaster::spawn(BroadcastContext {
                network: core.name.clone(),
                payouts: core.payouts.clone(),
                metrics: core.metrics.clone(),
                clock: core.clock.clone(),
            })
        });
        let round = Round {
            client: self.client.clone(),
            attempts,
            head,
            firsts,
        };
        if !broadcaster.hand_over(round) {
            tracing::warn!(network = %self.core.name, "the broadcasting task is gone; the round goes out with the next tick");
            self.broadcaster = None;
        }
    }

    /// Applies the broadcasting task's reports to the chunks in memory.
    pub(super) fn take_broadcast_reports(&mut self) {
        let reports = match self.broadcaster.as_mut() {
            Some(b) => b.reports(),
            None => return,
        };
        self.apply_broadcast_reports(reports);
    }

    fn apply_broadcast_reports(&mut self, reports: Vec<RoundSent>) {
        for report in reports {
            self.note_broadcast(&report.sent, report.at, report.head);
        }
    }

    /// For crash tests that stop the engine right after a broadcast (`engine.after_broadcast`):
    /// waits for the rounds handed over to go out, then stops there like the inline send did.
    pub(super) async fn pause_after_broadcast(&mut self) {
        if self.core.pause_at() != Some("engine.after_broadcast") {
            return;
        }
        let reports = match self.broadcaster.as_mut() {
            Some(b) => b.drained().await,
            None => Vec::new(),
        };
        self.apply_broadcast_reports(reports);
        self.core.pause_point("engine.after_broadcast").await;
    }

    /// Whether `attempt` is with the broadcasting task and must not be sent again yet.
    pub(super) fn being_broadcast(&self, attempt: uuid::Uuid) -> bool {
        self.broadcaster.as_ref().is_some_and(|b| b.holds(attempt))
    }

    fn note_broadcast(&mut self, sent: &[(ChunkId, uuid::Uuid)], at: UnixMicros, head: u64) {
        for (chunk, id) in sent {
            if let Some(f) = self.tracked.get_mut(chunk) {
                f.note_broadcast(*id, at, head);
            }
        }
    }
}
