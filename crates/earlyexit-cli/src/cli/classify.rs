//! `earlyexit classify`: the client. One line per input: file, class, exit, tier, confidence.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use earlyexit::serve::client::{TierClient, answer_line, classify_files};

use super::serving::ClientSecurity;

/// Arguments of `classify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address of the server or first tier.
    #[arg(long, default_value = "127.0.0.1:7070")]
    server: String,
    /// PNG or JPEG files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Images per request.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Deadline per request, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Shared token.
    #[arg(long, env = "EARLYEXIT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    security: ClientSecurity,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = TierClient::connect(&a.server, &a.security.options(a.token.clone()))?;
        let answers = classify_files(&client, &a.files, a.batch, Duration::from_millis(a.timeout_ms))
            .await
            .with_context(|| format!("classifying with {}", a.server))?;
        for (f, ans) in a.files.iter().zip(&answers) {
            println!("{}", answer_line(&f.display().to_string(), ans));
        }
        Ok(())
    })
}
