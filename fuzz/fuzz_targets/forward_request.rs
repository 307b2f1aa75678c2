//! `Forward` as a tier receives it: protobuf decoding, then the stage, model id, ids against the
//! activations' and pooled tensors' shapes, payload decoding, best-so-far answers and the
//! patience state (a client's numbers). Any input: `Ok` with the ids' count, or an error.
#![no_main]

use earlyexit::serve::proto::ForwardRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = ForwardRequest::decode(data) else { return };
    let n = req.ids.len();
    if let Ok(count) = earlyexit_fuzz::tier_rules().check_forward(req) {
        assert_eq!(count, n);
    }
});
