//! A local Tron node stand-in for the tests and the demo (no Tron node can run here): the HTTP
//! endpoints treasuryd uses, over an in-memory TRC-20 token and TRX balances, enforcing what a
//! real node enforces. It decodes the protobuf, recomputes the txID, recovers the signer and
//! checks it owns the sending account, checks TAPOS against its recent blocks, the expiration
//! window (head time < expiration ≤ head time + 24 h) and duplicates, charges bandwidth (free,
//! then burned TRX) and energy (staked, then burned TRX, never past `fee_limit`: OUT_OF_ENERGY),
//! produces a block every `interval` (3 s of chain time each) and solidifies blocks `solid_lag`
//! behind the head. It can be told to fail: busy, drop a broadcast, revert an execution.
//! Nothing here is used by `treasuryd run`.

use crate::chains::tron::TronAddress;
use crate::chains::tron::tx::{
    TRANSFER_CONTRACT, TRIGGER_SMART_CONTRACT, Transaction, TransferContract, TriggerSmartContract,
    txid,
};
use alloy::primitives::U256;
use axum::Json;
use axum::extract::State;
use axum::routing::post;
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Sun per energy unit (`getEnergyFee`).
pub const ENERGY_FEE: i64 = 420;
/// Sun burned per byte when free bandwidth is used up.
pub const BANDWIDTH_FEE: i64 = 1000;
/// Free bandwidth per account.
pub const FREE_NET_LIMIT: i64 = 5000;
/// Energy a USDT-like transfer uses: to an address holding none yet, and to one that holds some.
pub const ENERGY_NEW_HOLDER: i64 = 29_631;
pub const ENERGY_EXISTING_HOLDER: i64 = 14_650;

/// A failure to inject into the next broadcast or execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The next broadcast answers SERVER_BUSY.
    Busy,
    /// The next broadcast answers success but the transaction is lost.
    Drop,
    /// The next executed contract call reverts.
    Revert,
    /// The next energy estimate comes out at half what the call will use (as when the state
    /// changes between estimate and execution), so a fee limit built on it runs out of energy.
    LowEstimate,
}

struct Block {
    number: u64,
    id: [u8; 32],
    timestamp: i64,
}

struct Pending {
    id: [u8; 32],
    owner: TronAddress,
    contract: i32,
    value: Vec<u8>,
    fee_limit: i64,
    size: i64,
}

struct Node {
    blocks: Vec<Block>,
    mempool: Vec<Pending>,
    seen: HashSet<[u8; 32]>,
    infos: HashMap<[u8; 32], Value>,
    by_block: HashMap<u64, Vec<[u8; 32]>>,
    trx: HashMap<TronAddress, i64>,
    tokens: HashMap<[u8; 20], U256>,
    energy_limit: HashMap<TronAddress, i64>,
    energy_used: HashMap<TronAddress, i64>,
    net_used: HashMap<TronAddress, i64>,
    faults: VecDeque<Fault>,
    solid_lag: u64,
    token: TronAddress,
}

impl Node {
    fn head(&self) -> &Block {
        &self.blocks[self.blocks.len() - 1]
    }

    fn solid(&self) -> &Block {
        let n = self
            .blocks
            .len()
            .saturating_sub(1 + self.solid_lag as usize);
        &self.blocks[n]
    }

    fn produce(&mut self) {
        let (number, timestamp, prev) = {
            let h = self.head();
            (h.number + 1, h.timestamp + 3000, h.id)
        };
        let mut hasher = Sha256::new();
        hasher.update(number.to_be_bytes());
        hasher.update(prev);
        let mut id: [u8; 32] = hasher.finalize().into();
        id[..8].copy_from_slice(&number.to_be_bytes());
        let pending = std::mem::take(&mut self.mempool);
        let mut ids = Vec::new();
        for p in pending {
            let info = self.execute(&p, number, timestamp);
            self.infos.insert(p.id, info);
            ids.push(p.id);
        }
        self.by_block.insert(number, ids);
        self.blocks.push(Block {
            number,
            id,
            timestamp,
        });
    }

