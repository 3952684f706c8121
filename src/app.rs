//! The daemon assembled: store, ledger, API and metrics listeners, and shutdown.

use crate::api::auth::{Authenticator, Caller};
use crate::api::{self, AppState};
use crate::clock::{DynClock, SystemClock};
use crate::config::Config;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::store::{self, DynStore};
use anyhow::Context;
use axum::Router;
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct App {
    /// Held while the daemon lives (SQLite only): see `lock_sqlite_instance`.
    _instance_lock: Option<std::fs::File>,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
    state: AppState,
    config: Config,
}

/// Opens the configured store and applies migrations.
pub async fn open_store(config: &Config, clock: DynClock) -> anyhow::Result<DynStore> {
    let url = config.database_url();
    if let Some(path) = url.expose_secret().strip_prefix("sqlite://")
        && let Some(dir) = std::path::Path::new(path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let store = store::open(url.expose_secret(), config.database.max_connections, clock)
        .await
        .with_context(|| {
            format!(
                "opening database {}",
                crate::config::redact_url(url.expose_secret())
            )
        })?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// SQLite serves one daemon: a second one on the same file would be a second writer of the same
/// wallets' nonces. The lock is an OS file lock next to the database, which the OS drops with
/// the process, even on SIGKILL, but only once all its threads are gone: a supervisor that
/// restarts at once would find it still held, so a start waits up to
/// `database.instance_lock_wait_seconds` before it refuses.
async fn lock_sqlite_instance(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    let url = config.database_url();
    let Some(rest) = url.expose_secret().strip_prefix("sqlite:") else {
        return Ok(None);
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.contains(":memory:") {
        return Ok(None);
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let lock_path = format!("{path}.instance-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {lock_path}"))?;
    let wait = Duration::from_secs(config.database.instance_lock_wait_seconds);
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) if tokio::time::Instant::now() < deadline => {
                if !logged {
                    tracing::warn!(lock = %lock_path, wait_seconds = wait.as_secs(), "waiting for the SQLite instance lock (a daemon that just stopped may still hold it)");
                    logged = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
                "another treasuryd is already running on the SQLite database {path} (waited {}s for \
                 it to stop): SQLite serves one daemon at a time (use PostgreSQL for several instances)",
                wait.as_secs()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {lock_path}"));
            }
        }
    }
}

impl App {
    /// Opens the database (migrating it), registers assets and binds both listeners; nothing is
    /// served until `run_until_stopped`.
    pub async fn build(
        config: Config,
        extra_tokens: Vec<(SecretString, Caller)>,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(config, extra_tokens, SystemClock::shared()).await
    }

    /// `build` on `clock`, the one every part of the daemon reads the time from (tests move
    /// a manual one, the demo skips ahead).
    pub async fn build_with_clock(
        config: Config,
        extra_tokens: Vec<(SecretString, Caller)>,
        clock: DynClock,
    ) -> anyhow::Result<Self> {
        // Keys first: a wallet whose key is missing or signs for another address stops start-up.
        let wallets = crate::wallets::load_configured(&config).context("loading wallets")?;
        let instance_lock = lock_sqlite_instance(&config).await?;
        let store = open_store(&config, clock.clone()).await?;
        if instance_lock.is_some() {
            // The only daemon on this file: an engine lease still in it was left by a dead
            // process, so a restart takes the networks over at once instead of waiting it out.
            for network in &config.networks {
                if let Some(left) = store.lease(&network.name).await? {
                    store.release_lease(&network.name, &left.owner).await?;
                }
            }
        }
        let metrics = Metrics::new().context("registering metrics")?;
        let trust_metrics = metrics.trust.clone();
        let ledger = Ledger::open_with(
            store.clone(),
            &config.asset_specs(),
            Some(metrics.ledger.clone()),
            crate::ledger::WriterConfig::for_backend(store.backend()),
            clock.clone(),
        )
        .await
        .context("registering assets")?;
        let templates = crate::templates::TemplateCatalog::load(&config.escrow.templates_dir)
            .map(Arc::new)
            .with_context(|| {
                format!(
                    "loading deal templates from {}",
                    config.escrow.templates_dir.display()
                )
            })?;
        if let Some(scope) = &config.pilot {
            // A wider `[pilot]` at start is an expansion like one through the API or SIGHUP.
            let snapshot = templates.snapshot();
            if let Err(why) = crate::scope::expansion_allowed(
                store.as_ref(),
                clock.now(),
                &snapshot,
                scope,
                &snapshot,
            )
            .await?
            {
                anyhow::bail!("pilot: {why}");
            }
            apply_configured_scope(store.as_ref(), clock.now(), scope, &templates, "at start")
                .await?;
        }
        let networks = Arc::new(crate::payouts::networks::PayoutNetworks::from_config(
            &config,
        ));
        networks.controls.refresh(store.as_ref()).await?;
        let wallets: Arc<Vec<Arc<crate::wallets::Wallet>>> =
            Arc::new(wallets.into_iter().map(Arc::new).collect());
        let canaries = crate::operations::canary::Canaries::new(
            ledger.clone(),
            &store,
            clock.clone(),
            networks.clone(),
            &config,
            &wallets,
            metrics.operations.canary.clone(),
        );
        let mut auth = Authenticator::from_config(&config.auth.tokens);
        for (token, caller) in &extra_tokens {
            auth.insert(token, caller.clone());
        }
        let api_listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", config.server.listen))?;
        let metrics_listener = TcpListener::bind(config.server.metrics_listen)
            .await
            .with_context(|| {
                format!(
                    "binding server.metrics_listen {}",
                    config.server.metrics_listen
                )
            })?;
        Ok(Self {
            _instance_lock: instance_lock,
            api_listener,
            metrics_listener,
            state: AppState::new(crate::api::AppParts {
                ledger: ledger.clone(),
                store: store.clone(),
                clock: clock.clone(),
                metrics,
                auth: Arc::new(auth),
                tiers: Arc::new(config.tier_table()?),
                throttles: Arc::new(crate::api::throttle::Throttles::new(
                    config.server.auth_failures_per_minute,
                )),
                deeplinks: config
                    .console_key()
                    .filter(|_| config.console.enabled)
                    .map(|k| crate::console::deeplink::DeeplinkKey::derive(&k)),
                networks: networks.clone(),
                wallets,
                canaries,
                escrow: crate::escrow::service::Escrow {
                    ledger: ledger.clone(),
                    deals: store.clone(),
                    allowlists: store.clone(),
                    operations: store.clone(),
                    templates: templates.clone(),
                    clock: clock.clone(),
                    networks: networks.clone(),
                    settle_targets: Arc::new(config.escrow.settle_target_days.clone()),
                },
                trust: crate::trust::service::Trust {
                    ledger: ledger.clone(),
                    sessions: store.clone(),
                    controls: store.clone(),
                    networks: networks.clone(),
                    clock,
                    metrics: trust_metrics,
                    pause_at: config.debug.pause_at.clone(),
                },
                evidence: Arc::new(crate::escrow::evidence::EvidenceStore::new(
                    config
                        .escrow
                        .evidence_dir
                        .clone()
                        .unwrap_or_else(|| config.data_dir.join("evidence")),
                    config.escrow.evidence_max_bytes,
                    config.escrow.evidence_content_types.clone(),
                    config.escrow.evidence_max_per_deal,
                )),
                templates,
                webhooks_allow_private: config.webhooks.allow_private_networks,
            }),
            config,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_listener
            .local_addr()
            .unwrap_or(self.config.server.metrics_listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves (or a critical task fails), then stops accepting, lets
    /// in-flight requests finish within the grace period and closes the database.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (failed_tx, mut failed_rx) = tokio::sync::mpsc::channel::<anyhow::Error>(4);

        let console = self.config.console.enabled.then(|| {
            let key = self.config.console_key();
            if key.is_none() {
                tracing::warn!(
                    env = %self.config.console.secret_env,
                    "no console key of at least 32 characters: Admins, Approvers and Operators cannot sign in to /admin"
                );
            }
            crate::console::router(crate::console::Console::new(
                self.state.clone(),
                key,
                Duration::from_secs(self.config.console.session_minutes * 60),
            ))
        });
        let api = api::router(
            self.state.clone(),
            console,
            self.config.server.max_body_bytes,
            Duration::from_secs(self.config.server.request_timeout_seconds),
        );
        let metrics_state = self.state.metrics.clone();
        let metrics = Router::new().route(
            "/metrics",
            get(move || async move { metrics_state.render() }),
        );

        // This process's name in engine leases: readable for on-call, unique per start.
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let instance = format!(
            "{}-{}-{}",
            host.trim(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        for network in &self.config.networks {
            let tokens = self
                .state
                .networks
                .get(&network.name)
                .map(|n| n.tokens.clone())
                .unwrap_or_default();
            let engine_instance = crate::payouts::engine::EngineInstance {
                id: instance.clone(),
                store: self.state.store.clone(),
                clock: self.state.clock.clone(),
                rpc_metrics: self.state.metrics.rpc.clone(),
                pause_at: self.config.debug.pause_at.clone(),
                controls: self.state.networks.controls.clone(),
            };
            let (ledger, metrics) = (&self.state.ledger, &self.state.metrics);
            let engine: Option<futures::future::BoxFuture<'static, anyhow::Result<()>>> =
                match network.kind {
                    crate::config::ChainKind::Evm => crate::payouts::engine::NetworkEngine::new(
                        network,
                        tokens,
                        &self.state.wallets,
                        ledger.clone(),
                        metrics.payouts.clone(),
                        metrics.wallets.clone(),
                        engine_instance,
                    )?
                    .map(|e| Box::pin(e.run(cancel.clone())) as _),
                    crate::config::ChainKind::Tron => {
                        let api_key = match &network.api_key_env {
                            Some(var) => Some(self.config.secrets.get(var).cloned().ok_or_else(
                                || {
                                    anyhow::anyhow!(
                                        "network {}: environment variable {var} (api_key_env) is not set",
                                        network.name
                                    )
                                },
                            )?),
                            None => None,
                        };
                        crate::payouts::engine::TronEngine::new(
                            network,
                            tokens,
                            &self.state.wallets,
                            ledger.clone(),
                            metrics.payouts.clone(),
                            metrics.wallets.clone(),
                            engine_instance,
                            api_key,
                        )?
                        .map(|e| Box::pin(e.run(cancel.clone())) as _)
                    }
                };
            let Some(engine) = engine else { continue };
            let (cancel, failed, name) = (cancel.clone(), failed_tx.clone(), network.name.clone());
            tracker.spawn(async move {
                if let Err(e) = engine.await {
                    let _ = failed
                        .send(e.context(format!("payout engine for {name} failed")))
                        .await;
                }
                cancel.cancel();
            });
        }

        {
            let (state, source, cancel) = (
                self.state.clone(),
                self.config.source.clone(),
                cancel.clone(),
            );
            tracker.spawn(async move { reload_on_sighup(state, source, cancel).await });
        }
        let restarts = self.state.metrics.operations.task_restarts_total.clone();
        {
            let deliverer = crate::webhooks::delivery::Deliverer::new(
                self.state.ledger.clone(),
                self.state.store.clone(),
                self.state.clock.clone(),
                crate::webhooks::delivery::Settings::from_config(&self.config.webhooks),
                self.state.metrics.webhooks.clone(),
                (self.state.store.backend() == crate::store::Backend::Postgres)
                    .then(|| self.config.database_url()),
            )
            .context("building the webhook HTTP client")?;
            let (c, instance) = (cancel.clone(), instance.clone());
            tracker.spawn(supervise(
                "webhooks",
                restarts.clone(),
                cancel.clone(),
                move || deliverer.clone().run(instance.clone(), c.clone()),
            ));
        }
        {
            let (canaries, c, instance) = (
                self.state.canaries.clone(),
                cancel.clone(),
                instance.clone(),
            );
            let lease = Duration::from_secs(self.config.webhooks.lease_seconds);
            tracker.spawn(supervise(
                "canaries",
                restarts.clone(),
                cancel.clone(),
                move || {
                    let (canaries, instance, c) = (canaries.clone(), instance.clone(), c.clone());
                    async move { canaries.run(instance, lease, c).await }
                },
            ));
        }
        {
            let (escrow, trust, c, instance) = (
                self.state.escrow.clone(),
                self.state.trust.clone(),
                cancel.clone(),
                instance.clone(),
            );
            let poll = Duration::from_millis(self.config.escrow.timer_poll_ms);
            tracker.spawn(supervise(
                "timers",
                restarts.clone(),
                cancel.clone(),
                move || {
                    let (escrow, trust, instance, c) =
                        (escrow.clone(), trust.clone(), instance.clone(), c.clone());
                    async move { run_timers(escrow, trust, &instance, poll, c).await }
                },
            ));
        }

        let limits = crate::api::serve::ServeLimits {
            header_read_timeout: Duration::from_secs(
                self.config.server.header_read_timeout_seconds,
            ),
            max_connections: self.config.server.max_connections,
        };
        for (listener, router) in [(self.api_listener, api), (self.metrics_listener, metrics)] {
            let cancel = cancel.clone();
            tracker.spawn(async move {
                crate::api::serve::serve(listener, router, limits, cancel.clone()).await;
                // A critical task that ends stops the whole daemon.
                cancel.cancel();
            });
        }
        tracker.close();
        drop(failed_tx);

        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => tracing::info!("shutdown requested"),
            () = cancel.cancelled() => tracing::warn!("a critical task stopped"),
        }
        cancel.cancel();
        let grace = Duration::from_secs(self.config.server.shutdown_grace_seconds);
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                ?grace,
                "in-flight work did not finish within the grace period"
            );
        }
        self.state.store.close().await;
        match failed_rx.try_recv() {
            Ok(e) => Err(e),
            Err(_) => {
                tracing::info!("stopped cleanly");
                Ok(())
            }
        }
    }
}

/// Runs the background task `start()` makes until `cancel`; if it panics or stops before
/// that, says so in the log and in `treasuryd_task_restarts_total{task}`, and starts it again
/// after a pause that doubles up to 30 s. A critical task never silently disappears.
async fn supervise<F, Fut>(
    task: &'static str,
    restarts: prometheus::IntCounterVec,
    cancel: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut pause = Duration::from_secs(1);
    loop {
        let ended = tokio::spawn(start()).await;
        if cancel.is_cancelled() {
            return;
        }
        match ended {
            Err(e) if e.is_panic() => {
                tracing::error!(task, error = %e, "background task panicked; restarting it")
            }
            _ => tracing::error!(task, "background task stopped; restarting it"),
        }
        restarts.with_label_values(&[task]).inc();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Fires due timers every `poll` until cancelled. Timers that came due while the daemon was
/// down fire on the first pass.
async fn run_timers(
    escrow: crate::escrow::service::Escrow,
    trust: crate::trust::service::Trust,
    instance: &str,
    poll: Duration,
    cancel: CancellationToken,
) {
    loop {
        if let Err(e) = escrow.fire_due(instance).await {
            tracing::warn!(error = %e, "timer pass failed; retrying");
        }
        // Trust cut-offs: each session row is its own timer, closed once under its state guard.
        if let Err(e) = trust.run_pass().await {
            tracing::warn!(error = %e, "trust session pass failed; retrying");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(poll) => {}
        }
    }
}

/// Applies the `[pilot]` section of the config file as the scope in force (audited as
/// `config`), after checking it against the templates.
async fn apply_configured_scope(
    store: &dyn crate::store::OperationsStore,
    now: crate::domain::UnixMicros,
    scope: &crate::scope::PilotScope,
    templates: &crate::templates::TemplateCatalog,
    when: &str,
) -> anyhow::Result<()> {
    if let Err((field, message)) = scope.validate(Some(&templates.snapshot())) {
        anyhow::bail!("pilot.{field}: {message}");
    }
    let audit = crate::store::AuditRecord {
        actor: "config".into(),
        role: crate::domain::Role::Admin,
        action: "pilot_scope.set".into(),
        target: "pilot".into(),
        reason: Some(format!("[pilot] of the config file, {when}")),
        request_id: "config".into(),
        at: now,
        evidence: None,
    };
    if crate::scope::apply(store, scope, &audit).await? {
        tracing::info!(?scope, "pilot scope applied from the config file");
    }
    Ok(())
}

/// On SIGHUP: reads the config file again, puts its `[[auth.tokens]]` in force (even during a
/// configuration freeze), reloads the deal templates from its
/// `escrow.templates_dir` and applies its `[pilot]` section. A file or template that does not
/// validate changes nothing. At start, every 15 s and after a reload the scope, pilot and tier
/// headroom metrics are refreshed from the database, where another instance or an Admin may have changed
/// the scope.
async fn reload_on_sighup(
    state: crate::api::AppState,
    source: Option<std::path::PathBuf>,
    cancel: CancellationToken,
) {
    #[cfg(unix)]
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload through the API only");
            None
        }
    };
    loop {
        // First at start, then every 15 s and after a reload.
        if let Ok(scope) = crate::scope::current(state.store.as_ref()).await {
            state
                .metrics
                .scope
                .show(&scope, &state.templates.snapshot());
        }
        if let Err(e) = refresh_pilot_metrics(&state).await {
            tracing::warn!(error = %e, "pilot metrics not refreshed");
        }
        if let Err(e) = state.refresh_tier_headroom(None).await {
            tracing::warn!(error = %e, "tier headroom not refreshed");
        }
        match state.networks.controls.refresh(state.store.as_ref()).await {
            Ok(()) => crate::api::controls::export(&state),
            Err(e) => tracing::warn!(error = %e, "treasury controls not refreshed"),
        }
        // Another instance sharing the database may have changed the register.
        if let Err(e) = crate::api::incidents::refresh_metrics(&state).await {
            tracing::warn!(error = %e, "incident metrics not refreshed");
        }
        #[cfg(unix)]
        let hangup = async {
            match hangups.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<()>();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(15)) => {}
            () = hangup => {
                if let Err(e) = reload(&state, source.as_deref()).await {
                    tracing::error!(error = format!("{e:#}"), "SIGHUP: reload refused; nothing changed");
                }
            }
        }
    }
}

/// The pilot's figures over every deal so far, for Prometheus.
async fn refresh_pilot_metrics(
    state: &crate::api::AppState,
) -> Result<(), crate::store::StoreError> {
    let store = &state.store;
    let report = crate::escrow::report::build(
        store.as_ref(),
        0,
        i64::MAX,
        &crate::escrow::report::Judging::all(&state.escrow.settle_targets),
    )
    .await?;
    let now = state.clock.now();
    let (mut escalated, mut open) = (0, 0);
    // (country, category) → seconds to the nearest DISPUTE_TTL deadline.
    let mut soonest: std::collections::BTreeMap<(String, String), i64> = Default::default();
    let mut after = None;
    loop {
        let page = store
            .list_deals(&crate::store::DealFilter {
                company: None,
                state: Some(crate::escrow::DealState::Issue),
                after,
                limit: crate::api::MAX_PAGE,
                ..Default::default()
            })
            .await?;
        for deal in &page {
            if deal.escalated {
                escalated += 1;
                continue;
            }
            open += 1;
            let due = store
                .deal_timers(deal.id)
                .await?
                .into_iter()
                .filter(|t| {
                    t.kind == crate::timers::TimerKind::DisputeTtl
                        && t.state == crate::timers::TimerState::Pending
                })
                .map(|t| t.due_at)
                .min();
            if let Some(due) = due {
                let left = ((due - now) / 1_000_000).max(0);
                let scope = (
                    deal.template.country.clone(),
                    deal.template.category.clone(),
                );
                let entry = soonest.entry(scope).or_insert(left);
                *entry = (*entry).min(left);
            }
        }
        after = page.last().map(|d| d.id);
        if (page.len() as i64) < crate::api::MAX_PAGE {
            break;
        }
    }
    state.metrics.pilot.show(&report.by_scope, escalated);
    let facts = store.deal_facts(0, i64::MAX).await?;
    state
        .metrics
        .pilot
        .show_due(&crate::escrow::report::completion_when_due(
            &facts,
            &crate::escrow::report::Judging::all(&state.escrow.settle_targets),
            now,
        ));
    let ops = &state.metrics.operations;
    ops.disputes_open.set(open);
    ops.disputes_ttl_soonest_seconds.reset();
    for ((country, category), left) in soonest {
        ops.disputes_ttl_soonest_seconds
            .with_label_values(&[country.as_str(), category.as_str()])
            .set(left as f64);
    }
    // Timers and cut-offs a minute past due and still not done: the timer loop is stuck.
    let (overdue, oldest) = store.overdue_timers(now - 60_000_000).await?;
    ops.timers_overdue.set(overdue);
    ops.timers_oldest_overdue_seconds
        .set(oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1e6));
    let frozen = crate::operations::freeze::active(store.as_ref(), now).await?;
    ops.config_freeze.set(i64::from(frozen.is_some()));
    // Safe-mode as the database has it, on every instance (the engines set it on the owner).
    for network in state.networks.names() {
        let on = store.safe_mode(network).await?.is_some();
        state
            .metrics
            .payouts
            .safe_mode
            .with_label_values(&[network])
            .set(i64::from(on));
    }
    Ok(())
}

async fn reload(
    state: &crate::api::AppState,
    source: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let config = Config::load(source, std::env::vars())?;
    // Tokens first, and whatever a freeze holds: revoking one must never wait.
    let (tokens, removed) = state.auth.reload(&config.auth.tokens);
    tracing::info!(tokens, removed, "SIGHUP: API tokens reloaded");
    // Templates and the pilot scope are configuration: a freeze holds them as they are.
    let store = &state.store;
    if let Some(f) = crate::operations::freeze::active(store.as_ref(), state.clock.now()).await? {
        anyhow::bail!("{}", crate::operations::freeze::describe(&f));
    }
    let fresh = crate::templates::Templates::load(&config.escrow.templates_dir)
        .with_context(|| format!("templates in {}", config.escrow.templates_dir.display()))?;
    // New template files and a wider `[pilot]` are an expansion like one through the API: a
    // scope not yet admitted does not go live by reload before the scope in force is stable.
    let stored = crate::scope::current(store.as_ref()).await?;
    let next = config.pilot.as_ref().unwrap_or(&stored);
    if let Err(why) = crate::scope::expansion_allowed(
        store.as_ref(),
        state.clock.now(),
        &state.templates.snapshot(),
        next,
        &fresh,
    )
    .await?
    {
        anyhow::bail!("{why}");
    }
    let count = state.templates.replace(fresh);
    tracing::info!(templates = count, "SIGHUP: deal templates reloaded");
    if let Some(scope) = &config.pilot {
        apply_configured_scope(
            state.store.as_ref(),
            state.clock.now(),
            scope,
            &state.templates,
            "on SIGHUP",
        )
        .await?;
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_background_task_that_panics_is_counted_and_restarted() {
        let restarts =
            prometheus::IntCounterVec::new(prometheus::Opts::new("restarts", "test"), &["task"])
                .unwrap();
        let (runs, cancel) = (Arc::new(AtomicUsize::new(0)), CancellationToken::new());
        let (r, c) = (runs.clone(), cancel.clone());
        let supervisor = tokio::spawn(supervise(
            "timers",
            restarts.clone(),
            cancel.clone(),
            move || {
                let (r, c) = (r.clone(), c.clone());
                async move {
                    if r.fetch_add(1, Ordering::SeqCst) == 0 {
                        panic!("a bug in the timer loop");
                    }
                    c.cancelled().await;
                }
            },
        ));
        for _ in 0..100 {
            if runs.load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "restarted once");
        assert_eq!(restarts.with_label_values(&["timers"]).get(), 1);
        cancel.cancel();
        supervisor.await.unwrap();
        assert_eq!(
            restarts.with_label_values(&["timers"]).get(),
            1,
            "a cancelled task is not a failure"
        );
    }
}
