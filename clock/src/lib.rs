//! Where time and randomness come from: one clock and one seed per node,
//! handed to every component through its constructor (ADR 0019).
//!
//! **Time.** No server code reads the wall clock itself. A node makes one
//! [`SystemClock`] ([`system`]) and passes the [`SharedClock`] to the shards,
//! the edge, the HTTP front end, the federation and the token verifier; the
//! state machines (`state.rs`) are handed `now` as an argument by their
//! shells, which read it from that clock. Tests, and the deterministic
//! simulator, pass a [`ManualClock`] instead and move time themselves.
//!
//! **Randomness.** Every component that needs random numbers takes a `u64`
//! seed from its constructor (and, if it needs a stream, builds a seeded
//! generator from it, e.g. `rand::rngs::StdRng::seed_from_u64`). The node
//! draws one root [`Seed`] at start-up (or reads it from its config) and
//! derives each component's seed from it with [`Seed::derive`], so a run is
//! reproduced by its root seed. Cryptographic secrets (signing keys, API
//! keys) are not random numbers in this sense: they always come from the
//! operating system.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time, as milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch (0 before it): what JWT claims use.
    fn now_secs(&self) -> u64 {
        (self.now_ms().max(0) / 1_000) as u64
    }
}

/// The clock a node hands to its components.
pub type SharedClock = Arc<dyn Clock>;

impl fmt::Debug for dyn Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Clock").field("now_ms", &self.now_ms()).finish()
    }
}

/// The operating system's wall clock, as this process reads it: it never
/// goes back. When the system clock is stepped back (NTP), the time stands
/// still until the wall clock catches up. A step back and then forward
/// would otherwise stamp edge lease renewals with the lagging time and end
/// live leases once it jumps ahead again (found by the simulator; ADR 0021).
/// Forward steps pass through: shards judge those by their ticks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// The latest time this process's [`SystemClock`] returned.
static LATEST_MS: AtomicI64 = AtomicI64::new(0);

/// `wall`, or the latest time returned if the wall clock is behind it.
fn never_back(latest: &AtomicI64, wall: i64) -> i64 {
    latest.fetch_max(wall, Ordering::AcqRel).max(wall)
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        // A clock set before 1970 reads 0, as every reader here always did.
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        never_back(&LATEST_MS, wall)
    }
}

/// The real clock, shared: what a node runs on.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// The environment variable that moves a node's wall clock: a fault-testing
/// knob ([`from_env`]).
pub const OFFSET_ENV: &str = "IRIS_CLOCK_OFFSET_MS";

/// The largest offset [`OFFSET_ENV`] may name, either way: a day.
pub const MAX_OFFSET_MS: i64 = 86_400_000;

/// The system clock moved by a fixed offset: a node whose wall clock is
/// wrong by that much (an NTP fault) while its monotonic clock is not. The
/// chaos harness's `skew` fault starts a node on one (docs/chaos.md); it
/// skews what the node decides by (message times, leases, token expiry,
/// retention), not the wall clock that the libraries inside it read for
/// themselves (librdkafka's timestamps, Redis's TTLs are the server's).
#[derive(Debug, Clone, Copy)]
pub struct OffsetClock {
    /// Added to the system clock's reading, ms (negative: behind).
    pub offset_ms: i64,
}

impl Clock for OffsetClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms().saturating_add(self.offset_ms)
    }
}

/// The clock a node runs on: the system clock, or, when [`OFFSET_ENV`] is
/// set (a knob for fault tests, never for production), the system clock
/// moved by that many ms; with the offset, so that the node can say so.
/// An offset that is not a whole number of ms within a day either way is
/// an error that names the variable.
pub fn from_env() -> Result<(SharedClock, i64), String> {
    match std::env::var(OFFSET_ENV) {
        Err(std::env::VarError::NotPresent) => Ok((system(), 0)),
        Err(e) => Err(format!("{OFFSET_ENV}: {e}")),
        Ok(v) => {
            let offset_ms = parse_offset(&v)?;
            if offset_ms == 0 {
                return Ok((system(), 0));
            }
            Ok((Arc::new(OffsetClock { offset_ms }), offset_ms))
        }
    }
}

fn parse_offset(v: &str) -> Result<i64, String> {
    let offset_ms: i64 = v
        .trim()
        .parse()
        .map_err(|_| format!("{OFFSET_ENV}={v:?}: a whole number of milliseconds is expected (e.g. -90000)"))?;
    if offset_ms.abs() > MAX_OFFSET_MS {
        return Err(format!("{OFFSET_ENV}={offset_ms}: at most {MAX_OFFSET_MS} ms (a day) either way"));
    }
    Ok(offset_ms)
}

