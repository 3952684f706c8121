//! Configuration: one TOML file, then `TREASURYD__SECTION__KEY` environment overrides, parsed
//! once at start-up into typed structs. Unknown keys, wrong types and impossible values stop
//! start-up with the dotted key in the message.

use crate::domain::{AssetKey, AssetSpec, Role};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub const ENV_PREFIX: &str = "TREASURYD__";
pub const EXAMPLE: &str = include_str!("../treasuryd.example.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Key { key: String, message: String },
}

fn key_error(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        key: key.into(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite database and other local state live.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default = "default_assets")]
    pub assets: Vec<AssetConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
    /// Chains the payout engine sends on, with their tokens.
    #[serde(default)]
    pub networks: Vec<NetworkConfig>,
    #[serde(default)]
    pub debug: DebugConfig,
    /// Where the wallet declarations (`*.toml`) are; see `wallets/README.md`.
    #[serde(default = "default_wallets_dir")]
    pub wallets_dir: PathBuf,
    #[serde(default)]
    pub escrow: EscrowConfig,
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    #[serde(default)]
    pub canary: CanaryConfig,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// The pilot's scope flags. When present they are applied at start and on SIGHUP; leave
    /// the section out to keep whatever an Admin last set through the API.
    #[serde(default)]
    pub pilot: Option<crate::scope::PilotScope>,
    /// The tier table: what partner companies of each tier may pay out and owe, per asset.
    /// Left out: no tier limits.
    #[serde(default)]
    pub tiers: Option<TiersConfig>,
    /// The process environment, kept as secrets, for the key references in `wallets/`.
    #[serde(skip)]
    pub secrets: std::collections::HashMap<String, SecretString>,
    /// The file this was read from, for reloads on SIGHUP.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Allow endpoints on loopback, private and other internal addresses, and plain http (a
    /// receiver on this host). Off in production: it is the SSRF guard.
    #[serde(default)]
    pub allow_private_networks: bool,
    /// How long a delivery is retried before it is dead-lettered (from when it became due).
    #[serde(default = "default_webhook_horizon_seconds")]
    pub retry_horizon_seconds: u64,
    /// The first retry's delay; each next one doubles, with jitter, up to `retry_max_delay_seconds`.
    #[serde(default = "default_webhook_min_delay_ms")]
    pub retry_min_delay_ms: u64,
    #[serde(default = "default_webhook_max_delay_seconds")]
    pub retry_max_delay_seconds: u64,
    /// One delivery attempt, connection and answer included.
    #[serde(default = "default_webhook_request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// How much of a receiver's answer is read (kept as the error of a failed attempt).
    #[serde(default = "default_webhook_max_response_bytes")]
    pub max_response_bytes: usize,
    /// How often the outbox is looked at for new events.
    #[serde(default = "default_webhook_poll_ms")]
    pub poll_ms: u64,
    /// The lease that makes one instance the deliverer (several instances on PostgreSQL).
    #[serde(default = "default_webhook_lease_seconds")]
    pub lease_seconds: u64,
    /// Delivered events are deleted after this many days (pending and dead-lettered ones are
    /// kept); 0 keeps everything. Replays by time range reach back this far.
    #[serde(default = "default_webhook_retention_days")]
    pub retention_days: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_networks: false,
            retry_horizon_seconds: default_webhook_horizon_seconds(),
            retry_min_delay_ms: default_webhook_min_delay_ms(),
            retry_max_delay_seconds: default_webhook_max_delay_seconds(),
            request_timeout_seconds: default_webhook_request_timeout_seconds(),
            max_response_bytes: default_webhook_max_response_bytes(),
            poll_ms: default_webhook_poll_ms(),
            lease_seconds: default_webhook_lease_seconds(),
            retention_days: default_webhook_retention_days(),
        }
    }
}

/// The admin console at `/admin` on the API listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A console session lasts this long.
    #[serde(default = "default_console_session_minutes")]
    pub session_minutes: u64,
    /// The environment variable holding the console key (at least 32 characters), from which
    /// each user's TOTP secret is derived. Without it Admins, Approvers and Operators cannot sign in.
    #[serde(default = "default_console_secret_env")]
    pub secret_env: String,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_minutes: default_console_session_minutes(),
            secret_env: default_console_secret_env(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_console_session_minutes() -> u64 {
    60
}
fn default_console_secret_env() -> String {
    "TREASURYD_CONSOLE_SECRET".into()
}

/// Canary payouts: 1 unit of `asset` per network from its canary wallet to its canary address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// A scheduled canary per configured network this often; 0: only on request
    /// (`POST /v1/canary/{network}`).
    #[serde(default = "default_canary_interval_seconds")]
    pub interval_seconds: u64,
    /// Not confirmed this long after it started: red.
    #[serde(default = "default_canary_timeout_seconds")]
    pub timeout_seconds: u64,
    /// The token canaries pay, 1 unit each.
    #[serde(default = "default_canary_asset")]
    pub asset: String,
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            interval_seconds: default_canary_interval_seconds(),
            timeout_seconds: default_canary_timeout_seconds(),
            asset: default_canary_asset(),
        }
    }
}

fn default_canary_interval_seconds() -> u64 {
    3600
}
fn default_canary_timeout_seconds() -> u64 {
    // The launch SLO for pass-through (p95 ≤ 15 min).
    900
}
fn default_canary_asset() -> String {
    "USDT".into()
}

