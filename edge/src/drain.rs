//! How a draining edge spreads the closing of its sessions over time, so
//! that their clients reconnect elsewhere a few at a time rather than in
//! one storm (`listen.drain_spread_ms`, docs/operations.md#stopping).

use std::time::Duration;

/// How often a draining edge closes the next few sessions.
pub const STEP: Duration = Duration::from_millis(20);

/// How many of `total` sessions are to be closed once `elapsed` of a
/// `spread` has passed: evenly over the spread, the first at once, all of
/// them by its end (and all at once for a zero spread).
pub fn closes_due(total: usize, elapsed: Duration, spread: Duration) -> usize {
    if spread.is_zero() || elapsed >= spread {
        return total;
    }
    // The first at once, the last at the end: `total - 1` intervals.
    let intervals = total.saturating_sub(1) as u128;
    let due = 1 + intervals * elapsed.as_micros() / spread.as_micros();
    (due as usize).min(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn a_zero_spread_closes_everything_at_once() {
        assert_eq!(closes_due(1_000, Duration::ZERO, Duration::ZERO), 1_000);
        assert_eq!(closes_due(0, Duration::ZERO, Duration::ZERO), 0);
    }

    #[test]
    fn sessions_close_evenly_over_the_spread_and_all_by_its_end() {
        let spread = MS(10_000);
        assert_eq!(closes_due(101, MS(0), spread), 1, "the first at once");
        assert_eq!(closes_due(101, MS(2_500), spread), 26);
        assert_eq!(closes_due(101, MS(5_000), spread), 51);
        assert_eq!(closes_due(101, MS(9_999), spread), 100);
        assert_eq!(closes_due(101, MS(10_000), spread), 101);
        assert_eq!(closes_due(101, MS(60_000), spread), 101);
        // Never decreasing, never above the total.
        let mut last = 0;
        for ms in (0..=10_000).step_by(7) {
            let due = closes_due(37, MS(ms), spread);
            assert!(due >= last && due <= 37, "{due} after {last} at {ms} ms");
            last = due;
        }
    }

    #[test]
    fn nothing_to_close_is_nothing_due() {
        assert_eq!(closes_due(0, MS(5), MS(100)), 0);
        assert_eq!(closes_due(1, MS(5), MS(100)), 1);
    }
}
