//! A circuit breaker for the next tier: once it has failed several times in a row (missed
//! deadlines, refused connections), survivors are answered degraded at once instead of each
//! spending its whole deadline on a tier known to be down, while a background task probes the
//! tier and closes the circuit when it answers again.
//!
//! Closed → (N failures in a row) → open → (a probe answers) → half-open: closed, but the next
//! failure opens it again at once, because a tier whose `Info` answers may still be unable to
//! run `Forward` (a hung model thread).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When the circuit opens and how it is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open the circuit (`0`: never open, every batch tries).
    pub failures: u32,
    /// Time between probes while open.
    pub probe_every: Duration,
    /// How long a probe (`Info`) may take before it counts as failed.
    pub probe_timeout: Duration,
    /// A missed deadline counts as the next tier's failure only when it had at least this long
    /// to answer: a client that sends 1 ms deadlines must not open the circuit for everyone.
    pub min_budget: Duration,
}

impl Default for BreakerConfig {
    /// Three failures; probes every 250 ms that may take 1 s; deadlines of 50 ms or more count.
    fn default() -> Self {
        Self {
            failures: 3,
            probe_every: Duration::from_millis(250),
            probe_timeout: Duration::from_secs(1),
            min_budget: Duration::from_millis(50),
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { since: Instant, why: String },
}

/// The breaker's state, shared by every forwarding task of a tier.
///
/// ```
/// use earlyexit::serve::breaker::{Breaker, BreakerConfig};
/// let b = Breaker::new(BreakerConfig { failures: 2, ..Default::default() });
/// assert!(b.admit().is_ok());
/// assert!(!b.failure("refused"));
/// assert!(b.failure("refused")); // the second failure in a row opens it
/// assert!(b.admit().unwrap_err().contains("refused"));
/// b.probe_answered(); // half-open: one more failure opens it again
/// assert!(b.admit().is_ok());
/// assert!(b.failure("refused"));
/// ```
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent through a panic elsewhere: every update is one assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `Ok` when a call may go to the next tier; `Err` with the reason to answer degraded now.
    pub fn admit(&self) -> Result<(), String> {
        match &*self.lock() {
            State::Closed { .. } => Ok(()),
            State::Open { since, why } => Err(format!(
                "next tier down for {:.1} s ({why}); answering without it until a probe succeeds",
                since.elapsed().as_secs_f64()
            )),
        }
    }

    /// Whether the last calls failed (then a call tries once, without retries).
    pub fn failing(&self) -> bool {
        !matches!(&*self.lock(), State::Closed { failures: 0 })
    }

    /// A call answered: the circuit is closed and the count starts over.
    pub fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    /// A call failed for `why`. `true` when this failure opened the circuit (the caller then
    /// starts the probe); `false` when it was already open or stays closed.
    pub fn failure(&self, why: &str) -> bool {
        let mut s = self.lock();
        match &*s {
            State::Closed { failures } if self.cfg.failures > 0 && failures + 1 >= self.cfg.failures => {
                *s = State::Open {
                    since: Instant::now(),
                    why: why.to_string(),
                };
                true
            }
            State::Closed { failures } => {
                *s = State::Closed { failures: failures + 1 };
                false
            }
            State::Open { .. } => false,
        }
    }

    /// A probe answered: half-open, closed with one failure to spare. A circuit that a call
    /// closed meanwhile (one admitted before it opened succeeded) is left as that call left it.
    pub fn probe_answered(&self) {
        let mut s = self.lock();
        if matches!(&*s, State::Open { .. }) {
            *s = State::Closed {
                failures: self.cfg.failures.saturating_sub(1),
            };
        }
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        matches!(&*self.lock(), State::Open { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_and_a_success_resets_the_count() {
        let b = Breaker::new(BreakerConfig::default());
        assert!(!b.failure("x") && !b.failure("x"));
        b.success();
        assert!(!b.failing());
        assert!(!b.failure("a") && !b.failure("b"));
        assert!(b.failing() && !b.is_open());
        assert!(b.failure("c"));
        assert!(b.is_open());
        // Only the failure that opened it starts a probe.
        assert!(!b.failure("d"));
        let why = b.admit().unwrap_err();
        assert!(why.contains("(c)"), "{why}");
        b.probe_answered();
        assert!(b.admit().is_ok() && b.failing());
        b.success();
        assert!(!b.failing());
        // A late probe does not undo a success.
        b.probe_answered();
        assert!(!b.failing());
    }

    #[test]
    fn zero_failures_never_opens() {
        let b = Breaker::new(BreakerConfig {
            failures: 0,
            ..Default::default()
        });
        for _ in 0..10 {
            assert!(!b.failure("x"));
        }
        assert!(b.admit().is_ok());
    }
}
