//! A client for the Tron HTTP API (full-node `/wallet/*` and `/walletsolidity/*`, as TronGrid
//! serves it): the head and solidified blocks for TAPOS and finality, broadcast of locally
//! signed transactions (`broadcasthex`), execution results, account resources, energy
//! estimates and chain parameters. One reqwest client for every call; several endpoints tried in
//! order when one cannot be reached or answers 5xx; the TronGrid API key sent as a header.

use super::TronAddress;
use super::tx::SignedTx;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TronError {
    #[error("no Tron endpoint answered: {0}")]
    Unreachable(String),
    #[error("the node answered {path} with {detail}")]
    Node { path: String, detail: String },
}

/// A block as `getnowblock` describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    pub number: u64,
    pub id: [u8; 32],
    /// Milliseconds.
    pub timestamp: i64,
}

/// A broadcast's answer: `code` is None on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broadcast {
    pub code: Option<String>,
    pub message: String,
}

/// One log of an executed transaction (addresses 20 bytes, as the node gives them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub address: [u8; 20],
    pub topics: Vec<[u8; 32]>,
    pub data: Vec<u8>,
}

/// What `gettransactioninfobyid` says once a transaction has executed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxInfo {
    pub txid: [u8; 32],
    pub block_number: u64,
    /// Sun burned in all.
    pub fee: i64,
    /// `SUCCESS`, `REVERT`, `OUT_OF_ENERGY`, … (the receipt's result).
    pub result: String,
    pub energy_used: i64,
    pub net_usage: i64,
    pub logs: Vec<Log>,
}

/// Sun burned per energy unit and per byte of bandwidth beyond what is free or staked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub energy_sun: i64,
    pub bandwidth_sun: i64,
}

/// An account's resources (`getaccountresource`) and TRX balance (`getaccount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub balance_sun: i64,
    pub energy_available: i64,
    pub bandwidth_available: i64,
}

/// Which endpoint answers, shared by the clones of one client.
#[derive(Default)]
struct Health {
    /// The endpoint tried first: the last one that answered (a recovered first endpoint is not
    /// switched back to until the current one fails).
    current: AtomicUsize,
    /// Per endpoint, whether its last call got an answer.
    up: Vec<AtomicBool>,
    /// Times the answering endpoint changed.
    failovers: AtomicU64,
}

#[derive(Clone)]
pub struct TronClient {
    http: reqwest::Client,
    urls: Vec<url::Url>,
    api_key: Option<SecretString>,
    health: Arc<Health>,
}

/// The endpoints' state as the client last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointHealth {
    pub current: usize,
    pub up: Vec<bool>,
    pub failovers: u64,
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

fn i64_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or(0)
}

