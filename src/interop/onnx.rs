//! ONNX out, with the exits intact: one graph per stage slice and one per exit head, plus a
//! manifest with which any runtime runs the cascade (`earlyexit export --format onnx`).
//!
//! A single static ONNX graph cannot skip the rest of the network for the samples that leave
//! early, so the network is cut where we cut it: stage `k` maps the features after stage `k − 1`
//! (the input for `k = 0`) to the features at cut `k`, exit `k` maps those to logits (and the
//! confidence logit), and the last stage feeds the final classifier. Every graph has a dynamic
//! batch axis. BatchNorms that follow a convolution are folded into it first; the others become
//! `BatchNormalization`; torchvision's adaptive pool before VGG's first dense layer is folded
//! into that layer's weights (the input size is fixed). Opset 13.
//!
//! The protobuf types come from `proto/onnx.proto` (the subset of the ONNX format written here)
//! through prost.

use burn::module::Param;
use burn::nn::conv::Conv2d;
use burn::nn::pool::{AvgPool2d, MaxPool2d};
use burn::nn::{BatchNorm, Linear, PaddingConfig2d};
use burn::tensor::Tensor;
use prost::Message;

use crate::error::{Error, Result};
use crate::infer::MultiExitModel;
use crate::model::branched::{InceptionBranch, InvertedResidualBlock};
use crate::model::layers::{Block, ConvBnAct};
use crate::model::{Backbone, BlockSpec, ExitHead, HeadKind, Shape};

#[allow(clippy::all, missing_docs, dead_code)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use pb::attribute_proto::AttributeType;
use pb::tensor_proto::DataType;

/// The opset every graph declares.
pub const OPSET: i64 = 13;

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("float tensors convert to f32")
}

fn param<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
    host(p.val())
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        ints: v.to_vec(),
        r#type: AttributeType::Ints as i32,
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        i: v,
        r#type: AttributeType::Int as i32,
        ..Default::default()
    }
}

fn float(name: &str, v: f32) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        f: v,
        r#type: AttributeType::Float as i32,
        ..Default::default()
    }
}

/// One graph under construction: nodes in order and their constant inputs.
struct Graph {
    nodes: Vec<pb::NodeProto>,
    initializers: Vec<pb::TensorProto>,
    next: usize,
}

impl Graph {
    fn new() -> Self {
        Self {
            nodes: Vec::new(),
            initializers: Vec::new(),
            next: 0,
        }
    }

    fn fresh(&mut self, hint: &str) -> String {
        self.next += 1;
        format!("{hint}_{}", self.next)
    }

