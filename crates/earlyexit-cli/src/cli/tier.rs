//! `earlyexit tier`: one tier of a split deployment.

use std::time::Duration;

use anyhow::bail;
use earlyexit::serve::breaker::BreakerConfig;
use earlyexit::serve::codec::{WireCompression, WireDType, WireFormat};
use earlyexit::serve::tier::{NextTier, StageRange};

use super::serve::ServingArgs;
use super::serving::{ClientSecurity, ModelArgs, ServerSecurity};

/// Arguments of `tier`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// Stages this tier runs: `A..B` (half-open) or `A..` to the end.
    #[arg(long)]
    stages: StageRange,
    /// Address of the next tier (required unless this tier holds the last stage).
    #[arg(long)]
    next: Option<String>,
    /// Name reported in answers and metrics (default `tier-A-B`).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    serving: ServingArgs,
    #[command(flatten)]
    security: ServerSecurity,
    /// TLS towards the next tier.
    #[command(flatten)]
    next_security: ClientSecurity,
    /// Element type of forwarded activations: f32 or f16.
    #[arg(long, default_value = "f32")]
    dtype: WireDType,
    /// Compression of forwarded activations: none, lz4, zstd or zstd:LEVEL.
    #[arg(long, default_value = "none")]
    compression: WireCompression,
    /// Retries when the next tier is unavailable or overloaded.
    #[arg(long, default_value_t = 3)]
    retries: u32,
    /// First retry backoff, milliseconds (doubled each retry).
    #[arg(long, default_value_t = 20)]
    backoff_ms: u64,
    /// Failures of the next tier in a row (missed deadlines, refused connections) after which
    /// survivors are answered degraded at once while it is probed in the background; 0: never.
    #[arg(long, default_value_t = BreakerConfig::default().failures)]
    breaker_failures: u32,
    /// Milliseconds between probes of a next tier held for down.
    #[arg(long, default_value_t = BreakerConfig::default().probe_every.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    probe_ms: u64,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    a.serving.check(&a.security)?;
    let device = a.serving.device.device()?;
    let l = a.model.load(&device)?;
    let (model, id) = (l.model, l.id);
    let num_stages = model.net.num_stages();
    let range = a.stages.resolve(num_stages)?;
    if range.end < num_stages && a.next.is_none() {
        bail!(
            "stages {} stop before the last stage ({num_stages}): give --next ADDR",
            a.stages
        );
    }
    let name = a.name.unwrap_or_else(|| format!("tier-{}-{}", range.start, range.end));
    let mut opts = a.serving.tier_options(name, a.stages, l.policy);
    opts.normalize = l.normalize;
    opts.model_name = a.serving.model_name_for(a.model.dir()?);
    opts.next = a.next.map(|addr| NextTier {
        addr,
        connect: a.next_security.options(a.security.token.clone()),
        wire: WireFormat {
            dtype: a.dtype,
            compression: a.compression,
        },
        retries: a.retries,
        backoff: Duration::from_millis(a.backoff_ms),
        breaker: BreakerConfig {
            failures: a.breaker_failures,
            probe_every: Duration::from_millis(a.probe_ms),
            ..BreakerConfig::default()
        },
    });
    a.serving.serve(model, id, device, opts, &a.security)
}
