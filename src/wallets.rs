//! Hot and canary wallets, declared in `wallets/*.toml`: address, where the key comes from (an
//! environment variable, or an encrypted JSON keystore whose password is in one), and the
//! buffers below which the wallet is not used. Files hold key *references*, never keys; a key
//! lives only inside its signer and never reaches a log, an error or `Debug` output.

use crate::config::ChainKind;
use alloy::primitives::{Address, U256};
use alloy::signers::local::PrivateKeySigner;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WalletRole {
    Hot,
    Canary,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletFile {
    wallets: Vec<WalletDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalletDecl {
    network: String,
    role: WalletRole,
    /// EIP-55 checksummed (base58check `T…` on Tron); the key must derive exactly this address.
    address: String,
    /// Name of the environment variable holding the hex private key.
    key_env: Option<String>,
    /// An encrypted JSON keystore (relative to the wallets directory) ...
    keystore: Option<PathBuf>,
    /// ... and the environment variable holding its password.
    password_env: Option<String>,
    /// Minimum native balance in wei kept for gas; below it the wallet sends nothing.
    #[serde(default)]
    min_gas_wei: u64,
    /// Per token code, the token units the wallet must keep after a transfer.
    #[serde(default)]
    min_token_balance: BTreeMap<String, String>,
    /// Tron: TRX (in sun), energy and bandwidth the wallet keeps; below any, it sends nothing.
    min_trx_sun: Option<u64>,
    min_energy: Option<u64>,
    min_bandwidth: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("{file}: {message}")]
    File { file: PathBuf, message: String },
    #[error("{file}: wallet {address}: {message}")]
    Wallet {
        file: PathBuf,
        address: String,
        message: String,
    },
}

/// A wallet ready to sign.
pub struct Wallet {
    pub network: String,
    pub kind: ChainKind,
    pub role: WalletRole,
    /// The key's 20-byte address (a Tron address without its 0x41 prefix).
    pub address: Address,
    /// The address as its network writes it (EIP-55, or base58check on Tron): how the
    /// database, the ledger's wallet accounts and the metrics name the wallet.
    pub id: String,
    signer: PrivateKeySigner,
    pub min_gas_wei: U256,
    /// Token code → minimum balance in base units.
    pub min_token_units: HashMap<String, i128>,
    /// Tron: what the wallet keeps of TRX, energy and bandwidth.
    pub tron_buffers: crate::chains::tron::rules::Buffers,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet")
            .field("network", &self.network)
            .field("role", &self.role)
            .field("address", &self.id)
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Wallet {
    pub fn signer(&self) -> &PrivateKeySigner {
        &self.signer
    }
}

/// The wallets of `config`: loaded from `config.wallets_dir`, each on a configured network.
pub fn load_configured(config: &crate::config::Config) -> Result<Vec<Wallet>, WalletError> {
    let decimals = |network: &str, code: &str| {
        config
            .networks
            .iter()
            .find(|n| n.name == network)
            .and_then(|n| n.tokens.iter().find(|t| t.code == code))
            .map(|t| t.decimals)
    };
    let kind_of = |network: &str| {
        config
            .networks
            .iter()
            .find(|n| n.name == network)
            .map_or(ChainKind::Evm, |n| n.kind)
    };
    let wallets = load(&config.wallets_dir, &config.secrets, decimals, kind_of)?;
    for w in &wallets {
        if !config.networks.iter().any(|n| n.name == w.network) {
            return Err(WalletError::File {
                file: config.wallets_dir.clone(),
                message: format!(
                    "wallet {} is on network {:?}, which is not configured",
                    w.id, w.network
                ),
            });
        }
    }
    Ok(wallets)
}

/// Loads every `*.toml` in `dir` (none if the directory does not exist). `secrets` is the
/// environment; `decimals` gives a token's decimals by (network, code), `kind_of` a network's
/// kind.
pub fn load(
    dir: &Path,
    secrets: &HashMap<String, SecretString>,
    decimals: impl Fn(&str, &str) -> Option<u8>,
    kind_of: impl Fn(&str) -> ChainKind,
) -> Result<Vec<Wallet>, WalletError> {
    read_declarations(dir)?
        .into_iter()
        .map(|(file, decl)| {
            let kind = kind_of(&decl.network);
            load_one(dir, &file, decl, kind, secrets, &decimals)
        })
        .collect()
}

/// The 20 bytes of a declared address on a network of `kind`.
fn parse_address(kind: ChainKind, text: &str) -> Result<Address, String> {
    crate::payouts::networks::canonical_address(kind, text)
        .ok()
        .filter(|canonical| canonical == text)
        .and_then(|canonical| crate::payouts::networks::address_bytes(kind, &canonical))
        .map(Address::from)
        .ok_or_else(|| match kind {
            ChainKind::Evm => "address must be EIP-55 checksummed".to_owned(),
            ChainKind::Tron => "address must be a base58check Tron address (T...)".to_owned(),
        })
}

/// The hot wallets declared for `network` (of `kind`) in `dir`, without their keys: for
/// read-only tools such as `treasuryd reconcile`, which need addresses and never sign.
pub fn declared_hot_wallets(
    dir: &Path,
    network: &str,
    kind: ChainKind,
) -> Result<Vec<Address>, WalletError> {
    read_declarations(dir)?
        .into_iter()
        .filter(|(_, d)| d.network == network && d.role == WalletRole::Hot)
        .map(|(file, d)| {
            parse_address(kind, &d.address).map_err(|message| WalletError::Wallet {
                file,
                address: d.address.clone(),
                message,
            })
        })
        .collect()
}

/// Every declaration in the `*.toml` files of `dir`, in file order (none if the directory
/// does not exist).
/// The environment variables the wallet files in `dir` name (keys and keystore passwords);
/// none when the files cannot be read (loading the wallets then says why).
pub fn secret_names(dir: &Path) -> Vec<String> {
    read_declarations(dir)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_, d)| [d.key_env, d.password_env])
        .flatten()
        .collect()
}