    fn burn(&mut self, who: TronAddress, sun: i64) {
        *self.trx.entry(who).or_default() -= sun;
    }

    fn execute(&mut self, p: &Pending, number: u64, timestamp: i64) -> Value {
        // Bandwidth: free first, then burned TRX (checked at broadcast).
        let free_left = FREE_NET_LIMIT - self.net_used.get(&p.owner).copied().unwrap_or(0);
        let mut fee = 0;
        if free_left >= p.size {
            *self.net_used.entry(p.owner).or_default() += p.size;
        } else {
            fee += p.size * BANDWIDTH_FEE;
            self.burn(p.owner, p.size * BANDWIDTH_FEE);
        }
        let mut receipt = json!({"net_usage": p.size, "result": "SUCCESS"});
        let mut logs = Vec::new();
        let mut failed = None;
        if p.contract == TRANSFER_CONTRACT {
            if let Ok(t) = TransferContract::decode(p.value.as_slice())
                && let Ok(to) = TronAddress::from_hex(&hex::encode(&t.to_address))
            {
                self.burn(p.owner, t.amount);
                *self.trx.entry(to).or_default() += t.amount;
            }
        } else if let Ok(call) = TriggerSmartContract::decode(p.value.as_slice()) {
            let data = &call.data;
            let (to, amount) = if data.len() == 68 && data[..4] == [0xa9, 0x05, 0x9c, 0xbb] {
                let mut to = [0u8; 20];
                to.copy_from_slice(&data[16..36]);
                (Some(to), U256::from_be_slice(&data[36..68]))
            } else {
                (None, U256::ZERO)
            };
            let to_holds = to.is_some_and(|t| self.tokens.get(&t).is_some_and(|b| !b.is_zero()));
            let energy = if to_holds {
                ENERGY_EXISTING_HOLDER
            } else {
                ENERGY_NEW_HOLDER
            };
            let staked = (self.energy_limit.get(&p.owner).copied().unwrap_or(0)
                - self.energy_used.get(&p.owner).copied().unwrap_or(0))
            .max(0);
            let from_stake = staked.min(energy);
            let burned = (energy - from_stake) * ENERGY_FEE;
            let from = p.owner.evm_bytes();
            let balance = self.tokens.get(&from).copied().unwrap_or_default();
            let revert = self.faults.front() == Some(&Fault::Revert)
                || call.contract_address != self.token.as_bytes().to_vec()
                || to.is_none()
                || balance < amount;
            if burned > p.fee_limit {
                // Energy × price went past fee_limit: everything up to it is burned.
                self.burn(p.owner, p.fee_limit);
                fee += p.fee_limit;
                failed = Some("OUT_OF_ENERGY");
                receipt["energy_usage_total"] = json!(p.fee_limit / ENERGY_FEE + from_stake);
                receipt["energy_fee"] = json!(p.fee_limit);
            } else {
                *self.energy_used.entry(p.owner).or_default() += from_stake;
                self.burn(p.owner, burned);
                fee += burned;
                receipt["energy_usage_total"] = json!(energy);
                receipt["energy_fee"] = json!(burned);
                if revert {
                    if self.faults.front() == Some(&Fault::Revert) {
                        self.faults.pop_front();
                    }
                    failed = Some("REVERT");
                } else if let Some(to) = to {
                    self.tokens.insert(from, balance - amount);
                    *self.tokens.entry(to).or_default() += amount;
                    let word = |a: [u8; 20]| format!("{:0>64}", hex::encode(a));
                    logs.push(json!({
                        "address": hex::encode(self.token.evm_bytes()),
                        "topics": [
                            hex::encode(crate::chains::tron::deposits::TRANSFER_TOPIC),
                            word(from),
                            word(to)
                        ],
                        "data": hex::encode(amount.to_be_bytes::<32>()),
                    }));
                }
            }
        }
        let mut info = json!({
            "id": hex::encode(p.id),
            "fee": fee,
            "blockNumber": number,
            "blockTimeStamp": timestamp,
            "contractResult": [""],
            "receipt": receipt,
            "log": logs,
        });
        if let Some(result) = failed {
            info["receipt"]["result"] = json!(result);
            info["result"] = json!("FAILED");
            info["resMessage"] = json!(hex::encode(result));
        }
        info
    }

