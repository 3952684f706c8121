//! Development tooling, kept out of the production modules: the local chains (`anvil` with
//! the test tokens, a Tron node stand-in) and `treasuryd demo`, which the tests share.

pub mod chain;
pub mod demo;
pub mod tron;
