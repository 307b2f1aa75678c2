//! Metrics in the Prometheus text exposition format (version 0.0.4), without a metrics crate:
//! counters are atomics or small maps behind a mutex, histograms have fixed buckets.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency histogram bucket bounds, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Batch size histogram bucket bounds.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    inner: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    /// An empty histogram.
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            inner: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    /// Records one value.
    pub fn observe(&self, v: f64) {
        let mut g = self.inner.lock().expect("metrics lock");
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += v;
        g.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let g = self.inner.lock().expect("metrics lock");
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&g.0) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", g.2);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", g.1);
        let _ = writeln!(out, "{name}_count{braces} {}", g.2);
    }
}

/// Every metric a serving process keeps.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    answers: Mutex<BTreeMap<(usize, String), u64>>,
    degraded: AtomicU64,
    samples_in: AtomicU64,
    forwarded_samples: AtomicU64,
    forwarded_bytes: AtomicU64,
    forward_answer_bytes: AtomicU64,
    forward_attempts: Mutex<BTreeMap<&'static str, u64>>,
    latency_classify: Histogram,
    latency_forward: Histogram,
    next_latency: Histogram,
    batch: Histogram,
    queue_depth: AtomicU64,
    next_tier_down: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All zero.
    pub fn new() -> Self {
        Self {
            requests: Mutex::new(BTreeMap::new()),
            answers: Mutex::new(BTreeMap::new()),
            degraded: AtomicU64::new(0),
            samples_in: AtomicU64::new(0),
            forwarded_samples: AtomicU64::new(0),
            forwarded_bytes: AtomicU64::new(0),
            forward_answer_bytes: AtomicU64::new(0),
            forward_attempts: Mutex::new(BTreeMap::new()),
            latency_classify: Histogram::new(LATENCY_BUCKETS),
            latency_forward: Histogram::new(LATENCY_BUCKETS),
            next_latency: Histogram::new(LATENCY_BUCKETS),
            batch: Histogram::new(BATCH_BUCKETS),
            queue_depth: AtomicU64::new(0),
            next_tier_down: AtomicU64::new(0),
        }
    }

    /// One finished request of `rpc` (`classify`, `forward`, …) with status `code` (`OK`,
    /// `INVALID_ARGUMENT`, …) after `elapsed`.
    pub fn request(&self, rpc: &'static str, code: &'static str, elapsed: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((rpc, code))
            .or_default() += 1;
        match rpc {
            "classify" => self.latency_classify.observe(elapsed.as_secs_f64()),
            "forward" => self.latency_forward.observe(elapsed.as_secs_f64()),
            _ => {}
        }
    }

    /// Samples received (in `Classify` or `Forward`).
    pub fn samples_in(&self, n: usize) {
        self.samples_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// One answer this process returned, by exit and answering tier.
    pub fn answer(&self, exit: usize, tier: &str, degraded: bool) {
        *self
            .answers
            .lock()
            .expect("metrics lock")
            .entry((exit, tier.to_string()))
            .or_default() += 1;
        if degraded {
            self.degraded.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One `Forward` attempt to the next tier and its outcome (`ok`, `unavailable`, …).
    pub fn forward_attempt(&self, outcome: &'static str) {
        *self
            .forward_attempts
            .lock()
            .expect("metrics lock")
            .entry(outcome)
            .or_default() += 1;
    }

    /// A batch forwarded to the next tier: samples, request bytes, answer bytes, round trip.
    pub fn forwarded(&self, samples: usize, bytes: usize, answer_bytes: usize, rtt: Duration) {
        self.forwarded_samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.forwarded_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.forward_answer_bytes
            .fetch_add(answer_bytes as u64, Ordering::Relaxed);
        self.next_latency.observe(rtt.as_secs_f64());
    }

    /// Size of one batch the model ran on.
    pub fn batch(&self, samples: usize) {
        self.batch.observe(samples as f64);
    }

    /// Jobs waiting in the queue.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.store(depth as u64, Ordering::Relaxed);
    }

    /// Whether the circuit breaker holds the next tier for down.
    pub fn set_next_tier_down(&self, down: bool) {
        self.next_tier_down.store(u64::from(down), Ordering::Relaxed);
    }

    /// Bytes sent to the next tier so far (request payloads).
    pub fn forwarded_bytes(&self) -> u64 {
        self.forwarded_bytes.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition, `tier` as a constant label on every series.
    pub fn render(&self, tier: &str) -> String {
        let t = tier.replace('\\', "\\\\").replace('"', "\\\"");
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP earlyexit_requests_total Finished requests by RPC and status code."
        );
        let _ = writeln!(o, "# TYPE earlyexit_requests_total counter");
        for ((rpc, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                o,
                "earlyexit_requests_total{{tier=\"{t}\",rpc=\"{rpc}\",code=\"{code}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP earlyexit_samples_total Samples received.");
        let _ = writeln!(o, "# TYPE earlyexit_samples_total counter");
        let _ = writeln!(
            o,
            "earlyexit_samples_total{{tier=\"{t}\"}} {}",
            self.samples_in.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP earlyexit_answers_total Answers returned by this process, by exit and by the tier that answered."
        );
        let _ = writeln!(o, "# TYPE earlyexit_answers_total counter");
        for ((exit, by), n) in self.answers.lock().expect("metrics lock").iter() {
            let by = by.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = writeln!(
                o,
                "earlyexit_answers_total{{tier=\"{t}\",exit=\"{exit}\",answered_by=\"{by}\"}} {n}"
            );
        }
        let _ = writeln!(o, "# HELP earlyexit_degraded_answers_total Answers flagged degraded.");
        let _ = writeln!(o, "# TYPE earlyexit_degraded_answers_total counter");
        let _ = writeln!(
            o,
            "earlyexit_degraded_answers_total{{tier=\"{t}\"}} {}",
            self.degraded.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP earlyexit_forwarded_samples_total Samples sent to the next tier."
        );
        let _ = writeln!(o, "# TYPE earlyexit_forwarded_samples_total counter");
        let _ = writeln!(
            o,
            "earlyexit_forwarded_samples_total{{tier=\"{t}\"}} {}",
            self.forwarded_samples.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP earlyexit_forwarded_bytes_total Bytes of Forward requests sent to the next tier (protobuf payload)."
        );
        let _ = writeln!(o, "# TYPE earlyexit_forwarded_bytes_total counter");
        let _ = writeln!(
            o,
            "earlyexit_forwarded_bytes_total{{tier=\"{t}\"}} {}",
            self.forwarded_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP earlyexit_forward_answer_bytes_total Bytes of Forward answers received from the next tier."
        );
        let _ = writeln!(o, "# TYPE earlyexit_forward_answer_bytes_total counter");
        let _ = writeln!(
            o,
            "earlyexit_forward_answer_bytes_total{{tier=\"{t}\"}} {}",
            self.forward_answer_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP earlyexit_forward_attempts_total Forward attempts by outcome."
        );
        let _ = writeln!(o, "# TYPE earlyexit_forward_attempts_total counter");
        for (outcome, n) in self.forward_attempts.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                o,
                "earlyexit_forward_attempts_total{{tier=\"{t}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "# HELP earlyexit_next_tier_down 1 while the circuit breaker answers without the next tier."
        );
        let _ = writeln!(o, "# TYPE earlyexit_next_tier_down gauge");
        let _ = writeln!(
            o,
            "earlyexit_next_tier_down{{tier=\"{t}\"}} {}",
            self.next_tier_down.load(Ordering::Relaxed)
        );
        let _ = writeln!(o, "# HELP earlyexit_queue_depth Jobs waiting for the model.");
        let _ = writeln!(o, "# TYPE earlyexit_queue_depth gauge");
        let _ = writeln!(
            o,
            "earlyexit_queue_depth{{tier=\"{t}\"}} {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        let lbl = format!("tier=\"{t}\"");
        let _ = writeln!(
            o,
            "# HELP earlyexit_request_seconds Request latency inside this process."
        );
        let _ = writeln!(o, "# TYPE earlyexit_request_seconds histogram");
        self.latency_classify
            .render(&mut o, "earlyexit_request_seconds", &format!("{lbl},rpc=\"classify\""));
        self.latency_forward
            .render(&mut o, "earlyexit_request_seconds", &format!("{lbl},rpc=\"forward\""));
        let _ = writeln!(
            o,
            "# HELP earlyexit_next_tier_seconds Round trip of successful Forward calls to the next tier."
        );
        let _ = writeln!(o, "# TYPE earlyexit_next_tier_seconds histogram");
        self.next_latency.render(&mut o, "earlyexit_next_tier_seconds", &lbl);
        let _ = writeln!(o, "# HELP earlyexit_batch_samples Samples per batch run by the model.");
        let _ = writeln!(o, "# TYPE earlyexit_batch_samples histogram");
        self.batch.render(&mut o, "earlyexit_batch_samples", &lbl);
        o
    }
}

/// Reads one counter or gauge from a text exposition: the sum of every series of `name` whose
/// labels contain all of `labels` (`key="value"` strings).
///
/// ```
/// use earlyexit::serve::metrics::{Metrics, scrape};
/// let m = Metrics::new();
/// m.answer(1, "edge", false);
/// m.answer(2, "cloud", true);
/// let text = m.render("edge");
/// assert_eq!(scrape(&text, "earlyexit_answers_total", &[]), 2.0);
/// assert_eq!(scrape(&text, "earlyexit_answers_total", &["answered_by=\"cloud\""]), 1.0);
/// assert_eq!(scrape(&text, "earlyexit_degraded_answers_total", &[]), 1.0);
/// ```
pub fn scrape(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest),
                None => (series, ""),
            };
            (n == name && labels.iter().all(|want| rest.contains(want))).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histograms_cumulatively() {
        let m = Metrics::new();
        m.request("classify", "OK", Duration::from_millis(3));
        m.request("classify", "OK", Duration::from_millis(30));
        m.request("classify", "INVALID_ARGUMENT", Duration::from_micros(100));
        let t = m.render("serve");
        assert!(t.contains("earlyexit_request_seconds_bucket{tier=\"serve\",rpc=\"classify\",le=\"0.005\"} 2"));
        assert!(t.contains("earlyexit_request_seconds_bucket{tier=\"serve\",rpc=\"classify\",le=\"+Inf\"} 3"));
        assert_eq!(scrape(&t, "earlyexit_requests_total", &["code=\"OK\""]), 2.0);
        assert_eq!(
            scrape(&t, "earlyexit_request_seconds_count", &["rpc=\"classify\""]),
            3.0
        );
    }
}
