//! `policy.json` as `eval`/`serve`/`calibrate` read it: a policy string, or an object with a
//! `policy` field, or a whole calibration. Any input: a policy whose text reads back as itself,
//! or an error.
#![no_main]

use std::path::Path;

use earlyexit::run::parse_policy_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(f) = parse_policy_file(text, Path::new("policy.json")) {
        let again = f.policy.to_string();
        let back: earlyexit::infer::Policy = again.parse().expect("a policy's text reads back");
        assert_eq!(back.to_string(), again);
    }
});
