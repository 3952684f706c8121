//! Chain clients. `evm` speaks to Ethereum-compatible nodes through alloy; `tron` builds and
//! signs Tron transactions.

pub mod endpoints;
pub mod evm;
pub mod tron;
