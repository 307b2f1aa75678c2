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
    if a.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let client = TierClient::connect(&a.server, &a.security.options(a.token.clone()))
            .with_context(|| format!("connecting to {}", a.server))?;
        // Each file's line as soon as its request is answered; a file that fails says why on
        // stderr and costs only its own answer.
        let timeout = Duration::from_millis(a.timeout_ms);
        let failed = classify_files(&client, &a.files, a.batch, timeout, |file, outcome| match outcome {
            Ok(ans) => println!("{}", answer_line(&file.display().to_string(), &ans)),
            Err(e) => {
                // A read error names the file itself; the server's refusals do not.
                let (name, why) = (file.display().to_string(), e.to_string());
                if why.starts_with(&name) {
                    eprintln!("{why}");
                } else {
                    eprintln!("{name}: {why}");
                }
            }
        })
        .await;
        if failed > 0 {
            anyhow::bail!("{failed} of {} files were not classified (see above)", a.files.len());
        }
        Ok(())
    })
}
