//! Where the exits go: explicit cut indices, or a rule over cumulative backbone MACs.
//!
//! Rules from the EENets seed §3.4 (Fig. 3, Tables 7 and 9) and the class-specific seed §3.2. An
//! exit goes after the first block whose cumulative MACs reach its target fraction of the plain
//! backbone's MACs; one that lands on the cut of the exit before moves to the next block, as the
//! seed's tables do (EENet-20 Fine: 13 / 24 / 36 %), and an exit with no block left is an error.
//! Explicit cut lists are taken as given: a repeated cut there is an error, never a silent merge.
//! No tensors here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::backbones::BackboneSpec;
use super::cost::MacConvention;
use crate::error::{Error, Result};

/// A MAC-fraction placement rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Each exit splits the rest of the network 20 % / 80 %.
    Pareto,
    /// The golden ratio counted back from the end: exits at 0.618^k of the MACs (k = n … 1), the
    /// last at 61.8 %, the one before at 38.2 %, then 23.6 %, …, as EENets' Tables 7 and 9 place
    /// them (EENet-44: 10, 15, 20, 25, 38, 63 %).
    Golden,
    /// Each exit splits the rest 5 % / 95 %.
    Fine,
    /// Equal cost between consecutive exits.
    Linear,
    /// The cost between consecutive exits grows quadratically (1, 4, 9, …).
    Quadratic,
}

impl Rule {
    /// The target fractions of the backbone's MACs for `n` exits.
    pub fn fractions(self, n: usize) -> Vec<f64> {
        let geometric = |phi: f64| (1..=n).map(|k| 1.0 - (1.0 - phi).powi(k as i32)).collect();
        match self {
            Rule::Pareto => geometric(0.2),
            Rule::Golden => (1..=n).rev().map(|k| 0.618_033_988_75f64.powi(k as i32)).collect(),
            Rule::Fine => geometric(0.05),
            Rule::Linear => (1..=n).map(|k| k as f64 / (n + 1) as f64).collect(),
            Rule::Quadratic => {
                let total: f64 = (1..=n + 1).map(|j| (j * j) as f64).sum();
                (1..=n)
                    .map(|k| (1..=k).map(|j| (j * j) as f64).sum::<f64>() / total)
                    .collect()
            }
        }
    }
}

/// How exits are placed. Serialised as its string form (`pareto:4`, `cuts:2,5`).
#[derive(Clone, Debug, PartialEq, serde_with::SerializeDisplay, serde_with::DeserializeFromStr)]
pub enum Placement {
    /// Explicit cut indices (block indices after which an exit sits).
    Cuts(Vec<usize>),
    /// `n` exits by a MAC-fraction rule.
    Rule {
        /// The rule.
        rule: Rule,
        /// Number of exits.
        n: usize,
    },
    /// One exit at every candidate cut point.
    Every,
    /// `p` evenly spread cut points.
    Sample(usize),
}

const PLACEMENT_FORMS: &str =
    "pareto:N, golden:N, fine:N, linear:N, quadratic:N, every, sample:P, cuts:I,J,… (or I,J,…), none";

impl FromStr for Placement {
    type Err = Error;