fn read_declarations(dir: &Path) -> Result<Vec<(PathBuf, WalletDecl)>, WalletError> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut declarations = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| WalletError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        let parsed: WalletFile = toml::from_str(&text).map_err(|e| WalletError::File {
            file: file.clone(),
            message: e.to_string(),
        })?;
        declarations.extend(parsed.wallets.into_iter().map(|d| (file.clone(), d)));
    }
    Ok(declarations)
}

/// The least work a keystore's password derivation may ask, so that a stolen keystore file
/// cannot be brute-forced cheaply: geth's "light" scrypt (N = 4096, r = 8) or PBKDF2-HMAC with
/// 100,000 rounds. Checked before the password is tried.
const MIN_SCRYPT_N: u64 = 4096;
const MIN_SCRYPT_R: u64 = 8;
const MIN_PBKDF2_ROUNDS: u64 = 100_000;

fn read_keystore(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read keystore {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("keystore {} is not JSON: {e}", path.display()))
}

fn crypto_of(keystore: &serde_json::Value) -> &serde_json::Value {
    keystore
        .get("crypto")
        .or_else(|| keystore.get("Crypto"))
        .unwrap_or(&serde_json::Value::Null)
}

fn check_kdf(keystore: &serde_json::Value) -> Result<(), String> {
    let crypto = crypto_of(keystore);
    let kdf = crypto["kdf"].as_str().unwrap_or_default();
    let param = |name: &str| crypto["kdfparams"][name].as_u64().unwrap_or(0);
    let weak = match kdf {
        "scrypt" => param("n") < MIN_SCRYPT_N || param("r") < MIN_SCRYPT_R || param("p") == 0,
        "pbkdf2" => param("c") < MIN_PBKDF2_ROUNDS,
        other => return Err(format!("unknown kdf {other:?}")),
    };
    if weak {
        return Err(format!(
            "it derives its key too cheaply ({kdf} {}); re-encrypt it with at least \
             scrypt N={MIN_SCRYPT_N}, r={MIN_SCRYPT_R} or pbkdf2 c={MIN_PBKDF2_ROUNDS}",
            crypto["kdfparams"]
        ));
    }
    Ok(())
}

