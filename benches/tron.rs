//! Tron transactions built and signed per second: ours (protobuf encode, sha256 txID, RFC 6979
//! secp256k1 signature) against tronpy doing the same offline, in the same run, as a ratio.
//!
//!   cargo bench --bench tron                                   # 20,000 ours, 2,000 tronpy, 3 rounds
//!   TREASURYD_TRONPY_PYTHON=/tmp/tronvenv/bin/python cargo bench --bench tron
//!
//! tronpy comes from `pip install -r tools/tron-vectors/requirements.txt`; the python that has it
//! is `TREASURYD_TRONPY_PYTHON` (default `python3`); without it only our rate is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::time::Instant;
use treasuryd::chains::tron::TronAddress;
use treasuryd::chains::tron::tx::{Envelope, RefBlock, sign, transfer_call_data, trigger_raw};

fn ours(n: usize) -> f64 {
    let key: alloy::signers::local::PrivateKeySigner =
        "8d596057e510b14cbb9bf24f88803a6d6dbd138dd303a62b175b9e6cc0f3f941"
            .parse()
            .unwrap();
    let owner = TronAddress::from_signer(&key);
    let usdt = TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t").unwrap();
    let to = TronAddress::from_base58("TUz4nTU75z5oK4pYaVipkSDQ3Bi2DXdQT8").unwrap();
    let ref_block = RefBlock::from_block_id_hex(
        "0000000004a8a5bf0c28cec1b94722af64b936976b4b76b0e179f773a6e0f3c0",
    )
    .unwrap();
    let started = Instant::now();
    let mut check = 0u8;
    for i in 0..n as i64 {
        let envelope = Envelope {
            ref_block,
            timestamp: 1_766_453_046_721 + i,
            expiration: 1_766_453_106_721 + i,
            fee_limit: 30_000_000,
        };
        let raw = trigger_raw(
            &owner,
            &usdt,
            transfer_call_data(&to, alloy::primitives::U256::from(1_000_000 + i)),
            &envelope,
        );
        check ^= sign(&raw, &key).unwrap().txid[0];
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(check);
    rate
}

fn tronpy(n: usize) -> Option<f64> {
    let python = std::env::var("TREASURYD_TRONPY_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tools/tron-vectors/tronpy_bench.py"
    );
    let out = std::process::Command::new(python)
        .args([script, &n.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "tronpy: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let rounds: usize = std::env::var("TREASURYD_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("tron: build + sign a USDT transfer; 20,000 ours and 2,000 tronpy per round");
    for round in 0..rounds {
        // Alternate which goes first so neither always runs on a warmer machine.
        let (a, b) = if round % 2 == 0 {
            let a = ours(20_000);
            (a, tronpy(2_000))
        } else {
            let b = tronpy(2_000);
            (ours(20_000), b)
        };
        match b {
            Some(b) => println!(
                "round {round}: treasuryd {a:.0} tx/s, tronpy {b:.0} tx/s, ratio {:.1}x",
                a / b
            ),
            None => println!("round {round}: treasuryd {a:.0} tx/s (tronpy not available)"),
        }
    }
}
