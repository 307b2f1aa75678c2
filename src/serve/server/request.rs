//! What a tier accepts, checked where a request is decoded: every number and shape a client
//! sends (image shapes and payloads, activations for the ids, pooled history, best-so-far
//! answers, patience state) is validated here, before anything reaches the model.

use std::ops::Range;

use crate::data::Normalize;
use crate::infer::engine::BestSoFar;
use crate::infer::{MultiExitModel, Policy};
use crate::model::Shape;
use crate::serve::codec::decode;
use crate::serve::error::{ServeError, ServeResult};
use crate::serve::proto;
use crate::serve::tier::{JobInput, Limits, StageInput, TierOptions, stage_inputs};

/// The request rules of one tier: its slice of the stages, the shapes entering it, the model's
/// classes and id, the policy (patience needs its state), the size limits and the image
/// normalisation.
///
/// ```
/// use burn::tensor::Device;
/// use earlyexit::infer::{MultiExitModel, Policy};
/// use earlyexit::model::{ModelDescription, Shape};
/// use earlyexit::serve::proto::{ClassifyRequest, ForwardRequest};
/// use earlyexit::serve::server::RequestRules;
/// use earlyexit::serve::tier::TierOptions;
/// let device = Device::flex();
/// let desc = ModelDescription::new("eenet8", Shape::new(1, 28, 28), 10, "cuts:1,2".parse()?);
/// let model = MultiExitModel::new(desc.resolve()?, &device);
/// let rules = RequestRules::new(&model, "m1", &TierOptions::whole("maxprob:0.9".parse::<Policy>()?))?;
/// let e = rules.check_classify(ClassifyRequest { images: vec![] }).unwrap_err();
/// assert!(e.to_string().contains("0 images"));
/// let e = rules.check_forward(ForwardRequest { stage: 1, ..Default::default() }).unwrap_err();
/// assert!(e.to_string().contains("not from stage 1"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RequestRules {
    pub(crate) name: String,
    pub(crate) range: Range<usize>,
    pub(crate) input: Shape,
    pub(crate) stage_in: StageInput,
    pub(crate) classes: usize,
    pub(crate) model_id: String,
    pub(crate) policy: Policy,
    pub(crate) limits: Limits,
    pub(crate) normalize: Option<Normalize>,
}

impl RequestRules {
    /// The rules of a tier serving `opts.stages` of `model` (id `model_id`).
    pub fn new(model: &MultiExitModel, model_id: &str, opts: &TierOptions) -> ServeResult<Self> {
        let range = opts.stages.resolve(model.net.num_stages())?;
        Ok(Self {
            name: opts.name.clone(),
            input: model.arch.description.input,
            stage_in: stage_inputs(model)[range.start].clone(),
            range,
            classes: model.arch.description.classes,
            model_id: model_id.to_string(),
            policy: opts.policy.clone(),
            limits: opts.limits,
            normalize: opts.normalize.clone(),
        })
    }

    /// Validates a `Classify` request as the tier would before queueing it; the number of
    /// samples it holds.
    pub fn check_classify(&self, req: proto::ClassifyRequest) -> ServeResult<usize> {
        self.classify_input(req).map(|j| j.len())
    }

    /// Validates a `Forward` request as the tier would before queueing it; the number of
    /// samples it holds.
    pub fn check_forward(&self, req: proto::ForwardRequest) -> ServeResult<usize> {
        self.forward_input(req).map(|j| j.len())
    }

    /// Images enter at stage 0 only: a later tier takes activations (`Forward`).
    fn check_first_tier(&self) -> ServeResult<()> {
        if self.range.start != 0 {
            return Err(ServeError::FailedPrecondition(format!(
                "tier `{}` runs stages {}..{}; send images to the first tier",
                self.name, self.range.start, self.range.end
            )));
        }
        Ok(())
    }

    /// `n` images in a request: 1 to the limit.
    fn check_image_count(&self, n: usize) -> ServeResult<()> {
        if n == 0 || n > self.limits.max_samples {
            return Err(ServeError::invalid(format!(
                "{n} images in the request; 1 to {} allowed",
                self.limits.max_samples
            )));
        }
        Ok(())
    }

    pub(crate) fn classify_input(&self, req: proto::ClassifyRequest) -> ServeResult<JobInput> {
        let s = self;
        s.check_first_tier()?;
        let n = req.images.len();
        s.check_image_count(n)?;
        let mut x = Vec::with_capacity(n * s.input.c * s.input.h * s.input.w);
        for (i, img) in req.images.iter().enumerate() {
            x.extend(image_values(img, s.input, s.normalize.as_ref(), i)?);
        }
        Ok(s.images_job(x, n))
    }

