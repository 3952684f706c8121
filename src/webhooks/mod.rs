//! Webhooks to partners: the endpoints partners register (URL, event types, a signing secret
//! shown once and rotated with an overlap), and how a delivery is signed.
//!
//! Signature: `Treasuryd-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`,
//! with a second `v1=` during a rotation's overlap (one per valid secret). A receiver recomputes
//! the HMAC over the timestamp, a dot and the raw body with its secret, compares in constant
//! time with any `v1`, and rejects timestamps older than its tolerance.
//!
//! Where an endpoint may point is checked at registration (and again on every delivery, where
//! the resolved address counts): https only, no credentials in the URL, and no loopback,
//! private, link-local, unique-local, multicast or otherwise internal address unless
//! `webhooks.allow_private_networks` is set (for a receiver on the same host in tests).
pub use crate::domain::webhooks::Endpoint;

pub mod delivery;
pub mod outbox;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use std::net::IpAddr;

/// The events an endpoint may subscribe to (`payout.*` and the like select a family).
pub const EVENT_TYPES: &[&str] = &[
    "payout.accepted",
    "payout.approved",
    "payout.rejected",
    "payout.broadcast",
    "payout.confirmed",
    "payout.failed",
    "payout.reorged",
    "payout.cancelled",
    "deposit.credited",
    "deal.created",
    "deal.funded",
    "deal.delivered",
    "deal.inspection",
    "deal.approved",
    "deal.issue",
    "deal.escalated",
    "deal.settled",
    "deal.timer_set",
    "deal.timer_fired",
    "safe_mode.entered",
    "safe_mode.left",
    "eod.session_closed",
    "eod.session_settled",
    "eod.session_unsettled",
];

