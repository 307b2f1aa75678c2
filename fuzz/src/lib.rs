//! What the fuzz targets share: the model whose server they attack (an EENet-8 on 1×28×28 with
//! exits after blocks 1 and 2, three stages) and the request rules of its tiers.

use std::sync::OnceLock;

use burn::tensor::Device;
use earlyexit::data::Normalize;
use earlyexit::infer::{MultiExitModel, Policy};
use earlyexit::model::{HeadKind, ModelDescription, Shape};
use earlyexit::serve::server::RequestRules;
use earlyexit::serve::tier::{StageRange, TierOptions};

/// The description every target uses; `dense` heads so that `Forward` carries pooled history.
pub fn description() -> ModelDescription {
    let mut d = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse().expect("cuts"));
    d.head = HeadKind::Dense;
    d
}

/// The model, built once (seeded).
pub fn model() -> &'static MultiExitModel {
    static MODEL: OnceLock<MultiExitModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        let device = Device::flex();
        device.seed(1);
        MultiExitModel::new(description().resolve().expect("resolves"), &device)
    })
}

/// The rules of a whole-model server that normalises images as MNIST training did.
pub fn whole_rules() -> &'static RequestRules {
    static RULES: OnceLock<RequestRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut opts = TierOptions::whole("maxprob:0.9,0.8".parse().expect("policy"));
        opts.normalize = Some(Normalize {
            mean: vec![0.1307],
            std: vec![0.3081],
        });
        RequestRules::new(model(), "model-a", &opts).expect("rules")
    })
}

/// The rules of a tier running stages 1..3 under `patience:2` (so `Forward` carries state).
pub fn tier_rules() -> &'static RequestRules {
    static RULES: OnceLock<RequestRules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut opts = TierOptions::whole(Policy::Patience(2));
        opts.stages = StageRange { start: 1, end: None };
        opts.name = "edge".into();
        RequestRules::new(model(), "model-a", &opts).expect("rules")
    })
}
