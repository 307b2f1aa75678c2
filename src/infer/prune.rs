//! Which exits pay for themselves: the survey's efficiency condition (eq. 4) and the greedy
//! keep-rule with its accuracy knob `TH` (eq. 5), on measured exit rates and our cost model.
//!
//! Notation (survey §4), for early exit `i` among the exits kept so far:
//! - `I_i`: the share of samples that **reach** exit `i` (so `I_i − I_{i+1}` leave there and
//!   `cm_i = I_{i+1} / I_i` is the "compression ratio" eq. 5 names); `I_0 = 1`;
//! - `γ_i`: the cost of running the network up to exit `i`, earlier heads included
//!   (`γ` of the final classifier for `i + 1` past the last early exit);
//! - `γ_{f_i}`: the backbone segment that ends at exit `i` (from the previous kept exit);
//!   `γ_{f_{i+1}}`: the segment from exit `i` to the next kept exit (or to the end, classifier
//!   included); `γ_{c_i}`: head `i` alone.
//!
//! All costs are relative to the plain backbone's MACs (convention `all`).
//!
//! ```
//! use earlyexit::infer::{efficiency_condition, greedy_keep_value};
//! // Half the samples reach exit i, a tenth go on: (0.9 − 0.4)(0.5 − 0.1) = 0.2 > 0.4 · 0.1.
//! assert!(efficiency_condition(0.4, 0.9, 0.5, 0.1));
//! // TH = 0.8, cm = 0.2: (0.6)(0.5) − (0.8)(0.01) − (0.2)(0.3) = 0.232 ≥ 0 → keep.
//! assert!((greedy_keep_value(0.8, 0.2, 0.5, 0.01, 0.3) - 0.232).abs() < 1e-12);
//! ```

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Architecture, MacConvention};
use crate::policy::{ExitTable, Outcome};
use crate::policy::{Policy, Thresholds};

/// Survey eq. 4: exit `i` improves efficiency iff `(γ_{i+1} − γ_i)(I_i − I_{i+1}) > γ_i I_{i+1}`.
pub fn efficiency_condition(gamma_i: f64, gamma_next: f64, reach_i: f64, reach_next: f64) -> bool {
    (gamma_next - gamma_i) * (reach_i - reach_next) > gamma_i * reach_next
}

/// Left-hand side of survey eq. 5: `(TH − cm_i) γ_{f_{i+1}} − (1 − cm_i) γ_{c_i} − (1 − TH) γ_{f_i}`;
/// the exit is kept when it is `≥ 0`.
pub fn greedy_keep_value(th: f64, cm: f64, gamma_f_next: f64, gamma_c: f64, gamma_f: f64) -> f64 {
    (th - cm) * gamma_f_next - (1.0 - cm) * gamma_c - (1.0 - th) * gamma_f
}

/// The rates and costs of one early exit and the verdicts of eq. 4 and eq. 5.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitCheck {
    /// Exit index in the original network.
    pub exit: usize,
    /// Its cut point.
    pub cut: usize,
    /// `I_i`: share of samples reaching it (with the exits kept before it).
    pub reach: f64,
    /// `I_{i+1}`: share going on past it.
    pub reach_next: f64,
    /// `cm_i = I_{i+1} / I_i` (1 when nothing reaches it).
    pub cm: f64,
    /// `γ_i`: relative cost up to this exit, earlier heads included.
    pub gamma: f64,
    /// `γ_{i+1}`: relative cost up to the next exit (or the final classifier).
    pub gamma_next: f64,
    /// `γ_{f_i}`: the backbone segment ending here.
    pub gamma_f: f64,
    /// `γ_{f_{i+1}}`: the backbone segment after this exit.
    pub gamma_f_next: f64,
    /// `γ_{c_i}`: this head.
    pub gamma_c: f64,
    /// Eq. 4 holds: the exit pays for itself by the survey's condition.
    pub eq4: bool,
    /// Our cost model's direct figure: MACs saved by the samples leaving here minus this head's
    /// MACs paid by every sample reaching it, `(γ_{i+1} − γ_i)(I_i − I_{i+1}) − γ_{c_i} I_i`
    /// (relative to the plain network, per sample). Reported next to eq. 4, not used by it.
    pub net_saving: f64,
    /// Eq. 5's left-hand side.
    pub eq5_value: f64,
    /// Eq. 5 holds (`≥ 0`).
    pub eq5: bool,
    /// The greedy verdict: kept iff eq. 4 and eq. 5 hold.
    pub kept: bool,
}

