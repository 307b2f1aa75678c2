//! Arguments that cannot work are refused before any computing: each check runs against a run
//! folder that does not exist, so an error about the argument (not about the folder) proves the
//! argument was checked first.

mod common;

use common::{earlyexit_text, scratch};

#[test]
fn zero_counts_are_refused_before_the_run_is_read() {
    for (cmd, arg) in [
        ("eval", "--timing-samples"),
        ("eval", "--large-batch"),
        ("report", "--timing-samples"),
    ] {
        let (ok, text) = earlyexit_text(&[cmd, "--run", "no/such/run", arg, "0"]);
        assert!(!ok, "{cmd} {arg} 0 succeeded");
        let field = arg.trim_start_matches("--").replace('-', "_");
        assert!(
            text.contains(&field) && text.contains("at least 1") && !text.contains("no/such/run"),
            "{cmd} {arg} 0: {text}"
        );
    }
}

#[test]
fn report_out_that_is_a_file_is_refused_before_computing() {
    let d = scratch("report-out-file");
    let file = d.join("report.md");
    std::fs::write(&file, "not a folder").unwrap();
    let (ok, text) = earlyexit_text(&["report", "--run", "no/such/run", "--out", &file.display().to_string()]);
    assert!(!ok);
    assert!(text.contains("is a file") && text.contains("report.md"), "{text}");
    // The file is left as it was.
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a folder");
    let _ = std::fs::remove_dir_all(d);
}

#[cfg(feature = "serve")]
#[test]
fn serve_limits_of_zero_are_refused_at_start() {
    for arg in ["--max-samples", "--max-request-bytes"] {
        let (ok, text) = earlyexit_text(&["serve", "--model", "no/such/model", "--policy", "maxprob:0.9", arg, "0"]);
        assert!(!ok, "serve {arg} 0 started");
        assert!(
            text.contains(arg) && text.contains("at least 1") && !text.contains("no/such/model"),
            "{arg}: {text}"
        );
    }
}

#[test]
fn an_os_error_is_said_once() {
    let (ok, text) = earlyexit_text(&["eval", "--run", "no/such/run"]);
    assert!(!ok);
    assert!(text.contains("no/such/run"), "{text}");
    let (ok, text) = earlyexit_text(&["inspect", "--description", "no/such/model.json"]);
    assert!(!ok);
    assert_eq!(text.matches("os error 2").count(), 1, "{text}");
}

#[test]
fn thresholds_outside_their_range_are_refused_before_the_run_is_read() {
    for policy in ["maxprob:-0.5", "maxprob:1.5", "entropy:-1"] {
        let (ok, text) = earlyexit_text(&["eval", "--run", "no/such/run", "--policy", policy]);
        assert!(!ok, "--policy {policy} accepted");
        let value = policy.split(':').nth(1).unwrap();
        assert!(
            text.contains(&format!("`{value}` is outside [0, 1]"))
                && text.contains("off")
                && !text.contains("no/such/run"),
            "{policy}: {text}"
        );
    }
}
