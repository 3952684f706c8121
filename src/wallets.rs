//! Hot and canary wallets, declared in `wallets/*.toml`: address, where the key comes from (an
//! environment variable, or an encrypted JSON keystore whose password is in one), and the
//! buffers below which the wallet is not used. Files hold key *references*, never keys; a key
//! lives only inside its signer and never reaches a log, an error or `Debug` output.

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
    /// EIP-55 checksummed; the key must derive exactly this address.
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
    pub role: WalletRole,
    pub address: Address,
    signer: PrivateKeySigner,
    pub min_gas_wei: U256,
    /// Token code → minimum balance in base units.
    pub min_token_units: HashMap<String, i128>,
}

impl fmt::Debug for Wallet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wallet")
            .field("network", &self.network)
            .field("role", &self.role)
            .field("address", &self.address)
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
    let wallets = load(&config.wallets_dir, &config.secrets, decimals)?;
    for w in &wallets {
        if !config.networks.iter().any(|n| n.name == w.network) {
            return Err(WalletError::File {
                file: config.wallets_dir.clone(),
                message: format!(
                    "wallet {} is on network {:?}, which is not configured",
                    w.address, w.network
                ),
            });
        }
    }
    Ok(wallets)
}

/// Loads every `*.toml` in `dir` (none if the directory does not exist). `secrets` is the
/// environment; `decimals` gives a token's decimals by (network, code).
pub fn load(
    dir: &Path,
    secrets: &HashMap<String, SecretString>,
    decimals: impl Fn(&str, &str) -> Option<u8>,
) -> Result<Vec<Wallet>, WalletError> {
    read_declarations(dir)?
        .into_iter()
        .map(|(file, decl)| load_one(dir, &file, decl, secrets, &decimals))
        .collect()
}

/// The hot wallets declared for `network` in `dir`, without their keys: for read-only tools
/// such as `treasuryd reconcile`, which need addresses and never sign.
pub fn declared_hot_wallets(dir: &Path, network: &str) -> Result<Vec<Address>, WalletError> {
    read_declarations(dir)?
        .into_iter()
        .filter(|(_, d)| d.network == network && d.role == WalletRole::Hot)
        .map(|(file, d)| {
            Address::parse_checksummed(&d.address, None).map_err(|_| WalletError::Wallet {
                file,
                address: d.address.clone(),
                message: "address must be EIP-55 checksummed".into(),
            })
        })
        .collect()
}

/// Every declaration in the `*.toml` files of `dir`, in file order (none if the directory
/// does not exist).
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

fn load_one(
    dir: &Path,
    file: &Path,
    decl: WalletDecl,
    secrets: &HashMap<String, SecretString>,
    decimals: &impl Fn(&str, &str) -> Option<u8>,
) -> Result<Wallet, WalletError> {
    let fail = |message: String| WalletError::Wallet {
        file: file.to_owned(),
        address: decl.address.clone(),
        message,
    };
    let address = Address::parse_checksummed(&decl.address, None)
        .map_err(|_| fail("address must be EIP-55 checksummed".into()))?;
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
            let password = secret(var)?;
            PrivateKeySigner::decrypt_keystore(dir.join(path), password.expose_secret()).map_err(
                |_| {
                    fail(format!(
                        "cannot decrypt keystore {} with {var}",
                        path.display()
                    ))
                },
            )?
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
    Ok(Wallet {
        network: decl.network,
        role: decl.role,
        address,
        signer,
        min_gas_wei: U256::from(decl.min_gas_wei),
        min_token_units,
    })
}

#[cfg(test)]
mod tests {
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
        let wallets = load(dir.path(), &secrets(&[("K", DEV_KEY)]), |_, _| Some(6)).unwrap();
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
        let err = load(dir.path(), &secrets(&[("K", DEV_KEY)]), |_, _| Some(6))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(
            !err.contains(&DEV_KEY[2..12]),
            "the key leaked into an error: {err}"
        );
        let err = load(dir.path(), &secrets(&[]), |_, _| Some(6))
            .unwrap_err()
            .to_string();
        assert!(err.contains("K is not set"), "{err}");
        let err = load(dir.path(), &secrets(&[("K", "not-a-key")]), |_, _| Some(6))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("valid hex private key") && !err.contains("not-a-key"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_directory_means_no_wallets() {
        assert!(
            load(
                Path::new("/nonexistent/wallets"),
                &HashMap::new(),
                |_, _| None
            )
            .unwrap()
            .is_empty()
        );
    }
}