    /// A batch of `n` images already as `[N, C, H, W]` values (the Open Inference Protocol's
    /// FP32 input), held to what `Classify` holds its tensors to: the first tier, 1 to the limit
    /// of samples, the model's size, finite values.
    pub(crate) fn tensor_batch_input(&self, x: Vec<f32>, n: usize) -> ServeResult<JobInput> {
        self.check_first_tier()?;
        self.check_image_count(n)?;
        let per = self.input.c * self.input.h * self.input.w;
        if x.len() != n * per {
            return Err(ServeError::invalid(format!(
                "{} values for {n} images of {per}",
                x.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(ServeError::invalid(format!(
                "value {i} (image {}) is not finite ({})",
                i / per,
                x[i]
            )));
        }
        Ok(self.images_job(x, n))
    }

    /// The job of `n` images at stage 0.
    fn images_job(&self, x: Vec<f32>, n: usize) -> JobInput {
        let s = self.input;
        JobInput {
            start: 0,
            x,
            x_dims: [n, s.c, s.h, s.w],
            pooled: Vec::new(),
            best: vec![None; n],
            policy_state: None,
            ids: (0..n as u64).collect(),
        }
    }

    pub(crate) fn forward_input(&self, req: proto::ForwardRequest) -> ServeResult<JobInput> {
        let s = self;
        if req.stage as usize != s.range.start {
            return Err(ServeError::FailedPrecondition(format!(
                "tier `{}` runs stages {}..{}, not from stage {}",
                s.name, s.range.start, s.range.end, req.stage
            )));
        }
        if !req.model_id.is_empty() && req.model_id != s.model_id {
            return Err(ServeError::FailedPrecondition(format!(
                "activations from model {}, this tier serves model {}",
                req.model_id, s.model_id
            )));
        }
        let n = req.ids.len();
        if n == 0 || n > s.limits.max_samples {
            return Err(ServeError::invalid(format!(
                "{n} samples in the request; 1 to {} allowed",
                s.limits.max_samples
            )));
        }
        let want = s.stage_in.x;
        let t = req
            .x
            .as_ref()
            .ok_or_else(|| ServeError::invalid("the request has no activations"))?;
        // The shape is checked against the ids before the payload is decoded, so a mismatch is
        // said as one (not as a size limit the declared shape happens to exceed).
        let expected = [n, want.c, want.h, want.w];
        if !shape_is(t, &expected) {
            return Err(ServeError::invalid(format!(
                "activations of shape {:?} for {n} ids; stage {} takes {expected:?}",
                t.shape, req.stage
            )));
        }
        let (x, _) = decode(t, n * want.c * want.h * want.w)?;
        if req.pooled.len() != s.stage_in.pooled.len() {
            return Err(ServeError::invalid(format!(
                "{} pooled tensors; stage {} takes {}",
                req.pooled.len(),
                req.stage,
                s.stage_in.pooled.len()
            )));
        }
        let mut pooled = Vec::with_capacity(req.pooled.len());
        for (p, &d) in req.pooled.iter().zip(&s.stage_in.pooled) {
            if !shape_is(p, &[n, d]) {
                return Err(ServeError::invalid(format!(
                    "pooled tensor of shape {:?} for {n} ids, expected [{n}, {d}]",
                    p.shape
                )));
            }
            let (v, _) = decode(p, n * d)?;
            pooled.push((v, d));
        }
        if req.best.len() != n {
            return Err(ServeError::invalid(format!(
                "{} best-so-far answers for {n} samples",
                req.best.len()
            )));
        }
        let mut best = Vec::with_capacity(n);
        for b in &req.best {
            if b.probs.len() != s.classes
                || b.exit >= req.stage
                || !b.confidence.is_finite()
                || b.probs.iter().any(|p| !p.is_finite())
            {
                return Err(ServeError::invalid(format!(
                    "malformed best-so-far answer (exit {}, {} probabilities)",
                    b.exit,
                    b.probs.len()
                )));
            }
            best.push(Some(BestSoFar {
                exit: b.exit as usize,
                confidence: b.confidence,
                probs: b.probs.clone(),
            }));
        }
        let policy_state = patience_state(req.prev_class, req.streak, n, s.classes, req.stage, &s.policy)?;
        Ok(JobInput {
            start: req.stage as usize,
            x,
            x_dims: [n, want.c, want.h, want.w],
            pooled,
            best,
            policy_state,
            ids: req.ids,
        })
    }
}

/// Whether wire tensor `t` declares exactly `shape`.
fn shape_is(t: &proto::Tensor, shape: &[usize]) -> bool {
    t.shape.len() == shape.len() && t.shape.iter().zip(shape).all(|(&a, &b)| a as usize == b)
}

/// The patience state a `Forward` request carries, checked: one previous class and one streak
/// per sample (required by `patience`), each class one of the model's, each streak between 1 and
/// the exits before `stage` (a client's numbers; out of range they would be answered with
/// nonsense, or overflow).
fn patience_state(
    prev: Vec<i64>,
    streak: Vec<i64>,
    n: usize,
    classes: usize,
    stage: u32,
    policy: &Policy,
) -> ServeResult<Option<(Vec<i64>, Vec<i64>)>> {
    match (prev.len(), streak.len()) {
        (0, 0) if matches!(policy, Policy::Patience(_)) => {
            Err(ServeError::invalid("the patience policy needs prev_class and streak"))
        }
        (0, 0) => Ok(None),
        (a, b) if a == n && b == n => {
            if let Some(c) = prev.iter().find(|&&c| c < 0 || c as u64 >= classes as u64) {
                return Err(ServeError::invalid(format!(
                    "prev_class {c} is not a class of this model (0 to {})",
                    classes - 1
                )));
            }
            if let Some(k) = streak.iter().find(|&&k| k < 1 || k > i64::from(stage)) {
                return Err(ServeError::invalid(format!(
                    "streak {k} is outside 1 to {stage} (the exits before stage {stage})"
                )));
            }
            Ok(Some((prev, streak)))
        }
        (a, b) => Err(ServeError::invalid(format!(
            "{a} prev_class and {b} streak values for {n} samples"
        ))),
    }
}

/// Decodes one image of a `Classify` request into `C×H×W` values.
fn image_values(
    img: &proto::Image,
    shape: Shape,
    norm: Option<&crate::data::Normalize>,
    i: usize,
) -> ServeResult<Vec<f32>> {
    let (c, h, w) = (shape.c, shape.h, shape.w);
    match &img.input {
        None => Err(ServeError::invalid(format!("image {i} is empty"))),
        Some(proto::image::Input::Tensor(t)) => {
            let dims: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
            if dims != [c, h, w] && dims != [1, c, h, w] {
                return Err(ServeError::invalid(format!(
                    "image {i} has shape {dims:?}, the model takes [{c}, {h}, {w}]"
                )));
            }
            let (v, _) = decode(t, c * h * w).map_err(|e| ServeError::invalid(format!("image {i}: {e}")))?;
            Ok(v)
        }
        Some(proto::image::Input::Encoded(bytes)) => {
            let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| ServeError::invalid(format!("image {i}: {e}")))?;
            let mut limits = image::Limits::default();
            limits.max_image_width = Some(8192);
            limits.max_image_height = Some(8192);
            limits.max_alloc = Some(256 << 20);
            reader.limits(limits);
            let img = reader
                .decode()
                .map_err(|e| ServeError::invalid(format!("image {i} is not a readable PNG or JPEG: {e}")))?;
            if (img.width() as usize, img.height() as usize) != (w, h) {
                return Err(ServeError::invalid(format!(
                    "image {i} is {}x{}, the model takes {w}x{h}",
                    img.width(),
                    img.height()
                )));
            }
            let hwc: Vec<f32> = match c {
                1 => img.to_luma32f().into_raw(),
                3 => img.to_rgb32f().into_raw(),
                _ => {
                    return Err(ServeError::invalid(format!(
                        "the model takes {c} channels: send tensors, not images"
                    )));
                }
            };
            let mut chw = vec![0.0; c * h * w];
            for ch in 0..c {
                let (m, s) = match norm {
                    Some(n) if n.mean.len() == c => (n.mean[ch], n.std[ch]),
                    _ => (0.0, 1.0),
                };
                for p in 0..h * w {
                    chw[ch * h * w + p] = (hwc[p * c + ch] - m) / s;
                }
            }
            Ok(chw)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's patience state is checked where the request is decoded: a class of this model,
    /// a streak within the exits passed (2⁶² used to reach an i64 → i32 cast that panicked).
    #[test]
    fn patience_state_numbers_are_validated() {
        let p = Policy::Patience(2);
        let ok = patience_state(vec![3, 0], vec![1, 2], 2, 10, 2, &p).unwrap();
        assert_eq!(ok, Some((vec![3, 0], vec![1, 2])));
        assert_eq!(patience_state(vec![], vec![], 2, 10, 2, &Policy::Never).unwrap(), None);
        let err = |prev: Vec<i64>, streak: Vec<i64>, stage| {
            patience_state(prev, streak, 1, 10, stage, &p).unwrap_err().to_string()
        };
        assert!(err(vec![1 << 62], vec![1], 2).contains("prev_class 4611686018427387904"));
        assert!(err(vec![-1], vec![1], 2).contains("not a class"));
        assert!(err(vec![10], vec![1], 2).contains("0 to 9"));
        assert!(err(vec![1], vec![1 << 62], 2).contains("outside 1 to 2"));
        assert!(err(vec![1], vec![0], 2).contains("streak 0"));
        assert!(err(vec![1], vec![1], 0).contains("outside 1 to 0"));
        assert!(err(vec![], vec![], 2).contains("needs prev_class"));
        assert!(err(vec![1, 2], vec![1], 2).contains("2 prev_class and 1 streak"));
    }
}
