//! IDX parsers (raw and gzip): any input gives Ok or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(img) = earlyexit_data::parse_idx_images(data) {
        assert_eq!(img.pixels.len(), img.count * img.rows * img.cols);
    }
    if let Ok(labels) = earlyexit_data::parse_idx_labels(data) {
        assert!(labels.len() <= data.len() || data.starts_with(&[0x1f, 0x8b]));
    }
});
