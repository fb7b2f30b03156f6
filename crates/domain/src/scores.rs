//! A community's own scores for its members, set one at a time or imported
//! in bulk, so `score_threshold` rules and `tier_reached` badges follow the
//! community's scoring.
//!
//! Setting a score is idempotent: a member already at the given score is
//! not written, not audited and not re-checked, so re-running an import
//! changes nothing.

use std::collections::BTreeMap;

use serde_json::json;
use store::repo::ScoreChange;
use store::{Store, StoreError};
use wire::UserId;

use crate::recheck::{community_recheck, RecheckError, Rechecks};
use crate::{Actor, AuditAction, CommunityRef};

/// The most rows one import may carry; a bigger file is split by the caller.
pub const MAX_IMPORT_ROWS: usize = 50_000;

/// What a score import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScoreImport {
    pub changed: Vec<ScoreChange>,
    /// Rows whose member already had that score.
    pub unchanged: usize,
    /// User ids with no profile in this community (nothing was stored for
    /// them).
    pub unknown: Vec<UserId>,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// Bad input: every bad line, not just the first.
    #[error("the import has {} bad line(s); nothing was stored", .0.len())]
    Invalid(Vec<LineError>),
    #[error("an import may hold at most {MAX_IMPORT_ROWS} rows, this one has {0}")]
    TooMany(usize),
    #[error("the scores were saved, but {0}; members are re-checked by the periodic scan instead")]
    Recheck(#[source] RecheckError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One line of an import that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub problem: String,
}

/// The formats [`parse`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportFormat {
    /// `{"user_id": "123", "score": 42}` per line (the id as a string or a
    /// number).
    JsonLines,
    /// `user_id,score` per line, with an optional header line.
    Csv,
}

/// Reads an import, naming every bad line. A user listed twice keeps the
/// last score given, as a file edited by appending would expect.
pub fn parse(text: &str, format: ImportFormat) -> Result<Vec<(UserId, i64)>, ScoreError> {
    let mut rows = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let parsed = match format {
            ImportFormat::JsonLines => parse_json_line(line),
            ImportFormat::Csv if line_no == 1 && is_csv_header(line) => continue,
            ImportFormat::Csv => parse_csv_line(line),
        };
        match parsed {
            Ok((user, score)) => {
                rows.insert(user, score);
            }
            Err(problem) => errors.push(LineError {
                line: line_no,
                problem,
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ScoreError::Invalid(errors));
    }
    if rows.len() > MAX_IMPORT_ROWS {
        return Err(ScoreError::TooMany(rows.len()));
    }
    Ok(rows.into_iter().collect())
}

fn is_csv_header(line: &str) -> bool {
    line.split(',')
        .next()
        .is_some_and(|first| first.trim().parse::<u64>().is_err())
}

fn parse_csv_line(line: &str) -> Result<(UserId, i64), String> {
    let mut fields = line.split(',').map(str::trim);
    let (Some(user), Some(score), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected two fields: user_id,score".to_owned());
    };
    Ok((parse_user(user)?, parse_score(score)?))
}

fn parse_json_line(line: &str) -> Result<(UserId, i64), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let user = match value.get("user_id") {
        Some(serde_json::Value::String(s)) => parse_user(s)?,
        Some(serde_json::Value::Number(n)) => parse_user(&n.to_string())?,
        _ => return Err("user_id: expected a Discord user id".to_owned()),
    };
    let score = value
        .get("score")
        .and_then(serde_json::Value::as_i64)
        .ok_or("score: expected an integer")?;
    Ok((user, score))
}

fn parse_user(raw: &str) -> Result<UserId, String> {
    raw.parse::<UserId>()
        .map_err(|_| format!("user_id: {raw:?} is not a Discord user id"))
}

fn parse_score(raw: &str) -> Result<i64, String> {
    raw.parse::<i64>()
        .map_err(|_| format!("score: {raw:?} is not an integer"))
}

/// Sets the given scores, audits each change and, if any score changed,
/// asks for a re-check of the community (score rules may now decide
/// differently).
pub async fn set(
    store: &Store,
    rechecks: &impl Rechecks,
    community: CommunityRef,
    actor: &Actor,
    scores: &[(UserId, i64)],
) -> Result<ScoreImport, ScoreError> {
    if scores.len() > MAX_IMPORT_ROWS {
        return Err(ScoreError::TooMany(scores.len()));
    }
    let users: Vec<UserId> = scores.iter().map(|(u, _)| *u).collect();
    let tx = store.begin(community.tenant).await?;
    let known = tx.profiles().existing(&users).await?;
    let changed = tx.profiles().set_scores(scores).await?;
    let entries: Vec<_> = changed
        .iter()
        .map(|c| {
            actor
                .entry(AuditAction::ScoreChanged)
                .target("member", c.user.to_string())
                .metadata(json!({ "from": c.old, "to": c.new }))
        })
        .collect();
    tx.audit().append_many(&entries).await?;
    tx.commit().await?;
    let unknown: Vec<UserId> = users
        .iter()
        .filter(|u| !known.contains(u))
        .copied()
        .collect();
    let import = ScoreImport {
        unchanged: scores.len() - changed.len() - unknown.len(),
        changed,
        unknown,
    };
    if !import.changed.is_empty() {
        let check = community_recheck(
            community.guild,
            format!("scores:{}", uuid::Uuid::new_v4()),
            "scores.changed",
        );
        rechecks
            .request(&check)
            .await
            .map_err(ScoreError::Recheck)?;
    }
    Ok(import)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn csv_with_or_without_header_and_the_last_row_wins() {
        let with = parse("user_id,score\n10,5\n11, 7\n10,9\n", ImportFormat::Csv).unwrap();
        assert_eq!(with, vec![(user(10), 9), (user(11), 7)]);
        let without = parse("10,5\n\n11,-3", ImportFormat::Csv).unwrap();
        assert_eq!(without, vec![(user(10), 5), (user(11), -3)]);
    }

    #[test]
    fn json_lines_take_ids_as_strings_or_numbers() {
        let rows = parse(
            "{\"user_id\": \"10\", \"score\": 5}\n{\"user_id\": 11, \"score\": 0}",
            ImportFormat::JsonLines,
        )
        .unwrap();
        assert_eq!(rows, vec![(user(10), 5), (user(11), 0)]);
    }

    #[test]
    fn every_bad_line_is_named() {
        let err = parse("user,score\n10,x\n0,5\n12,3,4\n13,1", ImportFormat::Csv).unwrap_err();
        let ScoreError::Invalid(lines) = err else {
            panic!("expected invalid lines, got {err:?}");
        };
        let numbers: Vec<usize> = lines.iter().map(|l| l.line).collect();
        assert_eq!(numbers, vec![2, 3, 4]);
        assert!(lines[0].problem.contains("score"), "{:?}", lines[0]);
        assert!(lines[1].problem.contains("user_id"), "{:?}", lines[1]);
    }
}
