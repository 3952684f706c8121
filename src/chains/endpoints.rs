//! Several RPC endpoints for one network: each tick every endpoint's head is read (in
//! parallel, with a timeout); the engine works through the healthiest: answering, not behind
//! the best head by more than `max_head_lag_blocks`, and not demoted. A failing or lagging
//! endpoint is demoted for a back-off that doubles with each failure (up to a minute); the
//! one in use is kept while it stays healthy, so the choice does not flap.

use super::evm::EvmClient;
use crate::metrics::RpcMetrics;
use secrecy::{ExposeSecret, SecretString};
use std::time::{Duration, Instant};

struct Endpoint {
    /// Position in the configured list: the metrics label (URLs may carry API keys).
    label: String,
    client: EvmClient,
    failures: u32,
    demoted_until: Option<Instant>,
}

pub struct Endpoints {
    network: String,
    list: Vec<Endpoint>,
    current: Option<usize>,
    max_head_lag: u64,
    metrics: RpcMetrics,
    /// Since when no endpoint has been healthy; None while one is.
    unhealthy_since: Option<Instant>,
    /// The endpoints found healthy by the last `choose`.
    healthy: Vec<usize>,
}

impl Endpoints {
    pub fn new(
        network: &str,
        urls: &[SecretString],
        max_head_lag: u64,
        batch_calls: usize,
        metrics: RpcMetrics,
    ) -> anyhow::Result<Self> {
        let list = urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Ok(Endpoint {
                    label: i.to_string(),
                    client: EvmClient::new(url.expose_secret())?.with_batch_calls(batch_calls),
                    failures: 0,
                    demoted_until: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!list.is_empty(), "network {network} has no RPC URL");
        Ok(Self {
            network: network.to_owned(),
            list,
            current: None,
            max_head_lag,
            metrics,
            unhealthy_since: None,
            healthy: Vec::new(),
        })
    }

    /// Every endpoint's client, for start-up checks.
    pub fn clients(&self) -> impl Iterator<Item = &EvmClient> {
        self.list.iter().map(|e| &e.client)
    }

    /// Reads every endpoint's head and returns the healthiest endpoint's client with its head.
    /// When every endpoint is demoted they are all tried again rather than none.
    pub async fn choose(&mut self) -> anyhow::Result<(EvmClient, u64)> {
        let now = Instant::now();
        let all_demoted = self
            .list
            .iter()
            .all(|e| e.demoted_until.is_some_and(|t| t > now));
        let probes = self.list.iter().map(|e| {
            let skip = !all_demoted && e.demoted_until.is_some_and(|t| t > now);
            let client = e.client.clone();
            async move {
                if skip {
                    return None;
                }
                let started = Instant::now();
                let head = tokio::time::timeout(PROBE_TIMEOUT, client.head()).await;
                Some((head.ok().and_then(Result::ok), started.elapsed()))
            }
        });
        let results = futures::future::join_all(probes).await;
        let best = results
            .iter()
            .filter_map(|r| r.as_ref().and_then(|(h, _)| *h))
            .max();
        let network = self.network.clone();
        let mut healthy: Vec<(usize, u64)> = Vec::new();
        for (i, result) in results.iter().enumerate() {
            let Some((head, took)) = result else { continue };
            let lag = match (head, best) {
                (Some(h), Some(b)) => Some(b - h),
                _ => None,
            };
            let ok = lag.is_some_and(|l| l <= self.max_head_lag);
            let label = self.list[i].label.clone();
            let l = [network.as_str(), label.as_str()];
            self.metrics.up.with_label_values(&l).set(i64::from(ok));
            self.metrics
                .latency_seconds
                .with_label_values(&l)
                .set(took.as_secs_f64());
            if let Some(lag) = lag {
                self.metrics
                    .head_lag_blocks
                    .with_label_values(&l)
                    .set(i64::try_from(lag).unwrap_or(i64::MAX));
            }
            match head {
                Some(h) if ok => {
                    self.list[i].failures = 0;
                    self.list[i].demoted_until = None;
                    healthy.push((i, *h));
                }
                _ => self.demote(i),
            }
        }
        self.healthy = healthy.iter().map(|(i, _)| *i).collect();
        let chosen = self
            .current
            .and_then(|c| healthy.iter().find(|(i, _)| *i == c))
            .or_else(|| healthy.first())
            .copied();
        let Some((index, head)) = chosen else {
            self.unhealthy_since.get_or_insert(now);
            anyhow::bail!("network {}: no healthy RPC endpoint", self.network);
        };
        self.unhealthy_since = None;
        if self.current.is_some_and(|c| c != index) {
            tracing::warn!(network = %self.network, from = ?self.current, to = index, "RPC failover");
            self.metrics
                .failovers_total
                .with_label_values(&[self.network.as_str()])
                .inc();
        }
        self.current = Some(index);
        for (i, e) in self.list.iter().enumerate() {
            self.metrics
                .selected
                .with_label_values(&[network.as_str(), e.label.as_str()])
                .set(i64::from(i == index));
        }
        Ok((self.list[index].client.clone(), head))
    }

    /// A healthy endpoint other than the one in use, to confirm what the first one says.
    pub fn witness(&self) -> Option<EvmClient> {
        self.healthy
            .iter()
            .find(|i| Some(**i) != self.current)
            .map(|i| self.list[*i].client.clone())
    }

    /// How long no endpoint has been healthy, if none is.
    pub fn outage(&self) -> Option<Duration> {
        self.unhealthy_since.map(|t| t.elapsed())
    }

    /// The endpoint in use failed a call during the tick: demote it, so the next tick prefers
    /// another that is healthy.
    pub fn failed(&mut self) {
        if let Some(i) = self.current {
            self.demote(i);
        }
    }

    fn demote(&mut self, i: usize) {
        let e = &mut self.list[i];
        e.failures = e.failures.saturating_add(1);
        let backoff = Duration::from_secs(1u64 << e.failures.min(6)).min(Duration::from_secs(60));
        e.demoted_until = Some(Instant::now() + backoff);
        self.metrics
            .errors_total
            .with_label_values(&[self.network.as_str(), e.label.as_str()])
            .inc();
    }
}

/// A head read that takes longer than this counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