/// The result of [`prune_plan`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrunePlan {
    /// `TH` used.
    pub th: f64,
    /// One check per original early exit, in order, as the greedy pass met it.
    pub checks: Vec<ExitCheck>,
    /// The early exits kept (original indices).
    pub keep: Vec<usize>,
    /// The policy before.
    pub policy: Policy,
    /// The policy for the pruned network (per-exit thresholds of dropped exits removed).
    pub pruned_policy: Policy,
    /// What the policy does on the table with every exit.
    pub before: Outcome,
    /// What the pruned policy does with the kept exits only (same table).
    pub after: Outcome,
}

/// Restricts a policy to the early exits in `keep`.
///
/// With no early exit left, a threshold policy becomes [`Policy::Never`] (the plain network).
pub fn restrict_policy(policy: &Policy, keep: &[usize]) -> Policy {
    if keep.is_empty() && matches!(policy, Policy::Confidence(_) | Policy::MaxProb(_) | Policy::Entropy(_)) {
        return Policy::Never;
    }
    let r = |t: &Thresholds| match t {
        Thresholds::Shared(v) => Thresholds::Shared(*v),
        Thresholds::PerExit(v) => Thresholds::PerExit(keep.iter().map(|&k| v[k]).collect()),
    };
    match policy {
        Policy::Confidence(t) => Policy::Confidence(r(t)),
        Policy::MaxProb(t) => Policy::MaxProb(r(t)),
        Policy::Entropy(t) => Policy::Entropy(r(t)),
        other => other.clone(),
    }
}

/// Rates and costs of the network restricted to `keep`.
fn checks_for(
    arch: &Architecture,
    table: &ExitTable,
    policy: &Policy,
    keep: &[usize],
    th: f64,
) -> Result<(Vec<ExitCheck>, Outcome)> {
    let sub = arch.retain_exits(keep)?;
    let conv = MacConvention::All;
    let b = sub.cost.backbone.macs(conv) as f64;
    let macs = sub.cost.exit_macs(conv);
    let t = table.with_exits(keep, macs.clone());
    let p = restrict_policy(policy, keep);
    let outcome = t.outcome(&p)?;
    let prefix = |end: usize| {
        sub.backbone.blocks[..end]
            .iter()
            .map(|bl| bl.cost.macs(conv))
            .sum::<u64>() as f64
    };
    let total = sub.cost.backbone.macs(conv) as f64;
    let mut reach = 1.0;
    let mut checks = Vec::with_capacity(keep.len());
    for (j, &orig) in keep.iter().enumerate() {
        let cut = sub.cuts[j];
        let reach_next = reach - outcome.coverage[j];
        let start = if j == 0 { 0.0 } else { prefix(sub.cuts[j - 1] + 1) };
        let end_next = if j + 1 < keep.len() {
            prefix(sub.cuts[j + 1] + 1)
        } else {
            total
        };
        let gamma_f = (prefix(cut + 1) - start) / b;
        let gamma_f_next = (end_next - prefix(cut + 1)) / b;
        let gamma_c = sub.cost.exits[j].head.macs(conv) as f64 / b;
        let gamma = macs[j] as f64 / b;
        let gamma_next = macs[j + 1] as f64 / b;
        let cm = if reach > 0.0 { reach_next / reach } else { 1.0 };
        let eq4 = efficiency_condition(gamma, gamma_next, reach, reach_next);
        let eq5_value = greedy_keep_value(th, cm, gamma_f_next, gamma_c, gamma_f);
        checks.push(ExitCheck {
            exit: orig,
            cut,
            reach,
            reach_next,
            cm,
            gamma,
            gamma_next,
            gamma_f,
            gamma_f_next,
            gamma_c,
            eq4,
            net_saving: (gamma_next - gamma) * (reach - reach_next) - gamma_c * reach,
            eq5_value,
            eq5: eq5_value >= 0.0,
            kept: eq4 && eq5_value >= 0.0,
        });
        reach = reach_next;
    }
    Ok((checks, outcome))
}

