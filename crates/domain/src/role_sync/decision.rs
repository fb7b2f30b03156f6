//! What one rule's outcome means for one member's role: the whole policy of
//! role sync in one pure function, so every case is a row in a table test.
//!
//! * An undecided outcome (the chain could not answer) changes nothing and
//!   records nothing: a provider outage strips no one.
//! * Eligible: grant the role if it is missing.
//! * Not eligible while holding the role: start a grace period, and remove
//!   the role only once the member has failed for the whole of it — a
//!   balance that dips for an hour does not cost a role. The exception is a
//!   changed wallet: grace rides out a flapping balance, it does not keep
//!   what an old wallet earned, so the role goes at once.

use chrono::{DateTime, Duration, Utc};
use eligibility::Outcome;

/// The last decision recorded for this member and rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Previous {
    /// `None` when no decision was ever reached.
    pub eligible: Option<bool>,
    /// Since when the member has been failing the rule, if they were.
    pub failing_since: Option<DateTime<Utc>>,
}

/// Everything the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub outcome: &'a Outcome,
    /// Whether the member holds the rule's role in Discord now.
    pub holds_role: bool,
    pub previous: Option<Previous>,
    /// The member's wallet differs from the one the previous decision was
    /// made with.
    pub wallet_changed: bool,
    pub grace: Duration,
    pub now: DateTime<Utc>,
}

/// What to do, and what to record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Undecided: change nothing, record nothing.
    Nothing,
    /// Eligible and missing the role: add it.
    Grant,
    /// No change to the role; record the outcome (and, for a member failing
    /// without the role or within a running grace period, since when).
    Keep {
        eligible: bool,
        failing_since: Option<DateTime<Utc>>,
    },
    /// Just started failing while holding the role: keep it for the grace
    /// period, counted from `since`.
    StartGrace { since: DateTime<Utc> },
    /// Failing for the whole grace period (or with a changed wallet): take
    /// the role away.
    Remove { failing_since: DateTime<Utc> },
}

impl Decision {
    /// The role change to make: `Some(true)` add, `Some(false)` remove.
    pub fn role_change(self) -> Option<bool> {
        match self {
            Decision::Grant => Some(true),
            Decision::Remove { .. } => Some(false),
            Decision::Nothing | Decision::Keep { .. } | Decision::StartGrace { .. } => None,
        }
    }

    /// What to record as the rule's last decision, `(eligible,
    /// failing_since)`; `None` for nothing.
    pub fn record(self) -> Option<(bool, Option<DateTime<Utc>>)> {
        match self {
            Decision::Nothing => None,
            Decision::Grant => Some((true, None)),
            Decision::Keep {
                eligible,
                failing_since,
            } => Some((eligible, failing_since)),
            Decision::StartGrace { since } => Some((false, Some(since))),
            Decision::Remove { failing_since } => Some((false, Some(failing_since))),
        }
    }
}

