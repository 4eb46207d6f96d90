//! The service API's request bodies and their validation
//! (`http/src/validate.rs`), from any bytes: parsing and checking never
//! panic, and what passes is within the documented limits.
#![no_main]

use iris_http::validate::{self, Batch, ContactList, IngestLimits, Policy, Verified};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else { return };
    match which % 4 {
        0 => {
            if let Ok(list) = serde_json::from_slice::<ContactList>(body)
                && let Ok(specs) = validate::contact_list(list, 100)
            {
                assert!(specs.len() <= 100);
                let mut names: Vec<&str> = specs.iter().map(|s| s.user.as_str()).collect();
                names.sort_unstable();
                let before = names.len();
                names.dedup();
                assert_eq!(names.len(), before, "no contact twice");
            }
        }
        1 => {
            if let Ok(v) = serde_json::from_slice::<Verified>(body) {
                let _ = validate::verified(&v);
            }
        }
        2 => {
            let _ = serde_json::from_slice::<Policy>(body);
        }
        _ => {
            let limits = IngestLimits {
                max_batch: 1_000,
                max_event_bytes: 4_096,
                max_depth: 8,
                max_age_ms: 30 * 24 * 3_600_000,
                max_skew_ms: 3_600_000,
            };
            if let Ok(batch) = serde_json::from_slice::<Batch>(body) {
                for (i, v) in batch.events.iter().enumerate() {
                    if let Ok(routed) = validate::event(i as u32, v, NOW, &limits) {
                        let ts = routed.event.ts;
                        assert!(ts >= NOW - limits.max_age_ms && ts <= NOW + limits.max_skew_ms, "ts {ts}");
                    }
                }
            }
        }
    }
});