/// Decrypts a Web3 Secret Storage (v3) keystore: the key derived from the password (scrypt or
/// PBKDF2-HMAC-SHA256), checked against the keystore's Keccak MAC, opens the AES-128-CTR
/// ciphertext. Done here rather than by alloy so that the derived key and the plaintext key
/// are zeroized as soon as the signer holds the key (which zeroizes it on drop in turn).
fn decrypt_keystore(
    keystore: &serde_json::Value,
    password: &SecretString,
) -> Result<PrivateKeySigner, String> {
    use ctr::cipher::{KeyIvInit, StreamCipher};
    use zeroize::Zeroizing;
    let crypto = crypto_of(keystore);
    let bytes = |v: &serde_json::Value, what: &str| {
        hex::decode(v.as_str().unwrap_or_default()).map_err(|_| format!("{what} is not hex"))
    };
    if crypto["cipher"] != "aes-128-ctr" {
        return Err(format!("cipher {} is not aes-128-ctr", crypto["cipher"]));
    }
    let params = &crypto["kdfparams"];
    if params["dklen"].as_u64() != Some(32) {
        return Err("kdfparams.dklen must be 32".into());
    }
    let salt = bytes(&params["salt"], "kdfparams.salt")?;
    let number = |name: &str| {
        params[name]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("kdfparams.{name} is missing or too large"))
    };
    let password = password.expose_secret().as_bytes();
    let mut key = Zeroizing::new([0u8; 32]);
    match crypto["kdf"].as_str() {
        Some("scrypt") => {
            let n = number("n")?;
            if !n.is_power_of_two() {
                return Err("kdfparams.n must be a power of two".into());
            }
            let log_n = u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX);
            let params = scrypt::Params::new(log_n, number("r")?, number("p")?)
                .map_err(|e| format!("scrypt parameters: {e}"))?;
            scrypt::scrypt(password, &salt, &params, &mut key[..])
                .map_err(|e| format!("scrypt: {e}"))?;
        }
        Some("pbkdf2") if params["prf"] == "hmac-sha256" => {
            pbkdf2::pbkdf2::<hmac_for_keystores::Hmac<sha2_for_keystores::Sha256>>(
                password,
                &salt,
                number("c")?,
                &mut key[..],
            );
        }
        _ => return Err("kdf must be scrypt or pbkdf2 with hmac-sha256".into()),
    }
    let ciphertext = bytes(&crypto["ciphertext"], "ciphertext")?;
    let mac = bytes(&crypto["mac"], "mac")?;
    let iv = bytes(&crypto["cipherparams"]["iv"], "cipherparams.iv")?;
    if iv.len() != 16 {
        return Err("cipherparams.iv must be 16 bytes".into());
    }
    let expected = alloy::primitives::keccak256([&key[16..32], &ciphertext[..]].concat());
    if expected.as_slice() != mac.as_slice() {
        return Err("wrong password (the MAC does not match)".into());
    }
    let mut plain = Zeroizing::new(ciphertext);
    let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new(key[..16].into(), iv[..].into());
    cipher.apply_keystream(&mut plain);
    PrivateKeySigner::from_slice(&plain).map_err(|_| "the decrypted key is not a valid key".into())
}

