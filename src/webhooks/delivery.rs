//! The delivery worker: renders new outbox events and fans them out, then sends each
//! endpoint's deliveries one at a time in event order (an event waits for the earlier one).
//!
//! - 2xx: delivered. 410: the endpoint is disabled (audited, reason kept) and its deliveries
//!   wait for it to be re-enabled. Anything else, a timeout or a refused address: retried after
//!   an exponential delay with jitter (`backon`), until the horizon (counted from when the
//!   delivery became due) has passed: then it is dead-lettered and the next event goes.
//! - One instance delivers at a time (a lease, as for payout engines); a delivery interrupted
//!   by a crash is sent again after restart: at least once, with the event id to de-duplicate.
//! - Redirects are not followed, proxies are not used, at most `max_response_bytes` of an
//!   answer is read, and names are resolved by a resolver that drops internal addresses unless
//!   `allow_private_networks` (the URL is checked again too, for IP literals).

use super::outbox::{self, AttemptOutcome, Delivery, DeliveryState};
use super::{Endpoint, check_url, is_internal, signature_header};
use crate::clock::DynClock;
use crate::config::WebhooksConfig;
use crate::ledger::Ledger;
use crate::metrics::WebhookMetrics;
use crate::store::{AuditRecord, DynStore};
use backon::BackoffBuilder;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The engine-lease name the deliverer runs under.
pub const LEASE: &str = "webhooks";
/// Events rendered and fanned out per pass.
const DISPATCH_BATCH: i64 = 500;
/// Pending deliveries read per endpoint per pass.
const ENDPOINT_BATCH: i64 = 100;
/// Attempt outcomes written per database transaction; also the most events a crash can make
/// an endpoint receive twice.
pub const RECORD_GROUP: usize = 20;

#[derive(Debug, Clone)]
pub struct Settings {
    pub allow_private: bool,
    pub horizon: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub request_timeout: Duration,
    pub max_response_bytes: usize,
    pub poll: Duration,
    pub lease: Duration,
    /// Delivered events older than this are deleted; None keeps everything.
    pub retention: Option<Duration>,
}

impl Settings {
    pub fn from_config(c: &WebhooksConfig) -> Self {
        Self {
            allow_private: c.allow_private_networks,
            horizon: Duration::from_secs(c.retry_horizon_seconds),
            min_delay: Duration::from_millis(c.retry_min_delay_ms),
            max_delay: Duration::from_secs(c.retry_max_delay_seconds),
            request_timeout: Duration::from_secs(c.request_timeout_seconds),
            max_response_bytes: c.max_response_bytes,
            poll: Duration::from_millis(c.poll_ms),
            lease: Duration::from_secs(c.lease_seconds),
            retention: (c.retention_days > 0)
                .then(|| Duration::from_secs(c.retention_days * 86_400)),
        }
    }

    /// The wait after the `attempts`-th failed attempt (1-based): min × 2^(n-1), capped, with
    /// jitter.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(attempts.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.max_delay)
    }
}

