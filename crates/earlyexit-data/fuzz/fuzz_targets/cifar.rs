//! CIFAR-10 and CIFAR-100 binary batch parsers: any input gives Ok or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = earlyexit_data::parse_cifar10(data) {
        assert_eq!(b.pixels.len(), b.len() * 3072);
        assert!(b.labels.iter().all(|&l| l < 10));
    }
    if let Ok(b) = earlyexit_data::parse_cifar100(data) {
        assert_eq!(b.pixels.len(), b.len() * 3072);
        assert!(b.labels.iter().all(|&l| l < 100));
        assert!(b.coarse.as_ref().is_some_and(|c| c.iter().all(|&l| l < 20)));
    }
});