    /// Parses `pareto:6`, `golden:2`, `fine:4`, `linear:3`, `quadratic:2`, `every`, `sample:5`,
    /// `cuts:2,5,8` (or just `2,5,8`) and `none`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid("exits", format!("`{s}`: {why}; expected one of {PLACEMENT_FORMS}"));
        let (name, arg) = match s.split_once(':') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (s.trim(), None),
        };
        let count = |arg: Option<&str>| -> Result<usize> {
            let a = arg.ok_or_else(|| bad("missing the number of exits"))?;
            let n: usize = a
                .parse()
                .map_err(|_| bad("the number of exits is not a whole number"))?;
            if n == 0 {
                return Err(bad("the number of exits must be at least 1"));
            }
            Ok(n)
        };
        let cuts = |list: &str| -> Result<Vec<usize>> {
            list.split(',')
                .map(|c| c.trim().parse().map_err(|_| bad("cut indices must be whole numbers")))
                .collect()
        };
        let rule = |r| -> Result<Placement> {
            Ok(Placement::Rule {
                rule: r,
                n: count(arg)?,
            })
        };
        match name {
            "pareto" => rule(Rule::Pareto),
            "golden" => rule(Rule::Golden),
            "fine" => rule(Rule::Fine),
            "linear" => rule(Rule::Linear),
            "quadratic" => rule(Rule::Quadratic),
            "every" if arg.is_none() => Ok(Placement::Every),
            "sample" => Ok(Placement::Sample(count(arg)?)),
            "none" if arg.is_none() => Ok(Placement::Cuts(vec![])),
            "cuts" => cuts(arg.ok_or_else(|| bad("missing the cut list"))?).map(Placement::Cuts),
            _ if name.chars().next().is_some_and(|c| c.is_ascii_digit()) && arg.is_none() => {
                cuts(name).map(Placement::Cuts)
            }
            _ => Err(bad("unknown placement")),
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Cuts(c) if c.is_empty() => f.write_str("none"),
            Placement::Cuts(c) => {
                let list: Vec<String> = c.iter().map(|i| i.to_string()).collect();
                write!(f, "cuts:{}", list.join(","))
            }
            Placement::Rule { rule, n } => {
                let name = serde_json::to_value(rule)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                write!(f, "{name}:{n}")
            }
            Placement::Every => f.write_str("every"),
            Placement::Sample(p) => write!(f, "sample:{p}"),
        }
    }
}

impl Placement {
    /// Resolves to strictly increasing cut indices on `backbone` (MAC fractions under
    /// `convention`). Candidate cuts are the outputs of every block but the last, where the
    /// backbone's own classifier sits.
    pub fn resolve(&self, backbone: &BackboneSpec, convention: MacConvention) -> Result<Vec<usize>> {
        let candidates = backbone.blocks.len().saturating_sub(1);
        let cuts = match self {
            Placement::Cuts(c) => c.clone(),
            Placement::Every => (0..candidates).collect(),
            Placement::Sample(p) => {
                if *p > candidates {
                    return Err(Error::Placement {
                        reason: format!(
                            "sample:{p} asks for more places than {} has cut points ({candidates})",
                            backbone.name
                        ),
                    });
                }
                (1..=*p)
                    .map(|k| ((k * candidates) as f64 / (*p + 1) as f64).round() as usize)
                    .map(|i| i.min(candidates - 1))
                    .collect()
            }
            Placement::Rule { rule, n } => {
                let total = backbone.total_cost().macs(convention) as f64;
                let cumulative = cumulative_macs(backbone, convention);
                let mut cuts: Vec<usize> = Vec::with_capacity(*n);
                for (k, f) in rule.fractions(*n).into_iter().enumerate() {
                    let target = f * total;
                    match cumulative[..candidates].iter().position(|&c| c as f64 >= target) {
                        // On the previous exit's cut or before it: the next block (the seed's rule).
                        Some(i) => match cuts.last() {
                            Some(&prev) if i <= prev && prev + 1 >= candidates => {
                                return Err(Error::Placement {
                                    reason: format!(
                                        "exit {k} ({:.1} % of {}'s MACs) lands on exit {}'s cut {prev}, and no block is left after it: use fewer exits",
                                        f * 100.0,
                                        backbone.name,
                                        k - 1
                                    ),
                                });
                            }
                            Some(&prev) if i <= prev => cuts.push(prev + 1),
                            _ => cuts.push(i),
                        },
                        None => {
                            return Err(Error::Placement {
                                reason: format!(
                                    "exit {k} targets {:.1} % of {}'s MACs, beyond its last cut point",
                                    f * 100.0,
                                    backbone.name
                                ),
                            });
                        }
                    }
                }
                cuts
            }
        };
        validate_cuts(&cuts, backbone)?;
        Ok(cuts)
    }
}

/// Where `golden:n` put exits before it followed the seed's tables: after the first block
/// reaching 1 − 0.618^k of the MACs (k = 1 … n). Only to name, for a `model.json` written then,
/// the cuts its weights were trained with.
pub(crate) fn legacy_golden_cuts(backbone: &BackboneSpec, convention: MacConvention, n: usize) -> Vec<usize> {
    let total = backbone.total_cost().macs(convention) as f64;
    let candidates = backbone.blocks.len().saturating_sub(1);
    let cumulative = cumulative_macs(backbone, convention);
    (1..=n)
        .filter_map(|k| {
            let target = (1.0 - 0.618_033_988_75f64.powi(k as i32)) * total;
            cumulative[..candidates].iter().position(|&c| c as f64 >= target)
        })
        .collect()
}