/// Checks each subscription: a known event type, `family.*` for a known family, or `*`.
/// Err is (index, message).
pub fn check_event_types(list: &[String]) -> Result<(), (usize, String)> {
    if list.is_empty() {
        return Err((0, "subscribe to at least one event type".into()));
    }
    for (i, t) in list.iter().enumerate() {
        let known = t == "*"
            || EVENT_TYPES.contains(&t.as_str())
            || t.strip_suffix(".*").is_some_and(|family| {
                EVENT_TYPES
                    .iter()
                    .any(|e| e.split('.').next() == Some(family))
            });
        if !known {
            return Err((
                i,
                format!(
                    "{t:?} is not an event type (see README: webhooks); family.* and * select many"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether deliveries must never go to `ip`: anything not on the public internet.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // carrier-grade NAT 100.64.0.0/10, benchmarking 198.18.0.0/15, reserved 240/4,
                // IETF protocol assignments 192.0.0.0/24
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || o[0] >= 240
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed by some)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || s[0] == 0x2002 // 6to4: reaches an IPv4 host through a relay
                || v6.to_ipv4_mapped().is_some_and(|v4| is_internal(IpAddr::V4(v4)))
                // NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48 translate to IPv4 hosts
                || (s[0] == 0x0064 && s[1] == 0xff9b && (s[2] == 0x0001 || s[2..6] == [0; 4]))
                // IPv4-compatible ::a.b.c.d (deprecated, no public use) reaches the IPv4 host
                || s[..6] == [0; 6]
        }
    }
}

/// Checks an endpoint URL; Err is the reason. With `allow_private`, http and internal hosts
/// are accepted (a receiver on this host).
pub fn check_url(text: &str, allow_private: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        other => return Err(format!("the scheme must be https, not {other}")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in the URL".into());
    }
    if url.fragment().is_some() {
        return Err("a URL with a #fragment is not accepted".into());
    }
    let internal = match url.host() {
        None => return Err("the URL has no host".into()),
        Some(url::Host::Ipv4(ip)) => is_internal(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => is_internal(IpAddr::V6(ip)),
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost"
                || d.ends_with(".localhost")
                || d.ends_with(".internal")
                || d.ends_with(".local")
        }
    };
    if internal && !allow_private {
        return Err(
            "the host is loopback, private, link-local or otherwise internal (SSRF protection)"
                .into(),
        );
    }
    Ok(url)
}

/// A fresh signing secret: 256 random bits.
pub fn new_secret() -> SecretString {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    SecretString::from(format!("whsec_{}", hex::encode(bytes)))
}

/// Hex HMAC-SHA256 of `data` under `key`.
pub fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(m) => m,
        // HMAC takes keys of any length; this arm cannot be reached.
        Err(_) => return String::new(),
    };
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Treasuryd-Signature` header for a delivery of `body` at `timestamp` (unix seconds),
/// one `v1` per secret currently valid (the new one first during a rotation's overlap).
pub fn signature_header(secrets: &[&SecretString], timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let mut header = format!("t={timestamp}");
    for s in secrets {
        header.push_str(",v1=");
        header.push_str(&hmac_hex(s.expose_secret().as_bytes(), &signed));
    }
    header
}

impl Endpoint {
    /// The secrets that sign a delivery at `now`.
    pub fn signing_secrets(&self, now: crate::domain::UnixMicros) -> Vec<&SecretString> {
        let mut out = vec![&self.secret];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_until)
            && now < until
        {
            out.push(prev);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_header_signs_timestamp_dot_body_with_each_valid_secret() {
        let (new, old) = (
            SecretString::from("whsec_new"),
            SecretString::from("whsec_old"),
        );
        let h = signature_header(&[&new, &old], 1_700_000_000, b"{\"a\":1}");
        let expected_new = hmac_hex(b"whsec_new", b"1700000000.{\"a\":1}");
        let expected_old = hmac_hex(b"whsec_old", b"1700000000.{\"a\":1}");
        assert_eq!(
            h,
            format!("t=1700000000,v1={expected_new},v1={expected_old}")
        );
    }

    #[test]
    fn internal_addresses_are_refused() {
        for bad in [
            "https://127.0.0.1/hook",
            "https://10.1.2.3/hook",
            "https://172.16.0.1/hook",
            "https://192.168.1.1/hook",
            "https://169.254.169.254/latest/meta-data",
            "https://100.64.0.1/hook",
            "https://0.0.0.0/hook",
            "https://[::1]/hook",
            "https://[fd00::1]/hook",
            "https://[fe80::1]/hook",
            "https://[::ffff:10.0.0.1]/hook",
            "https://localhost/hook",
            "https://metadata.google.internal/hook",
            // Ways to reach an IPv4 host through IPv6, and ranges missed before.
            "https://[64:ff9b::a9fe:a9fe]/latest/meta-data",
            "https://[64:ff9b::5db8:d822]/hook",
            "https://[64:ff9b:1::1]/hook",
            "https://[::7f00:1]/hook",
            "https://[::a9fe:a9fe]/hook",
            "https://[2002:7f00:1::]/hook",
            "https://[2002:5db8:d822::1]/hook",
            "https://[fec0::1]/hook",
            "https://192.0.0.8/hook",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
            assert!(check_url(bad, true).is_ok(), "{bad} with allow_private");
        }
        for bad in [
            "http://partner.example/hook",
            "ftp://partner.example/hook",
            "https://user:pw@partner.example/hook",
            "not a url",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad}");
        }
        assert!(check_url("https://hooks.partner.example/treasuryd", false).is_ok());
        assert!(check_url("https://93.184.216.34/hook", false).is_ok());
        assert!(check_url("https://[2606:2800:220:1:248:1893:25c8:1946]/hook", false).is_ok());
    }

    #[test]
    fn event_types_are_known_or_families() {
        let ok =
            |l: &[&str]| check_event_types(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["payout.confirmed", "deal.*", "*"]).is_ok());
        assert_eq!(
            ok(&["payout.confirmed", "payout.exploded"]).unwrap_err().0,
            1
        );
        assert_eq!(ok(&["nope.*"]).unwrap_err().0, 0);
        assert!(ok(&[]).is_err());
    }

    #[test]
    fn a_rotated_secret_signs_only_during_its_overlap() {
        let e = Endpoint {
            id: uuid::Uuid::nil(),
            company: None,
            url: "https://x.example/".into(),
            event_types: vec!["*".into()],
            active: true,
            secret: SecretString::from("new"),
            previous_secret: Some(SecretString::from("old")),
            previous_until: Some(100),
            disabled_reason: None,
            created_by: "t".into(),
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(e.signing_secrets(99).len(), 2);
        assert_eq!(e.signing_secrets(100).len(), 1);
        assert!(!format!("{e:?}").contains("old"), "Debug redacts secrets");
    }
}