fn load_one(
    dir: &Path,
    file: &Path,
    decl: WalletDecl,
    kind: ChainKind,
    secrets: &HashMap<String, SecretString>,
    decimals: &impl Fn(&str, &str) -> Option<u8>,
) -> Result<Wallet, WalletError> {
    let fail = |message: String| WalletError::Wallet {
        file: file.to_owned(),
        address: decl.address.clone(),
        message,
    };
    let address = parse_address(kind, &decl.address).map_err(fail)?;
    let tron_only = [
        ("min_trx_sun", decl.min_trx_sun),
        ("min_energy", decl.min_energy),
        ("min_bandwidth", decl.min_bandwidth),
    ];
    match kind {
        ChainKind::Evm => {
            if let Some((field, _)) = tron_only.iter().find(|(_, v)| v.is_some()) {
                return Err(fail(format!("{field} is for Tron wallets only")));
            }
        }
        ChainKind::Tron if decl.min_gas_wei != 0 => {
            return Err(fail(
                "min_gas_wei is for EVM wallets; a Tron wallet keeps min_trx_sun".into(),
            ));
        }
        ChainKind::Tron => {}
    }
    let secret = |name: &str| {
        secrets
            .get(name)
            .ok_or_else(|| fail(format!("environment variable {name} is not set")))
    };
    let signer = match (&decl.key_env, &decl.keystore, &decl.password_env) {
        (Some(var), None, None) => {
            let key = secret(var)?;
            key.expose_secret()
                .trim()
                .parse::<PrivateKeySigner>()
                .map_err(|_| fail(format!("{var} does not hold a valid hex private key")))?
        }
        (None, Some(path), Some(var)) => {
            let keystore = read_keystore(&dir.join(path)).map_err(fail)?;
            check_kdf(&keystore).map_err(|e| fail(format!("keystore {}: {e}", path.display())))?;
            let password = secret(var)?;
            decrypt_keystore(&keystore, password).map_err(|e| {
                fail(format!(
                    "cannot decrypt keystore {} with {var}: {e}",
                    path.display()
                ))
            })?
        }
        _ => {
            return Err(fail(
                "give either key_env, or keystore with password_env".into(),
            ));
        }
    };
    // Refuse a key that signs for another address than the one declared.
    if signer.address() != address {
        return Err(fail("the key does not belong to this address".into()));
    }
    let mut min_token_units = HashMap::new();
    for (code, text) in &decl.min_token_balance {
        let d = decimals(&decl.network, code)
            .ok_or_else(|| fail(format!("{} has no token {code}", decl.network)))?;
        let spec = crate::domain::AssetSpec {
            key: crate::domain::AssetKey::new(decl.network.clone(), code.clone()),
            decimals: d,
        };
        let units = crate::domain::Amount::parse_decimal(text, &spec)
            .map_err(|e| fail(format!("min_token_balance.{code} {e}")))?;
        min_token_units.insert(code.clone(), units.units());
    }
    let buffer = |v: Option<u64>| i64::try_from(v.unwrap_or(0)).unwrap_or(i64::MAX);
    Ok(Wallet {
        network: decl.network,
        kind,
        role: decl.role,
        address,
        id: decl.address.clone(),
        signer,
        min_gas_wei: U256::from(decl.min_gas_wei),
        min_token_units,
        tron_buffers: crate::chains::tron::rules::Buffers {
            trx_sun: buffer(decl.min_trx_sun),
            energy: buffer(decl.min_energy),
            bandwidth: buffer(decl.min_bandwidth),
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_keystore_with_a_cheap_kdf_is_refused_before_its_password_is_tried() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, kdf: &str, params: serde_json::Value| {
            let path = dir.path().join(name);
            let body = serde_json::json!({"version": 3, "crypto": {"cipher": "aes-128-ctr",
                "kdf": kdf, "kdfparams": params, "ciphertext": "00", "mac": "00",
                "cipherparams": {"iv": "00"}}});
            std::fs::write(&path, body.to_string()).unwrap();
            path
        };
        let weak = [
            write(
                "a",
                "pbkdf2",
                serde_json::json!({"c": 1, "dklen": 32, "prf": "hmac-sha256", "salt": "00"}),
            ),
            write(
                "b",
                "scrypt",
                serde_json::json!({"n": 2, "r": 8, "p": 1, "dklen": 32, "salt": "00"}),
            ),
            write(
                "c",
                "scrypt",
                serde_json::json!({"n": 262144, "r": 1, "p": 1, "dklen": 32, "salt": "00"}),
            ),
            write("d", "argon-who", serde_json::json!({})),
        ];
        for path in &weak {
            let keystore = super::read_keystore(path).unwrap();
            assert!(super::check_kdf(&keystore).is_err(), "{}", path.display());
        }
        let fine = [
            write(
                "e",
                "scrypt",
                serde_json::json!({"n": 262144, "r": 8, "p": 1, "dklen": 32, "salt": "00"}),
            ),
            write(
                "f",
                "pbkdf2",
                serde_json::json!({"c": 262144, "dklen": 32, "prf": "hmac-sha256", "salt": "00"}),
            ),
        ];
        for path in &fine {
            let keystore = super::read_keystore(path).unwrap();
            assert_eq!(super::check_kdf(&keystore), Ok(()), "{}", path.display());
        }
    }

    /// Keystores written by an independent implementation (PyPI eth-account, see
    /// tests/fixtures/keystores/generate.py) open to anvil's dev account #1; a wrong password
    /// does not.
    #[test]
    fn keystores_from_eth_account_decrypt_to_their_key() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keystores");
        for name in ["anvil-1-scrypt.json", "anvil-1-pbkdf2.json"] {
            let keystore = super::read_keystore(&fixtures.join(name)).unwrap();
            assert_eq!(super::check_kdf(&keystore), Ok(()), "{name}");
            let password = secrecy::SecretString::from("treasuryd test password".to_owned());
            let signer = super::decrypt_keystore(&keystore, &password).unwrap();
            assert_eq!(
                signer.address().to_checksum(None),
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
                "{name}"
            );
            let wrong = secrecy::SecretString::from("not the password".to_owned());
            let refused = super::decrypt_keystore(&keystore, &wrong).unwrap_err();
            assert!(refused.contains("wrong password"), "{refused}");
        }
    }

    use super::*;

    // Anvil's well-known development key #1; never used anywhere real.
    const DEV_KEY: &str = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
    const DEV_ADDRESS: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";

    fn write(dir: &Path, text: &str) {
        std::fs::write(dir.join("ethereum.toml"), text).unwrap();
    }

    fn secrets(pairs: &[(&str, &str)]) -> HashMap<String, SecretString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect()
    }

    #[test]
    fn loads_a_key_from_the_environment_and_never_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            &format!(
                "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{DEV_ADDRESS}\"\nkey_env = \"K\"\n\
                 min_gas_wei = 1000\nmin_token_balance = {{ USDT = \"10.5\" }}\n"
            ),
        );
        let wallets = load(
            dir.path(),
            &secrets(&[("K", DEV_KEY)]),
            |_, _| Some(6),
            |_| ChainKind::Evm,
        )
        .unwrap();
        assert_eq!(wallets.len(), 1);
        assert_eq!(wallets[0].address.to_checksum(None), DEV_ADDRESS);
        assert_eq!(wallets[0].min_token_units["USDT"], 10_500_000);
        let shown = format!("{:?}", wallets[0]);
        assert!(!shown.to_lowercase().contains(&DEV_KEY[2..12]), "{shown}");
    }

    #[test]
    fn refuses_a_key_for_another_address_and_missing_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let other = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC";
        write(
            dir.path(),
            &format!(
                "[[wallets]]\nnetwork = \"ethereum\"\nrole = \"hot\"\naddress = \"{other}\"\nkey_env = \"K\"\n"
            ),
        );
        let err = load(
            dir.path(),
            &secrets(&[("K", DEV_KEY)]),
            |_, _| Some(6),
            |_| ChainKind::Evm,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(
            !err.contains(&DEV_KEY[2..12]),
            "the key leaked into an error: {err}"
        );
        let err = load(
            dir.path(),
            &secrets(&[]),
            |_, _| Some(6),
            |_| ChainKind::Evm,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("K is not set"), "{err}");
        let err = load(
            dir.path(),
            &secrets(&[("K", "not-a-key")]),
            |_, _| Some(6),
            |_| ChainKind::Evm,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("valid hex private key") && !err.contains("not-a-key"),
            "{err}"
        );
    }

    #[test]
    fn a_tron_wallet_is_declared_in_base58_with_its_buffers() {
        // The same development key: on Tron its address is 0x41 ‖ the 20 bytes, base58check.
        let tron = crate::chains::tron::TronAddress::from_evm(
            Address::parse_checksummed(DEV_ADDRESS, None)
                .unwrap()
                .into_array(),
        )
        .to_base58();
        let dir = tempfile::tempdir().unwrap();
        let decl = |address: &str, extra: &str| {
            format!(
                "[[wallets]]\nnetwork = \"tron\"\nrole = \"hot\"\naddress = \"{address}\"\nkey_env = \"K\"\n{extra}"
            )
        };
        write(
            dir.path(),
            &decl(&tron, "min_trx_sun = 50000000\nmin_energy = 1000\n"),
        );
        let tron_kind = |_: &str| ChainKind::Tron;
        let wallets = load(
            dir.path(),
            &secrets(&[("K", DEV_KEY)]),
            |_, _| Some(6),
            tron_kind,
        )
        .unwrap();
        assert_eq!(wallets[0].id, tron);
        assert_eq!(wallets[0].tron_buffers.trx_sun, 50_000_000);
        assert_eq!(wallets[0].tron_buffers.energy, 1000);
        // An EIP-55 address on a Tron network, a broken checksum, an EVM-only buffer: refused.
        for (text, expected) in [
            (decl(DEV_ADDRESS, ""), "base58check"),
            (decl(&format!("{}x", &tron[..33]), ""), "base58check"),
            (decl(&tron, "min_gas_wei = 5\n"), "min_trx_sun"),
        ] {
            write(dir.path(), &text);
            let err = load(
                dir.path(),
                &secrets(&[("K", DEV_KEY)]),
                |_, _| Some(6),
                tron_kind,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        write(dir.path(), &decl(DEV_ADDRESS, "min_energy = 1\n"));
        let err = load(
            dir.path(),
            &secrets(&[("K", DEV_KEY)]),
            |_, _| Some(6),
            |_| ChainKind::Evm,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("for Tron wallets only"), "{err}");
    }

    #[test]
    fn a_missing_directory_means_no_wallets() {
        assert!(
            load(
                Path::new("/nonexistent/wallets"),
                &HashMap::new(),
                |_, _| None,
                |_| ChainKind::Evm
            )
            .unwrap()
            .is_empty()
        );
    }
}