    fn refuse(code: &str, message: &str, id: Option<[u8; 32]>) -> Value {
        json!({
            "result": false,
            "code": code,
            "message": hex::encode(message),
            "txid": id.map(hex::encode),
        })
    }

    fn broadcast(&mut self, hex_tx: &str) -> Value {
        if self.faults.front() == Some(&Fault::Busy) {
            self.faults.pop_front();
            return Self::refuse("SERVER_BUSY", "Server busy", None);
        }
        let Some(tx) = hex::decode(hex_tx)
            .ok()
            .and_then(|b| Transaction::decode(b.as_slice()).ok())
        else {
            return json!({"Error": "class org.tron.core.exception.BadItemException : not a transaction"});
        };
        let size = tx.encoded_len() as i64;
        let Some(raw) = tx.raw_data else {
            return Self::refuse("OTHER_ERROR", "no raw_data", None);
        };
        let id = txid(&raw.encode_to_vec());
        let head = self.head();
        if raw.expiration <= head.timestamp || raw.expiration > head.timestamp + 86_400_000 {
            return Self::refuse(
                "TRANSACTION_EXPIRATION_ERROR",
                "Transaction expired",
                Some(id),
            );
        }
        let tapos_ok = raw.ref_block_bytes.len() == 2
            && self.blocks.iter().rev().take(65_536).any(|b| {
                b.number.to_be_bytes()[6..8] == raw.ref_block_bytes[..]
                    && b.id[8..16] == raw.ref_block_hash[..]
            });
        if !tapos_ok {
            return Self::refuse("TAPOS_ERROR", "Tapos check error", Some(id));
        }
        if self.seen.contains(&id) {
            return Self::refuse("DUP_TRANSACTION_ERROR", "Dup transaction", Some(id));
        }
        let Some(contract) = raw.contract.first() else {
            return Self::refuse("CONTRACT_VALIDATE_ERROR", "no contract", Some(id));
        };
        let value = contract
            .parameter
            .as_ref()
            .map(|a| a.value.clone())
            .unwrap_or_default();
        let owner_bytes = match contract.r#type {
            TRIGGER_SMART_CONTRACT => TriggerSmartContract::decode(value.as_slice())
                .map(|c| c.owner_address)
                .ok(),
            TRANSFER_CONTRACT => TransferContract::decode(value.as_slice())
                .map(|c| c.owner_address)
                .ok(),
            _ => None,
        };
        let Some(owner) = owner_bytes.and_then(|b| TronAddress::from_hex(&hex::encode(b)).ok())
        else {
            return Self::refuse("CONTRACT_VALIDATE_ERROR", "bad contract", Some(id));
        };
        let signer = tx.signature.first().and_then(|s| {
            alloy::primitives::Signature::from_raw(s)
                .ok()?
                .recover_address_from_prehash(&alloy::primitives::B256::from(id))
                .ok()
        });
        if signer.map(|a| TronAddress::from_evm(a.into_array())) != Some(owner) {
            return Self::refuse(
                "SIGERROR",
                "Validate signature error: not signed by the owner",
                Some(id),
            );
        }
        let free_left = FREE_NET_LIMIT - self.net_used.get(&owner).copied().unwrap_or(0);
        if free_left < size && self.trx.get(&owner).copied().unwrap_or(0) < size * BANDWIDTH_FEE {
            return Self::refuse(
                "BANDWITH_ERROR",
                "Account resource insufficient error.",
                Some(id),
            );
        }
        if contract.r#type == TRANSFER_CONTRACT
            && let Ok(t) = TransferContract::decode(value.as_slice())
            && self.trx.get(&owner).copied().unwrap_or(0) < t.amount
        {
            return Self::refuse(
                "CONTRACT_VALIDATE_ERROR",
                "balance is not sufficient",
                Some(id),
            );
        }
        self.seen.insert(id);
        if self.faults.front() == Some(&Fault::Drop) {
            self.faults.pop_front();
            return json!({"result": true, "txid": hex::encode(id)});
        }
        self.mempool.push(Pending {
            id,
            owner,
            contract: contract.r#type,
            value,
            fee_limit: raw.fee_limit,
            size,
        });
        json!({"result": true, "txid": hex::encode(id)})
    }
}

