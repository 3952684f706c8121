//! Brute-force limits: failed bearer tokens per source address, failed second-factor codes per
//! source address and per user. Only failures count, and a key that has used up its failures
//! is refused (429 with `Retry-After`) *before* its next guess is judged, so a right guess in
//! a stream of wrong ones gains nothing. (A request-rate limiter such as `governor` counts
//! every request, which would throttle a partner's honest payout traffic from one address,
//! and cannot refuse before judging; this is the small piece it does not cover.)

use crate::domain::UnixMicros;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Failures per key in a fixed window that opens at the key's first failure.
#[derive(Debug)]
pub struct FailureLimiter<K> {
    max_failures: u32,
    window: UnixMicros,
    /// Keys kept at most; past it the oldest windows make room (an attacker with many
    /// addresses cannot grow memory without bound).
    capacity: usize,
    windows: Mutex<HashMap<K, (UnixMicros, u32)>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(max_failures: u32, window: std::time::Duration, capacity: usize) -> Self {
        Self {
            max_failures,
            window: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            capacity: capacity.max(1),
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<K, (UnixMicros, u32)>> {
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Err(seconds to wait) while `key` has no failures left in its window.
    pub fn check(&self, key: &K, now: UnixMicros) -> Result<(), u64> {
        match self.windows().get(key) {
            Some(&(start, count)) if count >= self.max_failures && now < start + self.window => {
                let left = (start + self.window - now + 999_999) / 1_000_000;
                Err(u64::try_from(left).unwrap_or(1).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failure of `key`; returns how many it has in its window now.
    pub fn fail(&self, key: K, now: UnixMicros) -> u32 {
        let mut windows = self.windows();
        if !windows.contains_key(&key) && windows.len() >= self.capacity {
            windows.retain(|_, (start, _)| now < *start + self.window);
            if windows.len() >= self.capacity
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(key).or_insert((now, 0));
        if now >= entry.0 + self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1
    }
}

/// The key of a source address: IPv4 whole, IPv6 by its /64 (one host owns a whole /64).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

/// The limits the API and the console share.
#[derive(Debug)]
pub struct Throttles {
    /// Wrong bearer tokens (API and console sign-in), by source address.
    pub bearer: FailureLimiter<IpAddr>,
    /// Wrong second-factor codes, by source address and by user.
    pub totp_source: FailureLimiter<IpAddr>,
    pub totp_user: FailureLimiter<String>,
    /// Wrong codes per console session (by its hash): at `TOTP_TRIES_PER_SESSION` it is locked.
    pub totp_session: FailureLimiter<[u8; 32]>,
}

/// Wrong second-factor codes one console session may enter before it is locked (ended, and
/// audited); a 6-digit code then needs ~200,000 sessions' worth of guesses on average.
pub const TOTP_TRIES_PER_SESSION: u32 = 5;

impl Default for Throttles {
    fn default() -> Self {
        Self::new(20)
    }
}

impl Throttles {
    /// With `bearer_per_minute` wrong tokens a minute allowed per source.
    pub fn new(bearer_per_minute: u32) -> Self {
        let minute = std::time::Duration::from_secs(60);
        Self {
            bearer: FailureLimiter::new(bearer_per_minute, minute, 100_000),
            totp_source: FailureLimiter::new(20, 15 * minute, 100_000),
            totp_user: FailureLimiter::new(10, 15 * minute, 100_000),
            totp_session: FailureLimiter::new(TOTP_TRIES_PER_SESSION, 24 * 60 * minute, 100_000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_budget_wait_out_the_window() {
        let l = FailureLimiter::new(3, std::time::Duration::from_secs(60), 10);
        let s = 1_000_000;
        for i in 1..=3 {
            assert_eq!(l.check(&"a", i * s), Ok(()));
            assert_eq!(l.fail("a", i * s), i as u32);
        }
        // The window opened at 1 s: 58 s left at 3 s, rounded up.
        assert_eq!(l.check(&"a", 3 * s), Err(58));
        assert_eq!(l.check(&"b", 3 * s), Ok(()));
        assert_eq!(l.check(&"a", 61 * s), Ok(()));
        assert_eq!(l.fail("a", 61 * s), 1);
    }

    #[test]
    fn memory_stays_bounded_and_ipv6_counts_by_64() {
        let l = FailureLimiter::new(1, std::time::Duration::from_secs(60), 3);
        for k in 0..10 {
            l.fail(k, k as i64);
        }
        assert_eq!(l.windows().len(), 3);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        assert_eq!(source_key(a), source_key(b));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(source_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
