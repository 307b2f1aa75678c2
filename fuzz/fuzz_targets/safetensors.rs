//! `weights.safetensors` as a model folder is opened: header length and JSON, tensor names,
//! dtypes, shapes and offsets against the description, the non-finite scan, then the load into
//! the network. Any input: loaded weights, or an error naming the file.
#![no_main]

use std::path::Path;

use earlyexit::model::io::load_weights_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let net = earlyexit_fuzz::model().net.clone();
    if let Err(e) = load_weights_from_bytes(net, data.to_vec(), Path::new("weights.safetensors")) {
        assert!(e.to_string().contains("weights.safetensors"), "{e}");
    }
});
