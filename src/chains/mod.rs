//! Chain clients. `evm` speaks to Ethereum-compatible nodes through alloy; Tron comes later.

pub mod endpoints;
pub mod evm;
