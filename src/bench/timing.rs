//! Timing primitives every benchmark shares: one clock, one warm-up-then-repeat loop, one
//! median.

use std::time::{Duration, Instant};

use crate::error::Result;

/// Runs `f` once and returns its result with the wall-clock time it took.
pub fn time<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// The median of `v` (the upper middle element for an even count): robust to the odd slow
/// repetition of a noisy machine. Never panics: NaNs sort last (`f64::total_cmp`), and an empty
/// list has no median (NaN).
///
/// ```
/// use earlyexit::bench::median;
/// assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(median(vec![f64::NAN, 1.0, 2.0]), 2.0);
/// assert!(median(vec![]).is_nan());
/// ```
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `step` `warmup` times, then `reps` times timed; each call is one iteration.
pub fn timed(warmup: usize, reps: usize, mut step: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        step()?;
    }
    (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            step()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_order_free_and_nan_safe() {
        assert_eq!(median(vec![5.0, 1.0, 4.0, 2.0, 3.0]), 3.0);
        assert_eq!(median(vec![1.0, 2.0]), 2.0);
        assert_eq!(median(vec![7.0]), 7.0);
        assert_eq!(median(vec![f64::NAN, 1.0, 2.0]), 2.0);
        assert!(median(vec![f64::NAN, 1.0, f64::NAN]).is_nan());
        assert!(median(vec![f64::NAN]).is_nan());
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn timed_warms_up_then_repeats_and_stops_at_errors() {
        let mut calls = 0;
        let samples = timed(2, 3, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!((calls, samples.len()), (5, 3));
        let mut n = 0;
        let failed = timed(0, 5, || {
            n += 1;
            if n == 2 {
                Err(crate::Error::invalid("step", "fails"))
            } else {
                Ok(())
            }
        });
        assert!(failed.is_err());
        assert_eq!(n, 2);
    }
}