fn default_webhook_horizon_seconds() -> u64 {
    72 * 3600
}
fn default_webhook_min_delay_ms() -> u64 {
    1_000
}
fn default_webhook_max_delay_seconds() -> u64 {
    3600
}
fn default_webhook_request_timeout_seconds() -> u64 {
    10
}
fn default_webhook_max_response_bytes() -> usize {
    4096
}
fn default_webhook_poll_ms() -> u64 {
    100
}
fn default_webhook_lease_seconds() -> u64 {
    10
}
fn default_webhook_retention_days() -> u64 {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowConfig {
    /// Where the deal templates (`{COUNTRY}_{CATEGORY}_v{N}.json`) are.
    #[serde(default = "default_templates_dir")]
    pub templates_dir: PathBuf,
    /// How often due timers (AUTO_APPROVE, DISPUTE_TTL) are looked for.
    #[serde(default = "default_timer_poll_ms")]
    pub timer_poll_ms: u64,
    /// The content-addressed evidence store. Unset: `<data_dir>/evidence`.
    #[serde(default)]
    pub evidence_dir: Option<PathBuf>,
    /// Largest evidence upload.
    #[serde(default = "default_evidence_max_bytes")]
    pub evidence_max_bytes: usize,
    /// Content types accepted as evidence.
    #[serde(default = "default_evidence_content_types")]
    pub evidence_content_types: Vec<String>,
    /// Files one deal may carry.
    #[serde(default = "default_evidence_max_per_deal")]
    pub evidence_max_per_deal: usize,
    /// The Go/No-Go report's "average time to settle" target per category, in days; a
    /// category not listed is held to 7 (seed 003's target for used cars). Defaults: used
    /// cars 7, real estate 30.
    #[serde(default = "default_settle_target_days")]
    pub settle_target_days: std::collections::BTreeMap<String, u32>,
}

fn default_settle_target_days() -> std::collections::BTreeMap<String, u32> {
    [
        ("USED_CAR_PRIVATE", 7),
        ("USED_CAR_DEALER", 7),
        ("REAL_ESTATE_SALE", 30),
        ("REAL_ESTATE_RENTAL", 30),
    ]
    .into_iter()
    .map(|(c, d)| (c.to_owned(), d))
    .collect()
}

fn default_evidence_max_per_deal() -> usize {
    50
}

impl Default for EscrowConfig {
    fn default() -> Self {
        Self {
            templates_dir: default_templates_dir(),
            timer_poll_ms: default_timer_poll_ms(),
            evidence_dir: None,
            evidence_max_bytes: default_evidence_max_bytes(),
            evidence_content_types: default_evidence_content_types(),
            evidence_max_per_deal: default_evidence_max_per_deal(),
            settle_target_days: default_settle_target_days(),
        }
    }
}

fn default_timer_poll_ms() -> u64 {
    1_000
}

fn default_evidence_max_bytes() -> usize {
    10 * 1024 * 1024
}

fn default_evidence_content_types() -> Vec<String> {
    ["image/jpeg", "image/png", "application/pdf"]
        .map(String::from)
        .to_vec()
}

fn default_templates_dir() -> PathBuf {
    PathBuf::from("templates")
}

/// Knobs for crash tests. Never set in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebugConfig {
    /// A named step of the payout engine (`engine.after_sign`, `engine.after_broadcast`,
    /// `engine.before_confirm`) where the engine stops for good, so that a test can kill the
    /// process exactly there.
    #[serde(default)]
    pub pause_at: Option<String>,
}

/// Which kind of chain a network is: how addresses look, how transactions are built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// Ethereum-compatible: EIP-55 addresses, nonces, EIP-1559 fees (alloy).
    #[default]
    Evm,
    /// Tron: base58check addresses, TAPOS and expiration instead of nonces, energy and
    /// bandwidth (the Tron HTTP API).
    Tron,
}

impl ChainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChainKind::Evm => "evm",
            ChainKind::Tron => "tron",
        }
    }
}

/// A payout network: its nodes, finality, fee policy and tokens.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Matches the `network` of its assets, e.g. "ethereum".
    pub name: String,
    #[serde(default)]
    pub kind: ChainKind,
    /// EVM only (required there); Tron networks have none.
    #[serde(default)]
    pub chain_id: u64,
    /// One or more JSON-RPC endpoints (EVM) or Tron HTTP API base URLs (e.g.
    /// `https://api.trongrid.io/`). They may carry API keys: treated as secrets.
    pub rpc_urls: Vec<SecretString>,
    /// Tron: the environment variable holding the TronGrid API key (sent as
    /// `TRON-PRO-API-KEY`). Unset: no key is sent.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Tron only: fee limits, expiration, resources.
    #[serde(default)]
    pub tron: TronNetworkConfig,
    /// Where canary payouts (1 unit from a canary wallet) go, in the network's address form.
    /// Unset: no canaries on this network.
    #[serde(default)]
    pub canary_address: Option<String>,
    /// Blocks on top of (and including) the one with the transfer before it counts as final.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// Wait for the chain's `finalized` tag instead of a fixed depth.
    #[serde(default)]
    pub use_finalized_tag: bool,
    /// Blocks after payment during which a paid transaction is still checked for a reorg (one
    /// that takes it out puts the network in safe-mode).
    #[serde(default = "default_reorg_watch_blocks")]
    pub reorg_watch_blocks: u64,
    /// Instances sharing a database run a network's engine one at a time under a lease of
    /// this many seconds: the longest a dead owner's payouts wait for another instance.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
    /// An RPC endpoint more than this many blocks behind the best head of the network's
    /// endpoints is not used.
    #[serde(default = "default_max_head_lag_blocks")]
    pub max_head_lag_blocks: u64,
    /// Calls per JSON-RPC batch request when the engine broadcasts a signing round or reads a
    /// tick's receipts and blocks; keep it within the provider's batch limit. 1 (the default)
    /// sends each call on its own: with batches on, reorg storms under CPU load tripped
    /// safe-mode on a balance mismatch that is not yet explained (BENCHMARKS.md).
    #[serde(default = "default_rpc_batch_calls")]
    pub rpc_batch_calls: u32,
    /// With no healthy RPC endpoint for this many seconds the network enters safe-mode.
    #[serde(default = "default_rpc_outage_safe_mode_seconds")]
    pub rpc_outage_safe_mode_seconds: u64,
    /// How often the engine reconciles each hot wallet's on-chain balances with the ledger
    /// (`treasuryd reconcile` does it on demand).
    #[serde(default = "default_reconcile_interval_seconds")]
    pub reconcile_interval_seconds: u64,
    /// The first block read for deposits when the network has no deposit cursor yet. Unset:
    /// the confirmed head at first start (earlier transfers are not credited).
    #[serde(default)]
    pub deposits_from_block: Option<u64>,
    /// Pay a chunk only once a second healthy endpoint shows the same block and the depth
    /// (needs two or more `rpc_urls`).
    #[serde(default)]
    pub cross_check_inclusions: bool,
    #[serde(default = "default_fee_mode")]
    pub fee_mode: crate::chains::evm::FeeMode,
    /// Never pay more than this per gas (wei).
    #[serde(default = "default_max_fee_per_gas")]
    pub max_fee_per_gas: u64,
    /// The least priority fee offered (wei).
    #[serde(default = "default_min_priority_fee")]
    pub min_priority_fee_per_gas: u64,
    /// A replacement raises both fees by at least this many basis points (1250 = 12.5%).
    #[serde(default = "default_bump_bps")]
    pub bump_bps: u32,
    #[serde(default = "default_stuck_after_blocks")]
    pub stuck_after_blocks: u64,
    #[serde(default = "default_stuck_after_seconds")]
    pub stuck_after_seconds: u64,
    /// Transactions one wallet may have unconfirmed at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    #[serde(default = "default_transfer_gas_limit")]
    pub transfer_gas_limit: u64,
    /// How often the engine looks at the chain and the queue (milliseconds).
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Payouts of at least this many token units need a second person's approval. Unset: none do.
    #[serde(default)]
    pub approval_threshold: Option<String>,
    /// Four eyes that splitting cannot dodge: once a company's payouts that needed no approval
    /// reach this many token units in a rolling 24 hours (per token), its further payouts need
    /// approval too. Unset: no rolling total.
    #[serde(default)]
    pub approval_rolling_total: Option<String>,
    #[serde(default)]
    pub tokens: Vec<NetworkTokenConfig>,
    /// The chain's own coin: gas is paid in it and posted as FEE. Registered as an asset of
    /// this network without being listed under `assets`. Default ETH (18) on EVM, TRX (6) on
    /// Tron; read it through `native()`.
    #[serde(default, rename = "native")]
    pub native_asset: Option<NativeAssetConfig>,
    #[serde(default)]
    pub rollout: RolloutConfig,
    /// EVM only: pay several queued chunks of a token in one transaction through a deployed
    /// `contracts/Disperse.sol`. Unset: every chunk is its own transfer.
    #[serde(default)]
    pub batching: Option<BatchingConfig>,
}