/// The backbone's MACs up to and including each block.
fn cumulative_macs(backbone: &BackboneSpec, convention: MacConvention) -> Vec<u64> {
    let mut cum = 0u64;
    backbone
        .blocks
        .iter()
        .map(|b| {
            cum += b.cost.macs(convention);
            cum
        })
        .collect()
}

/// Checks that cuts are in range and strictly increasing, naming the offenders.
pub fn validate_cuts(cuts: &[usize], backbone: &BackboneSpec) -> Result<()> {
    let candidates = backbone.blocks.len().saturating_sub(1);
    for (k, &c) in cuts.iter().enumerate() {
        if c >= candidates {
            return Err(Error::Placement {
                reason: format!(
                    "exit {k} at cut {c}: {} has cut points 0..{} (the output of its last block is the final classifier's)",
                    backbone.name,
                    candidates.saturating_sub(1)
                ),
            });
        }
        if k > 0 && cuts[k - 1] == c {
            return Err(Error::Placement {
                reason: format!(
                    "exits {} and {k} both land on cut {c} (after `{}`); use fewer exits or another rule",
                    k - 1,
                    backbone.blocks[c].name
                ),
            });
        }
        if k > 0 && cuts[k - 1] > c {
            return Err(Error::Placement {
                reason: format!("cuts must be increasing, got {} before {c}", cuts[k - 1]),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cost::Shape;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn rule_fractions_match_the_issue() {
        close(&Rule::Fine.fractions(4), &[0.05, 0.0975, 0.1426, 0.1855]);
        close(&Rule::Pareto.fractions(4), &[0.2, 0.36, 0.488, 0.5904]);
        close(&Rule::Golden.fractions(2), &[0.382, 0.618]);
        close(&Rule::Golden.fractions(4), &[0.1459, 0.2361, 0.382, 0.618]);
        close(&Rule::Linear.fractions(4), &[0.2, 0.4, 0.6, 0.8]);
        // Quadratic: segments 1, 4, 9 out of 1+4+9+16 = 30.
        close(&Rule::Quadratic.fractions(3), &[1.0 / 30.0, 5.0 / 30.0, 14.0 / 30.0]);
    }

    #[test]
    fn each_exit_sits_on_the_first_block_reaching_its_target() {
        let bb = BackboneSpec::new("resnet110", Shape::new(3, 32, 32), 10, None).unwrap();
        let total = bb.total_cost().macs(MacConvention::All) as f64;
        for (rule, n) in [
            (Rule::Pareto, 4),
            (Rule::Fine, 4),
            (Rule::Golden, 2),
            (Rule::Linear, 4),
            (Rule::Quadratic, 3),
        ] {
            let cuts = Placement::Rule { rule, n }.resolve(&bb, MacConvention::All).unwrap();
            let mut cum = Vec::new();
            let mut acc = 0u64;
            for b in &bb.blocks {
                acc += b.cost.macs(MacConvention::All);
                cum.push(acc as f64 / total);
            }
            for (cut, f) in cuts.iter().zip(rule.fractions(n)) {
                assert!(cum[*cut] >= f, "{rule:?}: cut {cut} at {} < {f}", cum[*cut]);
                assert!(
                    *cut == 0 || cum[cut - 1] < f,
                    "{rule:?}: cut {cut} is not the first to reach {f}"
                );
            }
        }
    }

    #[test]
    fn collisions_move_to_the_next_block_and_bad_cuts_are_errors() {
        let bb = BackboneSpec::new("eenet8", Shape::new(1, 28, 28), 10, None).unwrap();
        // eenet8 has 3 cut points: fine:3 targets 5, 9.75, 14.3 % and all reach the first.
        assert_eq!(
            Placement::Rule { rule: Rule::Fine, n: 3 }
                .resolve(&bb, MacConvention::All)
                .unwrap(),
            vec![0, 1, 2]
        );
        let e = Placement::Rule { rule: Rule::Fine, n: 4 }
            .resolve(&bb, MacConvention::All)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no block is left"), "{e}");
        let e = Placement::Cuts(vec![1, 1])
            .resolve(&bb, MacConvention::All)
            .unwrap_err()
            .to_string();
        assert!(e.contains("both land on cut 1"), "{e}");
        let e = Placement::Cuts(vec![1, 9])
            .resolve(&bb, MacConvention::All)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cut 9"), "{e}");
        assert!("pareto:x".parse::<Placement>().is_err());
        assert!("bogus".parse::<Placement>().is_err());
        assert_eq!("1,2".parse::<Placement>().unwrap(), Placement::Cuts(vec![1, 2]));
    }

    /// EENets' Table 9 ("Cost Percent of EE-Blocks", CIFAR-10 6n+2 EENets): every rule's exits
    /// land on the seed's percentages on our ResNet-20/32/44/110, collisions moved as the seed
    /// moves them.
    #[test]
    fn rules_land_where_eenets_table_9_puts_them() {
        let table: &[(&str, Rule, &[f64])] = &[
            ("resnet20", Rule::Fine, &[13.0, 24.0, 36.0]),
            ("resnet32", Rule::Fine, &[8.0, 14.0, 21.0, 28.0, 35.0]),
            ("resnet44", Rule::Fine, &[5.0, 10.0, 15.0, 20.0, 25.0, 30.0]),
            (
                "resnet110",
                Rule::Fine,
                &[6.0, 11.0, 15.0, 19.0, 23.0, 27.0, 30.0, 34.0, 37.0, 41.0],
            ),
            ("resnet20", Rule::Pareto, &[24.0, 36.0, 57.0]),
            ("resnet32", Rule::Pareto, &[21.0, 40.0, 54.0, 61.0, 68.0]),
            ("resnet44", Rule::Pareto, &[20.0, 38.0, 53.0, 63.0, 67.0, 76.0]),
            ("resnet110", Rule::Pareto, &[21.0, 37.0, 50.0, 60.0, 69.0, 74.0]),
            ("resnet20", Rule::Golden, &[24.0, 45.0, 68.0]),
            ("resnet32", Rule::Golden, &[14.0, 21.0, 28.0, 40.0, 68.0]),
            ("resnet44", Rule::Golden, &[10.0, 15.0, 20.0, 25.0, 38.0, 63.0]),
            ("resnet110", Rule::Golden, &[6.0, 10.0, 15.0, 25.0, 39.0, 63.0]),
            ("resnet20", Rule::Linear, &[36.0, 57.0, 77.0]),
            ("resnet32", Rule::Linear, &[21.0, 35.0, 54.0, 68.0, 86.0]),
            ("resnet44", Rule::Linear, &[15.0, 30.0, 43.0, 58.0, 76.0, 90.0]),
            (
                "resnet110",
                Rule::Linear,
                &[10.0, 19.0, 28.0, 37.0, 47.0, 56.0, 65.0, 74.0, 83.0, 93.0],
            ),
        ];
        let mut report = Vec::new();
        for &(name, rule, seed) in table {
            let bb = BackboneSpec::new(name, Shape::new(3, 32, 32), 10, None).unwrap();
            let total = bb.total_cost().macs(MacConvention::All) as f64;
            let mut acc = 0u64;
            let cum: Vec<f64> = bb
                .blocks
                .iter()
                .map(|b| {
                    acc += b.cost.macs(MacConvention::All);
                    100.0 * acc as f64 / total
                })
                .collect();
            let cuts = Placement::Rule { rule, n: seed.len() }
                .resolve(&bb, MacConvention::All)
                .unwrap();
            let ours: Vec<f64> = cuts.iter().map(|&c| cum[c]).collect();
            // Every exit lands on the seed's percentage, rounded as the table rounds.
            for (&c, &p) in cuts.iter().zip(seed) {
                assert_eq!(
                    cum[c].round(),
                    p,
                    "{name} {rule:?}: ours {ours:.1?}, the seed's {seed:?}"
                );
            }
            report.push(format!("{name} {rule:?}: {ours:.0?} vs {seed:?}"));
        }
        println!("{}", report.join("\n"));
    }

    #[test]
    fn every_and_sample() {
        let bb = BackboneSpec::new("resnet20", Shape::new(3, 32, 32), 10, None).unwrap();
        assert_eq!(
            Placement::Every.resolve(&bb, MacConvention::All).unwrap(),
            (0..9).collect::<Vec<_>>()
        );
        let s = Placement::Sample(3).resolve(&bb, MacConvention::All).unwrap();
        assert_eq!(s.len(), 3);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
    }
}
