//! treasuryd: stablecoin payouts, escrow holds and end-of-day netting over a double-entry ledger.
//!
//! - `domain`    pure types: amounts in base units, assets, ids, roles
//! - `clock`     the one clock every part reads the time from (tests and the demo move it)
//! - `ledger`    append-only double-entry journal, accounts, two-phase holds, verification
//! - `payouts`   the payout engine: requests, policy, splitting, chunks
//! - `chains`    chain clients: EVM through alloy; Tron primitives, HTTP client and the engine's rules
//! - `store`     persistence behind one `Store` interface: SQLite (embedded) and PostgreSQL
//! - `api`       the control API (axum): auth, errors, one module per resource, OpenAPI
//! - `metrics`   Prometheus metrics, one typed struct per component
//! - `operations` canary payouts, the configuration freeze, online backups
//! - `dev`       development tooling: anvil with the test tokens, the Tron stand-in, the demo
//! - `config`    TOML file plus `TREASURYD__…` environment overrides, validated at start-up
//! - `telemetry` tracing subscriber (human or JSON)
//! - `wallets`   hot and canary wallets: declarations, keys (env or keystore), buffers
//! - `console`   the admin console at /admin: pages over the API's handlers, TOTP, sessions
//! - `app`       assembles the daemon; listeners, supervision and graceful shutdown
//! - `escrow`    deals: states, steps, evidence, the pilot report
//! - `templates` deal templates: loading, validation, the immediate/holdback split
//! - `scope`     the pilot's scope flags: which new deals are accepted
//! - `timers`    durable timers: clock, kinds, claims
//! - `trust`     trust pairs: netting, cut-offs per timezone, settlement sessions
//! - `webhooks`  partner endpoints, signatures, the outbox and its delivery worker
//! - `reconcile` hot wallets' on-chain balances against the ledger
//! - `export`    audit exports (JSON Lines, CSV)

pub mod api;
pub mod app;
pub mod chains;
pub mod clock;
pub mod config;
pub mod console;
pub mod dev;
pub mod domain;
pub mod escrow;
pub mod export;
pub mod ledger;
pub mod metrics;
pub mod operations;
pub mod payouts;
pub mod reconcile;
pub mod scope;
pub mod store;
pub mod telemetry;
pub mod templates;
pub mod timers;
pub mod trust;
pub mod wallets;
pub mod webhooks;