/// On-chain batching of transfers (a network's `[networks.batching]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchingConfig {
    /// The disperse contract's address, EIP-55 checksummed. Each hot wallet approves it once
    /// per token (the engine sends the approval itself, before the first batch).
    pub contract: String,
    /// Asset codes paid in batches; the network's other tokens go one transfer at a time.
    pub tokens: Vec<String>,
    /// Most chunks one transaction pays (2 to 500).
    #[serde(default = "default_batch_max_transfers")]
    pub max_transfers: u32,
    /// Gas allowed per payment in the batch; the transaction's limit is this times the
    /// payments plus 50,000. A fresh recipient costs about 29,000 on an ERC-20 like USDT.
    #[serde(default = "default_batch_gas_per_transfer")]
    pub gas_per_transfer: u64,
}

fn default_batch_max_transfers() -> u32 {
    100
}
fn default_batch_gas_per_transfer() -> u64 {
    40_000
}

impl NetworkConfig {
    /// The native coin, the configured one or the kind's default.
    pub fn native(&self) -> NativeAssetConfig {
        self.native_asset
            .clone()
            .unwrap_or_else(|| match self.kind {
                ChainKind::Evm => NativeAssetConfig {
                    code: "ETH".into(),
                    decimals: 18,
                },
                ChainKind::Tron => NativeAssetConfig {
                    code: "TRX".into(),
                    decimals: 6,
                },
            })
    }

    /// A token's per-transaction cap in token units: configured, or 250,000 on ERC-20 and
    /// 200,000 on TRC-20 (the launch plan's caps).
    pub fn per_tx_cap(&self, token: &NetworkTokenConfig) -> String {
        token.per_tx_cap.clone().unwrap_or_else(|| {
            match self.kind {
                ChainKind::Evm => "250000",
                ChainKind::Tron => "200000",
            }
            .into()
        })
    }
}

/// How a Tron network's transactions are built.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TronNetworkConfig {
    /// fee_limit = the energy estimate × the energy price × this (basis points; 12000 = ×1.2).
    #[serde(default = "default_tron_fee_limit_factor_bps")]
    pub fee_limit_factor_bps: u32,
    /// No transaction's fee_limit goes above this (sun). Raised after OUT_OF_ENERGY up to it.
    #[serde(default = "default_tron_fee_limit_cap_sun")]
    pub fee_limit_cap_sun: u64,
    /// A transaction expires this long after its reference block (a node accepts up to 24 h).
    #[serde(default = "default_tron_expiration_seconds")]
    pub expiration_seconds: u64,
    /// Bandwidth one TRC-20 transfer takes (bytes), for the runway estimate.
    #[serde(default = "default_tron_transfer_bandwidth")]
    pub transfer_bandwidth_bytes: u64,
    /// Energy one TRC-20 transfer takes for the runway estimate (to an address that holds
    /// none yet, the dearer case).
    #[serde(default = "default_tron_transfer_energy")]
    pub transfer_energy: u64,
}

impl Default for TronNetworkConfig {
    fn default() -> Self {
        Self {
            fee_limit_factor_bps: default_tron_fee_limit_factor_bps(),
            fee_limit_cap_sun: default_tron_fee_limit_cap_sun(),
            expiration_seconds: default_tron_expiration_seconds(),
            transfer_bandwidth_bytes: default_tron_transfer_bandwidth(),
            transfer_energy: default_tron_transfer_energy(),
        }
    }
}

fn default_tron_fee_limit_factor_bps() -> u32 {
    12_000
}
fn default_tron_fee_limit_cap_sun() -> u64 {
    100_000_000
}
fn default_tron_expiration_seconds() -> u64 {
    60
}
fn default_tron_transfer_bandwidth() -> u64 {
    345
}
fn default_tron_transfer_energy() -> u64 {
    65_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NativeAssetConfig {
    pub code: String,
    pub decimals: u8,
}

/// `[tiers]`: a versioned table of limits. Once it has rows, a tier without a row for an asset
/// may not pay out in that asset (see `domain::tiers`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TiersConfig {
    /// The table's name in the launch papers, e.g. "v2": named in refusals and audits.
    pub version: String,
    /// IANA zone whose midnights start the days and months the volumes are counted in.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub limits: Vec<TierLimitsConfig>,
}

/// One row of the tier table, in token units of the asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimitsConfig {
    /// S, M, L or XL.
    pub tier: crate::domain::trust::Tier,
    pub network: String,
    pub asset: String,
    pub max_payout: String,
    pub daily_volume: String,
    pub monthly_volume: String,
    /// The most a trust pair may let a company of this tier owe in one session.
    pub max_credit_limit: String,
}

/// The rollout guardrail: pilot, canary and full may send 10%, 30% and 100% of the daily
/// volume target, per asset, the day counted in `timezone`. Unset target: no limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutConfig {
    /// The phase at first start; afterwards the one set through the API.
    #[serde(default = "default_rollout_phase")]
    pub phase: crate::payouts::policy::RolloutPhase,
    /// Token units per asset per day at 100%, e.g. "1000000".
    #[serde(default)]
    pub daily_volume_target: Option<String>,
    /// IANA name of the zone whose midnight starts the day.
    #[serde(default = "default_timezone")]
    pub timezone: String,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            phase: default_rollout_phase(),
            daily_volume_target: None,
            timezone: default_timezone(),
        }
    }
}

fn default_rollout_phase() -> crate::payouts::policy::RolloutPhase {
    crate::payouts::policy::RolloutPhase::Full
}
fn default_timezone() -> String {
    "UTC".into()
}

impl fmt::Debug for NetworkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("chain_id", &self.chain_id)
            .field(
                "rpc_urls",
                &format_args!("[{} redacted]", self.rpc_urls.len()),
            )
            .field("confirmations", &self.confirmations)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkTokenConfig {
    /// The asset code, e.g. "USDT".
    pub code: String,
    /// The token contract: EIP-55 checksummed on EVM, base58check (T…) on Tron.
    pub address: String,
    pub decimals: u8,
    /// Largest single transfer in token units; larger payouts are split. Default 250000 on
    /// EVM, 200000 on Tron (see `NetworkConfig::per_tx_cap`).
    #[serde(default)]
    pub per_tx_cap: Option<String>,
    /// Smallest payout in token units: a smaller one would cost a whole transfer's gas for
    /// next to nothing. Unset: any positive amount.
    #[serde(default)]
    pub min_payout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace_seconds: u64,
    /// A client must send a request's whole header within this; slower ones are closed.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_seconds: u64,
    /// Connections served at once per listener; more wait in the kernel's queue.
    #[serde(default = "default_server_max_connections")]
    pub max_connections: usize,
    /// Wrong bearer tokens one source address may send a minute before it gets 429.
    #[serde(default = "default_auth_failures_per_minute")]
    pub auth_failures_per_minute: u32,
}

