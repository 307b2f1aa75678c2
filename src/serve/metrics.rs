//! Serving metrics through the `metrics` facade, rendered in the Prometheus text exposition
//! format (0.0.4) by `metrics-exporter-prometheus`. Each server owns its recorder (no global
//! recorder: several servers, and tests, live in one process), with the tier's name as a label on
//! every series; `/metrics` and the `Metrics` RPC render it.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Latency histogram bucket bounds, seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];
/// Batch size histogram bucket bounds.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

const REQUESTS: &str = "earlyexit_requests_total";
const REQUEST_SECONDS: &str = "earlyexit_request_seconds";
const ANSWERS: &str = "earlyexit_answers_total";
const FORWARD_ATTEMPTS: &str = "earlyexit_forward_attempts_total";
const NEXT_TIER_SECONDS: &str = "earlyexit_next_tier_seconds";
const BATCH_SAMPLES: &str = "earlyexit_batch_samples";

/// Every series, its kind and its help text.
const DESCRIPTIONS: &[(&str, Kind, &str)] = &[
    (REQUESTS, Kind::Counter, "Finished requests by RPC and status code."),
    ("earlyexit_samples_total", Kind::Counter, "Samples received."),
    (
        ANSWERS,
        Kind::Counter,
        "Answers returned by this process, by exit and by the tier that answered.",
    ),
    (
        "earlyexit_degraded_answers_total",
        Kind::Counter,
        "Answers flagged degraded.",
    ),
    (
        "earlyexit_forwarded_samples_total",
        Kind::Counter,
        "Samples sent to the next tier.",
    ),
    (
        "earlyexit_forwarded_bytes_total",
        Kind::Counter,
        "Bytes of Forward requests sent to the next tier (protobuf payload).",
    ),
    (
        "earlyexit_forward_answer_bytes_total",
        Kind::Counter,
        "Bytes of Forward answers received from the next tier.",
    ),
    (FORWARD_ATTEMPTS, Kind::Counter, "Forward attempts by outcome."),
    (
        "earlyexit_next_tier_down",
        Kind::Gauge,
        "1 while the circuit breaker answers without the next tier.",
    ),
    ("earlyexit_queue_depth", Kind::Gauge, "Jobs waiting for the model."),
    (
        REQUEST_SECONDS,
        Kind::Histogram,
        "Request latency inside this process, by RPC.",
    ),
    (
        NEXT_TIER_SECONDS,
        Kind::Histogram,
        "Round trip of successful Forward calls to the next tier.",
    ),
    (BATCH_SAMPLES, Kind::Histogram, "Samples per batch run by the model."),
];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric a serving process keeps, for one tier.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    samples_in: Counter,
    degraded: Counter,
    forwarded_samples: Counter,
    forwarded_bytes: Counter,
    forward_answer_bytes: Counter,
    next_latency: Histogram,
    batch: Histogram,
    queue_depth: Gauge,
    next_tier_down: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

