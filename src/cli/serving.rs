//! Arguments shared by the serving commands: which model, which policy, network security.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use earlyexit::infer::{MultiExitModel, Policy};
use earlyexit::serve::client::ConnectOptions;
use earlyexit::serve::server::load_for_serving;

/// Which model to serve and with which policy.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A run folder (`runs/NAME`): `model.json`, `weights.safetensors`, and `policy.json` when
    /// calibrated.
    #[arg(long, conflicts_with = "model")]
    pub run: Option<PathBuf>,
    /// A model folder (`model.json` + `weights.safetensors`), as `io::save_model` writes it.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Exit policy (e.g. `confidence:0.5`, `maxprob:0.9,0.8`); default: the run's calibrated
    /// `policy.json`.
    #[arg(long)]
    pub policy: Option<Policy>,
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

    /// The policy: `--policy`, else the `policy` field of the folder's `policy.json`.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        if let Some(p) = &self.policy {
            return Ok(p.clone());
        }
        let path = self.dir()?.join("policy.json");
        if path.exists() {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
            let p = v
                .get("policy")
                .and_then(|p| p.as_str())
                .with_context(|| format!("{} has no `policy` string", path.display()))?;
            return p.parse().with_context(|| format!("policy in {}", path.display()));
        }
        bail!("no --policy given and no policy.json in {}", self.dir()?.display())
    }

    /// Exit rates recorded by calibration (`validation.coverage` in `policy.json`), if any.
    pub fn calibrated_rates(&self) -> anyhow::Result<Option<Vec<f64>>> {
        let path = self.dir()?.join("policy.json");
        if !path.exists() {
            return Ok(None);
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        Ok(v.pointer("/validation/coverage")
            .and_then(|c| c.as_array())
            .map(|a| a.iter().filter_map(|x| x.as_f64()).collect()))
    }

    /// Loads the model (BatchNorm folded) and its id.
    pub fn load(&self, device: &Device) -> anyhow::Result<(MultiExitModel, String)> {
        let dir = self.dir()?;
        load_for_serving(dir, device).with_context(|| format!("loading the model in {}", dir.display()))
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
    /// Shared token every request must carry (also for the next tier); prefer the
    /// environment variable, which `ps` does not show.
    #[arg(long, env = "EARLYEXIT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// TLS and token, client side.
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