/// Greedy pass from the first exit to the last (survey §4): each exit is checked with the
/// rates measured on `table` under `policy`, given the decisions already taken before it and
/// every later exit still in place; an exit failing eq. 4 or eq. 5 is dropped and the rates
/// recomputed (its samples now go on to later exits).
pub fn prune_plan(arch: &Architecture, table: &ExitTable, policy: &Policy, th: f64) -> Result<PrunePlan> {
    if !(0.0..=1.0).contains(&th) {
        return Err(Error::invalid("--th", format!("`{th}`: expected a value in [0, 1]")));
    }
    if table.num_exits() != arch.num_exits() {
        return Err(Error::invalid(
            "table",
            format!(
                "{} early exits in the table, {} in the model",
                table.num_exits(),
                arch.num_exits()
            ),
        ));
    }
    let all: Vec<usize> = (0..arch.num_exits()).collect();
    let (_, before) = checks_for(arch, table, policy, &all, th)?;
    let mut keep = all.clone();
    let mut verdicts = Vec::new();
    for orig in all {
        let (checks, _) = checks_for(arch, table, policy, &keep, th)?;
        let c = checks.into_iter().find(|c| c.exit == orig).expect("still kept");
        if !c.kept {
            keep.retain(|&k| k != orig);
        }
        verdicts.push(c);
    }
    let (_, after) = checks_for(arch, table, policy, &keep, th)?;
    Ok(PrunePlan {
        th,
        checks: verdicts,
        pruned_policy: restrict_policy(policy, &keep),
        keep,
        policy: policy.clone(),
        before,
        after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eq4_against_hand_computed_rates_and_costs() {
        // 1000 samples; 600 leave at exit i, 400 reach it... take I_i = 0.8, I_{i+1} = 0.3:
        // savings (0.7 − 0.25)(0.5) = 0.225; overhead 0.25 · 0.3 = 0.075 → pays.
        assert!(efficiency_condition(0.25, 0.7, 0.8, 0.3));
        // Same costs, few leave: (0.45)(0.05) = 0.0225 < 0.25 · 0.75 = 0.1875 → does not pay.
        assert!(!efficiency_condition(0.25, 0.7, 0.8, 0.75));
        // Equality is not an improvement (strict >): (0.5 − 0.25)(0.5 − 0.25) = 0.0625 = 0.25 · 0.25.
        assert!(!efficiency_condition(0.25, 0.5, 0.5, 0.25));
    }

    #[test]
    fn eq5_against_hand_computed_values() {
        // TH = 1 and cm = 0.5: 0.5·0.4 − 0.5·0.02 − 0 = 0.19.
        assert!((greedy_keep_value(1.0, 0.5, 0.4, 0.02, 0.3) - 0.19).abs() < 1e-12);
        // TH = 0.6, cm = 0.5: 0.1·0.4 − 0.5·0.02 − 0.4·0.3 = 0.04 − 0.01 − 0.12 = −0.09 → drop.
        assert!((greedy_keep_value(0.6, 0.5, 0.4, 0.02, 0.3) + 0.09).abs() < 1e-12);
        // cm ≥ TH can never be kept with positive costs.
        assert!(greedy_keep_value(0.7, 0.8, 0.4, 0.0, 0.0) < 0.0);
    }
}