impl Metrics {
    /// All zero, every series labelled `tier="TIER"`.
    pub fn new(tier: &str) -> Self {
        let recorder = PrometheusBuilder::new()
            .add_global_label("tier", tier)
            .set_buckets_for_metric(Matcher::Full(REQUEST_SECONDS.into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(NEXT_TIER_SECONDS.into()), LATENCY_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_SAMPLES.into()), BATCH_BUCKETS))
            .expect("the bucket lists are not empty")
            .build_recorder();
        for &(name, kind, help) in DESCRIPTIONS {
            let (key, unit, help) = (
                KeyName::from_const_str(name),
                None::<Unit>,
                SharedString::const_str(help),
            );
            match kind {
                Kind::Counter => recorder.describe_counter(key, unit, help),
                Kind::Gauge => recorder.describe_gauge(key, unit, help),
                Kind::Histogram => recorder.describe_histogram(key, unit, help),
            }
        }
        let counter = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &METADATA);
        let histogram = |name: &'static str| recorder.register_histogram(&Key::from_static_name(name), &METADATA);
        Self {
            handle: recorder.handle(),
            samples_in: counter("earlyexit_samples_total"),
            degraded: counter("earlyexit_degraded_answers_total"),
            forwarded_samples: counter("earlyexit_forwarded_samples_total"),
            forwarded_bytes: counter("earlyexit_forwarded_bytes_total"),
            forward_answer_bytes: counter("earlyexit_forward_answer_bytes_total"),
            next_latency: histogram(NEXT_TIER_SECONDS),
            batch: histogram(BATCH_SAMPLES),
            queue_depth: gauge("earlyexit_queue_depth"),
            next_tier_down: gauge("earlyexit_next_tier_down"),
            recorder,
        }
    }

    fn labelled_counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// One finished request of `rpc` (`classify`, `forward`, `infer`, …) with status `code`
    /// (`OK`, `INVALID_ARGUMENT`, …) after `elapsed`; its latency is kept for the RPCs that
    /// reach the model (not for `any`, a request refused before its RPC is known).
    pub fn request(&self, rpc: &'static str, code: &'static str, elapsed: Duration) {
        let labels = vec![
            Label::from_static_parts("rpc", rpc),
            Label::from_static_parts("code", code),
        ];
        self.labelled_counter(REQUESTS, labels).increment(1);
        if rpc != "any" {
            let key = Key::from_parts(REQUEST_SECONDS, vec![Label::from_static_parts("rpc", rpc)]);
            self.recorder
                .register_histogram(&key, &METADATA)
                .record(elapsed.as_secs_f64());
        }
    }

    /// Samples received (in `Classify`, `Forward` or `ModelInfer`).
    pub fn samples_in(&self, n: usize) {
        self.samples_in.increment(n as u64);
    }

    /// One answer this process returned, by exit and answering tier.
    pub fn answer(&self, exit: usize, tier: &str, degraded: bool) {
        let labels = vec![
            Label::new("exit", exit.to_string()),
            Label::new("answered_by", tier.to_string()),
        ];
        self.labelled_counter(ANSWERS, labels).increment(1);
        if degraded {
            self.degraded.increment(1);
        }
    }

    /// One `Forward` attempt to the next tier and its outcome (`ok`, `unavailable`, …).
    pub fn forward_attempt(&self, outcome: &'static str) {
        self.labelled_counter(FORWARD_ATTEMPTS, vec![Label::from_static_parts("outcome", outcome)])
            .increment(1);
    }

    /// A batch forwarded to the next tier: samples, request bytes, answer bytes, round trip.
    pub fn forwarded(&self, samples: usize, bytes: usize, answer_bytes: usize, rtt: Duration) {
        self.forwarded_samples.increment(samples as u64);
        self.forwarded_bytes.increment(bytes as u64);
        self.forward_answer_bytes.increment(answer_bytes as u64);
        self.next_latency.record(rtt.as_secs_f64());
    }

    /// Size of one batch the model ran on.
    pub fn batch(&self, samples: usize) {
        self.batch.record(samples as f64);
    }

    /// Jobs waiting in the queue.
    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as f64);
    }

    /// Whether the circuit breaker holds the next tier for down.
    pub fn set_next_tier_down(&self, down: bool) {
        self.next_tier_down.set(f64::from(u8::from(down)));
    }

    /// Folds the observations recorded since the last call into the histograms' buckets, so
    /// memory stays bounded between scrapes (a server calls it every few seconds; a render does
    /// it too).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

/// Reads one counter or gauge from a text exposition: the sum of every series of `name` whose
/// labels contain all of `labels` (`key="value"` strings).
///
/// ```
/// use earlyexit::serve::metrics::{Metrics, scrape};
/// let m = Metrics::new("edge");
/// m.answer(1, "edge", false);
/// m.answer(2, "cloud", true);
/// let text = m.render();
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
    fn renders_counters_and_cumulative_histograms_with_the_tier_label() {
        let m = Metrics::new("serve");
        m.request("classify", "OK", Duration::from_millis(3));
        m.request("classify", "OK", Duration::from_millis(30));
        m.request("classify", "INVALID_ARGUMENT", Duration::from_micros(100));
        m.request("any", "UNAUTHENTICATED", Duration::ZERO);
        m.batch(12);
        m.set_queue_depth(3);
        let t = m.render();
        assert!(t.contains("# TYPE earlyexit_request_seconds histogram"), "{t}");
        assert!(
            t.contains("# HELP earlyexit_queue_depth Jobs waiting for the model."),
            "{t}"
        );
        let bucket = |le: &str| {
            scrape(
                &t,
                "earlyexit_request_seconds_bucket",
                &["tier=\"serve\"", "rpc=\"classify\"", &format!("le=\"{le}\"")],
            )
        };
        assert_eq!(
            (bucket("0.002"), bucket("0.005"), bucket("+Inf")),
            (1.0, 2.0, 3.0),
            "{t}"
        );
        assert_eq!(scrape(&t, "earlyexit_requests_total", &["code=\"OK\""]), 2.0);
        assert_eq!(scrape(&t, "earlyexit_requests_total", &[]), 4.0);
        assert_eq!(scrape(&t, "earlyexit_request_seconds_count", &["rpc=\"any\""]), 0.0);
        assert_eq!(scrape(&t, "earlyexit_batch_samples_bucket", &["le=\"16\""]), 1.0, "{t}");
        assert_eq!(scrape(&t, "earlyexit_batch_samples_bucket", &["le=\"8\""]), 0.0, "{t}");
        assert_eq!(scrape(&t, "earlyexit_queue_depth", &["tier=\"serve\""]), 3.0);
        // Series registered up front read 0 before anything happens.
        assert!(t.contains("earlyexit_degraded_answers_total{tier=\"serve\"} 0"), "{t}");
    }
}
