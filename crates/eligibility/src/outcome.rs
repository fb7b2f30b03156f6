//! Three-valued outcomes.
//!
//! "Unknown" exists so that a provider failure never reads as "not
//! eligible": the worker keeps a member's roles on Unknown and re-checks
//! later, and removes a role only on a definite NotEligible.

use std::fmt;

use uuid::Uuid;

use crate::chain::rpc::ChainError;
use crate::rule::CustomOp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Eligible,
    NotEligible,
    Unknown { reason: UnknownReason },
}

impl Outcome {
    pub fn is_eligible(&self) -> bool {
        matches!(self, Outcome::Eligible)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }

    /// A stable name for logs, metrics and audit metadata.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Eligible => "eligible",
            Outcome::NotEligible => "not_eligible",
            Outcome::Unknown { .. } => "unknown",
        }
    }

    /// `Some(true)` / `Some(false)` when decided, `None` when unknown.
    pub fn decided(&self) -> Option<bool> {
        match self {
            Outcome::Eligible => Some(true),
            Outcome::NotEligible => Some(false),
            Outcome::Unknown { .. } => None,
        }
    }
}

/// Why an outcome could not be decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnknownReason {
    /// A chain read failed: outage, timeout, open breaker, a node error, or
    /// a chain this deployment does not configure.
    Chain(ChainError),
    /// A custom rule refers to a rule that is not in the community's rule set.
    MissingRule { missing: Uuid },
    /// A custom rule depends on itself, through the rules listed (first and
    /// last are the same rule).
    Cycle { path: Vec<Uuid> },
    /// A custom rule's answer hinges on these sub-rules, which are unknown.
    Undecided { unknown: Vec<Uuid> },
}

impl fmt::Display for UnknownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnknownReason::Chain(e) => write!(f, "{e}"),
            UnknownReason::MissingRule { missing } => {
                write!(
                    f,
                    "refers to rule {missing}, which does not exist in this community"
                )
            }
            UnknownReason::Cycle { path } => {
                let path: Vec<String> = path.iter().map(Uuid::to_string).collect();
                write!(
                    f,
                    "rules refer to each other in a cycle: {}",
                    path.join(" -> ")
                )
            }
            UnknownReason::Undecided { unknown } => {
                let ids: Vec<String> = unknown.iter().map(Uuid::to_string).collect();
                write!(f, "depends on undecided rules {}", ids.join(", "))
            }
        }
    }
}

/// Combines sub-rule outcomes with Kleene logic: an unknown sub-rule makes
/// the combination unknown only when its value could change the answer.
/// Returns the outcome and how many sub-rules were met.
pub fn combine(op: CustomOp, parts: &[(Uuid, &Outcome)]) -> (Outcome, usize) {
    let met = parts.iter().filter(|(_, o)| o.is_eligible()).count();
    let unknown: Vec<Uuid> = parts
        .iter()
        .filter(|(_, o)| o.is_unknown())
        .map(|(id, _)| *id)
        .collect();
    let total = parts.len();
    let needed = match op {
        CustomOp::All => total,
        CustomOp::Any => 1,
        CustomOp::AtLeast(n) => n,
    };
    let outcome = if met >= needed {
        Outcome::Eligible
    } else if met + unknown.len() < needed {
        Outcome::NotEligible
    } else {
        Outcome::Unknown {
            reason: UnknownReason::Undecided { unknown },
        }
    };
    (outcome, met)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown() -> Outcome {
        Outcome::Unknown {
            reason: UnknownReason::Chain(ChainError::Unconfigured { chain: "x".into() }),
        }
    }

    fn run(op: CustomOp, outcomes: &[Outcome]) -> Option<bool> {
        let parts: Vec<(Uuid, &Outcome)> = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (Uuid::from_u128(i as u128), o))
            .collect();
        combine(op, &parts).0.decided()
    }

    use Outcome::{Eligible as E, NotEligible as N};

    #[test]
    fn all_is_false_if_any_part_is_false_even_with_unknowns() {
        assert_eq!(run(CustomOp::All, &[E, E]), Some(true));
        assert_eq!(run(CustomOp::All, &[E, N]), Some(false));
        assert_eq!(run(CustomOp::All, &[unknown(), N]), Some(false));
        assert_eq!(run(CustomOp::All, &[unknown(), E]), None);
    }

    #[test]
    fn any_is_true_if_any_part_is_true_even_with_unknowns() {
        assert_eq!(run(CustomOp::Any, &[N, N]), Some(false));
        assert_eq!(run(CustomOp::Any, &[unknown(), E]), Some(true));
        assert_eq!(run(CustomOp::Any, &[unknown(), N]), None);
    }

    #[test]
    fn at_least_counts_unknowns_as_maybe() {
        let op = CustomOp::AtLeast(2);
        assert_eq!(run(op, &[E, E, unknown()]), Some(true));
        assert_eq!(run(op, &[E, N, N]), Some(false));
        assert_eq!(run(op, &[E, unknown(), N]), None);
        assert_eq!(run(op, &[N, unknown(), N]), Some(false));
    }

    #[test]
    fn undecided_names_the_unknown_parts() {
        let u = unknown();
        let parts = [(Uuid::from_u128(7), &u), (Uuid::from_u128(8), &E)];
        match combine(CustomOp::All, &parts).0 {
            Outcome::Unknown {
                reason: UnknownReason::Undecided { unknown },
            } => assert_eq!(unknown, vec![Uuid::from_u128(7)]),
            other => panic!("expected undecided, got {other:?}"),
        }
    }
}
