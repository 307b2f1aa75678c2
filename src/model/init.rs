//! Initial weights from a generator the caller owns.
//!
//! Why: Burn draws a module's initial parameters lazily, at first use, from the device's global
//! random generator, so two models built in one process (tests in threads, a hyper-parameter
//! sweep) interleave their draws and each run's weights depend on the other's timing. Here every
//! convolution and linear layer is redrawn, in module order, from a ChaCha8 generator seeded by
//! the caller: the same seed gives the same weights whatever else runs. The distribution is
//! Burn's (and PyTorch's) default, `U(-1/√fan_in, 1/√fan_in)` for weights and biases alike;
//! every other parameter (BatchNorm's scale and shift) starts from a constant already.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use earlyexit::model::{ModelDescription, Shape};
//!
//! let arch = ModelDescription::new("lenet5", Shape::new(1, 28, 28), 10, "cuts:1".parse()?).resolve()?;
//! let device = Device::flex();
//! let (a, b) = (arch.init_seeded(&device, 7), arch.init_seeded(&device, 7));
//! let x = Tensor::<4>::ones([1, 1, 28, 28], &device);
//! assert_eq!(a.forward_backbone(x.clone()).into_data(), b.forward_backbone(x).into_data());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Redraws every `Conv2d` and `Linear` weight and bias of `module` from a generator seeded with
/// `seed` (see the module documentation). Parameters already drawn are replaced; lazy ones are
/// never drawn from the global generator.
pub fn reinit<M: Module>(module: M, seed: u64) -> M {
    let mut mapper = Redraw {
        rng: ChaCha8Rng::seed_from_u64(seed),
        path: Vec::new(),
        fan_in: None,
    };
    module.map(&mut mapper)
}

/// The mapper behind [`reinit`]: the path of `(field, container type)` down to each parameter
/// tells a convolution's weight from its bias.
struct Redraw {
    rng: ChaCha8Rng,
    path: Vec<(String, String)>,
    /// The fan-in of the last weight seen, for the bias of the same layer (visited after it).
    fan_in: Option<usize>,
}

impl ModuleMapper for Redraw {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((field, container)) = self.path.last() else {
            return param;
        };
        let dims = param.lazy_shape().to_vec();
        let fan_in = match (container.as_str(), field.as_str()) {
            // `[out, in / groups, kh, kw]`
            ("Struct:Conv2d", "weight") => dims[1..].iter().product(),
            // Burn's row layout: `[in, out]`
            ("Struct:Linear", "weight") => dims[0],
            ("Struct:Conv2d" | "Struct:Linear", "bias") => match self.fan_in {
                Some(f) => f,
                None => return param,
            },
            _ => return param,
        };
        if field == "weight" {
            self.fan_in = Some(fan_in);
        }
        let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = (0..n).map(|_| self.rng.random_range(-bound..bound)).collect();
        let device = param.lazy_device();
        let id = param.id;
        let tensor = Tensor::<D>::from_data(TensorData::new(values, dims), &device);
        param.transform_for_load(tensor, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelDescription, Shape};
    use burn::tensor::Device;

    fn lenet() -> crate::model::Architecture {
        ModelDescription::new("lenet5", Shape::new(1, 28, 28), 10, "cuts:1".parse().unwrap())
            .resolve()
            .unwrap()
    }

    #[test]
    fn same_seed_same_weights_other_seed_other_weights_whatever_the_global_generator_does() {
        let device = Device::flex();
        let arch = lenet();
        let a = arch.init_seeded(&device, 3);
        device.seed(99);
        let _noise = Tensor::<2>::random([64, 64], burn::tensor::Distribution::Default, &device);
        let b = arch.init_seeded(&device, 3);
        let c = arch.init_seeded(&device, 4);
        let conv = |n: &crate::model::EarlyExitNet| {
            let mut v = Vec::new();
            n.visit(&mut Collect(&mut v));
            v
        };
        let (wa, wb, wc) = (conv(&a), conv(&b), conv(&c));
        assert!(!wa.is_empty());
        assert_eq!(wa, wb);
        assert_ne!(wa, wc);
    }

    #[test]
    fn weights_follow_the_default_bounds() {
        let device = Device::flex();
        let net = lenet().init_seeded(&device, 1);
        let w = net.heads[0].classifier.weight.val();
        let fan_in = w.dims()[0];
        let v: Vec<f32> = w.into_data().try_to_vec::<f32>().unwrap();
        let bound = 1.0 / (fan_in as f32).sqrt();
        assert!(v.iter().all(|x| x.abs() <= bound), "a weight outside ±{bound}");
        // Spread over the interval, not a constant.
        let max = v.iter().copied().fold(f32::MIN, f32::max);
        assert!(max > 0.8 * bound, "max {max} of bound {bound}");
    }

    struct Collect<'a>(&'a mut Vec<Vec<f32>>);

    impl burn::module::ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
}
