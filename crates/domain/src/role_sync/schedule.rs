//! When each member is re-checked.

use std::time::Duration;

use chrono::{DateTime, Utc};
use store::TenantId;
use wire::UserId;

/// When a member's next periodic re-check is due: spread over the period by
/// a hash of community and user, so members do not all come due at once.
pub fn next_check(
    tenant: TenantId,
    user: UserId,
    period: Duration,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let key = format!("{tenant}/{user}");
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let next = eligibility::next_recheck_ms(key.as_bytes(), period, now_ms);
    DateTime::from_timestamp_millis(i64::try_from(next).unwrap_or(i64::MAX)).unwrap_or(now + period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_check_falls_within_one_period_and_differs_by_member() {
        let tenant = TenantId::from(uuid::Uuid::from_u128(7));
        let period = Duration::from_secs(6 * 3600);
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = next_check(tenant, UserId::new(1).unwrap(), period, now);
        let b = next_check(tenant, UserId::new(2).unwrap(), period, now);
        for next in [a, b] {
            assert!(next > now && next <= now + period, "{next}");
        }
        assert_ne!(a, b, "members are spread over the period");
    }
}
