//! Median, minimum and maximum of repeated trials.

/// The summary of one measured figure: the median of `n` trials, with their extremes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trials {
    /// Median of the trials.
    pub median: f64,
    /// Smallest trial.
    pub min: f64,
    /// Largest trial.
    pub max: f64,
    /// Number of trials.
    pub n: usize,
}

impl Trials {
    /// Summarises `samples`; panics on an empty slice (a figure without trials is a bug).
    pub fn of(samples: &[f64]) -> Self {
        assert!(!samples.is_empty(), "a figure needs at least one trial");
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Self {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        }
    }

    /// Runs `trial` `n` times and summarises the results.
    pub fn measure(n: usize, mut trial: impl FnMut() -> f64) -> Self {
        let samples: Vec<f64> = (0..n).map(|_| trial()).collect();
        Self::of(&samples)
    }

    /// A figure that is exact (counted, not timed): every trial gives the same value.
    pub fn exact(v: f64) -> Self {
        Self {
            median: v,
            min: v,
            max: v,
            n: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Trials;

    #[test]
    fn median_of_odd_and_even_counts() {
        let t = Trials::of(&[5.0, 1.0, 3.0]);
        assert_eq!((t.median, t.min, t.max, t.n), (3.0, 1.0, 5.0, 3));
        let t = Trials::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((t.median, t.min, t.max), (2.5, 1.0, 4.0));
    }
}
