//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP, HMAC-SHA1, 30-second steps, six
//! digits), as authenticator apps compute them, and the base32 (RFC 4648) their secrets are
//! shown in. A user's secret is derived from the console key and their enrolment id, so the
//! database holds no usable secret.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};

pub const STEP_SECONDS: i64 = 30;
pub const DIGITS: u32 = 6;

/// The 20-byte TOTP secret of `user`'s enrolment `enrolment`.
pub fn derive_secret(key: &SecretString, user: &str, enrolment: &str) -> [u8; 20] {
    let mut mac = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(b"treasuryd console totp\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(enrolment.as_bytes());
    let full = mac.finalize().into_bytes();
    let mut secret = [0u8; 20];
    secret.copy_from_slice(&full[..20]);
    secret
}

/// The HOTP value of `counter` (RFC 4226 §5.3).
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let mut mac = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(&counter.to_be_bytes());
    let h = mac.finalize().into_bytes();
    let offset = usize::from(h[h.len() - 1] & 0x0f);
    let code = (u32::from(h[offset]) & 0x7f) << 24
        | u32::from(h[offset + 1]) << 16
        | u32::from(h[offset + 2]) << 8
        | u32::from(h[offset + 3]);
    code % 10u32.pow(DIGITS)
}

/// The time step of `unix_seconds`.
pub fn step(unix_seconds: i64) -> i64 {
    unix_seconds.div_euclid(STEP_SECONDS)
}

/// The step (now, or one either side for clock drift) whose code is `code`, if any.
pub fn matching_step(secret: &[u8], code: &str, unix_seconds: i64) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    let now = step(unix_seconds);
    [now, now - 1, now + 1]
        .into_iter()
        .find(|s| u64::try_from(*s).is_ok_and(|c| constant_time_eq(hotp(secret, c), wanted)))
}

fn constant_time_eq(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding (what authenticator apps take).
pub fn base32(bytes: &[u8]) -> String {
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for b in bytes {
        buffer = (buffer << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Decodes RFC 4648 base32 (no padding, upper case); None on any other character.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// The `otpauth://` URI an authenticator app scans.
pub fn provisioning_uri(issuer: &str, user: &str, secret: &[u8]) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        enc(issuer),
        enc(user),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B, SHA1 (the 8-digit values, last six digits).
    #[test]
    fn rfc6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            let expected: u32 = code[2..].parse().unwrap();
            assert_eq!(hotp(secret, step(time) as u64), expected, "{time}");
            assert_eq!(matching_step(secret, &code[2..], time), Some(step(time)));
        }
        // One step of drift either side, not two; malformed codes refused.
        assert_eq!(matching_step(secret, "287082", 59 + 30), Some(1));
        assert_eq!(matching_step(secret, "287082", 59 + 61), None);
        assert_eq!(matching_step(secret, "28708", 59), None);
        assert_eq!(matching_step(secret, "28708a", 59), None);
    }

    #[test]
    fn base32_is_rfc4648() {
        assert_eq!(base32(b""), "");
        assert_eq!(base32(b"f"), "MY");
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(
            base32(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
    }

    #[test]
    fn secrets_differ_by_user_enrolment_and_key() {
        let key = SecretString::from("k".repeat(32));
        let a = derive_secret(&key, "alice", "e1");
        assert_ne!(a, derive_secret(&key, "bob", "e1"));
        assert_ne!(a, derive_secret(&key, "alice", "e2"));
        assert_ne!(
            a,
            derive_secret(&SecretString::from("x".repeat(32)), "alice", "e1")
        );
        assert_eq!(a, derive_secret(&key, "alice", "e1"));
        let uri = provisioning_uri("treasuryd", "alice", &a);
        assert!(
            uri.starts_with("otpauth://totp/treasuryd:alice?secret="),
            "{uri}"
        );
    }
}
