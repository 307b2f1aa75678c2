//! Dynamic batching over a bounded queue.
//!
//! Request handlers [`Batcher::submit`] jobs without waiting: a full queue is refused at once
//! (`RESOURCE_EXHAUSTED`) instead of growing. One worker thread (Burn is synchronous) calls
//! [`Gatherer::next_batch`], which blocks for the first job, then gathers more until the batch
//! holds `max_batch` samples or the first job has waited `max_wait`. A job never splits: one that
//! would overflow the batch starts the next one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use super::error::{ServeError, ServeResult};

/// Anything the batcher can gather: it knows its sample count and when it was queued.
pub trait Batchable: Send {
    /// Samples in this job.
    fn samples(&self) -> usize;
    /// When the job entered the queue.
    fn queued_at(&self) -> Instant;
}

/// Batching limits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchConfig {
    /// Most samples in one batch (a single larger job runs alone).
    pub max_batch: usize,
    /// Longest time the oldest job of a batch waits for company.
    pub max_wait: Duration,
    /// Jobs the queue holds before refusing more.
    pub queue: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait: Duration::from_millis(2),
            queue: 256,
        }
    }
}

/// The submitting side of the queue (cheap to clone).
#[derive(Debug)]
pub struct Batcher<J> {
    tx: SyncSender<J>,
    depth: Arc<AtomicUsize>,
}

impl<J> Clone for Batcher<J> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            depth: self.depth.clone(),
        }
    }
}

/// The worker's side: gathers batches.
#[derive(Debug)]
pub struct Gatherer<J> {
    rx: Receiver<J>,
    cfg: BatchConfig,
    carry: Option<J>,
    depth: Arc<AtomicUsize>,
}

/// A bounded queue and its gatherer.
///
/// ```
/// use std::time::{Duration, Instant};
/// use earlyexit::serve::batcher::{BatchConfig, Batchable, queue};
/// struct Job(usize, Instant);
/// impl Batchable for Job {
///     fn samples(&self) -> usize { self.0 }
///     fn queued_at(&self) -> Instant { self.1 }
/// }
/// let cfg = BatchConfig { max_batch: 4, max_wait: Duration::from_millis(1), queue: 3 };
/// let (batcher, mut gatherer) = queue::<Job>(cfg);
/// for n in [2, 1, 3] {
///     batcher.submit(Job(n, Instant::now())).unwrap();
/// }
/// assert!(batcher.submit(Job(1, Instant::now())).is_err()); // full: refused, not queued
/// let sizes = |b: Vec<Job>| b.iter().map(|j| j.0).collect::<Vec<_>>();
/// assert_eq!(sizes(gatherer.next_batch().unwrap()), vec![2, 1]);
/// assert_eq!(sizes(gatherer.next_batch().unwrap()), vec![3]);
/// ```
pub fn queue<J: Batchable>(cfg: BatchConfig) -> (Batcher<J>, Gatherer<J>) {
    let (tx, rx) = sync_channel(cfg.queue.max(1));
    let depth = Arc::new(AtomicUsize::new(0));
    (
        Batcher {
            tx,
            depth: depth.clone(),
        },
        Gatherer {
            rx,
            cfg,
            carry: None,
            depth,
        },
    )
}

impl<J: Batchable> Batcher<J> {
    /// Queues a job, or refuses it at once when the queue is full or the worker is gone.
    pub fn submit(&self, job: J) -> ServeResult<()> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.depth.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(ServeError::ResourceExhausted(
                "the request queue is full; retry later".into(),
            )),
            Err(TrySendError::Disconnected(_)) => Err(ServeError::Unavailable("the model worker has stopped".into())),
        }
    }

    /// Jobs waiting (approximate).
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }
}

impl<J: Batchable> Gatherer<J> {
    fn take(&mut self, j: J) -> J {
        self.depth.fetch_sub(1, Ordering::Relaxed);
        j
    }

    /// Blocks for the next batch; `None` once every [`Batcher`] is dropped and the queue is
    /// empty.
    pub fn next_batch(&mut self) -> Option<Vec<J>> {
        let first = match self.carry.take() {
            Some(j) => j,
            None => {
                let j = self.rx.recv().ok()?;
                self.take(j)
            }
        };
        let until = first.queued_at() + self.cfg.max_wait;
        let mut total = first.samples();
        let mut batch = vec![first];
        while total < self.cfg.max_batch {
            let now = Instant::now();
            let next = if now >= until {
                match self.rx.try_recv() {
                    Ok(j) => j,
                    Err(_) => break,
                }
            } else {
                match self.rx.recv_timeout(until - now) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let next = self.take(next);
            if total + next.samples() > self.cfg.max_batch {
                self.carry = Some(next);
                break;
            }
            total += next.samples();
            batch.push(next);
        }
        Some(batch)
    }

    /// Jobs waiting (approximate).
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed) + usize::from(self.carry.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Job(usize, Instant);
    impl Batchable for Job {
        fn samples(&self) -> usize {
            self.0
        }
        fn queued_at(&self) -> Instant {
            self.1
        }
    }

    #[test]
    fn waits_at_most_max_wait_for_company() {
        let cfg = BatchConfig {
            max_batch: 8,
            max_wait: Duration::from_millis(30),
            queue: 16,
        };
        let (b, mut g) = queue::<Job>(cfg);
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(5));
            b2.submit(Job(2, Instant::now())).unwrap();
        });
        let start = Instant::now();
        b.submit(Job(1, Instant::now())).unwrap();
        let batch = g.next_batch().unwrap();
        let waited = start.elapsed();
        t.join().unwrap();
        assert_eq!(batch.iter().map(|j| j.0).sum::<usize>(), 3);
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "{waited:?}");
    }

    #[test]
    fn full_batches_leave_at_once_and_oversized_jobs_run_alone() {
        let cfg = BatchConfig {
            max_batch: 4,
            max_wait: Duration::from_secs(10),
            queue: 16,
        };
        let (b, mut g) = queue::<Job>(cfg);
        for n in [4, 9, 1] {
            b.submit(Job(n, Instant::now())).unwrap();
        }
        let start = Instant::now();
        assert_eq!(g.next_batch().unwrap()[0].0, 4);
        assert_eq!(g.next_batch().unwrap()[0].0, 9);
        assert!(start.elapsed() < Duration::from_secs(1));
        drop(b);
        assert_eq!(g.next_batch().unwrap()[0].0, 1);
        assert!(g.next_batch().is_none());
    }
}