fn default_auth_failures_per_minute() -> u32 {
    20
}

fn default_header_read_timeout() -> u64 {
    10
}
fn default_server_max_connections() -> usize {
    4096
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            max_body_bytes: default_max_body_bytes(),
            request_timeout_seconds: default_request_timeout(),
            shutdown_grace_seconds: default_shutdown_grace(),
            header_read_timeout_seconds: default_header_read_timeout(),
            max_connections: default_server_max_connections(),
            auth_failures_per_minute: default_auth_failures_per_minute(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` or `postgres://…`; empty means `<data_dir>/treasuryd.db`.
    #[serde(default)]
    pub url: Option<SecretString>,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long a starting daemon waits for the SQLite instance lock before refusing: a
    /// process killed a moment ago still holds it while its threads wind down.
    #[serde(default = "default_instance_lock_wait_seconds")]
    pub instance_lock_wait_seconds: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: None,
            max_connections: default_max_connections(),
            instance_lock_wait_seconds: default_instance_lock_wait_seconds(),
        }
    }
}

impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field(
                "url",
                &self.url.as_ref().map(|u| redact_url(u.expose_secret())),
            )
            .field("max_connections", &self.max_connections)
            .field(
                "instance_lock_wait_seconds",
                &self.instance_lock_wait_seconds,
            )
            .finish()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn url_has_password(url: &str) -> bool {
    redact_url(url) != url
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(default = "default_log_format")]
    pub format: LogFormat,
    /// A `tracing` filter directive, e.g. `info` or `treasuryd=debug,sqlx=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    pub network: String,
    pub code: String,
    pub decimals: u8,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// A static bearer token, stored only as the SHA-256 of the token (see README, "Authentication").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    /// The partner company the token acts for; absent: the operator's staff.
    #[serde(default)]
    pub company: Option<uuid::Uuid>,
}

fn default_reconcile_interval_seconds() -> u64 {
    60
}

