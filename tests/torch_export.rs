//! PyTorch out and back: `export --format torch` then [`load_torch_export`] gives the same
//! network bit for bit, for every kind of block and head.
//!
//! With `EARLYEXIT_KEEP_TORCH_EXPORTS=DIR` the exports stay in `DIR`, each with `expected.json`
//! (our logits for a fixed input) for checking `earlyexit_model.py` in PyTorch.

mod common;

use burn::tensor::Device;
use earlyexit::interop::{TORCH_ARCHITECTURE_FILE, TORCH_MODULE_FILE, export_torch, load_torch_export};
use earlyexit::model::{HeadKind, Shape};

/// Every tensor of `net` by path, as raw bytes.
fn tensors(net: &earlyexit::model::EarlyExitNet) -> Vec<(String, Vec<u8>)> {
    use burn::store::ModuleSnapshot;
    let mut v: Vec<(String, Vec<u8>)> = net
        .collect(None, None, false)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            (name, burn::store::bridge::to_data(&t).unwrap().as_bytes().to_vec())
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn export_then_load_is_bit_identical_for_every_block_and_head_kind() {
    let keep = std::env::var_os("EARLYEXIT_KEEP_TORCH_EXPORTS").map(std::path::PathBuf::from);
    let root = keep
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("earlyexit-torch-export-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let small = Shape::new(3, 32, 32);
    for (i, (backbone, input, head, exits, opts)) in [
        ("resnet20", small, HeadKind::Branchy, "pareto:3", ""),
        ("eenet8", Shape::new(1, 28, 28), HeadKind::Bnpool, "cuts:1,2", ""),
        ("resnet20_a", small, HeadKind::Pool, "linear:3", ""),
        ("resnet50", Shape::new(3, 16, 16), HeadKind::Plain, "linear:2", ""),
        ("mobilenet_v2", small, HeadKind::Pool, "cuts:3,8", ""),
        ("densenet121", small, HeadKind::Bnpool, "linear:2", ""),
        ("inception_v3", Shape::new(3, 75, 75), HeadKind::Pool, "linear:2", ""),
        ("vgg11_bn_imagenet", Shape::new(3, 64, 64), HeadKind::Pool, "cuts:2", ""),
        ("lenet5", Shape::new(1, 28, 28), HeadKind::Dense, "every", ""),
        (
            "resnet8",
            Shape::new(1, 16, 16),
            HeadKind::Relupool,
            "cuts:0,2",
            "grid:3",
        ),
        (
            "resnet14",
            Shape::new(1, 16, 16),
            HeadKind::Mlp(16, 8),
            "cuts:1,3",
            "gate",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let m = common::model_opts(backbone, input, exits, head, opts, 40 + i as u64);
        let dir = root.join(backbone);
        export_torch(&m, &"maxprob:0.5".parse().unwrap(), None, &dir).unwrap_or_else(|e| panic!("{backbone}: {e}"));
        assert!(dir.join(TORCH_ARCHITECTURE_FILE).is_file() && dir.join(TORCH_MODULE_FILE).is_file());
        let back = load_torch_export(&dir, &Device::flex()).unwrap_or_else(|e| panic!("{backbone}: {e}"));
        assert_eq!(back.arch, m.arch, "{backbone}");
        let (ours, theirs) = (tensors(&m.net), tensors(&back.net));
        assert_eq!(ours.len(), theirs.len(), "{backbone}");
        for ((name, a), (name_back, b)) in ours.iter().zip(&theirs) {
            assert_eq!(name, name_back);
            assert!(a == b, "{backbone}: {name} changed on the way");
        }
        if keep.is_some() {
            let x = common::input(3, input, 5);
            let logits: Vec<Vec<f32>> = m
                .net
                .forward_all(x.clone())
                .into_iter()
                .map(|o| o.logits.into_data().try_to_vec::<f32>().unwrap())
                .collect();
            let v = serde_json::json!({
                "input": x.into_data().try_to_vec::<f32>().unwrap(),
                "dims": [3, input.c, input.h, input.w],
                "logits": logits,
            });
            std::fs::write(dir.join("expected.json"), v.to_string()).unwrap();
        }
    }
    if keep.is_none() {
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn a_folder_whose_weights_do_not_fit_is_refused() {
    let input = Shape::new(1, 28, 28);
    let root = std::env::temp_dir().join(format!("earlyexit-torch-refused-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let a = common::model("lenet5", input, "cuts:1", HeadKind::Pool, 1);
    let b = common::model("eenet8", input, "cuts:1", HeadKind::Pool, 1);
    export_torch(&a, &"maxprob:0.5".parse().unwrap(), None, &root.join("a")).unwrap();
    export_torch(&b, &"maxprob:0.5".parse().unwrap(), None, &root.join("b")).unwrap();
    // a's architecture with b's weights.
    std::fs::copy(root.join("b/model.safetensors"), root.join("a/model.safetensors")).unwrap();
    let e = load_torch_export(&root.join("a"), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.safetensors") && e.contains("do not fit"), "{e}");
    std::fs::remove_dir_all(&root).unwrap();
}
