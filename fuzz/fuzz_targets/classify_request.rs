//! `Classify` as a tier receives it: protobuf decoding, then every check before the queue
//! (image count, tensor shapes and payloads in every dtype and compression, PNG/JPEG decoding
//! under the size limits, normalisation). Any input: `Ok` with the images' count, or an error.
#![no_main]

use earlyexit::serve::proto::ClassifyRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ClassifyRequest::decode(data) else { return };
    let n = req.images.len();
    if let Ok(count) = earlyexit_fuzz::whole_rules().check_classify(req) {
        assert_eq!(count, n);
    }
});
