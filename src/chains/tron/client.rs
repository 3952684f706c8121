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

/// An account's resources (`getaccountresource`) and TRX balance (`getaccount`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub balance_sun: i64,
    pub energy_available: i64,
    pub bandwidth_available: i64,
}

#[derive(Clone)]
pub struct TronClient {
    http: reqwest::Client,
    urls: Vec<url::Url>,
    api_key: Option<SecretString>,
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
        Ok(Self {
            http,
            urls,
            api_key,
        })
    }

    /// POSTs `body` to `path` on the first endpoint that answers (transport errors and 5xx move
    /// on to the next one).
    async fn post(&self, path: &str, body: Value) -> Result<Value, TronError> {
        let mut failures = Vec::new();
        for base in &self.urls {
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
                    failures.push(format!("{base}: HTTP {}", r.status()));
                }
                Ok(r) => {
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
                Err(e) => failures.push(format!("{base}: {e}")),
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

    /// Broadcasts a signed transaction's bytes.
    pub async fn broadcast(&self, tx: &SignedTx) -> Result<Broadcast, TronError> {
        let v = self
            .post(
                "wallet/broadcasthex",
                json!({"transaction": hex::encode(&tx.bytes)}),
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

    /// The price of one energy unit in sun (`getEnergyFee`), read live.
    pub async fn energy_price(&self) -> Result<i64, TronError> {
        #[derive(Deserialize)]
        struct Param {
            key: String,
            #[serde(default)]
            value: i64,
        }
        let v = self.post("wallet/getchainparameters", json!({})).await?;
        let params: Vec<Param> =
            serde_json::from_value(v["chainParameter"].clone()).unwrap_or_default();
        params
            .into_iter()
            .find(|p| p.key == "getEnergyFee")
            .map(|p| p.value)
            .ok_or_else(|| TronError::Node {
                path: "wallet/getchainparameters".into(),
                detail: "no getEnergyFee".into(),
            })
    }
}
