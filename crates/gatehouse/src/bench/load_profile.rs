use std::time::Duration;

/// One step of a load profile: move linearly to `target` virtual users over
/// `duration` (a hold is a stage whose target equals the previous one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    pub duration: Duration,
    pub target: u32,
}

/// A sequence of stages starting from zero virtual users, in the manner of
/// k6's `stages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadProfile {
    pub name: &'static str,
    pub stages: Vec<Stage>,
}

const fn stage(secs: u64, target: u32) -> Stage {
    Stage {
        duration: Duration::from_secs(secs),
        target,
    }
}

impl LoadProfile {
    /// Ramp 0→50 over 30 s, hold 1 min, ramp to 100 over 30 s, hold 1 min,
    /// ramp down; then spike to 200 in 10 s, hold 30 s, drop.
    pub fn full() -> Self {
        LoadProfile {
            name: "full",
            stages: vec![
                stage(30, 50),
                stage(60, 50),
                stage(30, 100),
                stage(60, 100),
                stage(30, 0),
                stage(10, 200),
                stage(30, 200),
                stage(10, 0),
            ],
        }
    }

    /// The same shape and peaks, compressed into about 20 seconds.
    pub fn quick() -> Self {
        let full = Self::full();
        let factor = 20.0 / full.total().as_secs_f64();
        LoadProfile {
            name: "quick",
            stages: full
                .stages
                .iter()
                .map(|s| Stage {
                    duration: s.duration.mul_f64(factor),
                    target: s.target,
                })
                .collect(),
        }
    }

    /// The same shape with every target scaled so the peak is `peak`
    /// (to find the load a given machine sustains within the thresholds).
    pub fn with_peak(mut self, peak: u32) -> Self {
        let current = self.peak().max(1);
        for s in &mut self.stages {
            s.target = ((u64::from(s.target) * u64::from(peak)) / u64::from(current)) as u32;
        }
        self
    }

    pub fn total(&self) -> Duration {
        self.stages.iter().map(|s| s.duration).sum()
    }

    pub fn peak(&self) -> u32 {
        self.stages.iter().map(|s| s.target).max().unwrap_or(0)
    }

    /// How many virtual users should be running `elapsed` into the run.
    pub fn vus_at(&self, elapsed: Duration) -> u32 {
        let mut from = 0u32;
        let mut start = Duration::ZERO;
        for s in &self.stages {
            let end = start + s.duration;
            if elapsed < end {
                let progress = if s.duration.is_zero() {
                    1.0
                } else {
                    (elapsed - start).as_secs_f64() / s.duration.as_secs_f64()
                };
                let vus = f64::from(from) + (f64::from(s.target) - f64::from(from)) * progress;
                return vus.round() as u32;
            }
            from = s.target;
            start = end;
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_profile_has_the_documented_shape() {
        let p = LoadProfile::full();
        assert_eq!(p.total(), Duration::from_secs(260));
        assert_eq!(p.peak(), 200);
        assert_eq!(p.vus_at(Duration::ZERO), 0);
        assert_eq!(p.vus_at(Duration::from_secs(15)), 25);
        assert_eq!(p.vus_at(Duration::from_secs(60)), 50);
        assert_eq!(p.vus_at(Duration::from_secs(150)), 100);
        assert_eq!(p.vus_at(Duration::from_secs(210)), 0);
        assert_eq!(p.vus_at(Duration::from_secs(215)), 100);
        assert_eq!(p.vus_at(Duration::from_secs(240)), 200);
        assert_eq!(p.vus_at(Duration::from_secs(300)), 0);
    }

    #[test]
    fn scaling_keeps_the_shape_with_a_new_peak() {
        let p = LoadProfile::full().with_peak(50);
        assert_eq!(p.peak(), 50);
        assert_eq!(p.stages[0].target, 12);
        assert_eq!(p.stages[2].target, 25);
        assert_eq!(p.total(), LoadProfile::full().total());
    }

    #[test]
    fn quick_profile_keeps_the_shape_in_about_twenty_seconds() {
        let p = LoadProfile::quick();
        let total = p.total().as_secs_f64();
        assert!((19.0..=21.0).contains(&total), "{total}");
        assert_eq!(p.peak(), 200);
        assert_eq!(p.stages.len(), LoadProfile::full().stages.len());
    }
}
