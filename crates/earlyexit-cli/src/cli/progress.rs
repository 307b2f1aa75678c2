//! Training progress on the terminal: a bar per epoch where stderr is a terminal, one line per
//! epoch otherwise, nothing with `--quiet`. The library only emits [`TrainEvent`]s.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use earlyexit::train::{Observer, TrainEvent};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The observer that renders a training's events on stderr (`quiet`: none).
pub fn training_observer(quiet: bool) -> Observer {
    if quiet {
        return Observer::default();
    }
    let show_bar = std::io::stderr().is_terminal();
    let bar: Arc<Mutex<Option<ProgressBar>>> = Arc::default();
    Observer::new(move |event| {
        let mut bar = bar.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            TrainEvent::EpochStarted {
                epoch,
                epochs,
                steps,
                first_step,
            } if show_bar => {
                let b = ProgressBar::with_draw_target(Some(*steps as u64), ProgressDrawTarget::stderr());
                b.set_style(style());
                b.set_prefix(format!("epoch {}/{}", epoch + 1, epochs));
                b.set_position(*first_step as u64);
                *bar = Some(b);
            }
            TrainEvent::Step {
                done,
                loss,
                accuracy,
                cost,
            } => {
                if let Some(b) = bar.as_ref() {
                    b.set_position(*done as u64);
                    b.set_message(format!("loss {loss:.4} acc {:.2}% cost {cost:.3}", 100.0 * accuracy));
                }
            }
            TrainEvent::EpochDone { metrics, epochs } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                eprintln!("{}", metrics.summary(*epochs));
            }
            TrainEvent::Stopped => {
                if let Some(b) = bar.take() {
                    b.abandon();
                }
            }
            TrainEvent::EpochStarted { .. } => {}
        }
    })
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise}<{eta_precise} {msg}")
        .expect("static template")
        .progress_chars("=> ")
}
