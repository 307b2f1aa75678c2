//! Serving processes for the tests: `earlyexit ARGS --listen 127.0.0.1:PORT` started, waited
//! for, and killed when its guard drops, on every path.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const EXE: &str = env!("CARGO_BIN_EXE_earlyexit");
/// The shared token of the tests' servers (`EARLYEXIT_TOKEN`).
pub const TOKEN: &str = "s3cret-between-tiers";

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Kills the process now (SIGKILL: no goodbye to its peers).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `earlyexit ARGS… --listen 127.0.0.1:PORT` and waits for its `listening on` line.
pub fn spawn(args: &[&str], port: u16, env_token: bool) -> Proc {
    spawn_logging(args, port, env_token, Stdio::inherit())
}

/// [`spawn`] with the process's log (stderr) going to `log`.
pub fn spawn_logging(args: &[&str], port: u16, env_token: bool, log: Stdio) -> Proc {
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(EXE);
    cmd.args(args)
        .args(["--listen", &listen])
        .stdout(Stdio::piped())
        .stderr(log)
        .env_remove("EARLYEXIT_TOKEN")
        .env_remove("RUST_LOG");
    if env_token {
        cmd.env("EARLYEXIT_TOKEN", TOKEN);
    }
    let mut child = cmd.spawn().expect("spawn earlyexit");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let proc = Proc { child, addr: listen };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if line.starts_with("listening on ") => proc,
        other => panic!("{args:?} did not start: {other:?}"),
    }
}
