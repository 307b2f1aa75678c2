//! EENets seed, Table 2, on real MNIST: EENet-8 trained with `L_MC` (`mc`), `L_Cost` (`cost`),
//! `L_v1` and `L_v2` (λ = 1), each tested with real per-sample exits (threshold T = 0.5) and
//! reported with the **true** relative MAC cost of our cost model (earlier heads included).
//!
//! ```text
//! cargo run --release --example eenets_table2 -- [--epochs 3] [--set key=value]... \
//!     [--kind-set eenet-v2:objective.warmup=1]... [--kinds mc,cost,eenet-v1,eenet-v2] [--out runs/table2]
//! ```
//!
//! Every run starts from `configs/eenet8-mnist.toml`; `--set` applies to all of them,
//! `--kind-set KIND:key=value` to one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use earlyexit::infer::{EvalOptions, SplitKind, evaluate};
use earlyexit::run::Run;
use earlyexit::train::{Observer, TrainConfig, TrainEvent, TrainOptions, train};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut epochs = 3usize;
    let mut common: Vec<String> = Vec::new();
    let mut per_kind: Vec<(String, String)> = Vec::new();
    let mut kinds: Vec<String> = ["mc", "cost", "eenet-v1", "eenet-v2"].map(String::from).to_vec();
    let mut out = PathBuf::from("runs/table2");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--epochs" => epochs = value()?.parse()?,
            "--set" => common.push(value()?),
            "--kind-set" => {
                let v = value()?;
                let (k, kv) = v.split_once(':').ok_or("--kind-set takes KIND:key=value")?;
                per_kind.push((k.to_string(), kv.to_string()));
            }
            "--kinds" => kinds = value()?.split(',').map(String::from).collect(),
            "--out" => out = PathBuf::from(value()?),
            _ => return Err(format!("unknown argument {a}").into()),
        }
    }
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/eenet8-mnist.toml");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    let device = Device::flex();
    let mut rows = Vec::new();
    for kind in &kinds {
        let mut o = vec![
            format!("data.dir=\"{}\"", data.display()),
            format!("epochs={epochs}"),
            format!("objective.kind=\"{kind}\""),
        ];
        o.extend(common.iter().cloned());
        o.extend(per_kind.iter().filter(|(k, _)| k == kind).map(|(_, kv)| kv.clone()));
        let cfg = TrainConfig::from_file(&config, &o)?;
        let dir = out.join(kind);
        eprintln!("== {kind}: {}", o[1..].join(" "));
        let t = Instant::now();
        train(
            &cfg,
            &dir,
            &TrainOptions {
                force: true,
                observer: Observer::new(|e| {
                    if let TrainEvent::EpochDone { metrics, epochs } = e {
                        eprintln!("{}", metrics.summary(*epochs));
                    }
                }),
                ..TrainOptions::default()
            },
        )?;
        let train_s = t.elapsed().as_secs_f64();
        let run = Run::open(&dir)?;
        // Real exits on the test split; the table needs no timing, so a token one.
        let opts = EvalOptions {
            timing_samples: 8,
            large_batch_samples: 256,
            repeats: 1,
            ..EvalOptions::default()
        };
        let model = run.load_model(&device)?;
        let report = evaluate(&model, &run.split(SplitKind::Test)?, &run.policy()?, &opts, &device)?;
        rows.push((kind.clone(), o[1..].join(" "), report, train_s));
    }
    let costs: Vec<f64> = rows[0].2.exits.iter().map(|e| e.relative_cost).collect();
    println!("\nEENet-8 on MNIST (test set, 10,000 samples), policy confidence:0.5 (T = 0.5)");
    println!(
        "true relative cost per exit (our MAC model, earlier heads included): EE-0 {:.3}, EE-1 {:.3}, last {:.3}\n",
        costs[0], costs[1], costs[2]
    );
    println!(
        "| {:<10} | {:>6} | {:>6} | {:>6} | {:>8} | {:>13} | {:>7} |",
        "loss", "EE-0", "EE-1", "last", "accuracy", "relative cost", "train s"
    );
    println!(
        "|{:-<12}|{:->8}|{:->8}|{:->8}|{:->10}|{:->15}|{:->9}|",
        "", "", "", "", "", "", ""
    );
    for (kind, _, r, s) in &rows {
        println!(
            "| {:<10} | {:>6} | {:>6} | {:>6} | {:>7.2}% | {:>13.3} | {:>7.0} |",
            kind,
            r.exits[0].count,
            r.exits[1].count,
            r.exits[2].count,
            100.0 * r.accuracy,
            r.relative_cost,
            s
        );
    }
    println!();
    for (kind, o, _, _) in &rows {
        println!("{kind}: {o}");
    }
    Ok(())
}