fn block_json(b: &Block) -> Value {
    json!({"blockID": hex::encode(b.id), "block_header": {"raw_data": {"number": b.number, "timestamp": b.timestamp}}})
}

fn address_of(body: &Value) -> Option<TronAddress> {
    let text = body["address"].as_str()?;
    TronAddress::from_hex(text)
        .or_else(|_| TronAddress::from_base58(text))
        .ok()
}

fn txid_of(body: &Value) -> Option<[u8; 32]> {
    hex::decode(body["value"].as_str()?).ok()?.try_into().ok()
}

type Shared = Arc<Mutex<Node>>;

async fn handle(
    State(node): State<Shared>,
    path: axum::extract::OriginalUri,
    body: Option<Json<Value>>,
) -> Json<Value> {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let Ok(mut n) = node.lock() else {
        return Json(json!({"Error": "node poisoned"}));
    };
    let answer = match path.path() {
        "/wallet/getnowblock" => block_json(n.head()),
        "/walletsolidity/getnowblock" => block_json(n.solid()),
        "/wallet/broadcasthex" => match body["transaction"].as_str() {
            Some(hex_tx) => n.broadcast(hex_tx),
            None => json!({"Error": "no transaction"}),
        },
        "/wallet/gettransactioninfobyid" => txid_of(&body)
            .and_then(|id| n.infos.get(&id).cloned())
            .unwrap_or_else(|| json!({})),
        "/walletsolidity/gettransactioninfobyid" => {
            let solid = n.solid().number;
            txid_of(&body)
                .and_then(|id| n.infos.get(&id).cloned())
                .filter(|i| i["blockNumber"].as_u64().is_some_and(|b| b <= solid))
                .unwrap_or_else(|| json!({}))
        }
        "/wallet/gettransactioninfobyblocknum" => {
            let num = body["num"].as_u64().unwrap_or(0);
            let ids = n.by_block.get(&num).cloned().unwrap_or_default();
            Value::Array(
                ids.iter()
                    .filter_map(|id| n.infos.get(id).cloned())
                    .collect(),
            )
        }
        "/wallet/getaccount" => {
            match address_of(&body).and_then(|a| n.trx.get(&a).map(|b| (a, *b))) {
                Some((a, balance)) => json!({"address": a.to_hex(), "balance": balance}),
                None => json!({}),
            }
        }
        "/wallet/getaccountresource" => match address_of(&body) {
            Some(a) => json!({
                "freeNetLimit": FREE_NET_LIMIT,
                "freeNetUsed": n.net_used.get(&a).copied().unwrap_or(0),
                "EnergyLimit": n.energy_limit.get(&a).copied().unwrap_or(0),
                "EnergyUsed": n.energy_used.get(&a).copied().unwrap_or(0),
            }),
            None => json!({}),
        },
        "/wallet/triggerconstantcontract" => {
            let data = hex::decode(body["data"].as_str().unwrap_or("")).unwrap_or_default();
            let word_address = |d: &[u8]| {
                let mut a = [0u8; 20];
                a.copy_from_slice(&d[16..36]);
                a
            };
            let contract = body["contract_address"]
                .as_str()
                .and_then(|c| TronAddress::from_hex(c).ok());
            if contract != Some(n.token) {
                json!({"result": {"result": false, "message": hex::encode("no contract")}})
            } else if data.len() == 36 && data[..4] == [0x70, 0xa0, 0x82, 0x31] {
                let balance = n
                    .tokens
                    .get(&word_address(&data))
                    .copied()
                    .unwrap_or_default();
                json!({"result": {"result": true}, "energy_used": 520, "constant_result": [hex::encode(balance.to_be_bytes::<32>())]})
            } else {
                let holds = data.len() == 68
                    && n.tokens
                        .get(&word_address(&data))
                        .is_some_and(|b| !b.is_zero());
                let mut energy = if holds {
                    ENERGY_EXISTING_HOLDER
                } else {
                    ENERGY_NEW_HOLDER
                };
                if n.faults.front() == Some(&Fault::LowEstimate) {
                    n.faults.pop_front();
                    energy /= 2;
                }
                json!({"result": {"result": true}, "energy_used": energy})
            }
        }
        "/wallet/getchainparameters" => json!({"chainParameter": [
            {"key": "getEnergyFee", "value": ENERGY_FEE},
            {"key": "getTransactionFee", "value": BANDWIDTH_FEE},
            {"key": "getMaxFeeLimit", "value": 15_000_000_000i64},
        ]}),
        other => json!({"Error": format!("no endpoint {other}")}),
    };
    Json(answer)
}

