//! `earlyexit serve`: the whole model in one process, with dynamic batching.

use std::net::SocketAddr;
use std::time::Duration;

use earlyexit::serve::batcher::BatchConfig;
use earlyexit::serve::server::{NetOptions, run_blocking};
use earlyexit::serve::tier::{Limits, StageRange, TierOptions};

use super::common::{DeviceArg, PathArg};
use super::serving::{ModelArgs, ServerSecurity, announce};

/// Batching, limits and listening options shared by `serve` and `tier`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServingArgs {
    /// Address to listen on (loopback unless told otherwise; port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Most samples per batch.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Longest wait of the oldest request for a batch to fill, milliseconds.
    #[arg(long, default_value_t = 2.0)]
    pub max_wait_ms: f64,
    /// Requests waiting for the model before new ones are refused (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    /// Largest request, bytes (INVALID_ARGUMENT beyond).
    #[arg(long, default_value_t = 16 << 20)]
    pub max_request_bytes: usize,
    /// Most samples in one request.
    #[arg(long, default_value_t = 1024)]
    pub max_samples: usize,
    /// Deadline of requests that carry none, milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub deadline_ms: u64,
    /// Serve plain HTTP at this address: the Open Inference Protocol's REST routes (`/v2/...`)
    /// and Prometheus metrics (`GET /metrics`).
    #[arg(long, visible_alias = "metrics-listen")]
    pub http_listen: Option<SocketAddr>,
    /// The model's name in the Open Inference Protocol (`/v2/models/NAME`, `model_name`);
    /// default: the name of the model's folder.
    #[arg(long)]
    pub model_name: Option<String>,
    /// On SIGTERM or SIGINT, how long to wait for requests in flight before closing what is
    /// left, milliseconds (under Kubernetes' default 30 s grace period).
    #[arg(long, default_value_t = 25_000)]
    pub drain_timeout_ms: u64,
    /// Async runtime threads (the model runs on its own thread).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    #[command(flatten)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub path: PathArg,
}

impl ServingArgs {
    /// The server's checks that need no model, before it is loaded: limits, token, exposure.
    pub fn check(&self, sec: &ServerSecurity) -> anyhow::Result<()> {
        let policy = earlyexit::infer::Policy::Never;
        self.tier_options(String::new(), StageRange::ALL, policy).check()?;
        self.net(sec).check()?;
        Ok(())
    }

    /// Tier options for `name` and `stages`.
    pub fn tier_options(&self, name: String, stages: StageRange, policy: earlyexit::infer::Policy) -> TierOptions {
        TierOptions {
            name,
            model_name: self.model_name.clone().unwrap_or_else(|| "model".into()),
            stages,
            policy,
            batch: BatchConfig {
                max_batch: self.max_batch,
                max_wait: Duration::from_secs_f64(self.max_wait_ms.max(0.0) / 1e3),
                queue: self.queue,
            },
            limits: Limits {
                max_request_bytes: self.max_request_bytes,
                max_samples: self.max_samples,
            },
            next: None,
            default_deadline: Duration::from_millis(self.deadline_ms),
            normalize: None,
            path: self.path.path,
        }
    }

    /// The Open Inference Protocol's model name: `--model-name`, else the name of `dir` (the
    /// run or model folder) with any character a URL segment should not hold replaced by `-`.
    pub fn model_name_for(&self, dir: &std::path::Path) -> String {
        if let Some(n) = &self.model_name {
            return n.clone();
        }
        let folder = dir
            .canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let name: String = folder
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .take(128)
            .collect();
        if name.is_empty() { "model".into() } else { name }
    }

    /// Serves `model` with `opts` until SIGINT or SIGTERM, printing where it listens once ready.
    pub fn serve(
        &self,
        model: earlyexit::infer::MultiExitModel,
        model_id: String,
        device: burn::tensor::Device,
        opts: TierOptions,
        sec: &ServerSecurity,
    ) -> anyhow::Result<()> {
        let ready = announce(&opts);
        run_blocking(model, model_id, device, opts, self.net(sec), self.threads, ready)?;
        Ok(())
    }

    /// Network options.
    pub fn net(&self, sec: &ServerSecurity) -> NetOptions {
        NetOptions {
            listen: self.listen,
            tls: sec.tls_cert.clone().zip(sec.tls_key.clone()),
            token: sec.token.clone(),
            http_listen: self.http_listen,
            insecure: sec.insecure,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
        }
    }
}

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    serving: ServingArgs,
    #[command(flatten)]
    security: ServerSecurity,
    /// Name reported in answers and metrics.
    #[arg(long, default_value = "serve")]
    name: String,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    a.serving.check(&a.security)?;
    let device = a.serving.device.device()?;
    let l = a.model.load(&device)?;
    let mut opts = a.serving.tier_options(a.name, StageRange::ALL, l.policy);
    opts.normalize = l.normalize;
    opts.model_name = a.serving.model_name_for(a.model.dir()?);
    a.serving.serve(l.model, l.id, device, opts, &a.security)
}