impl TronClient {
    pub fn new(
        urls: &[String],
        api_key: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, TronError> {
        let urls = urls
            .iter()
            .map(|u| url::Url::parse(u).map_err(|e| TronError::Unreachable(format!("{u}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if urls.is_empty() {
            return Err(TronError::Unreachable("no endpoint configured".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| TronError::Unreachable(e.to_string()))?;
        let health = Arc::new(Health {
            up: urls.iter().map(|_| AtomicBool::new(true)).collect(),
            ..Default::default()
        });
        Ok(Self {
            http,
            urls,
            api_key,
            health,
        })
    }

    pub fn health(&self) -> EndpointHealth {
        EndpointHealth {
            current: self.health.current.load(Ordering::Relaxed),
            up: self
                .health
                .up
                .iter()
                .map(|u| u.load(Ordering::Relaxed))
                .collect(),
            failovers: self.health.failovers.load(Ordering::Relaxed),
        }
    }

    /// POSTs `body` to `path`, from the endpoint that answered last on to the others in order
    /// (transport errors and 5xx move on to the next one).
    async fn post(&self, path: &str, body: Value) -> Result<Value, TronError> {
        let mut failures = Vec::new();
        let first = self.health.current.load(Ordering::Relaxed);
        for i in (0..self.urls.len()).map(|k| (first + k) % self.urls.len()) {
            let base = &self.urls[i];
            let Ok(url) = base.join(path) else {
                failures.push(format!("{base}: bad path"));
                continue;
            };
            let mut request = self.http.post(url).json(&body);
            if let Some(key) = &self.api_key {
                request = request.header("TRON-PRO-API-KEY", key.expose_secret());
            }
            match request.send().await {
                Ok(r) if r.status().is_server_error() => {
                    self.health.up[i].store(false, Ordering::Relaxed);
                    failures.push(format!("endpoint {i}: HTTP {}", r.status()));
                }
                Ok(r) => {
                    self.health.up[i].store(true, Ordering::Relaxed);
                    if self.health.current.swap(i, Ordering::Relaxed) != i {
                        self.health.failovers.fetch_add(1, Ordering::Relaxed);
                    }
                    let status = r.status();
                    let value: Value = r.json().await.map_err(|e| TronError::Node {
                        path: path.into(),
                        detail: format!("HTTP {status}, not JSON: {e}"),
                    })?;
                    if let Some(e) = value.get("Error") {
                        return Err(TronError::Node {
                            path: path.into(),
                            detail: e.to_string(),
                        });
                    }
                    return Ok(value);
                }
                Err(e) => {
                    self.health.up[i].store(false, Ordering::Relaxed);
                    // Without the URL: it may carry an API key.
                    failures.push(format!("endpoint {i}: {}", e.without_url()));
                }
            }
        }
        Err(TronError::Unreachable(failures.join("; ")))
    }

    async fn block(&self, path: &str) -> Result<BlockRef, TronError> {
        let v = self.post(path, json!({})).await?;
        let bad = || TronError::Node {
            path: path.into(),
            detail: format!("no blockID/number in {v}"),
        };
        let id = v["blockID"].as_str().and_then(hex32).ok_or_else(bad)?;
        let raw = &v["block_header"]["raw_data"];
        Ok(BlockRef {
            number: raw["number"].as_u64().ok_or_else(bad)?,
            id,
            timestamp: i64_of(raw, "timestamp"),
        })
    }

    /// The head block: the reference block of new transactions and the node's clock.
    pub async fn now_block(&self) -> Result<BlockRef, TronError> {
        self.block("wallet/getnowblock").await
    }

    /// The solidified head: a transaction in a block at or below it is final.
    pub async fn solid_block(&self) -> Result<BlockRef, TronError> {
        self.block("walletsolidity/getnowblock").await
    }

    /// Broadcasts a signed transaction.
    pub async fn broadcast(&self, tx: &SignedTx) -> Result<Broadcast, TronError> {
        self.broadcast_bytes(&tx.bytes).await
    }

    /// Broadcasts a serialized signed `Transaction` (as stored).
    pub async fn broadcast_bytes(&self, bytes: &[u8]) -> Result<Broadcast, TronError> {
        let v = self
            .post(
                "wallet/broadcasthex",
                json!({"transaction": hex::encode(bytes)}),
            )
            .await?;
        if v["result"].as_bool() == Some(true) {
            return Ok(Broadcast {
                code: None,
                message: String::new(),
            });
        }
        // The message is hex-encoded UTF-8.
        let message = v["message"]
            .as_str()
            .map(|m| {
                hex::decode(m)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_else(|| m.to_owned())
            })
            .unwrap_or_default();
        Ok(Broadcast {
            code: Some(v["code"].as_str().unwrap_or("OTHER_ERROR").to_owned()),
            message,
        })
    }

    fn tx_info(v: &Value) -> Option<TxInfo> {
        let txid = hex32(v["id"].as_str()?)?;
        let receipt = &v["receipt"];
        let logs = v["log"]
            .as_array()
            .map(|logs| {
                logs.iter()
                    .filter_map(|l| {
                        Some(Log {
                            address: hex::decode(l["address"].as_str()?).ok()?.try_into().ok()?,
                            topics: l["topics"]
                                .as_array()?
                                .iter()
                                .filter_map(|t| hex32(t.as_str()?))
                                .collect(),
                            data: hex::decode(l["data"].as_str().unwrap_or("")).ok()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(TxInfo {
            txid,
            block_number: v["blockNumber"].as_u64()?,
            fee: i64_of(v, "fee"),
            result: receipt["result"].as_str().unwrap_or("SUCCESS").to_owned(),
            energy_used: i64_of(receipt, "energy_usage_total"),
            net_usage: i64_of(receipt, "net_usage"),
            logs,
        })
    }

    /// The execution result of `txid`; None until it has executed (or, with `solid`, until its
    /// block is solidified).
    pub async fn transaction_info(
        &self,
        txid: &[u8; 32],
        solid: bool,
    ) -> Result<Option<TxInfo>, TronError> {
        let path = if solid {
            "walletsolidity/gettransactioninfobyid"
        } else {
            "wallet/gettransactioninfobyid"
        };
        let v = self.post(path, json!({"value": hex::encode(txid)})).await?;
        Ok(Self::tx_info(&v))
    }

    /// Every executed transaction of block `number` (deposit scanning).
    pub async fn block_transactions(&self, number: u64) -> Result<Vec<TxInfo>, TronError> {
        let v = self
            .post(
                "wallet/gettransactioninfobyblocknum",
                json!({"num": number}),
            )
            .await?;
        Ok(v.as_array()
            .map(|a| a.iter().filter_map(Self::tx_info).collect())
            .unwrap_or_default())
    }

    pub async fn resources(&self, account: &TronAddress) -> Result<Resources, TronError> {
        let address = json!({"address": account.to_hex()});
        let r = self
            .post("wallet/getaccountresource", address.clone())
            .await?;
        let a = self.post("wallet/getaccount", address).await?;
        Ok(Resources {
            balance_sun: i64_of(&a, "balance"),
            energy_available: (i64_of(&r, "EnergyLimit") - i64_of(&r, "EnergyUsed")).max(0),
            bandwidth_available: (i64_of(&r, "freeNetLimit") - i64_of(&r, "freeNetUsed")).max(0)
                + (i64_of(&r, "NetLimit") - i64_of(&r, "NetUsed")).max(0),
        })
    }

    /// Energy a call would use, from a constant (dry) execution.
    pub async fn estimate_energy(
        &self,
        owner: &TronAddress,
        contract: &TronAddress,
        data: &[u8],
    ) -> Result<i64, TronError> {
        let v = self
            .post(
                "wallet/triggerconstantcontract",
                json!({"owner_address": owner.to_hex(), "contract_address": contract.to_hex(), "data": hex::encode(data)}),
            )
            .await?;
        if v["result"]["result"].as_bool() != Some(true) {
            return Err(TronError::Node {
                path: "wallet/triggerconstantcontract".into(),
                detail: v["result"].to_string(),
            });
        }
        Ok(i64_of(&v, "energy_used"))
    }

    /// `owner`'s balance of the TRC-20 `contract` in base units (`balanceOf` as a constant call).
    pub async fn token_balance(
        &self,
        contract: &TronAddress,
        owner: &TronAddress,
    ) -> Result<alloy::primitives::U256, TronError> {
        let mut data = vec![0x70, 0xa0, 0x82, 0x31];
        data.extend_from_slice(&[0u8; 12]);
        data.extend_from_slice(&owner.evm_bytes());
        let path = "wallet/triggerconstantcontract";
        let v = self
            .post(
                path,
                json!({"owner_address": owner.to_hex(), "contract_address": contract.to_hex(), "data": hex::encode(data)}),
            )
            .await?;
        let word = v["constant_result"][0]
            .as_str()
            .and_then(|w| hex::decode(w).ok())
            .filter(|w| w.len() == 32)
            .ok_or_else(|| TronError::Node {
                path: path.into(),
                detail: format!("no balanceOf result in {}", v["result"]),
            })?;
        Ok(alloy::primitives::U256::from_be_slice(&word))
    }

    /// The price of one energy unit in sun (`getEnergyFee`), read live.
    pub async fn energy_price(&self) -> Result<i64, TronError> {
        Ok(self.prices().await?.energy_sun)
    }

    /// What the chain burns for energy and bandwidth, read live (`getEnergyFee`,
    /// `getTransactionFee`).
    pub async fn prices(&self) -> Result<Prices, TronError> {
        #[derive(Deserialize)]
        struct Param {
            key: String,
            #[serde(default)]
            value: i64,
        }
        let v = self.post("wallet/getchainparameters", json!({})).await?;
        let params: Vec<Param> =
            serde_json::from_value(v["chainParameter"].clone()).unwrap_or_default();
        let find = |key: &str| {
            params
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.value)
                .ok_or_else(|| TronError::Node {
                    path: "wallet/getchainparameters".into(),
                    detail: format!("no {key}"),
                })
        };
        Ok(Prices {
            energy_sun: find("getEnergyFee")?,
            bandwidth_sun: find("getTransactionFee")?,
        })
    }
}
