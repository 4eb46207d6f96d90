//! Per-tenant rate budgets: a token bucket per tenant, shared by every
//! session (or request) of that tenant on a node.

use dashmap::DashMap;
use std::sync::Arc;

/// Most tenants with a bucket; beyond, buckets start over (everyone gets a
/// fresh burst), which keeps memory bounded under tenant churn.
const MAX_TENANTS: usize = 100_000;

/// A token bucket per tenant.
pub struct TenantBudget {
    per_second: f64,
    burst: f64,
    buckets: DashMap<Arc<str>, (f64, i64)>,
}

impl TenantBudget {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { per_second: f64::from(per_second), burst: f64::from(burst), buckets: DashMap::new() }
    }

    /// Takes `n` from the tenant's bucket; on refusal, says how many seconds
    /// until `n` would fit.
    pub fn take(&self, tenant: &Arc<str>, n: usize, now_ms: i64) -> Result<(), u64> {
        if self.buckets.len() >= MAX_TENANTS && !self.buckets.contains_key(tenant) {
            self.buckets.clear();
        }
        let mut b = self.buckets.entry(tenant.clone()).or_insert((self.burst, now_ms));
        let (tokens, last) = *b;
        let tokens = (tokens + (now_ms - last).max(0) as f64 / 1_000.0 * self.per_second).min(self.burst);
        if tokens >= n as f64 {
            *b = (tokens - n as f64, now_ms);
            Ok(())
        } else {
            *b = (tokens, now_ms);
            Err(((n as f64 - tokens) / self.per_second).ceil().max(1.0) as u64)
        }
    }

    /// The sustained rate.
    pub fn per_second(&self) -> u32 {
        self.per_second as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_and_are_per_tenant() {
        let b = TenantBudget::new(10, 20);
        let (t1, t2): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        assert!(b.take(&t1, 20, 0).is_ok());
        assert_eq!(b.take(&t1, 1, 0), Err(1));
        assert!(b.take(&t2, 20, 0).is_ok(), "another tenant has its own bucket");
        assert!(b.take(&t1, 5, 500).is_ok(), "half a second refills five");
        assert!(b.take(&t1, 1, 500).is_err());
    }
}
