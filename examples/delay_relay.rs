//! A TCP relay that delays every byte by a fixed time in each direction: the link delay of
//! `scripts/bench-tiers` on kernels without `sch_netem` (the bandwidth limit stays in the
//! kernel, with `tc … tbf`). Bytes keep their order and pacing; each chunk is written `delay`
//! after it was read.
//!
//! `cargo run --release --example delay_relay -- --listen 10.200.1.2:8101 --to 127.0.0.1:7102 --delay-ms 5`
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    to: SocketAddr,
    #[arg(long, default_value_t = 0.0)]
    delay_ms: f64,
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let delay = Duration::from_secs_f64(a.delay_ms.max(0.0) / 1e3);
    let listener = TcpListener::bind(a.listen).await?;
    println!("relaying {} -> {} with {} ms each way", a.listen, a.to, a.delay_ms);
    loop {
        let (inbound, _) = listener.accept().await?;
        let to = a.to;
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::join!(pump(ir, ow, delay), pump(or, iw, delay));
        });
    }
}