    fn constant(&mut self, hint: &str, dims: &[usize], data: Vec<f32>) -> String {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn constant_i64(&mut self, hint: &str, data: Vec<i64>) -> String {
        let name = self.fresh(hint);
        self.initializers.push(pb::TensorProto {
            name: name.clone(),
            dims: vec![data.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        name
    }

    fn node(&mut self, op: &str, inputs: &[&str], attribute: Vec<pb::AttributeProto>) -> String {
        let out = self.fresh(&op.to_lowercase());
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Renames the value `from` to `to` (graph outputs get fixed names).
    fn rename(&mut self, from: &str, to: &str) {
        for n in &mut self.nodes {
            for o in n.output.iter_mut().chain(n.input.iter_mut()) {
                if o == from {
                    *o = to.into();
                }
            }
        }
    }

    fn conv(&mut self, x: &str, conv: &Conv2d) -> Result<String> {
        let [cout, cin_g, kh, kw] = conv.weight.val().dims();
        let (pt, pl, pb_, pr) = match conv.padding {
            PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            PaddingConfig2d::Valid => (0, 0, 0, 0),
            PaddingConfig2d::Same => {
                return Err(Error::invalid("model", "`same` padding is not exported"));
            }
        };
        let w = self.constant("w", &[cout, cin_g, kh, kw], param(&conv.weight));
        let b = conv.bias.as_ref().map(|b| self.constant("b", &[cout], param(b)));
        let mut inputs = vec![x, w.as_str()];
        if let Some(b) = &b {
            inputs.push(b);
        }
        let attrs = vec![
            ints("kernel_shape", &[kh as i64, kw as i64]),
            ints("strides", &[conv.stride[0] as i64, conv.stride[1] as i64]),
            ints("pads", &[pt as i64, pl as i64, pb_ as i64, pr as i64]),
            ints("dilations", &[conv.dilation[0] as i64, conv.dilation[1] as i64]),
            int("group", conv.groups as i64),
        ];
        Ok(self.node("Conv", &inputs, attrs))
    }

    fn batch_norm(&mut self, x: &str, bn: &BatchNorm) -> String {
        let c = bn.gamma.val().dims()[0];
        let g = self.constant("gamma", &[c], param(&bn.gamma));
        let b = self.constant("beta", &[c], param(&bn.beta));
        let m = self.constant("mean", &[c], host(bn.running_mean.value()));
        let v = self.constant("var", &[c], host(bn.running_var.value()));
        self.node(
            "BatchNormalization",
            &[x, &g, &b, &m, &v],
            vec![float("epsilon", bn.epsilon as f32)],
        )
    }

    fn relu(&mut self, x: &str) -> String {
        self.node("Relu", &[x], vec![])
    }

    fn conv_bn_act(&mut self, x: &str, l: &ConvBnAct) -> Result<String> {
        let mut y = self.conv(x, &l.conv)?;
        if let Some(bn) = &l.bn {
            y = self.batch_norm(&y, bn);
        }
        Ok(match (l.relu, l.relu6) {
            (_, true) => {
                let lo = self.constant("zero", &[], vec![0.0]);
                let hi = self.constant("six", &[], vec![6.0]);
                self.node("Clip", &[&y, &lo, &hi], vec![])
            }
            (true, false) => self.relu(&y),
            (false, false) => y,
        })
    }

    fn pool_attrs(k: [usize; 2], s: [usize; 2], p: &PaddingConfig2d) -> Vec<pb::AttributeProto> {
        // The zoo builds every pool with explicit padding (`Valid` is none).
        let (t, l, b, r) = match *p {
            PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            PaddingConfig2d::Valid => (0, 0, 0, 0),
            PaddingConfig2d::Same => unreachable!("no pool of the zoo has `same` padding"),
        };
        vec![
            ints("kernel_shape", &[k[0] as i64, k[1] as i64]),
            ints("strides", &[s[0] as i64, s[1] as i64]),
            ints("pads", &[t as i64, l as i64, b as i64, r as i64]),
        ]
    }

    fn max_pool(&mut self, x: &str, p: &MaxPool2d) -> String {
        self.node("MaxPool", &[x], Self::pool_attrs(p.kernel_size, p.stride, &p.padding))
    }

    fn avg_pool(&mut self, x: &str, p: &AvgPool2d) -> String {
        let mut attrs = Self::pool_attrs(p.kernel_size, p.stride, &p.padding);
        attrs.push(int("count_include_pad", i64::from(p.count_include_pad)));
        self.node("AveragePool", &[x], attrs)
    }

    /// `[N, C, H, W]` → `[N, C]` by averaging.
    fn global_pool(&mut self, x: &str) -> String {
        let y = self.node("GlobalAveragePool", &[x], vec![]);
        self.node("Flatten", &[&y], vec![int("axis", 1)])
    }

    fn flatten(&mut self, x: &str) -> String {
        self.node("Flatten", &[x], vec![int("axis", 1)])
    }

    /// A linear layer; `weight` in Burn's `[in, out]` layout (ONNX `Gemm` without transposition).
    fn gemm(&mut self, x: &str, weight: Vec<f32>, [din, dout]: [usize; 2], bias: Option<Vec<f32>>) -> String {
        let w = self.constant("w", &[din, dout], weight);
        let bias = bias.unwrap_or_else(|| vec![0.0; dout]);
        let b = self.constant("b", &[dout], bias);
        self.node("Gemm", &[x, &w, &b], vec![])
    }

    fn linear(&mut self, x: &str, l: &Linear) -> String {
        let [din, dout] = l.weight.val().dims();
        self.gemm(x, param(&l.weight), [din, dout], l.bias.as_ref().map(param))
    }

    fn block(&mut self, x: &str, b: &Block, spec: &BlockSpec, input: Shape) -> Result<String> {
        Ok(match b {
            Block::Conv(s) => {
                let mut y = x.to_string();
                for l in &s.layers {
                    y = self.conv_bn_act(&y, l)?;
                }
                match &s.pool {
                    Some(p) => self.max_pool(&y, p),
                    None => y,
                }
            }
            Block::Basic(b) => {
                let y = self.conv_bn_act(x, &b.conv1)?;
                let y = self.conv_bn_act(&y, &b.conv2)?;
                let short = match &b.shortcut {
                    Some(s) => self.conv_bn_act(x, s)?,
                    None => x.to_string(),
                };
                let sum = self.node("Add", &[&y, &short], vec![]);
                self.relu(&sum)
            }
            Block::BasicPadded(b) => {
                let y = self.conv_bn_act(x, &b.conv1)?;
                let y = self.conv_bn_act(&y, &b.conv2)?;
                let BlockSpec::BasicPadded { cout, stride } = *spec else {
                    return Err(Error::invalid("model", "block and spec disagree"));
                };
                let mut short = x.to_string();
                if stride != 1 {
                    short = self.node(
                        "MaxPool",
                        &[&short],
                        vec![
                            ints("kernel_shape", &[1, 1]),
                            ints("strides", &[stride as i64, stride as i64]),
                        ],
                    );
                }
                if cout != input.c {
                    let front = ((cout - input.c) / 2) as i64;
                    let back = (cout - input.c) as i64 - front;
                    let pads = self.constant_i64("pads", vec![0, front, 0, 0, 0, back, 0, 0]);
                    short = self.node("Pad", &[&short, &pads], vec![]);
                }
                let sum = self.node("Add", &[&y, &short], vec![]);
                self.relu(&sum)
            }
            Block::Bottleneck(b) => {
                let mut y = x.to_string();
                for l in [&b.conv1, &b.conv2, &b.conv3] {
                    y = self.conv_bn_act(&y, l)?;
                }
                let short = match &b.shortcut {
                    Some(s) => self.conv_bn_act(x, s)?,
                    None => x.to_string(),
                };
                let sum = self.node("Add", &[&y, &short], vec![]);
                self.relu(&sum)
            }
            Block::PreAct(b) => {
                let short = match &b.shortcut {
                    Some(s) => self.conv(x, s)?,
                    None => x.to_string(),
                };
                let y = match &b.pre {
                    Some(bn) => {
                        let n = self.batch_norm(x, bn);
                        self.relu(&n)
                    }
                    None => x.to_string(),
                };
                let y = self.conv_bn_act(&y, &b.conv1)?;
                let y = self.conv(&y, &b.conv2)?;
                self.node("Add", &[&y, &short], vec![])
            }
            Block::Fc(b) => {
                let [din, dout] = b.linear.weight.val().dims();
                let (weight, din) = match spec {
                    BlockSpec::Fc {
                        pool_to: Some([oh, ow]),
                        ..
                    } => (
                        fold_adaptive_pool(&param(&b.linear.weight), input, [*oh, *ow], dout),
                        input.numel(),
                    ),
                    _ => (param(&b.linear.weight), din),
                };
                let flat = self.flatten(x);
                let y = self.gemm(&flat, weight, [din, dout], b.linear.bias.as_ref().map(param));
                let y = self.relu(&y);
                let shape = self.constant_i64("shape", vec![0, -1, 1, 1]);
                self.node("Reshape", &[&y, &shape], vec![])
            }
            Block::InvertedResidual(b) => self.inverted_residual(x, b)?,
            Block::DenseLayer(b) => {
                let y = self.batch_norm(x, &b.norm1);
                let y = self.relu(&y);
                let y = self.conv(&y, &b.conv1)?;
                let y = self.batch_norm(&y, &b.norm2);
                let y = self.relu(&y);
                let y = self.conv(&y, &b.conv2)?;
                self.node("Concat", &[x, &y], vec![int("axis", 1)])
            }
            Block::Transition(b) => {
                let y = self.batch_norm(x, &b.norm);
                let y = self.relu(&y);
                let y = self.conv(&y, &b.conv)?;
                self.avg_pool(&y, &b.pool)
            }
            Block::Inception(b) => {
                let outs = b
                    .branches
                    .iter()
                    .map(|br| self.inception_branch(x, br))
                    .collect::<Result<Vec<_>>>()?;
                let refs: Vec<&str> = outs.iter().map(String::as_str).collect();
                self.node("Concat", &refs, vec![int("axis", 1)])
            }
        })
    }

    fn inverted_residual(&mut self, x: &str, b: &InvertedResidualBlock) -> Result<String> {
        let mut y = x.to_string();
        if let Some(e) = &b.expand {
            y = self.conv_bn_act(&y, e)?;
        }
        y = self.conv_bn_act(&y, &b.depthwise)?;
        y = self.conv_bn_act(&y, &b.project)?;
        Ok(if b.residual {
            self.node("Add", &[&y, x], vec![])
        } else {
            y
        })
    }

    fn inception_branch(&mut self, x: &str, b: &InceptionBranch) -> Result<String> {
        let mut y = x.to_string();
        if let Some(p) = &b.max_pool {
            y = self.max_pool(&y, p);
        }
        if let Some(p) = &b.avg_pool {
            y = self.avg_pool(&y, p);
        }
        for l in &b.convs {
            y = self.conv_bn_act(&y, l)?;
        }
        if b.split.is_empty() {
            return Ok(y);
        }
        let parts = b
            .split
            .iter()
            .map(|l| self.conv_bn_act(&y, l))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        Ok(self.node("Concat", &refs, vec![int("axis", 1)]))
    }

    fn finish(mut self, name: &str, input: (&str, Shape), outputs: &[(String, &str, Vec<usize>)]) -> pb::ModelProto {
        for (value, fixed, _) in outputs {
            self.rename(value, fixed);
        }
        let info = |name: &str, dims: &[usize]| {
            use pb::tensor_shape_proto::{Dimension, dimension::Value};
            let mut dim = vec![Dimension {
                value: Some(Value::DimParam("batch".into())),
                ..Default::default()
            }];
            dim.extend(dims.iter().map(|&d| Dimension {
                value: Some(Value::DimValue(d as i64)),
                ..Default::default()
            }));
            pb::ValueInfoProto {
                name: name.into(),
                r#type: Some(pb::TypeProto {
                    value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                        elem_type: DataType::Float as i32,
                        shape: Some(pb::TensorShapeProto { dim }),
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            }
        };
        let (in_name, s) = input;
        pb::ModelProto {
            ir_version: 7,
            producer_name: "earlyexit".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            graph: Some(pb::GraphProto {
                name: name.into(),
                input: vec![info(in_name, &s.dims())],
                output: outputs.iter().map(|(_, n, d)| info(n, d)).collect(),
                node: self.nodes,
                initializer: self.initializers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// The weights of `adaptive_avg_pool(x, [oh, ow])` followed by a linear layer with `weight`
/// (`[C·oh·ow, dout]`, Burn's layout) as one linear layer on the flattened `input`
/// (`[C·H·W, dout]`): each input cell feeds every output cell whose window holds it, divided by
/// that window's size. The windows are PyTorch's: `[⌊i·H/oh⌋, ⌈(i+1)·H/oh⌉)`.
fn fold_adaptive_pool(weight: &[f32], input: Shape, [oh, ow]: [usize; 2], dout: usize) -> Vec<f32> {
    let Shape { c, h, w } = input;
    let window = |o: usize, out: usize, size: usize| (o * size / out, ((o + 1) * size).div_ceil(out));
    let mut folded = vec![0f32; c * h * w * dout];
    for ch in 0..c {
        for oy in 0..oh {
            let (y0, y1) = window(oy, oh, h);
            for ox in 0..ow {
                let (x0, x1) = window(ox, ow, w);
                let area = ((y1 - y0) * (x1 - x0)) as f32;
                let src = &weight[((ch * oh + oy) * ow + ox) * dout..][..dout];
                for y in y0..y1 {
                    for x in x0..x1 {
                        let dst = &mut folded[((ch * h + y) * w + x) * dout..][..dout];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s / area);
                    }
                }
            }
        }
    }
    folded
}

/// The graph of exit head `head` on `input`-shaped features.
fn head_graph(head: &ExitHead, input: Shape, classes: usize, name: &str) -> Result<pb::ModelProto> {
    let mut g = Graph::new();
    let z = match head.kind {
        HeadKind::Plain => g.flatten("features"),
        HeadKind::Pool => g.global_pool("features"),
        HeadKind::Bnpool => {
            let bn = head.bn.as_ref().expect("bnpool heads have a BatchNorm");
            let y = g.batch_norm("features", bn);
            let y = g.relu(&y);
            g.global_pool(&y)
        }
        HeadKind::Relupool if head.grid > 1 => {
            // The grid pooling folded into the dense layers, on the flattened ReLU'd features
            // (as VGG's adaptive pool into fc1).
            let y = g.relu("features");
            let flat = g.flatten(&y);
            let fold = |g: &mut Graph, l: &Linear| {
                let [_, dout] = l.weight.val().dims();
                let w = fold_adaptive_pool(&param(&l.weight), input, [head.grid, head.grid], dout);
                g.gemm(&flat, w, [input.numel(), dout], l.bias.as_ref().map(param))
            };
            let logits = fold(&mut g, &head.classifier);
            let mut outputs = vec![(logits, "logits", vec![classes])];
            if let Some(c) = &head.confidence {
                outputs.push((fold(&mut g, c), "confidence", vec![1]));
            }
            return Ok(g.finish(name, ("features", input), &outputs));
        }
        HeadKind::Relupool => {
            let y = g.relu("features");
            g.global_pool(&y)
        }
        HeadKind::Mlp(..) => {
            let mut z = g.global_pool("features");
            for l in &head.hidden {
                let y = g.linear(&z, l);
                z = g.relu(&y);
            }
            z
        }
        HeadKind::Branchy => {
            let conv = head.conv.as_ref().expect("branchy heads have a convolution");
            let y = g.conv_bn_act("features", conv)?;
            g.global_pool(&y)
        }
        HeadKind::Dense => {
            return Err(Error::invalid(
                "model",
                "`dense` heads read the features of every earlier cut; their export is not supported yet",
            ));
        }
    };
    let logits = g.linear(&z, &head.classifier);
    let mut outputs = vec![(logits.clone(), "logits", vec![classes])];
    if let Some(c) = &head.confidence {
        let gate_in = match head.gate_on_prediction {
            true => g.node("Softmax", &[&logits], vec![int("axis", 1)]),
            false => z,
        };
        let conf = g.linear(&gate_in, c);
        outputs.push((conf, "confidence", vec![1]));
    }
    Ok(g.finish(name, ("features", input), &outputs))
}

/// The graph of the backbone's final classifier.
fn classifier_graph(backbone: &Backbone, input: Shape, classes: usize) -> pb::ModelProto {
    let mut g = Graph::new();
    let c = &backbone.classifier;
    let mut y = "features".to_string();
    if let Some(bn) = &c.bn {
        y = g.batch_norm(&y, bn);
        y = g.relu(&y);
    }
    let z = if c.global_pool {
        g.global_pool(&y)
    } else {
        g.flatten(&y)
    };
    let logits = g.linear(&z, &c.linear);
    g.finish("classifier", ("features", input), &[(logits, "logits", vec![classes])])
}

/// The cascade as ONNX graphs, by file name, in the order a runtime runs them: `stage_K.onnx`,
/// then `exit_K.onnx` (for every exit), and `classifier.onnx` after the last stage.
pub fn onnx_graphs(model: &MultiExitModel) -> Result<Vec<(String, Vec<u8>)>> {
    let folded = model.clone().fold_bn();
    let net = &folded.net;
    let arch = &folded.arch;
    let classes = arch.description.classes;
    let mut files = Vec::new();
    for k in 0..net.num_stages() {
        let range = net.stage_blocks(k);
        let input = arch.backbone.blocks[range.start].input;
        let output = arch.backbone.blocks[range.end - 1].output;
        let mut g = Graph::new();
        let mut x = "x".to_string();
        for i in range {
            let info = &arch.backbone.blocks[i];
            x = g
                .block(&x, &net.backbone.blocks[i], &info.spec, info.input)
                .map_err(|e| Error::invalid("model", format!("block {i} ({}): {e}", info.name)))?;
        }
        let name = format!("stage_{k}");
        let model = g.finish(&name, ("x", input), &[(x, "features", output.dims().to_vec())]);
        files.push((format!("{name}.onnx"), model.encode_to_vec()));
        if k < net.num_exits() {
            let name = format!("exit_{k}");
            let head = head_graph(&net.heads[k], output, classes, &name)?;
            files.push((format!("{name}.onnx"), head.encode_to_vec()));
        } else {
            let cls = classifier_graph(&net.backbone, output, classes);
            files.push(("classifier.onnx".into(), cls.encode_to_vec()));
        }
    }
    Ok(files)
}
