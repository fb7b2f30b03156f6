use std::fmt;
use std::time::Duration;

/// How a setting is named in errors: the variable, then the flag that
/// overrides it, e.g. `WORKER_CONCURRENCY (--concurrency)`.
pub fn label(env: &str, flag: &str) -> String {
    format!("{env} (--{flag})")
}

/// One bad setting: which one, and what is wrong with it. The problem never
/// quotes a secret value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: String,
    pub problem: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.setting, self.problem)
    }
}

/// Every bad setting found, in the order checked; never empty. Displays as
/// one line so that an operator sees the whole list in one run instead of
/// fixing one variable per restart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(Vec<Problem>);

impl ConfigErrors {
    /// One problem on its own.
    pub fn single(setting: impl Into<String>, problem: impl fmt::Display) -> Self {
        Self(vec![Problem {
            setting: setting.into(),
            problem: problem.to_string(),
        }])
    }

    pub fn problems(&self) -> &[Problem] {
        &self.0
    }

    /// Renames every setting, e.g. to add the flag to a variable's name
    /// where a library only knows the variable.
    pub fn rename(mut self, mut f: impl FnMut(&str) -> String) -> Self {
        for p in &mut self.0 {
            p.setting = f(&p.setting);
        }
        self
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} configuration problems: ", many.len())?;
                for (i, p) in many.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// Collects problems while a configuration is validated, so that checking
/// goes on past the first bad value.
///
/// The checking helpers return `None` (and record the problem) on a bad
/// value; callers substitute a placeholder and carry on, and [`finish`]
/// refuses the whole configuration if anything was recorded, so no
/// placeholder escapes.
///
/// [`finish`]: Problems::finish
#[derive(Debug, Default)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, setting: impl Into<String>, problem: impl fmt::Display) {
        self.0.push(Problem {
            setting: setting.into(),
            problem: problem.to_string(),
        });
    }

    /// The value, or `None` after recording the error under `setting`.
    pub fn check<T, E: fmt::Display>(&mut self, setting: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.push(setting, e);
                None
            }
        }
    }

    /// Parses `text` as a humantime duration.
    pub fn duration(&mut self, setting: &str, text: &str) -> Option<Duration> {
        self.check(setting, crate::parse_duration(text))
    }

    /// Parses `text` with `FromStr`, naming the expected kind of value in
    /// the problem (the value itself is quoted: only use this for settings
    /// that are not secrets).
    pub fn parse<T: std::str::FromStr>(
        &mut self,
        setting: &str,
        text: &str,
        expected: &str,
    ) -> Option<T> {
        let trimmed = text.trim();
        let parsed = trimmed
            .parse()
            .map_err(|_| format!("{trimmed:?} is not {expected}"));
        self.check(setting, parsed)
    }

    /// Adds problems found by another validator (e.g. a library's).
    pub fn extend(&mut self, errors: ConfigErrors) {
        self.0.extend(errors.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Problems recorded so far.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok` when nothing was recorded; otherwise every problem at once.
    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_bad_settings_make_one_error_naming_each() {
        let mut p = Problems::new();
        let window: Option<usize> = p.parse("PUBLISH_WINDOW", "lots", "a number");
        let wait = p.duration("WORKER_ACK_WAIT (--ack-wait)", "soon");
        let fine = p.duration("SHUTDOWN_TIMEOUT", "10s");
        p.push("DISCORD_TOKEN", "not set");
        assert_eq!(window, None);
        assert_eq!(wait, None);
        assert_eq!(fine, Some(Duration::from_secs(10)));

        let e = p.finish().unwrap_err();
        assert_eq!(e.problems().len(), 3);
        let line = e.to_string();
        assert!(line.starts_with("3 configuration problems: "), "{line}");
        for name in [
            "PUBLISH_WINDOW: ",
            "WORKER_ACK_WAIT (--ack-wait): ",
            "DISCORD_TOKEN: not set",
        ] {
            assert!(line.contains(name), "{name} missing from {line}");
        }
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(!line.contains("SHUTDOWN_TIMEOUT"), "{line}");
    }

    #[test]
    fn one_problem_reads_as_setting_colon_problem() {
        let e = ConfigErrors::single("SHARDS", "is not a range");
        assert_eq!(e.to_string(), "SHARDS: is not a range");
        let e = e.rename(|s| label(s, &s.to_ascii_lowercase()));
        assert_eq!(e.to_string(), "SHARDS (--shards): is not a range");
    }

    #[test]
    fn nothing_recorded_is_ok_and_extend_merges() {
        assert!(Problems::new().finish().is_ok());
        let mut p = Problems::new();
        p.extend(ConfigErrors::single("A", "bad"));
        assert!(!p.is_empty());
        assert_eq!(p.finish().unwrap_err().problems()[0].setting, "A");
    }
}
