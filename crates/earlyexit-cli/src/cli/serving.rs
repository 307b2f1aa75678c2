//! Arguments shared by the serving commands: which model, which policy, network security.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use earlyexit::data::Normalize;
use earlyexit::infer::{MultiExitModel, Policy};
use earlyexit::run::{Run, open_deployable};
use earlyexit::serve::client::ConnectOptions;
use earlyexit::serve::server::{Served, model_id};
use earlyexit::serve::tier::TierOptions;

/// Which model to serve and with which policy.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A run folder (`runs/NAME`) written by `earlyexit train`: its model, its calibrated
    /// `policy.json` (else its eval policy) and its input normalisation.
    #[arg(long, conflicts_with = "model")]
    pub run: Option<PathBuf>,
    /// A bare model folder (`model.json` + `weights.safetensors`, as `io::save_model` writes
    /// it); give --policy. Images are only scaled to [0, 1].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Exit policy (e.g. `confidence:0.5`, `maxprob:0.9,0.8`); default: the run's.
    #[arg(long)]
    pub policy: Option<Policy>,
}

/// A model ready to serve.
pub struct Loaded {
    pub model: MultiExitModel,
    pub id: String,
    pub policy: Policy,
    pub normalize: Option<Normalize>,
    pub run: Option<Run>,
}

impl ModelArgs {
    /// The folder holding the model.
    pub fn dir(&self) -> anyhow::Result<&Path> {
        match (&self.run, &self.model) {
            (Some(r), _) => Ok(r),
            (None, Some(m)) => Ok(m),
            (None, None) => bail!("give --run runs/NAME or --model DIR"),
        }
    }

    /// Exit rates recorded by calibration (`validation.coverage` in `policy.json`), if any.
    pub fn calibrated_rates(&self) -> anyhow::Result<Option<Vec<f64>>> {
        let file = earlyexit::run::read_policy_file(self.dir()?)?;
        Ok(file.and_then(|f| f.calibration).map(|c| c.validation.coverage))
    }

    /// Loads the model (BatchNorm folded for inference), its id, policy and normalisation.
    pub fn load(&self, device: &Device) -> anyhow::Result<Loaded> {
        let dir = self.dir()?;
        let d = open_deployable(dir, self.run.is_some(), self.policy.as_ref(), device)
            .with_context(|| format!("loading the model in {}", dir.display()))?;
        if let Some(run) = &d.run {
            super::common::warn_unfinished(run)?;
        }
        Ok(Loaded {
            model: d.model.fold_bn(),
            id: model_id(dir)?,
            policy: d.policy,
            normalize: d.normalize,
            run: d.run,
        })
    }
}

/// TLS and token, server side.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerSecurity {
    /// PEM certificate chain: serve TLS (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Shared token every request must carry (also sent to the next tier); prefer the
    /// environment variable, which `ps` does not show.
    #[arg(long, env = "EARLYEXIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Listen beyond loopback with neither TLS nor a token (refused without it).
    #[arg(long)]
    pub insecure: bool,
}

/// TLS towards a server, client side.
#[derive(clap::Args, Debug, Clone)]
pub struct ClientSecurity {
    /// PEM CA certificate: connect with TLS, trusting this CA.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Server name to check the certificate against (default: the address's host).
    #[arg(long)]
    pub tls_domain: Option<String>,
}

impl ClientSecurity {
    /// Connection options with `token`.
    pub fn options(&self, token: Option<String>) -> ConnectOptions {
        ConnectOptions {
            tls_ca: self.tls_ca.clone(),
            tls_domain: self.tls_domain.clone(),
            token,
            connect_timeout: None,
        }
    }
}

/// Prints where a server listens once it is ready (scripts and tests wait for this line).
pub fn announce(opts: &TierOptions) -> impl FnOnce(&Served) + use<> {
    let (name, stages) = (opts.name.clone(), opts.stages);
    move |served| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {} (tier {name}, stages {stages})", served.addr);
        if let Some(m) = served.http_addr {
            let _ = writeln!(
                out,
                "http on http://{m}: /v2 (Open Inference Protocol REST) and /metrics"
            );
            let _ = writeln!(out, "metrics on http://{m}/metrics");
        }
        let _ = out.flush();
    }
}