pub struct DevTron {
    pub url: String,
    /// The TRC-20 token the node runs (USDT-like, 6 decimals).
    pub token: TronAddress,
    node: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl DevTron {
    /// Starts a node on 127.0.0.1 producing a block every `interval`, solidifying `solid_lag`
    /// blocks behind the head.
    pub async fn start(interval: Duration, solid_lag: u64) -> anyhow::Result<Self> {
        let token = TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t")?;
        let genesis_time = chrono::Utc::now().timestamp_millis();
        let node = Arc::new(Mutex::new(Node {
            blocks: vec![Block {
                number: 1,
                id: {
                    let mut id = [7u8; 32];
                    id[..8].copy_from_slice(&1u64.to_be_bytes());
                    id
                },
                timestamp: genesis_time,
            }],
            mempool: Vec::new(),
            seen: HashSet::new(),
            infos: HashMap::new(),
            by_block: HashMap::new(),
            trx: HashMap::new(),
            tokens: HashMap::new(),
            energy_limit: HashMap::new(),
            energy_used: HashMap::new(),
            net_used: HashMap::new(),
            faults: VecDeque::new(),
            solid_lag,
            token,
        }));
        if let Ok(mut n) = node.lock() {
            for _ in 0..solid_lag + 1 {
                n.produce();
            }
        }
        let app = axum::Router::new()
            .route("/{*path}", post(handle))
            .with_state(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let producer = {
            let node = node.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if let Ok(mut n) = node.lock() {
                        n.produce();
                    }
                }
            })
        };
        Ok(Self {
            url,
            token,
            node,
            tasks: vec![server, producer],
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Node) -> T) -> T {
        let mut n = self.node.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut n)
    }

    pub fn fund_trx(&self, who: &TronAddress, sun: i64) {
        self.with(|n| *n.trx.entry(*who).or_default() += sun);
    }

    pub fn mint(&self, who: &TronAddress, units: u128) {
        self.with(|n| *n.tokens.entry(who.evm_bytes()).or_default() += U256::from(units));
    }

    /// Energy the account has staked for (used first, before burning TRX).
    pub fn set_energy(&self, who: &TronAddress, limit: i64) {
        self.with(|n| {
            n.energy_limit.insert(*who, limit);
            n.energy_used.insert(*who, 0);
        });
    }

    pub fn token_balance(&self, who: &TronAddress) -> U256 {
        self.with(|n| n.tokens.get(&who.evm_bytes()).copied().unwrap_or_default())
    }

    pub fn trx_balance(&self, who: &TronAddress) -> i64 {
        self.with(|n| n.trx.get(who).copied().unwrap_or(0))
    }

    pub fn fail_next(&self, fault: Fault) {
        self.with(|n| n.faults.push_back(fault));
    }

    /// Produces a block now (besides the clock's).
    pub fn produce_block(&self) {
        self.with(Node::produce);
    }

    pub fn head_number(&self) -> u64 {
        self.with(|n| n.head().number)
    }
}

impl Drop for DevTron {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