/// A clock that stands still until told to move: for tests and the
/// deterministic simulator. Share it as `Arc<ManualClock>` (which coerces
/// to a [`SharedClock`]) and keep a handle to move it.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        Self { now_ms: AtomicI64::new(start_ms) }
    }

    /// Sets the time. It may go backwards, as a wall clock may.
    pub fn set(&self, ms: i64) {
        self.now_ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the time on by `ms` (back, if negative); returns the new time.
    pub fn advance_ms(&self, ms: i64) -> i64 {
        self.now_ms.fetch_add(ms, Ordering::SeqCst) + ms
    }

    /// Moves the time on by `by`; returns the new time.
    pub fn advance(&self, by: Duration) -> i64 {
        self.advance_ms(by.as_millis().min(i64::MAX as u128) as i64)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// A node's root seed: every random choice it makes is derived from it.
///
/// A seed is not a secret and must never key anything secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seed(u64);

impl Seed {
    /// The root seed `root`.
    pub const fn new(root: u64) -> Self {
        Self(root)
    }

    /// A node's root seed: the configured one (`seed` in the config, for
    /// reproducing a run), else `drawn` (random bits) cut to 63 bits, so
    /// that it can be written back into a config (TOML integers are i64).
    pub const fn configured_or_drawn(configured: Option<u64>, drawn: u64) -> Self {
        match configured {
            Some(s) => Self(s),
            None => Self(drawn >> 1),
        }
    }

    /// The root value (log it: it reproduces the run).
    pub const fn root(self) -> u64 {
        self.0
    }

    /// The seed of the component named `label`. The same root and label
    /// give the same value on every platform and in every version, and
    /// different labels give unrelated values. (Changing this function
    /// would make every recorded seed reproduce something else: don't.)
    pub fn derive(self, label: &str) -> u64 {
        // FNV-1a over the label, then SplitMix64's finaliser over the mix.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in label.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        splitmix64(self.0 ^ splitmix64(h))
    }

    /// A root for a part of the system (a node, a region) whose own
    /// components then derive from it.
    pub fn child(self, label: &str) -> Seed {
        Seed(self.derive(label))
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// SplitMix64's step: spreads the bits of `x` (spread, not secret).
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_seed_is_the_configured_one_or_63_drawn_bits() {
        assert_eq!(Seed::configured_or_drawn(Some(u64::MAX), 5).root(), u64::MAX, "as configured");
        assert_eq!(Seed::configured_or_drawn(None, u64::MAX).root(), i64::MAX as u64, "fits a TOML integer");
    }

    #[test]
    fn the_system_clock_never_goes_back() {
        let latest = AtomicI64::new(0);
        assert_eq!(never_back(&latest, 1_000), 1_000);
        // Stepped back: the time stands still until the wall catches up.
        assert_eq!(never_back(&latest, 875), 1_000);
        assert_eq!(never_back(&latest, 990), 1_000);
        assert_eq!(never_back(&latest, 1_004), 1_004);
        // Stepped forward: passes through.
        assert_eq!(never_back(&latest, 5_000), 5_000);
        let (a, b) = (SystemClock.now_ms(), SystemClock.now_ms());
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = Arc::new(ManualClock::new(1_000));
        let shared: SharedClock = clock.clone();
        assert_eq!(shared.now_ms(), 1_000);
        assert_eq!(shared.now_ms(), 1_000, "no time passes by itself");
        assert_eq!(clock.advance_ms(250), 1_250);
        assert_eq!(clock.advance(Duration::from_secs(2)), 3_250);
        assert_eq!(shared.now_ms(), 3_250);
        assert_eq!(shared.now_secs(), 3);
        clock.set(500);
        assert_eq!(shared.now_ms(), 500, "a wall clock may step back");
        clock.set(-5);
        assert_eq!(shared.now_secs(), 0, "seconds before the epoch read 0");
    }

    #[test]
    fn system_clock_reads_the_wall_clock() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let now = system().now_ms();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        assert!(before <= now && now <= after, "{before} <= {now} <= {after}");
        let secs = SystemClock.now_secs() as i64;
        assert!((secs - now / 1_000).abs() <= 1);
    }

    #[test]
    fn an_offset_clock_is_the_system_clock_moved() {
        for offset_ms in [-120_000, 90_000] {
            let before = SystemClock.now_ms();
            let now = OffsetClock { offset_ms }.now_ms();
            let after = SystemClock.now_ms();
            assert!(before + offset_ms <= now && now <= after + offset_ms, "{before} {now} {after} {offset_ms}");
        }
    }

    #[test]
    fn offsets_parse_as_whole_ms_within_a_day() {
        assert_eq!(parse_offset("-90000"), Ok(-90_000));
        assert_eq!(parse_offset(" 1500 "), Ok(1_500));
        assert_eq!(parse_offset("86400000"), Ok(MAX_OFFSET_MS));
        let e = parse_offset("86400001").unwrap_err();
        assert!(e.contains(OFFSET_ENV) && e.contains("a day"), "{e}");
        let e = parse_offset("90s").unwrap_err();
        assert!(e.contains(OFFSET_ENV) && e.contains("milliseconds"), "{e}");
    }

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        let root = Seed::new(42);
        assert_eq!(root.derive("core.msg_ids"), Seed::new(42).derive("core.msg_ids"));
        assert_ne!(root.derive("core.msg_ids"), root.derive("edge.session_ids"));
        assert_ne!(root.derive("core.msg_ids"), Seed::new(43).derive("core.msg_ids"));
        assert_ne!(root.child("node-1").derive("x"), root.child("node-2").derive("x"));
        // Pinned: a recorded seed must reproduce the same run in every version.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf, "SplitMix64's published first output");
        assert_eq!(Seed::new(42).derive("core.msg_ids"), 0x8ec7_3a61_ae72_8ff2);
    }

    #[test]
    fn a_clock_is_debug_printable_behind_its_trait() {
        let clock: SharedClock = Arc::new(ManualClock::new(7));
        assert_eq!(format!("{clock:?}"), "Clock { now_ms: 7 }");
    }
}
