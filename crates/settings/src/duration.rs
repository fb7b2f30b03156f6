use std::time::Duration;

/// A value that is not a humantime duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration; write e.g. 500ms, 5s, 2m, 1h or 7d")]
pub struct DurationError {
    value: String,
}

/// Durations as people write them: `500ms`, `5s`, `2m`, `1h 30m`, `7d`,
/// or `0`. One parser for every setting, so `7d` means the same everywhere.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    humantime::parse_duration(trimmed).map_err(|_| DurationError {
        value: trimmed.to_owned(),
    })
}

/// A comma-separated list of durations (`1s,5s,30s,2m`); empty entries are
/// skipped.
pub fn parse_durations(text: &str) -> Result<Vec<Duration>, DurationError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(parse_duration)
        .collect()
}

/// The inverse of [`parse_duration`], for logs and help text.
pub fn format_duration(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_units_and_zero() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 5s "), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("7days"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn a_bad_duration_says_how_to_write_one() {
        let e = parse_duration("10x").unwrap_err().to_string();
        assert!(e.contains("\"10x\"") && e.contains("5s"), "{e}");
        assert!(parse_duration("5").is_err(), "a bare number has no unit");
        assert_eq!(
            parse_durations("1s, 5s,,2m"),
            Ok(vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(120)
            ])
        );
        assert!(parse_durations("1s,soon").is_err());
    }
}