fn default_rpc_outage_safe_mode_seconds() -> u64 {
    60
}
fn default_max_head_lag_blocks() -> u64 {
    3
}
fn default_rpc_batch_calls() -> u32 {
    1
}
fn default_lease_seconds() -> u64 {
    15
}
fn default_reorg_watch_blocks() -> u64 {
    64
}
fn default_instance_lock_wait_seconds() -> u64 {
    10
}
fn default_confirmations() -> u64 {
    12
}
fn default_fee_mode() -> crate::chains::evm::FeeMode {
    crate::chains::evm::FeeMode::Normal
}
fn default_max_fee_per_gas() -> u64 {
    300_000_000_000
}
fn default_min_priority_fee() -> u64 {
    1_000_000_000
}
fn default_bump_bps() -> u32 {
    1_250
}
fn default_stuck_after_blocks() -> u64 {
    3
}
fn default_stuck_after_seconds() -> u64 {
    60
}
fn default_max_in_flight() -> u32 {
    16
}
fn default_transfer_gas_limit() -> u64 {
    100_000
}
fn default_poll_interval_ms() -> u64 {
    2_000
}
fn default_wallets_dir() -> PathBuf {
    PathBuf::from("wallets")
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_max_body_bytes() -> usize {
    64 * 1024
}
fn default_request_timeout() -> u64 {
    30
}
fn default_shutdown_grace() -> u64 {
    30
}
fn default_max_connections() -> u32 {
    8
}
fn default_log_format() -> LogFormat {
    LogFormat::Human
}
fn default_log_level() -> String {
    "info".into()
}
fn default_assets() -> Vec<AssetConfig> {
    [
        ("ethereum", "USDT"),
        ("ethereum", "USDC"),
        ("tron", "USDT"),
        ("tron", "USDC"),
    ]
    .into_iter()
    .map(|(network, code)| AssetConfig {
        network: network.into(),
        code: code.into(),
        decimals: 6,
    })
    .collect()
}

impl Config {
    /// Defaults only: what `treasuryd demo` and tests start from.
    pub fn defaults() -> Self {
        Self::from_table(toml::Table::new())
            .unwrap_or_else(|e| unreachable!("defaults are valid: {e}"))
    }

    /// File (if any), then environment overrides, then validation.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    text.parse()
                        .map_err(|e: toml::de::Error| ConfigError::Syntax {
                            path: path.to_owned(),
                            message: e.to_string(),
                        })?;
                if let Some(url) = table
                    .get("database")
                    .and_then(|d| d.get("url"))
                    .and_then(|u| u.as_str())
                    && url_has_password(url)
                {
                    return Err(key_error(
                        "database.url",
                        "contains a password; put it in the environment (TREASURYD__DATABASE__URL) instead of the file",
                    ));
                }
                table
            }
            None => toml::Table::new(),
        };
        let mut others = Vec::new();
        for (name, value) in env {
            match name.strip_prefix(ENV_PREFIX) {
                Some(path) => apply_override(&mut table, path, &value)?,
                None => others.push((name, SecretString::from(value))),
            }
        }
        let mut config = Self::from_table(table)?;
        // Only the variables the configuration names (the console key, Tron API keys, the
        // wallets' keys and keystore passwords) are kept, as secrets; the rest of the process
        // environment is dropped here.
        let named = config.secret_names();
        config.secrets = others
            .into_iter()
            .filter(|(name, _)| named.contains(name))
            .collect();
        config.source = path.map(Path::to_owned);
        Ok(config)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                // serde reports an unknown field at its parent's path; name the field itself.
                let key = match unknown_field(&inner) {
                    Some(field)
                        if path == "." || path == field || path.ends_with(&format!(".{field}")) =>
                    {
                        if path == "." {
                            field
                        } else {
                            path
                        }
                    }
                    Some(field) => format!("{path}.{field}"),
                    None => path,
                };
                key_error(key, inner)
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(10..=60_000).contains(&self.escrow.timer_poll_ms) {
            return Err(key_error(
                "escrow.timer_poll_ms",
                "must be between 10 and 60000",
            ));
        }
        if self.escrow.evidence_max_bytes == 0 || self.escrow.evidence_max_bytes > 100 * 1024 * 1024
        {
            return Err(key_error(
                "escrow.evidence_max_bytes",
                "must be between 1 and 104857600",
            ));
        }
        let w = &self.webhooks;
        for (key, ok, message) in [
            (
                "webhooks.retry_horizon_seconds",
                w.retry_horizon_seconds >= 1,
                "must be at least 1",
            ),
            (
                "webhooks.retry_min_delay_ms",
                (10..=3_600_000).contains(&w.retry_min_delay_ms),
                "must be between 10 and 3600000",
            ),
            (
                "webhooks.retry_max_delay_seconds",
                w.retry_max_delay_seconds * 1000 >= w.retry_min_delay_ms,
                "must not be below retry_min_delay_ms",
            ),
            (
                "webhooks.request_timeout_seconds",
                (1..=120).contains(&w.request_timeout_seconds),
                "must be between 1 and 120",
            ),
            (
                "webhooks.max_response_bytes",
                (1..=1_048_576).contains(&w.max_response_bytes),
                "must be between 1 and 1048576",
            ),
            (
                "webhooks.poll_ms",
                (10..=60_000).contains(&w.poll_ms),
                "must be between 10 and 60000",
            ),
            (
                "webhooks.lease_seconds",
                (2..=600).contains(&w.lease_seconds),
                "must be between 2 and 600",
            ),
        ] {
            if !ok {
                return Err(key_error(key, message));
            }
        }
        if !(5..=1440).contains(&self.console.session_minutes) {
            return Err(key_error(
                "console.session_minutes",
                "must be between 5 and 1440",
            ));
        }
        if !(1..=86_400).contains(&self.canary.timeout_seconds) {
            return Err(key_error(
                "canary.timeout_seconds",
                "must be between 1 and 86400",
            ));
        }
        if self.canary.interval_seconds != 0 && self.canary.interval_seconds < 60 {
            return Err(key_error(
                "canary.interval_seconds",
                "must be 0 (off) or at least 60",
            ));
        }
        if let Some(pilot) = &self.pilot
            && let Err((field, message)) = pilot.validate(None)
        {
            return Err(key_error(format!("pilot.{field}"), message));
        }
        if self.database.max_connections == 0 || self.database.max_connections > 1000 {
            return Err(key_error(
                "database.max_connections",
                "must be between 1 and 1000",
            ));
        }
        if self.database.instance_lock_wait_seconds > 600 {
            return Err(key_error(
                "database.instance_lock_wait_seconds",
                "must be at most 600",
            ));
        }
        if let Some(url) = &self.database.url {
            let url = url.expose_secret();
            if !["sqlite:", "postgres:", "postgresql:"]
                .iter()
                .any(|s| url.starts_with(s))
            {
                return Err(key_error(
                    "database.url",
                    "must start with sqlite:, postgres: or postgresql:",
                ));
            }
        }
        if self.server.max_body_bytes < 1024 || self.server.max_body_bytes > 16 * 1024 * 1024 {
            return Err(key_error(
                "server.max_body_bytes",
                "must be between 1024 and 16777216",
            ));
        }
        if self.server.request_timeout_seconds == 0 {
            return Err(key_error(
                "server.request_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.server.shutdown_grace_seconds == 0 {
            return Err(key_error(
                "server.shutdown_grace_seconds",
                "must be at least 1",
            ));
        }
        if !(1..=300).contains(&self.server.header_read_timeout_seconds) {
            return Err(key_error(
                "server.header_read_timeout_seconds",
                "must be between 1 and 300",
            ));
        }
        if !(1..=100_000).contains(&self.server.auth_failures_per_minute) {
            return Err(key_error(
                "server.auth_failures_per_minute",
                "must be between 1 and 100000",
            ));
        }
        if !(16..=1_000_000).contains(&self.server.max_connections) {
            return Err(key_error(
                "server.max_connections",
                "must be between 16 and 1000000",
            ));
        }
        if self.server.listen == self.server.metrics_listen && self.server.listen.port() != 0 {
            return Err(key_error(
                "server.metrics_listen",
                "must differ from server.listen",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(key_error("log.level", "is not a valid filter directive"));
        }
        if self.assets.is_empty() {
            return Err(key_error("assets", "must declare at least one asset"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, a) in self.assets.iter().enumerate() {
            let valid_network = !a.network.is_empty()
                && a.network
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_network {
                return Err(key_error(
                    format!("assets[{i}].network"),
                    "must be lower-case letters, digits and '-'",
                ));
            }
            let valid_code = !a.code.is_empty()
                && a.code.len() <= 12
                && a.code
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            if !valid_code {
                return Err(key_error(
                    format!("assets[{i}].code"),
                    "must be 1-12 upper-case letters or digits",
                ));
            }
            if a.decimals > 18 {
                return Err(key_error(
                    format!("assets[{i}].decimals"),
                    "must be at most 18",
                ));
            }
            if !seen.insert((a.network.clone(), a.code.clone())) {
                return Err(key_error(
                    format!("assets[{i}]"),
                    format!("{}:{} is declared twice", a.network, a.code),
                ));
            }
        }
        self.validate_networks()?;
        self.tier_table()?;
        if let Some(point) = &self.debug.pause_at
            && !crate::payouts::engine::PAUSE_POINTS.contains(&point.as_str())
        {
            return Err(key_error(
                "debug.pause_at",
                format!("must be one of {:?}", crate::payouts::engine::PAUSE_POINTS),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            crate::api::auth::check_token_name(&t.name)
                .map_err(|e| key_error(format!("auth.tokens[{i}].name"), e))?;
            if !names.insert(t.name.clone()) {
                return Err(key_error(
                    format!("auth.tokens[{i}].name"),
                    format!("{:?} is used twice", t.name),
                ));
            }
            if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(key_error(
                    format!("auth.tokens[{i}].sha256"),
                    "must be 64 hex characters",
                ));
            }
            if t.company.is_some() && t.role == Role::Operator {
                return Err(key_error(
                    format!("auth.tokens[{i}].role"),
                    "operator is a staff role: a company token is admin, trader or approver",
                ));
            }
        }
        Ok(())
    }

    fn validate_networks(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.networks.iter().enumerate() {
            let key = |field: &str| format!("networks[{i}].{field}");
            if !seen.insert(n.name.clone()) {
                return Err(key_error(
                    key("name"),
                    format!("network {:?} is declared twice", n.name),
                ));
            }
            if n.name.is_empty()
                || !n
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return Err(key_error(
                    key("name"),
                    "must be lower-case letters, digits and '-'",
                ));
            }
            if n.rpc_urls.is_empty() {
                return Err(key_error(key("rpc_urls"), "needs at least one URL"));
            }
            if n.cross_check_inclusions && n.rpc_urls.len() < 2 {
                return Err(key_error(
                    key("cross_check_inclusions"),
                    "needs at least two rpc_urls: a second endpoint confirms each inclusion",
                ));
            }
            for (j, u) in n.rpc_urls.iter().enumerate() {
                let u = u.expose_secret();
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(key_error(
                        key(&format!("rpc_urls[{j}]")),
                        "must be an http(s) URL",
                    ));
                }
            }
            if n.confirmations == 0 {
                return Err(key_error(key("confirmations"), "must be at least 1"));
            }
            if !(3..=3600).contains(&n.lease_seconds) {
                return Err(key_error(
                    key("lease_seconds"),
                    "must be between 3 and 3600",
                ));
            }
            if !(1..=86_400).contains(&n.reconcile_interval_seconds) {
                return Err(key_error(
                    key("reconcile_interval_seconds"),
                    "must be between 1 and 86400",
                ));
            }
            if n.bump_bps < 1_000 {
                return Err(key_error(
                    key("bump_bps"),
                    "must be at least 1000 (10%): nodes refuse smaller replacements",
                ));
            }
            if n.min_priority_fee_per_gas > n.max_fee_per_gas {
                return Err(key_error(
                    key("min_priority_fee_per_gas"),
                    "must not exceed max_fee_per_gas",
                ));
            }
            if n.max_in_flight == 0 || n.max_in_flight > 10_000 {
                return Err(key_error(
                    key("max_in_flight"),
                    "must be between 1 and 10000",
                ));
            }
            if let Some(b) = &n.batching {
                if n.kind != ChainKind::Evm {
                    return Err(key_error(key("batching"), "is for EVM networks only"));
                }
                if alloy::primitives::Address::parse_checksummed(&b.contract, None).is_err() {
                    return Err(key_error(
                        key("batching.contract"),
                        "must be an EIP-55 checksummed address",
                    ));
                }
                if let Some(code) = b
                    .tokens
                    .iter()
                    .find(|code| !n.tokens.iter().any(|t| &t.code == *code))
                {
                    return Err(key_error(
                        key("batching.tokens"),
                        format!("names {code}, which is not one of the network's tokens"),
                    ));
                }
                if !(2..=500).contains(&b.max_transfers) {
                    return Err(key_error(
                        key("batching.max_transfers"),
                        "must be between 2 and 500",
                    ));
                }
                if !(21_000..=1_000_000).contains(&b.gas_per_transfer) {
                    return Err(key_error(
                        key("batching.gas_per_transfer"),
                        "must be between 21000 and 1000000",
                    ));
                }
            }
            if !(1..=1_000).contains(&n.rpc_batch_calls) {
                return Err(key_error(
                    key("rpc_batch_calls"),
                    "must be between 1 and 1000",
                ));
            }
            if !(10..=600_000).contains(&n.poll_interval_ms) {
                return Err(key_error(
                    key("poll_interval_ms"),
                    "must be between 10 and 600000",
                ));
            }
            if n.transfer_gas_limit < 21_000 {
                return Err(key_error(
                    key("transfer_gas_limit"),
                    "must be at least 21000",
                ));
            }
            let native = n.native();
            let declared = self
                .assets
                .iter()
                .find(|a| a.network == n.name && a.code == native.code);
            if let Some(a) = declared
                && a.decimals != native.decimals
            {
                return Err(key_error(
                    key("native.decimals"),
                    format!(
                        "{} but assets declares {}:{} with {}",
                        native.decimals, n.name, native.code, a.decimals
                    ),
                ));
            }
            if n.tokens.iter().any(|t| t.code == native.code) {
                return Err(key_error(
                    key("native.code"),
                    format!("{} is also a token of this network", native.code),
                ));
            }
            if let Some(address) = &n.canary_address
                && let Err(message) = crate::payouts::networks::canonical_address(n.kind, address)
            {
                return Err(key_error(key("canary_address"), message));
            }
            match n.kind {
                ChainKind::Evm if n.chain_id == 0 => {
                    return Err(key_error(
                        key("chain_id"),
                        "is required on an EVM network (and not 0)",
                    ));
                }
                ChainKind::Evm => {}
                ChainKind::Tron => validate_tron(n, &key)?,
            }
            if n.rollout.timezone.parse::<chrono_tz::Tz>().is_err() {
                return Err(key_error(
                    key("rollout.timezone"),
                    format!("{:?} is not an IANA time zone", n.rollout.timezone),
                ));
            }
            let mut codes = std::collections::HashSet::new();
            for (j, t) in n.tokens.iter().enumerate() {
                let tkey = |field: &str| format!("networks[{i}].tokens[{j}].{field}");
                if !codes.insert(t.code.clone()) {
                    return Err(key_error(
                        tkey("code"),
                        format!("{} is declared twice", t.code),
                    ));
                }
                if let Err(message) =
                    crate::payouts::networks::canonical_address(n.kind, &t.address)
                {
                    return Err(key_error(tkey("address"), message));
                }
                let asset = self
                    .assets
                    .iter()
                    .find(|a| a.network == n.name && a.code == t.code);
                match asset {
                    Some(a) if a.decimals != t.decimals => {
                        return Err(key_error(
                            tkey("decimals"),
                            format!(
                                "{} but assets declares {}:{} with {}",
                                t.decimals, n.name, t.code, a.decimals
                            ),
                        ));
                    }
                    Some(_) => {}
                    None => {
                        return Err(key_error(
                            tkey("code"),
                            format!("{}:{} is not among the assets", n.name, t.code),
                        ));
                    }
                }
                let spec = AssetSpec {
                    key: AssetKey::new(n.name.clone(), t.code.clone()),
                    decimals: t.decimals,
                };
                let cap = crate::domain::Amount::parse_decimal(&n.per_tx_cap(t), &spec)
                    .map_err(|e| key_error(tkey("per_tx_cap"), format!("per_tx_cap {e}")))?;
                if let Some(min) = &t.min_payout {
                    let min = crate::domain::Amount::parse_decimal(min, &spec)
                        .map_err(|e| key_error(tkey("min_payout"), format!("min_payout {e}")))?;
                    if min > cap {
                        return Err(key_error(
                            tkey("min_payout"),
                            "min_payout must not be above per_tx_cap",
                        ));
                    }
                }
                if let Some(target) = &n.rollout.daily_volume_target {
                    crate::domain::Amount::parse_decimal(target, &spec).map_err(|e| {
                        key_error(
                            key("rollout.daily_volume_target"),
                            format!("daily_volume_target {e}"),
                        )
                    })?;
                }
                if let Some(threshold) = &n.approval_threshold {
                    crate::domain::Amount::parse_decimal(threshold, &spec).map_err(|e| {
                        key_error(key("approval_threshold"), format!("approval_threshold {e}"))
                    })?;
                }
                if let Some(total) = &n.approval_rolling_total {
                    crate::domain::Amount::parse_decimal(total, &spec).map_err(|e| {
                        key_error(
                            key("approval_rolling_total"),
                            format!("approval_rolling_total {e}"),
                        )
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The tier table, checked: known assets, amounts within their decimals, one row per tier
    /// and asset, and limits that nest (a payout within the day, the day within the month).
    pub fn tier_table(&self) -> Result<crate::domain::tiers::TierTable, ConfigError> {
        use crate::domain::tiers::{TierLimits, TierTable};
        let Some(t) = &self.tiers else {
            return Ok(TierTable::default());
        };
        let version = t.version.trim();
        if version.is_empty() || version.len() > 64 {
            return Err(key_error("tiers.version", "must be 1-64 characters"));
        }
        let timezone: chrono_tz::Tz = t.timezone.parse().map_err(|_| {
            key_error(
                "tiers.timezone",
                format!("{:?} is not an IANA time zone", t.timezone),
            )
        })?;
        let specs = self.asset_specs();
        let mut rows = Vec::new();
        for (i, row) in t.limits.iter().enumerate() {
            let key = |field: &str| format!("tiers.limits[{i}].{field}");
            let asset = AssetKey::new(row.network.clone(), row.asset.clone());
            let spec = specs.iter().find(|s| s.key == asset).ok_or_else(|| {
                key_error(key("asset"), format!("{asset} is not a configured asset"))
            })?;
            let amount = |field: &str, text: &str| {
                crate::domain::Amount::parse_decimal(text, spec)
                    .map(|a| a.units())
                    .map_err(|e| key_error(key(field), format!("{field} {e}")))
            };
            let limits = TierLimits {
                max_payout: amount("max_payout", &row.max_payout)?,
                daily_volume: amount("daily_volume", &row.daily_volume)?,
                monthly_volume: amount("monthly_volume", &row.monthly_volume)?,
                max_credit_limit: amount("max_credit_limit", &row.max_credit_limit)?,
            };
            if limits.max_payout > limits.daily_volume
                || limits.daily_volume > limits.monthly_volume
            {
                return Err(key_error(
                    key("daily_volume"),
                    "limits must nest: max_payout <= daily_volume <= monthly_volume",
                ));
            }
            if rows.iter().any(|(t, a, _)| *t == row.tier && *a == asset) {
                return Err(key_error(
                    key("tier"),
                    format!("tier {} has two rows for {asset}", row.tier.as_str()),
                ));
            }
            rows.push((row.tier, asset, limits));
        }
        Ok(TierTable::new(version.to_owned(), timezone, rows))
    }

    /// The environment variables the configuration names as holding secrets.
    pub fn secret_names(&self) -> std::collections::HashSet<String> {
        let mut names: std::collections::HashSet<String> =
            crate::wallets::secret_names(&self.wallets_dir)
                .into_iter()
                .collect();
        names.insert(self.console.secret_env.clone());
        names.extend(self.networks.iter().filter_map(|n| n.api_key_env.clone()));
        names
    }

    /// The console key (`console.secret_env`), when set to at least 32 characters.
    pub fn console_key(&self) -> Option<SecretString> {
        self.secrets
            .get(&self.console.secret_env)
            .filter(|k| secrecy::ExposeSecret::expose_secret(*k).len() >= 32)
            .cloned()
    }

    /// Every asset the ledger keeps: those declared, then each network's native coin.
    pub fn asset_specs(&self) -> Vec<AssetSpec> {
        let mut specs: Vec<AssetSpec> = self
            .assets
            .iter()
            .map(|a| AssetSpec {
                key: AssetKey::new(a.network.clone(), a.code.clone()),
                decimals: a.decimals,
            })
            .collect();
        for n in &self.networks {
            let native = n.native();
            let key = AssetKey::new(n.name.clone(), native.code);
            if !specs.iter().any(|s| s.key == key) {
                specs.push(AssetSpec {
                    key,
                    decimals: native.decimals,
                });
            }
        }
        specs
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> SecretString {
        match &self.database.url {
            Some(url) => url.clone(),
            None => SecretString::from(format!(
                "sqlite://{}",
                self.data_dir.join("treasuryd.db").display()
            )),
        }
    }
}

/// What only a Tron network has, and what it cannot have.
fn validate_tron(n: &NetworkConfig, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
    let t = &n.tron;
    if t.fee_limit_factor_bps < 10_000 || t.fee_limit_factor_bps > 100_000 {
        return Err(key_error(
            key("tron.fee_limit_factor_bps"),
            "must be between 10000 (x1) and 100000 (x10)",
        ));
    }
    // The network's own ceiling (getMaxFeeLimit) is 15,000 TRX.
    if t.fee_limit_cap_sun == 0 || t.fee_limit_cap_sun > 15_000_000_000 {
        return Err(key_error(
            key("tron.fee_limit_cap_sun"),
            "must be between 1 and 15000000000 (15,000 TRX)",
        ));
    }
    if !(3..=86_400).contains(&t.expiration_seconds) {
        return Err(key_error(
            key("tron.expiration_seconds"),
            "must be between 3 and 86400 (a node refuses more than 24 h)",
        ));
    }
    if n.chain_id != 0 {
        return Err(key_error(key("chain_id"), "a Tron network has no chain_id"));
    }
    if n.cross_check_inclusions {
        return Err(key_error(
            key("cross_check_inclusions"),
            "not used on Tron: a payout is final once its block is solidified",
        ));
    }
    if n.use_finalized_tag {
        return Err(key_error(
            key("use_finalized_tag"),
            "not used on Tron: a payout is final once its block is solidified",
        ));
    }
    if let Some(var) = &n.api_key_env
        && var.is_empty()
    {
        return Err(key_error(
            key("api_key_env"),
            "must name an environment variable",
        ));
    }
    Ok(())
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// `SERVER__LISTEN=127.0.0.1:1` sets `server.listen`. The value is read as a TOML value when it
/// is one (numbers, booleans, inline arrays) and as a string otherwise.
fn apply_override(table: &mut toml::Table, path: &str, raw: &str) -> Result<(), ConfigError> {
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let dotted = parts.join(".");
    if parts.iter().any(String::is_empty) {
        return Err(key_error(dotted, "malformed environment override name"));
    }
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let (last, parents) = parts
        .split_last()
        .ok_or_else(|| key_error(&dotted, "empty name"))?;
    let mut node = table;
    for part in parents {
        let entry = node
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry
            .as_table_mut()
            .ok_or_else(|| key_error(&dotted, format!("`{part}` is not a section")))?;
    }
    node.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env(vars))
    }

    #[test]
    fn example_file_is_valid_and_complete() {
        let c = load_text(EXAMPLE, &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080".parse().unwrap());
        assert!(!c.assets.is_empty());
    }

    #[test]
    fn the_example_tier_table_loads_and_a_bad_one_names_its_key() {
        // The example's commented tier table, uncommented, over the example's assets.
        let tiers: String = EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("# [tiers]"))
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches("# ")))
            .collect();
        let assets = "[[assets]]\nnetwork = \"ethereum\"\ncode = \"USDT\"\ndecimals = 6\n";
        let c = load_text(&format!("{assets}{tiers}"), &[]).unwrap();
        let table = c.tier_table().unwrap();
        assert_eq!((table.version.as_str(), table.rows().len()), ("v2", 2));
        let usdt = AssetKey::new("ethereum", "USDT");
        assert_eq!(
            table
                .limits(crate::domain::trust::Tier::S, &usdt)
                .map(|l| l.daily_volume),
            Some(50_000_000_000)
        );
        for (change, key) in [
            (
                ("daily_volume = \"50000\"", "daily_volume = \"5\""),
                "tiers.limits[0].daily_volume",
            ),
            (
                ("network = \"ethereum\"", "network = \"tron\""),
                "tiers.limits[0].asset",
            ),
            (
                ("max_payout = \"10000\"", "max_payout = \"1.0000001\""),
                "tiers.limits[0].max_payout",
            ),
            (("tier = \"M\"", "tier = \"S\""), "tiers.limits[1].tier"),
            (
                (
                    "timezone = \"Europe/Warsaw\"",
                    "timezone = \"Mars/Olympus\"",
                ),
                "tiers.timezone",
            ),
        ] {
            let text = format!("{assets}{}", tiers.replacen(change.0, change.1, 1));
            let e = load_text(&text, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = 5\n", "server.listen"),
            ("[server]\nlistne = \"x\"\n", "server.listne"),
            ("bogus = 1\n", "bogus"),
            (
                "[database]\nmax_connections = 0\n",
                "database.max_connections",
            ),
            (
                "[database]\nmax_connections = -1\n",
                "database.max_connections",
            ),
            (
                "[database]\ninstance_lock_wait_seconds = 601\n",
                "database.instance_lock_wait_seconds",
            ),
            (
                "[database]\nurl = \"postgres://u:pw@h/db\"\n",
                "database.url",
            ),
            ("[database]\nurl = \"mysql://h/db\"\n", "database.url"),
            (
                "[[assets]]\nnetwork = \"eth\"\ncode = \"USDT\"\ndecimals = 40\n",
                "assets[0].decimals",
            ),
            (
                "[[assets]]\nnetwork = \"eth\"\ncode = \"USDT\"\n",
                "assets[0]",
            ),
            (
                "[[auth.tokens]]\nname = \"a\"\nrole = \"king\"\nsha256 = \"00\"\n",
                "auth.tokens[0].role",
            ),
            (
                "[[auth.tokens]]\nname = \"timer\"\nrole = \"admin\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
                "auth.tokens[0].name",
            ),
            (
                "[[auth.tokens]]\nname = \"treasuryd-scheduler\"\nrole = \"admin\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
                "auth.tokens[0].name",
            ),
            (
                "[[auth.tokens]]\nname = \"Test-Admin \"\nrole = \"admin\"\nsha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n",
                "auth.tokens[0].name",
            ),
            (
                "[[auth.tokens]]\nname = \"a\"\nrole = \"operator\"\n\
                 sha256 = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n\
                 company = \"01a24e72-f745-7124-a0d4-106826786ede\"\n",
                "auth.tokens[0].role",
            ),
            ("[log]\nformat = \"xml\"\n", "log.format"),
        ];
        for (text, key) in cases {
            let err = load_text(text, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}")), "{text:?} gave {err}");
        }
    }

    #[test]
    fn the_commented_network_example_is_valid() {
        let uncommented: String = EXAMPLE
            .lines()
            .skip_while(|l| !l.starts_with("# [[networks]]"))
            .map(|l| {
                l.strip_prefix("# ")
                    .or_else(|| l.strip_prefix("#"))
                    .unwrap_or(l)
            })
            .map(|l| l.split("  #").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let c = load_text(&uncommented, &[]).unwrap();
        let (evm, tron) = (&c.networks[0], &c.networks[1]);
        assert_eq!(evm.per_tx_cap(&evm.tokens[0]), "250000");
        assert_eq!(
            (tron.kind, tron.native().code.as_str()),
            (ChainKind::Tron, "TRX")
        );
        assert_eq!(tron.tron.expiration_seconds, 60);
        // Without a cap of their own, TRC-20 tokens take 200,000 and ERC-20 ones 250,000.
        let defaults = load_text(
            &uncommented
                .replace("per_tx_cap = \"200000\"", "")
                .replace("per_tx_cap = \"250000\"", ""),
            &[],
        )
        .unwrap();
        let caps: Vec<String> = defaults
            .networks
            .iter()
            .map(|n| n.per_tx_cap(&n.tokens[0]))
            .collect();
        assert_eq!(caps, ["250000", "200000"]);
        let bad = uncommented.replace(
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u",
        );
        let err = load_text(&bad, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`networks[1].tokens[0].address`") && err.contains("checksum"),
            "{err}"
        );
        let bad = uncommented.replace("expiration_seconds = 60", "expiration_seconds = 90000");
        let err = load_text(&bad, &[]).unwrap_err().to_string();
        assert!(
            err.contains("`networks[1].tron.expiration_seconds`"),
            "{err}"
        );
        let bad = uncommented.replace(
            "name = \"tron\"\nkind = \"tron\"",
            "name = \"tron\"\nkind = \"tron\"\nchain_id = 5",
        );
        let err = load_text(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("`networks[1].chain_id`"), "{err}");
        let bad = uncommented.replace(
            "0xdAC17F958D2ee523a2206206994597C13D831ec7",
            "0xdac17f958d2ee523a2206206994597c13d831ec7",
        );
        let err = load_text(&bad, &[]).unwrap_err().to_string();
        assert!(err.contains("`networks[0].tokens[0].address`"), "{err}");
        let bad = uncommented.replace("bump_bps = 1250", "bump_bps = 500");
        assert!(
            load_text(&bad, &[])
                .unwrap_err()
                .to_string()
                .contains("`networks[0].bump_bps`")
        );
        assert_eq!(c.networks[0].rpc_batch_calls, 1);
        let bad = uncommented.replace("rpc_batch_calls = 1 ", "rpc_batch_calls = 0 ");
        assert!(
            load_text(&bad, &[])
                .unwrap_err()
                .to_string()
                .contains("`networks[0].rpc_batch_calls`")
        );
        let batching = c.networks[0]
            .batching
            .as_ref()
            .expect("the example batches");
        assert_eq!((batching.max_transfers, batching.tokens.len()), (100, 1));
        for (from, to, key) in [
            (
                "max_transfers = 100 ",
                "max_transfers = 1 ",
                "batching.max_transfers",
            ),
            (
                "tokens = [\"USDT\"]",
                "tokens = [\"DAI\"]",
                "batching.tokens",
            ),
            (
                "0x5FbDB2315678afecb367f032d93F642f64180aa3",
                "0x5fbdb2315678afecb367f032d93f642f64180aa3",
                "batching.contract",
            ),
            (
                "gas_per_transfer = 40000",
                "gas_per_transfer = 20000",
                "batching.gas_per_transfer",
            ),
        ] {
            let bad = uncommented.replace(from, to);
            assert_ne!(bad, uncommented, "{from}");
            let err = load_text(&bad, &[]).unwrap_err().to_string();
            assert!(err.contains(&format!("`networks[0].{key}`")), "{err}");
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("TREASURYD__SERVER__LISTEN", "127.0.0.1:2"),
                ("TREASURYD__DATABASE__MAX_CONNECTIONS", "3"),
                ("TREASURYD__DATABASE__URL", "postgres://u:s3cr3t-pw@h/db"),
                ("TREASURYD_UNRELATED", "x"),
                ("AWS_SECRET_ACCESS_KEY", "not ours to keep"),
                (
                    "TREASURYD_CONSOLE_SECRET",
                    "the console key, 32+ characters long",
                ),
            ],
        )
        .unwrap();
        // Only what the config names is kept from the environment.
        let kept: Vec<&String> = c.secrets.keys().collect();
        assert_eq!(kept, vec!["TREASURYD_CONSOLE_SECRET"]);
        assert_eq!(c.server.listen.port(), 2);
        assert_eq!(c.database.max_connections, 3);
        // A distinctive password: a random temporary path could hold "pw" by chance.
        assert!(
            !format!("{c:?}").contains("s3cr3t-pw"),
            "password leaked into Debug"
        );
        let err = load_text("", &[("TREASURYD__SERVER__NOPE", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`server.nope`"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
