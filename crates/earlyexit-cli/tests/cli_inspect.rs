//! `earlyexit inspect`: the JSON contract and clear errors with a non-zero exit.

mod common;

use common::earlyexit;

#[test]
fn json_has_the_documented_fields() {
    let out = earlyexit(&[
        "inspect",
        "--model",
        "resnet110",
        "--input",
        "3x32x32",
        "--classes",
        "10",
        "--exits",
        "pareto:6",
        "--head",
        "pool",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let macs = v["backbone_macs"].as_u64().unwrap() as f64;
    assert!((macs - 256.32e6).abs() / 256.32e6 < 0.01);
    assert!(v["params"].as_u64().unwrap() > 1_700_000);
    let exits = v["exits"].as_array().unwrap();
    assert_eq!(exits.len(), 7);
    let mut last = 0.0;
    for e in &exits[..6] {
        assert!(e["cut"].is_u64());
        let rel = e["relative_cost"].as_f64().unwrap();
        assert!(rel > last, "relative cost grows exit to exit");
        last = rel;
        assert!(e["macs"].as_u64().unwrap() > 0);
    }
    // The final exit costs the whole backbone plus every head on the way.
    assert!(exits[6]["relative_cost"].as_f64().unwrap() > 1.0);
}

#[test]
fn conv_linear_convention_counts_less() {
    let get = |conv: &str| {
        let out = earlyexit(&["inspect", "--model", "resnet20", "--macs", conv, "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["backbone_macs"].as_u64().unwrap()
    };
    assert!(get("conv-linear") < get("all"));
}

#[test]
fn bad_input_gives_a_clear_error_and_nonzero_exit() {
    for (args, needle) in [
        (vec!["inspect", "--model", "resnet21"], "unknown backbone `resnet21`"),
        (vec!["inspect", "--model", "resnet20", "--input", "3x32"], "CxHxW"),
        (vec!["inspect", "--model", "lenet5", "--input", "1x4x4"], "does not fit"),
        (
            vec![
                "inspect", "--model", "eenet8", "--input", "1x28x28", "--exits", "fine:4",
            ],
            "lands on exit 2's cut 2, and no block is left",
        ),
        (
            vec!["inspect", "--model", "resnet20", "--exits", "cuts:3,3"],
            "both land on cut 3",
        ),
        (
            vec!["inspect", "--model", "resnet20", "--exits", "pareto:40"],
            "no block is left after it: use fewer exits",
        ),
        (
            vec!["inspect", "--model", "resnet20", "--head", "fancy"],
            "unknown head",
        ),
    ] {
        let out = earlyexit(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
