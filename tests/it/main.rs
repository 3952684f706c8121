//! All integration tests in one binary (one link step on a 2-core CI).

mod harness;

mod api_errors;
mod api_flow;
mod cli;
mod concurrency;
mod crash;
mod idempotency;
mod ledger_model;
