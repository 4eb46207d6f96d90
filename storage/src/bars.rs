//! What deleting a tenant under running shards decides (ADR 0030), with
//! no I/O: whether one more tenant may be barred, which shards have not yet
//! confirmed a bar, and whether the bar the deletion set still stands. The
//! command (`iris tenant delete`, `node/src/tenants.rs`) reads the store,
//! waits and deletes.

use crate::Bar;

/// Most tenants barred at once in a store: every shard reads the whole list
/// every few seconds and confirms each bar when it starts. A deletion that
/// would bar one more is refused until bars are lifted (`iris tenant allow`).
pub const MAX_BARS: usize = 1_000;

/// Whether `tenant` may be barred with `bars` in place: always if it is
/// barred already (a deletion run again), else while fewer than
/// [`MAX_BARS`] are. The error says what to do.
pub fn may_bar(bars: &[Bar], tenant: &str) -> Result<(), String> {
    if bars.len() >= MAX_BARS && !bars.iter().any(|b| &*b.tenant == tenant) {
        return Err(format!(
            "{} tenants are barred already (at most {MAX_BARS}): lift the bars of tenants deleted long ago with \
             `iris tenant allow` first",
            bars.len()
        ));
    }
    Ok(())
}

/// The shards of a region of `shards` shards that have not confirmed the
/// bar, in order.
pub fn unconfirmed(shards: u32, confirmed: &[u32]) -> Vec<u32> {
    (0..shards).filter(|s| !confirmed.contains(s)).collect()
}

/// Whether the bar `id` the deletion set on `tenant` still stands: an
/// `iris tenant allow` (or another deletion's bar) meanwhile lets shards
/// that had confirmed serve the tenant again, and then nothing may be
/// deleted.
pub fn bar_stands(bars: &[Bar], tenant: &str, id: u64) -> bool {
    bars.iter().any(|b| &*b.tenant == tenant && b.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(tenant: &str, id: u64) -> Bar {
        Bar { tenant: tenant.into(), id }
    }

    #[test]
    fn a_tenant_may_be_barred_below_the_bound_or_again() {
        let full: Vec<Bar> = (0..MAX_BARS as u64).map(|i| bar(&format!("t{i}"), i)).collect();
        assert!(may_bar(&full[..MAX_BARS - 1], "new").is_ok());
        assert!(may_bar(&full, "new").unwrap_err().contains("iris tenant allow"));
        assert!(may_bar(&full, "t7").is_ok(), "a deletion run again bars nothing new");
    }

    #[test]
    fn the_shards_that_have_not_confirmed_are_named_in_order() {
        assert_eq!(unconfirmed(4, &[2, 0]), vec![1, 3]);
        assert_eq!(unconfirmed(2, &[1, 0, 5]), Vec::<u32>::new());
    }

    #[test]
    fn only_the_bar_the_deletion_set_lets_it_delete() {
        let bars = [bar("acme", 7), bar("other", 8)];
        assert!(bar_stands(&bars, "acme", 7));
        assert!(!bar_stands(&bars, "acme", 6), "replaced by another deletion's bar");
        assert!(!bar_stands(&bars[1..], "acme", 7), "lifted");
    }
}
