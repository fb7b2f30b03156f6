//! Spreading periodic re-checks over their period.
//!
//! If every member were re-checked at the top of the period, the RPC
//! providers and Discord's rate limits would see one spike per period. Each
//! member instead gets a fixed offset inside the period, derived from a
//! stable key, so re-checks are spread evenly and a restart does not move
//! anyone's slot.

use std::time::Duration;

use sha2::{Digest, Sha256};

/// The member's fixed offset within `period`, in `[0, period)`.
///
/// `key` should identify the member within its community (e.g.
/// `"<community uuid>/<user id>"`), so the same user in two communities gets
/// independent slots. A zero period yields zero.
pub fn recheck_offset(key: &[u8], period: Duration) -> Duration {
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    if period_ms == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // Multiply-shift instead of `%`: maps the hash onto the period without
    // modulo bias.
    let scaled = (u128::from(u64::from_be_bytes(first)) * u128::from(period_ms)) >> 64;
    Duration::from_millis(u64::try_from(scaled).unwrap_or(0))
}

/// The first re-check time strictly after `after_ms` (Unix milliseconds) for
/// this member: the times `offset + k * period`.
pub fn next_recheck_ms(key: &[u8], period: Duration, after_ms: u64) -> u64 {
    let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
    if period_ms == 0 {
        return after_ms.saturating_add(1);
    }
    let offset = u64::try_from(recheck_offset(key, period).as_millis()).unwrap_or(0);
    // Slot k starts at k * period + offset; find the first one after `after_ms`.
    let k = if after_ms < offset {
        0
    } else {
        (after_ms - offset) / period_ms + 1
    };
    k.saturating_mul(period_ms).saturating_add(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn offset_is_deterministic_and_within_the_period() {
        for i in 0..1000 {
            let key = format!("community/{i}");
            let a = recheck_offset(key.as_bytes(), DAY);
            assert_eq!(a, recheck_offset(key.as_bytes(), DAY));
            assert!(a < DAY, "{a:?}");
        }
    }

    #[test]
    fn offsets_spread_evenly() {
        let period = Duration::from_secs(3600);
        let buckets = 10;
        let mut counts = vec![0u32; buckets];
        for i in 0..10_000 {
            let key = format!("c1/{i}");
            let off = recheck_offset(key.as_bytes(), period).as_millis();
            let bucket = (off * buckets as u128 / period.as_millis()) as usize;
            counts[bucket] += 1;
        }
        // 1,000 expected per bucket; the hash is fixed, so this is exact and
        // repeatable, with generous room for an uneven but fair spread.
        for (i, c) in counts.iter().enumerate() {
            assert!((850..=1150).contains(c), "bucket {i} has {c}: {counts:?}");
        }
    }

    #[test]
    fn same_user_in_two_communities_gets_different_slots() {
        let a = recheck_offset(b"community-a/42", DAY);
        let b = recheck_offset(b"community-b/42", DAY);
        assert_ne!(a, b);
    }

    #[test]
    fn next_recheck_is_after_and_on_the_members_slot() {
        let key = b"c/7";
        let period = Duration::from_secs(600);
        let offset = recheck_offset(key, period).as_millis() as u64;
        for after in [0, offset, offset + 1, 1_700_000_000_000, 1_700_000_600_000] {
            let next = next_recheck_ms(key, period, after);
            assert!(next > after, "{next} <= {after}");
            assert!(next - after <= 600_000, "more than one period ahead");
            assert_eq!(next % 600_000, offset % 600_000);
        }
    }

    #[test]
    fn zero_period_does_not_divide_by_zero() {
        assert_eq!(recheck_offset(b"x", Duration::ZERO), Duration::ZERO);
        assert_eq!(next_recheck_ms(b"x", Duration::ZERO, 5), 6);
    }
}
