//! Tron: addresses, transactions built and signed locally (protobuf, sha256 txID, secp256k1).

pub mod address;
pub mod client;
pub mod deposits;
pub mod rules;
pub mod tx;

pub use address::{AddressError, TronAddress};
