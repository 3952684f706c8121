//! All integration tests in one binary (one link step on a 2-core CI).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod harness;

mod api_errors;
mod api_flow;
mod batching;
mod cli;
mod concurrency;
mod console;
mod controls;
mod crash;
mod deals;
mod deeplinks;
mod demo;
mod deposits;
mod disperse;
mod engine;
mod engine_crash;
mod evm;
mod hardening;
mod idempotency;
mod incidents;
mod layout;
mod ledger_model;
mod openapi_contract;
mod operations;
mod ops_assets;
mod payouts;
mod policy;
mod reconcile;
mod reorg;
mod rpc;
mod store_contract;
mod storms;
mod templates;
mod tenancy;
mod tiers;
mod tron;
mod tron_payouts;
mod trust;
mod webhook_delivery;
mod webhooks;
