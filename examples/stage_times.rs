//! Wall-clock time per stage against MACs per stage, to see where the MAC model and the clock
//! disagree. `cargo run --release --example stage_times -- resnet56 pareto:4 256`
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use earlyexit::model::{MacConvention, ModelDescription, Shape, StageState};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("resnet56", |s| s.as_str());
    let exits = args.get(2).map_or("pareto:4", |s| s.as_str());
    let batch: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(256);
    let arch = ModelDescription::new(name, Shape::new(3, 32, 32), 10, exits.parse().unwrap())
        .resolve()
        .unwrap();
    let device = Device::flex();
    let net = arch.init(&device);
    let net = if std::env::var("FOLD").is_ok() {
        net.fold_bn()
    } else {
        net
    };
    let x = Tensor::<4>::random([batch, 3, 32, 32], Distribution::Default, &device);
    let macs: Vec<u64> = (0..net.num_stages())
        .map(|k| {
            net.stage_blocks(k)
                .map(|b| arch.backbone.blocks[b].cost.macs(MacConvention::All))
                .sum()
        })
        .collect();
    let total: u64 = macs.iter().sum();
    for rep in 0..3 {
        let mut state = StageState::new(x.clone());
        let mut times = Vec::new();
        for k in 0..net.num_stages() {
            let t = Instant::now();
            state = net.run_stage(k, state);
            let _ = state.x.clone().sum().into_scalar::<f32>();
            times.push(t.elapsed().as_secs_f64());
        }
        let tt: f64 = times.iter().sum();
        if rep == 2 {
            for k in 0..times.len() {
                println!(
                    "stage {k}: MAC share {:.3}  time share {:.3}  ({:.1} ms)",
                    macs[k] as f64 / total as f64,
                    times[k] / tt,
                    times[k] * 1e3
                );
            }
        }
    }
}
