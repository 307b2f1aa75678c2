//! `model.json` as a model folder is opened: JSON into a description, then resolution into an
//! architecture (backbone, cuts, heads, costs). Any input: a description that resolves, or an
//! error. Nothing is allocated for weights (that needs a description that resolved).
#![no_main]

use earlyexit::model::ModelDescription;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(desc) = serde_json::from_slice::<ModelDescription>(data) else {
        return;
    };
    if let Ok(arch) = desc.resolve() {
        // What a resolved description promises: one head per cut, cuts inside the backbone.
        assert_eq!(arch.heads.len(), arch.cuts.len());
        assert!(arch.cuts.iter().all(|&c| c < arch.backbone.blocks.len()));
    }
});