/// Decides one rule for one member.
pub fn decide(inputs: Inputs<'_>) -> Decision {
    let Inputs {
        outcome,
        holds_role,
        previous,
        wallet_changed,
        grace,
        now,
    } = inputs;
    match outcome {
        Outcome::Unknown { .. } => Decision::Nothing,
        Outcome::Eligible if holds_role => Decision::Keep {
            eligible: true,
            failing_since: None,
        },
        Outcome::Eligible => Decision::Grant,
        Outcome::NotEligible => {
            let failing_since = previous
                .filter(|p| p.eligible == Some(false))
                .and_then(|p| p.failing_since);
            let since = failing_since.unwrap_or(now);
            if !holds_role {
                return Decision::Keep {
                    eligible: false,
                    failing_since: Some(since),
                };
            }
            if wallet_changed || now - since >= grace {
                return Decision::Remove {
                    failing_since: since,
                };
            }
            match failing_since {
                Some(since) => Decision::Keep {
                    eligible: false,
                    failing_since: Some(since),
                },
                None => Decision::StartGrace { since: now },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use eligibility::UnknownReason;

    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    const ELIGIBLE: Outcome = Outcome::Eligible;
    const NOT: Outcome = Outcome::NotEligible;

    fn failing(since: i64) -> Option<Previous> {
        Some(Previous {
            eligible: Some(false),
            failing_since: Some(at(since)),
        })
    }

    fn passing() -> Option<Previous> {
        Some(Previous {
            eligible: Some(true),
            failing_since: None,
        })
    }

    #[test]
    fn every_row_of_the_policy() {
        let unknown = Outcome::Unknown {
            reason: UnknownReason::MissingRule {
                missing: uuid::Uuid::nil(),
            },
        };
        let grace = Duration::minutes(60);
        let now = at(100);
        // (case, outcome, holds the role, previous, wallet changed, expected)
        type Row<'a> = (&'a str, &'a Outcome, bool, Option<Previous>, bool, Decision);
        let rows: Vec<Row> = vec![
            (
                "unknown, holding: nothing",
                &unknown,
                true,
                failing(0),
                false,
                Decision::Nothing,
            ),
            (
                "unknown, not holding: nothing",
                &unknown,
                false,
                None,
                false,
                Decision::Nothing,
            ),
            (
                "unknown with a changed wallet: still nothing",
                &unknown,
                true,
                passing(),
                true,
                Decision::Nothing,
            ),
            (
                "eligible, missing the role: grant",
                &ELIGIBLE,
                false,
                None,
                false,
                Decision::Grant,
            ),
            (
                "eligible after failing, missing: grant",
                &ELIGIBLE,
                false,
                failing(90),
                false,
                Decision::Grant,
            ),
            (
                "eligible, holding: keep, and forget any failure",
                &ELIGIBLE,
                true,
                failing(90),
                false,
                Decision::Keep {
                    eligible: true,
                    failing_since: None,
                },
            ),
            (
                "first failure while holding: start grace now",
                &NOT,
                true,
                passing(),
                false,
                Decision::StartGrace { since: now },
            ),
            (
                "first failure ever while holding: start grace now",
                &NOT,
                true,
                None,
                false,
                Decision::StartGrace { since: now },
            ),
            (
                "failing within grace: keep, clock unchanged",
                &NOT,
                true,
                failing(50),
                false,
                Decision::Keep {
                    eligible: false,
                    failing_since: Some(at(50)),
                },
            ),
            (
                "failing for exactly the grace period: remove",
                &NOT,
                true,
                failing(40),
                false,
                Decision::Remove {
                    failing_since: at(40),
                },
            ),
            (
                "failing past the grace period: remove",
                &NOT,
                true,
                failing(0),
                false,
                Decision::Remove {
                    failing_since: at(0),
                },
            ),
            (
                "wallet changed since a passing decision: remove, no grace",
                &NOT,
                true,
                passing(),
                true,
                Decision::Remove { failing_since: now },
            ),
            (
                "wallet changed within a running grace: remove",
                &NOT,
                true,
                failing(90),
                true,
                Decision::Remove {
                    failing_since: at(90),
                },
            ),
            (
                "failing without the role: record since when",
                &NOT,
                false,
                None,
                false,
                Decision::Keep {
                    eligible: false,
                    failing_since: Some(now),
                },
            ),
            (
                "still failing without the role: the clock keeps running",
                &NOT,
                false,
                failing(10),
                false,
                Decision::Keep {
                    eligible: false,
                    failing_since: Some(at(10)),
                },
            ),
            (
                "a previous decision of 'unknown' starts a fresh clock",
                &NOT,
                true,
                Some(Previous {
                    eligible: None,
                    failing_since: Some(at(0)),
                }),
                false,
                Decision::StartGrace { since: now },
            ),
        ];
        for (case, outcome, holds_role, previous, wallet_changed, expected) in rows {
            let got = decide(Inputs {
                outcome,
                holds_role,
                previous,
                wallet_changed,
                grace,
                now,
            });
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn decisions_say_what_to_change_and_record() {
        let now = at(0);
        assert_eq!(Decision::Nothing.role_change(), None);
        assert_eq!(Decision::Nothing.record(), None);
        assert_eq!(Decision::Grant.role_change(), Some(true));
        assert_eq!(Decision::Grant.record(), Some((true, None)));
        let remove = Decision::Remove { failing_since: now };
        assert_eq!(remove.role_change(), Some(false));
        assert_eq!(remove.record(), Some((false, Some(now))));
        let grace = Decision::StartGrace { since: now };
        assert_eq!(grace.role_change(), None);
        assert_eq!(grace.record(), Some((false, Some(now))));
    }

    #[test]
    fn a_zero_grace_period_removes_on_the_first_failure() {
        let d = decide(Inputs {
            outcome: &NOT,
            holds_role: true,
            previous: passing(),
            wallet_changed: false,
            grace: Duration::zero(),
            now: at(0),
        });
        assert_eq!(
            d,
            Decision::Remove {
                failing_since: at(0)
            }
        );
    }
}