/// Resolves endpoint host names and keeps only public addresses (unless allowed).
struct GuardedResolver {
    allow_private: bool,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| allow_private || !is_internal(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(
                    format!("{host} resolves to no public address (SSRF protection)").into(),
                );
            }
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Resolves `host` as deliveries do; Err when it has no address deliveries may use.
pub async fn resolve_guarded(host: &str, allow_private: bool) -> Result<(), String> {
    use reqwest::dns::Resolve;
    let name: reqwest::dns::Name = host
        .parse()
        .map_err(|_| format!("{host:?} is not a host name"))?;
    GuardedResolver { allow_private }
        .resolve(name)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[derive(Clone)]
pub struct Deliverer {
    ledger: Ledger,
    /// Every area: an event's body is rendered from the payout, deal, journal or session it is
    /// about.
    store: DynStore,
    clock: DynClock,
    client: reqwest::Client,
    settings: Settings,
    metrics: WebhookMetrics,
    /// Bumped after each fan-out so endpoint workers look at once.
    queued: Arc<tokio::sync::watch::Sender<u64>>,
    /// PostgreSQL: woken by NOTIFY when outbox events commit (see migration 0015).
    listen_url: Option<secrecy::SecretString>,
}

/// The NOTIFY channel the outbox trigger signals.
const CHANNEL: &str = "treasuryd_webhook_events";

/// Listens for outbox commits and wakes `wake`; reconnects after failures (the poll covers the
/// gap).
async fn listen(
    url: secrecy::SecretString,
    wake: Arc<tokio::sync::Notify>,
    cancel: CancellationToken,
) {
    use secrecy::ExposeSecret;
    loop {
        let connected = async {
            let mut l = sqlx::postgres::PgListener::connect(url.expose_secret()).await?;
            l.listen(CHANNEL).await?;
            loop {
                l.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            result = connected => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "webhook NOTIFY listener lost; polling meanwhile");
                }
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Where an endpoint worker stands after a pass.
enum Pass {
    /// Nothing due (or the head failed and waits for its retry).
    Idle,
    /// A full batch went out: look again at once.
    More,
    /// The head is due after this long.
    DueIn(Duration),
    /// The endpoint is off.
    Disabled,
}

/// What one HTTP attempt came to.
enum Answer {
    Status(u16, String),
    Timeout,
    Connect(String),
    Refused(String),
}

impl Deliverer {
    /// `listen_url`: the PostgreSQL URL to LISTEN on for outbox commits (None: poll only).
    pub fn new(
        ledger: Ledger,
        store: DynStore,
        clock: DynClock,
        settings: Settings,
        metrics: WebhookMetrics,
        listen_url: Option<secrecy::SecretString>,
    ) -> anyhow::Result<Self> {
        // Built once: connection pools and TLS configuration are reused for every delivery.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .user_agent(concat!("treasuryd-webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(GuardedResolver {
                allow_private: settings.allow_private,
            })
            .build()?;
        Ok(Self {
            ledger,
            store,
            clock,
            client,
            settings,
            metrics,
            queued: Arc::new(tokio::sync::watch::channel(0).0),
            listen_url,
        })
    }

    /// Runs until cancelled: under the lease, dispatches new events and keeps one worker per
    /// active endpoint; without it, waits.
    pub async fn run(self, instance: String, cancel: CancellationToken) {
        let store = self.store.clone();
        let mut workers: HashMap<Uuid, (JoinHandle<()>, CancellationToken)> = HashMap::new();
        let mut lease_until = 0i64;
        let mut next_backlog = 0i64;
        let mut next_prune = 0i64;
        let lease_micros = self.settings.lease.as_micros() as i64;
        // SQLite serves one daemon (an OS file lock), so there is nobody to share with; and a
        // restart after a crash must not wait out its predecessor's lease.
        let exclusive = store.backend() == crate::store::Backend::Sqlite;
        let wake = Arc::new(tokio::sync::Notify::new());
        let listener = self
            .listen_url
            .clone()
            .map(|url| tokio::spawn(listen(url, wake.clone(), cancel.clone())));
        loop {
            let now = self.clock.now();
            if exclusive {
                lease_until = i64::MAX;
            } else if now >= lease_until - lease_micros * 2 / 3 {
                // Renewed at a third of the lease, so a slow pass never lets it lapse.
                match store
                    .acquire_lease(LEASE, &instance, now, lease_micros)
                    .await
                {
                    Ok(Some(lease)) => lease_until = lease.expires_at.min(now + lease_micros),
                    Ok(None) => lease_until = 0,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook lease not renewed");
                        lease_until = 0;
                    }
                }
            }
            if lease_until <= now {
                for (_, (task, stop)) in workers.drain() {
                    stop.cancel();
                    task.abort();
                }
            } else {
                // A full batch means more are waiting: drain them before sleeping.
                loop {
                    match self.dispatch_pass().await {
                        Ok(n) if n as i64 == DISPATCH_BATCH => {}
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "webhook dispatch failed; retrying");
                            break;
                        }
                    }
                }
                match store.endpoints().await {
                    Ok(endpoints) => self.sync_workers(&mut workers, &endpoints, &cancel),
                    Err(e) => tracing::warn!(error = %e, "reading webhook endpoints failed"),
                }
                if now >= next_backlog {
                    match store.webhook_backlog().await {
                        Ok(b) => self.metrics.set_backlog(&b, self.clock.now()),
                        Err(e) => tracing::warn!(error = %e, "reading the webhook backlog failed"),
                    }
                    self.metrics.refresh_ratio(now);
                    next_backlog = now + 1_000_000;
                }
                if let Some(keep) = self.settings.retention
                    && now >= next_prune
                {
                    match store.prune_webhooks(now - keep.as_micros() as i64).await {
                        Ok((0, 0)) => {}
                        Ok((events, deliveries)) => {
                            tracing::info!(
                                events,
                                deliveries,
                                "delivered webhook events past retention deleted"
                            )
                        }
                        Err(e) => tracing::warn!(error = %e, "pruning webhook events failed"),
                    }
                    next_prune = now + 3_600_000_000;
                }
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll) => {}
            }
        }
        if let Some(l) = listener {
            l.abort();
        }
        for (_, (task, stop)) in workers.drain() {
            stop.cancel();
            let _ = task.await;
        }
        if !exclusive {
            let _ = store.release_lease(LEASE, &instance).await;
        }
    }

    fn sync_workers(
        &self,
        workers: &mut HashMap<Uuid, (JoinHandle<()>, CancellationToken)>,
        endpoints: &[Endpoint],
        cancel: &CancellationToken,
    ) {
        workers.retain(|id, (task, _)| {
            !task.is_finished() && endpoints.iter().any(|e| e.id == *id && e.active)
        });
        for e in endpoints.iter().filter(|e| e.active) {
            if workers.contains_key(&e.id) {
                continue;
            }
            self.metrics.publish_endpoint(&e.id.to_string());
            let stop = cancel.child_token();
            let worker = self.clone();
            let (id, token) = (e.id, stop.clone());
            workers.insert(
                e.id,
                (
                    tokio::spawn(async move { worker.endpoint_worker(id, token).await }),
                    stop,
                ),
            );
        }
    }

    /// Renders undispatched events and queues them for every endpoint subscribed to them,
    /// including one that is off: its events wait for it to be turned back on, in order.
    /// Returns how many were dispatched.
    pub async fn dispatch_pass(&self) -> Result<usize, crate::store::StoreError> {
        let store = self.store.as_ref();
        let events = store.undispatched_webhook_events(DISPATCH_BATCH).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let endpoints: Vec<Endpoint> = store.endpoints().await?;
        // Which companies an event concerns is read only when some endpoint is a company's.
        let scoped = endpoints.iter().any(|e| e.company.is_some());
        let payouts = outbox::payouts_of(store, &events).await?;
        let mut bodies = Vec::with_capacity(events.len());
        let mut deliveries = Vec::new();
        for event in &events {
            let body = match outbox::render(&self.ledger, store, &payouts, event).await {
                Ok(b) => b,
                Err(e) => {
                    // It stays undispatched (and counted in the backlog) until it renders.
                    tracing::error!(event = %event.id, kind = %event.event_type, error = %e, "webhook event cannot be rendered");
                    continue;
                }
            };
            let companies = if scoped {
                match outbox::companies(store, &payouts, event).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(event = %event.id, kind = %event.event_type, error = %e, "webhook event's companies cannot be read");
                        continue;
                    }
                }
            } else {
                Vec::new()
            };
            bodies.push((event.seq, body));
            for endpoint in &endpoints {
                if outbox::subscribed(&endpoint.event_types, &event.event_type)
                    && outbox::concerns(endpoint.company, &companies)
                {
                    deliveries.push((endpoint.id, event.seq));
                }
            }
        }
        store
            .dispatch_webhook_events(&bodies, &deliveries, self.clock.now())
            .await?;
        self.queued.send_modify(|n| *n += 1);
        Ok(bodies.len())
    }

    /// Sends `endpoint`'s pending deliveries in event order until it is stopped or disabled.
    async fn endpoint_worker(self, endpoint: Uuid, stop: CancellationToken) {
        let mut queued = self.queued.subscribe();
        loop {
            let wait = match self.endpoint_pass(endpoint).await {
                Ok(Pass::Disabled) => return,
                Ok(Pass::More) => continue,
                Ok(Pass::Idle) => self.settings.poll,
                Ok(Pass::DueIn(until)) => until.min(self.settings.poll * 10),
                Err(e) => {
                    tracing::warn!(%endpoint, error = %e, "webhook delivery pass failed");
                    self.settings.poll
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                _ = queued.changed() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Delivers what is due in order; stops at the first delivery that is not delivered.
    async fn endpoint_pass(&self, id: Uuid) -> Result<Pass, crate::store::StoreError> {
        let store = self.store.as_ref();
        let endpoint = store.endpoint(id).await?;
        if !endpoint.active {
            return Ok(Pass::Disabled);
        }
        let pending = store
            .webhook_deliveries(id, Some(DeliveryState::Pending), 0, ENDPOINT_BATCH)
            .await?;
        // Outcomes are written in groups: a crash before a group is written sends its events
        // again (at least once), in the same order.
        let mut outcomes = Vec::new();
        let mut pass = if pending.len() as i64 == ENDPOINT_BATCH {
            Pass::More
        } else {
            Pass::Idle
        };
        for d in &pending {
            let now = self.clock.now();
            if d.next_attempt_at > now {
                pass = Pass::DueIn(Duration::from_micros((d.next_attempt_at - now) as u64));
                break;
            }
            let outcome = self.attempt(&endpoint, d).await;
            let state = outcome.state;
            let gone = outcome.status == Some(410);
            outcomes.push(outcome);
            match state {
                DeliveryState::Delivered => {}
                DeliveryState::Dead => {
                    tracing::warn!(endpoint = %id, event = %d.event_id, attempts = d.attempts + 1, "webhook delivery dead-lettered: retry horizon passed");
                }
                DeliveryState::Pending => {
                    pass = if gone { Pass::Disabled } else { Pass::Idle };
                    break;
                }
            }
            if outcomes.len() >= RECORD_GROUP {
                store.record_webhook_attempts(&outcomes).await?;
                outcomes.clear();
            }
        }
        store.record_webhook_attempts(&outcomes).await?;
        Ok(pass)
    }

    /// One HTTP attempt and what it does to the delivery (and, on 410, to the endpoint).
    async fn attempt(&self, endpoint: &Endpoint, d: &Delivery) -> AttemptOutcome {
        let now = self.clock.now();
        let answer = self.post(endpoint, d, now).await;
        let label = endpoint.id.to_string();
        let (outcome, status, error) = match &answer {
            Answer::Status(s, _) if (200..300).contains(s) => ("success", Some(*s), None),
            Answer::Status(410, body) => ("gone", Some(410), Some(body.clone())),
            Answer::Status(s, body) => ("http_error", Some(*s), Some(body.clone())),
            Answer::Timeout => ("timeout", None, Some("timed out".to_owned())),
            Answer::Connect(e) => ("connect_error", None, Some(e.clone())),
            Answer::Refused(e) => ("refused", None, Some(e.clone())),
        };
        let done = self.clock.now();
        self.metrics.attempt(&label, outcome, done);
        let mut result = AttemptOutcome {
            endpoint: endpoint.id,
            event_seq: d.event_seq,
            at: done,
            status,
            error,
            state: DeliveryState::Pending,
            next_attempt_at: done,
        };
        match outcome {
            "success" => {
                result.state = DeliveryState::Delivered;
                self.metrics
                    .deliveries_total
                    .with_label_values(&[&label, "delivered"])
                    .inc();
                self.metrics
                    .delivery_latency_seconds
                    .observe((done - d.event_created_at).max(0) as f64 / 1e6);
            }
            "gone" => self.disable(endpoint, done).await,
            _ => {
                let delay = self
                    .settings
                    .retry_delay(u32::try_from(d.attempts + 1).unwrap_or(u32::MAX));
                let next = done + delay.as_micros() as i64;
                if next > d.due_since + self.settings.horizon.as_micros() as i64 {
                    result.state = DeliveryState::Dead;
                    self.metrics
                        .deliveries_total
                        .with_label_values(&[&label, "dead"])
                        .inc();
                } else {
                    result.next_attempt_at = next;
                }
            }
        }
        result
    }

    async fn post(&self, endpoint: &Endpoint, d: &Delivery, now: i64) -> Answer {
        let url = match check_url(&endpoint.url, self.settings.allow_private) {
            Ok(u) => u,
            Err(reason) => return Answer::Refused(reason),
        };
        let timestamp = now.div_euclid(1_000_000);
        let signature =
            signature_header(&endpoint.signing_secrets(now), timestamp, d.body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Treasuryd-Event-Id", d.event_id.to_string())
            .header("Treasuryd-Event-Type", &d.event_type)
            .header("Treasuryd-Timestamp", timestamp.to_string())
            .header("Treasuryd-Delivery-Attempt", (d.attempts + 1).to_string())
            .header("Treasuryd-Signature", signature)
            .body(d.body.clone())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Answer::Timeout,
            Err(e) => {
                let text = error_chain(&e);
                if text.contains("SSRF protection") {
                    return Answer::Refused(text);
                }
                return Answer::Connect(text);
            }
        };
        let status = response.status().as_u16();
        let mut excerpt = Vec::new();
        // Only the start of the answer is kept; the rest is never read.
        while excerpt.len() < self.settings.max_response_bytes {
            match response.chunk().await {
                Ok(Some(bytes)) => excerpt.extend_from_slice(&bytes),
                Ok(None) => break,
                Err(e) if e.is_timeout() && !(200..300).contains(&status) => break,
                Err(_) => break,
            }
        }
        excerpt.truncate(self.settings.max_response_bytes);
        Answer::Status(status, String::from_utf8_lossy(&excerpt).into_owned())
    }

    /// A 410 says the partner took the endpoint down: stop until an Admin turns it back on.
    async fn disable(&self, endpoint: &Endpoint, at: i64) {
        let reason = "the receiver answered 410 Gone; deliveries wait until it is turned back on";
        let audit = AuditRecord {
            actor: "treasuryd".into(),
            role: crate::domain::Role::Admin,
            action: "webhook_endpoint.disable".into(),
            target: format!("webhook_endpoint:{}", endpoint.id),
            reason: Some(reason.into()),
            request_id: "webhooks".into(),
            at,
            evidence: None,
        };
        tracing::warn!(endpoint = %endpoint.id, "webhook endpoint answered 410: disabled");
        if let Err(e) = self
            .store
            .set_endpoint_active(endpoint.id, false, Some(reason), &audit)
            .await
        {
            tracing::error!(endpoint = %endpoint.id, error = %e, "disabling a gone webhook endpoint failed");
        }
    }
}

/// An error with its causes, for the delivery's `last_error` (never carries secrets: the
/// request holds none besides the signature, which is not part of any error).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_and_stay_capped() {
        let s = Settings::from_config(&WebhooksConfig {
            retry_min_delay_ms: 1000,
            retry_max_delay_seconds: 60,
            ..Default::default()
        });
        // Jitter adds up to one more delay: n-th delay in [base, 2 × base], base capped.
        for (n, base) in [(1u32, 1u64), (2, 2), (3, 4), (7, 60), (40, 60)] {
            let d = s.retry_delay(n);
            assert!(
                d >= Duration::from_secs(base) && d <= Duration::from_secs(2 * base),
                "attempt {n}: {d:?}"
            );
        }
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let refused = resolve_guarded("localhost", false).await.unwrap_err();
        assert!(refused.contains("SSRF"), "{refused}");
        assert!(resolve_guarded("localhost", true).await.is_ok());
    }
}
