//! MAT-file v5 parser and the SVHN reader on top: any input gives Ok or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = earlyexit_data::parse_mat(data) {
        for a in &m.arrays {
            assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
        }
    }
    if let Ok(ds) = earlyexit_data::parse_svhn(data) {
        assert_eq!(ds.pixels().len(), ds.len() * 3072);
    }
});
