//! Tron addresses: 21 bytes, 0x41 followed by the 20-byte EVM-style address; written as
//! base58check (34 characters starting with `T`) or as 42 hex characters starting `41`.

use sha2::{Digest, Sha256};
use std::fmt;

/// The mainnet (and every public testnet) address prefix.
pub const PREFIX: u8 = 0x41;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TronAddress([u8; 21]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("not base58 (Bitcoin alphabet): {0}")]
    NotBase58(String),
    #[error("a Tron address is 25 bytes in base58check (34 characters), this is {0} bytes")]
    WrongLength(usize),
    #[error("the checksum does not match: a mistyped address")]
    BadChecksum,
    #[error("a Tron address starts with 0x41 (T…), this starts with 0x{0:02x}")]
    WrongPrefix(u8),
    #[error("not 42 hex characters starting with 41")]
    BadHex,
}

fn checksum(payload: &[u8]) -> [u8; 4] {
    let twice = Sha256::digest(Sha256::digest(payload));
    [twice[0], twice[1], twice[2], twice[3]]
}

impl TronAddress {
    /// From the 20-byte form used in ABI words and event logs.
    pub fn from_evm(bytes: [u8; 20]) -> Self {
        let mut out = [0u8; 21];
        out[0] = PREFIX;
        out[1..].copy_from_slice(&bytes);
        Self(out)
    }

    /// Parses `T…` base58check, checking length, checksum and prefix.
    pub fn from_base58(text: &str) -> Result<Self, AddressError> {
        let bytes = bs58::decode(text)
            .into_vec()
            .map_err(|e| AddressError::NotBase58(e.to_string()))?;
        if bytes.len() != 25 {
            return Err(AddressError::WrongLength(bytes.len()));
        }
        let (payload, sum) = bytes.split_at(21);
        if checksum(payload) != sum {
            return Err(AddressError::BadChecksum);
        }
        if payload[0] != PREFIX {
            return Err(AddressError::WrongPrefix(payload[0]));
        }
        let mut out = [0u8; 21];
        out.copy_from_slice(payload);
        Ok(Self(out))
    }

    /// Parses the 42-hex-character form (`41…`, optionally `0x41…`).
    pub fn from_hex(text: &str) -> Result<Self, AddressError> {
        let text = text.strip_prefix("0x").unwrap_or(text);
        let bytes = hex::decode(text).map_err(|_| AddressError::BadHex)?;
        let bytes: [u8; 21] = bytes.try_into().map_err(|_| AddressError::BadHex)?;
        if bytes[0] != PREFIX {
            return Err(AddressError::WrongPrefix(bytes[0]));
        }
        Ok(Self(bytes))
    }

    /// The address a secp256k1 key controls: 0x41 ‖ keccak256(uncompressed key without 04)[12..].
    pub fn from_signer(signer: &alloy::signers::local::PrivateKeySigner) -> Self {
        Self::from_evm(signer.address().into_array())
    }

    pub fn to_base58(&self) -> String {
        let mut bytes = self.0.to_vec();
        bytes.extend_from_slice(&checksum(&self.0));
        bs58::encode(bytes).into_string()
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 21] {
        &self.0
    }

    /// The 20 bytes after the prefix (ABI words, event logs, the EVM address).
    pub fn evm_bytes(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        out.copy_from_slice(&self.0[1..]);
        out
    }
}

impl fmt::Display for TronAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

impl fmt::Debug for TronAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TronAddress({})", self.to_base58())
    }
}

impl std::str::FromStr for TronAddress {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_base58(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pairs of research/tron.md §2.
    const PAIRS: [(&str, &str); 7] = [
        (
            "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
            "41a614f803b6fd780986a42c78ec9c7f77e6ded13c",
        ),
        (
            "TY72iA3SBtrds3QLYsS7LwYfkzXwAXCRWT",
            "41f2cd810c48c401d392ead3c6e1e1cb9f57750a58",
        ),
        (
            "TUz4nTU75z5oK4pYaVipkSDQ3Bi2DXdQT8",
            "41d093f24888ab06073a4bdffbb8107db1ea9dc0a0",
        ),
        (
            "TG3XXyExBkPp9nzdajDZsozEu4BkaSJozs",
            "4142a1e39aefa49290f2b3f9ed688d7cecf86cd6e0",
        ),
        (
            "TJRyWwFs9wTFGZg3JbrVriFbNfCug5tDeC",
            "415cd0fb0ab3ce40f3051414c604b27756e69e43db",
        ),
        (
            "THRF3GuPnvvPzKoaT8pJex5XHmo8NNbCb3",
            "4151b5659b685047f35498f763dce619c4720d2aa7",
        ),
        (
            "TXYZopYRdj2D9XRtbG411XZZ3kM5VkAeBf",
            "41eca9bc828a3005b9a3b909f2cc5c2a54794de05f",
        ),
    ];

    #[test]
    fn published_pairs_round_trip() {
        for (b58, hex) in PAIRS {
            let a = TronAddress::from_base58(b58).unwrap();
            assert_eq!(a.to_hex(), hex);
            assert_eq!(a.to_base58(), b58);
            assert_eq!(TronAddress::from_hex(hex).unwrap(), a);
            assert_eq!(TronAddress::from_evm(a.evm_bytes()), a);
        }
    }

    #[test]
    fn keys_give_their_addresses() {
        for (key, b58) in [
            (
                "2d8f68944bdbfbc0769542fba8fc2d2a3de67393334471624364c7006da2aa54",
                "TJRyWwFs9wTFGZg3JbrVriFbNfCug5tDeC",
            ),
            (
                "be88df1d0bf30a923cb39c3bb953178baaf3726e8d3ce81e7c8462e046e0d835",
                "THRF3GuPnvvPzKoaT8pJex5XHmo8NNbCb3",
            ),
            (
                "8d596057e510b14cbb9bf24f88803a6d6dbd138dd303a62b175b9e6cc0f3f941",
                "TY72iA3SBtrds3QLYsS7LwYfkzXwAXCRWT",
            ),
        ] {
            let signer: alloy::signers::local::PrivateKeySigner = key.parse().unwrap();
            assert_eq!(TronAddress::from_signer(&signer).to_base58(), b58);
        }
    }

    #[test]
    fn bad_addresses_are_refused_with_the_reason() {
        // One character changed: the checksum catches it.
        assert_eq!(
            TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6u"),
            Err(AddressError::BadChecksum)
        );
        // Not base58 (0, O, I and l are not in the alphabet).
        assert!(matches!(
            TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj60"),
            Err(AddressError::NotBase58(_))
        ));
        // Too short / too long.
        assert!(matches!(
            TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj"),
            Err(AddressError::WrongLength(_)) | Err(AddressError::BadChecksum)
        ));
        assert!(matches!(
            TronAddress::from_base58("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6tTR7N"),
            Err(AddressError::WrongLength(_))
        ));
        // A valid base58check payload with another prefix (a Bitcoin address, version 0).
        assert_eq!(
            TronAddress::from_base58("1BoatSLRHtKNngkdXEeobR76b53LETtpyT"),
            Err(AddressError::WrongPrefix(0x00))
        );
        assert_eq!(
            TronAddress::from_hex("42a614f803b6fd780986a42c78ec9c7f77e6ded13c"),
            Err(AddressError::WrongPrefix(0x42))
        );
        assert_eq!(TronAddress::from_hex("41a614"), Err(AddressError::BadHex));
        assert!(TronAddress::from_base58("").is_err());
    }
}
