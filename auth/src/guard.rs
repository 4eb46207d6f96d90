//! Failed-authentication limits per source address: after `max_failures`
//! bad tokens within `window_ms`, an address gets `unauthorized` without its
//! token being checked until the window has passed. The error never says
//! which check failed, or that the address is throttled.

use dashmap::DashMap;
use std::net::IpAddr;

/// Most addresses tracked; beyond it, expired entries are dropped first and
/// then the oldest half.
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    start_ms: i64,
    failures: u32,
}

/// Per-address failed-auth counters.
pub struct AuthGuard {
    max_failures: u32,
    window_ms: i64,
    by_addr: DashMap<IpAddr, Window>,
}

impl AuthGuard {
    /// A guard allowing `max_failures` per `window_ms` per address.
    pub fn new(max_failures: u32, window_ms: i64) -> Self {
        Self { max_failures, window_ms, by_addr: DashMap::new() }
    }

    /// May this address try a token now?
    pub fn allowed(&self, addr: IpAddr, now_ms: i64) -> bool {
        match self.by_addr.get(&addr) {
            Some(w) => now_ms - w.start_ms >= self.window_ms || w.failures < self.max_failures,
            None => true,
        }
    }

    /// Records a failed attempt.
    pub fn failed(&self, addr: IpAddr, now_ms: i64) {
        if self.by_addr.len() >= MAX_TRACKED && !self.by_addr.contains_key(&addr) {
            self.prune(now_ms);
        }
        let mut w = self.by_addr.entry(addr).or_insert(Window { start_ms: now_ms, failures: 0 });
        if now_ms - w.start_ms >= self.window_ms {
            *w = Window { start_ms: now_ms, failures: 0 };
        }
        w.failures = w.failures.saturating_add(1);
    }

    fn prune(&self, now_ms: i64) {
        let window = self.window_ms;
        self.by_addr.retain(|_, w| now_ms - w.start_ms < window);
        if self.by_addr.len() >= MAX_TRACKED {
            let mut starts: Vec<i64> = self.by_addr.iter().map(|e| e.start_ms).collect();
            starts.sort_unstable();
            let cut = starts[starts.len() / 2];
            self.by_addr.retain(|_, w| w.start_ms > cut);
            tracing::warn!("auth guard full; dropped the older half of its entries");
        }
    }

    /// Addresses tracked.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// True when no address is tracked.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttles_after_max_failures_until_the_window_passes() {
        let g = AuthGuard::new(3, 1_000);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for t in 0..3 {
            assert!(g.allowed(a, t));
            g.failed(a, t);
        }
        assert!(!g.allowed(a, 500));
        assert!(g.allowed(b, 500), "other addresses are unaffected");
        assert!(g.allowed(a, 1_000), "the window passed");
        g.failed(a, 1_000);
        assert!(g.allowed(a, 1_001), "a new window starts from zero");
    }
}
