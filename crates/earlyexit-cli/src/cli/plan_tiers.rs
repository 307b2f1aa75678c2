//! `earlyexit plan-tiers`: where to split the network across tiers.

use anyhow::{Context, bail};
use earlyexit::infer::Executor;
use earlyexit::serve::codec::WireDType;
use earlyexit::serve::plan::{
    LinkSpec, Objective, Problem, StageCosts, TierSpec, TierSpeed, estimate_rates, exit_rates, measure_stage_seconds,
};
use earlyexit::train::DataSplit;
use earlyexit::train::data::batch_tensors;

use super::common::{DeviceArg, PathArg, choice};
use super::serving::ModelArgs;

/// Arguments of `plan-tiers`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// A tier, first (where the client is) to last: `NAME:SPEED`, SPEED in MAC/s (`20G`) or
    /// `here`, `here/F`, `here*F` (this machine's measured stage times, F times slower/faster).
    #[arg(long = "tier", required = true)]
    tiers: Vec<TierSpec>,
    /// A link between consecutive tiers: `LATENCY:BANDWIDTH` (`5ms:50Mbit`), one fewer than tiers.
    #[arg(long = "link")]
    links: Vec<LinkSpec>,
    /// Exit rates (share leaving at each exit, final last), comma-separated; default: the
    /// run's calibration (`policy.json`), else measured on the run's validation split with
    /// its policy, else (bare model folders) estimated on random inputs.
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<f64>>,
    /// What to minimise.
    #[arg(long, default_value = "latency", value_parser = choice::<Objective>())]
    objective: Objective,
    /// Bytes per input as clients send it (e.g. the mean PNG size); default: a raw f32 tensor.
    #[arg(long)]
    input_bytes: Option<u64>,
    /// Element type activations travel in.
    #[arg(long, default_value = "f32")]
    dtype: WireDType,
    /// Repetitions when measuring `here` stage times.
    #[arg(long, default_value_t = 30)]
    reps: usize,
    /// Plans to list besides the best.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Also predict this split: the interior boundaries, one fewer than tiers (`1,2` puts
    /// stage 0 on the first tier, stage 1 on the second, the rest on the third).
    #[arg(long, value_delimiter = ',')]
    split: Option<Vec<usize>>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    device: DeviceArg,
    /// Which code measures the exit rates (the stage times are the Burn module's, as tiers run).
    #[command(flatten)]
    path: PathArg,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.links.len() + 1 != a.tiers.len() {
        bail!(
            "{} tiers need {} --link, {} given",
            a.tiers.len(),
            a.tiers.len() - 1,
            a.links.len()
        );
    }
    let device = a.device.device()?;
    let loaded = a.model.load(&device)?;
    let (model, policy) = (&loaded.model, &loaded.policy);
    let exec = Executor::new(model.clone(), &device, a.path.path)?;
    let (rates, source) = match (&a.rates, a.model.calibrated_rates()?, &loaded.run) {
        (Some(r), _, _) => (r.clone(), "given".to_string()),
        (None, Some(r), _) => (r, "calibrated (policy.json)".to_string()),
        (None, None, Some(run)) => {
            let data = run.data().context("reading the run's data for exit rates")?;
            let loader = run.loader(&data, DataSplit::Val, 500)?;
            let batches = loader.epoch(0).map(|b| batch_tensors(&b, &device).0);
            let r = exit_rates(&exec, policy, batches)?;
            (r, format!("measured on the validation split with {policy}"))
        }
        (None, None, None) => {
            let r = estimate_rates(&exec, policy, 512, 0)?;
            eprintln!("warning: exit rates estimated on random inputs with {policy}; give --rates or use a run");
            (r, format!("estimated on random inputs ({policy})"))
        }
    };
    let mut costs = StageCosts::new(&model.arch, &rates, a.dtype)?;
    if let Some(b) = a.input_bytes {
        costs.send_bytes[0] = b + 8;
    }
    let here = if a.tiers.iter().any(|t| matches!(t.speed, TierSpeed::Here(_))) {
        Some(measure_stage_seconds(&exec, a.reps)?)
    } else {
        None
    };
    let problem = Problem::from_specs(costs, &a.tiers, a.links.clone(), here.as_deref())?;
    let best = problem.best(a.objective)?;
    let last = problem.all_on_last();
    let first = problem.evaluate(
        &std::iter::once(0)
            .chain(std::iter::repeat_n(problem.costs.stages(), a.tiers.len()))
            .collect::<Vec<_>>(),
    );
    let evaluated = match &a.split {
        None => None,
        Some(b) => {
            let s = problem.costs.stages();
            if b.len() + 1 != a.tiers.len() || b.windows(2).any(|w| w[0] > w[1]) || b.iter().any(|&x| x > s) {
                bail!(
                    "--split needs {} non-decreasing boundaries in 0..={s}",
                    a.tiers.len() - 1
                );
            }
            let splits: Vec<usize> = std::iter::once(0).chain(b.iter().copied()).chain([s]).collect();
            Some(problem.evaluate(&splits))
        }
    };
    let mut all = problem.all_plans();
    all.sort_by(|x, y| match a.objective {
        Objective::Latency => x.latency_s.total_cmp(&y.latency_s),
        Objective::Bytes => x.bytes_per_sample.total_cmp(&y.bytes_per_sample),
    });
    all.truncate(a.top);
    if a.json {
        let v = serde_json::json!({
            "rates": rates, "rates_source": source, "objective": a.objective,
            "costs": problem.costs, "stage_seconds": problem.stage_seconds, "here_seconds": here,
            "best": best, "stage_args": best.stage_args(), "evaluated": evaluated, "all_on_last": last, "all_on_first": first, "top": all,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let d = &model.arch.description;
    println!(
        "{} {} with {} stages; exit rates {:?} ({source})",
        d.backbone,
        d.input,
        problem.costs.stages(),
        rates
    );
    print!("{:>5} {:>12} {:>7} {:>11}", "stage", "MACs", "reach", "send B");
    for t in &problem.tiers {
        print!(" {:>10}", format!("{t} ms"));
    }
    println!();
    for k in 0..problem.costs.stages() {
        print!(
            "{k:>5} {:>12} {:>7.3} {:>11}",
            problem.costs.macs[k], problem.costs.reach[k], problem.costs.send_bytes[k]
        );
        for t in &problem.stage_seconds {
            print!(" {:>10.4}", t[k] * 1e3);
        }
        println!();
    }
    println!();
    println!("best ({:?}): {best}", a.objective);
    for (i, l) in best.links.iter().enumerate() {
        println!(
            "  link {} -> {}: {:.0} bytes/sample, {:.3} ms/sample",
            problem.tiers[i],
            problem.tiers[i + 1],
            l.bytes,
            l.seconds * 1e3
        );
    }
    let args: Vec<String> = best
        .stage_args()
        .iter()
        .map(|(n, s)| format!("{n}: --stages {s}"))
        .collect();
    println!("  run: {}", args.join("; "));
    if let Some(e) = &evaluated {
        println!("given split: {e}");
    }
    println!("all on {}: {last}", problem.tiers.last().expect("tiers"));
    println!("all on {}: {first}", problem.tiers[0]);
    println!("top {}:", all.len());
    for p in &all {
        println!("  {p}");
    }
    Ok(())
}
