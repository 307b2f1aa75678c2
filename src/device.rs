//! Where tensors live: `cpu` (Burn's `flex` backend, always built) or `vulkan[:N]` (Burn's
//! wgpu/Vulkan backend, feature `vulkan`).
//!
//! Every command that computes takes `--device SPEC`; the library takes a [`Device`], which
//! [`DeviceSpec::device`] makes from a spec. A Vulkan device is brought up eagerly and checked,
//! so that a machine without a GPU, a driver or the Vulkan loader gets an error naming what is
//! missing instead of a panic at the first tensor.
//!
//! ```
//! use earlyexit::device::DeviceSpec;
//!
//! let spec: DeviceSpec = "cpu".parse()?;
//! let device = spec.device()?;
//! # let _ = device;
//! assert_eq!("vulkan:1".parse::<DeviceSpec>()?, DeviceSpec::Vulkan(Some(1)));
//! assert!("tpu".parse::<DeviceSpec>().is_err());
//! # Ok::<(), earlyexit::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use crate::error::{Error, Result};

/// A device named on the command line: `cpu`, `vulkan` (the best Vulkan adapter) or
/// `vulkan:N` (the N-th discrete GPU, from 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    /// Burn's `flex` CPU backend.
    #[default]
    Cpu,
    /// Burn's Vulkan backend: `None` lets wgpu pick (high-power GPUs first), `Some(n)` is the
    /// n-th discrete GPU.
    Vulkan(Option<usize>),
}

/// Whether this build has the Vulkan backend (feature `vulkan`).
pub const VULKAN_BUILT: bool = cfg!(feature = "vulkan");

impl FromStr for DeviceSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let bad = |why: String| Error::invalid("--device", format!("`{s}`: {why}"));
        match t.as_str() {
            "cpu" | "flex" => return Ok(DeviceSpec::Cpu),
            "vulkan" | "gpu" => return Ok(DeviceSpec::Vulkan(None)),
            _ => {}
        }
        if let Some(n) = t.strip_prefix("vulkan:").or_else(|| t.strip_prefix("gpu:")) {
            return n
                .parse::<usize>()
                .map(|n| DeviceSpec::Vulkan(Some(n)))
                .map_err(|_| bad(format!("`{n}` is not a GPU index (expected vulkan:0, vulkan:1, ...)")));
        }
        Err(bad("expected cpu, vulkan or vulkan:N".into()))
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Vulkan(None) => write!(f, "vulkan"),
            DeviceSpec::Vulkan(Some(n)) => write!(f, "vulkan:{n}"),
        }
    }
}

impl DeviceSpec {
    /// Whether this is a GPU.
    pub fn is_gpu(&self) -> bool {
        matches!(self, DeviceSpec::Vulkan(_))
    }

    /// The device, brought up and checked.
    ///
    /// # Errors
    /// `vulkan` in a build without the feature; `vulkan` where no Vulkan adapter can be
    /// opened (no GPU, no driver, no `libvulkan.so.1`), or only a software (CPU) one.
    pub fn device(&self) -> Result<Device> {
        self.open().map(|(d, _)| d)
    }

    /// The device and a one-line description of it (for Vulkan: the adapter's name, type and
    /// driver), brought up and checked as [`Self::device`] does.
    pub fn open(&self) -> Result<(Device, String)> {
        match self {
            DeviceSpec::Cpu => Ok((Device::flex(), "cpu (flex)".to_string())),
            DeviceSpec::Vulkan(index) => vulkan::open(*index),
        }
    }
}

#[cfg(not(feature = "vulkan"))]
mod vulkan {
    use super::*;

    pub(super) fn open(index: Option<usize>) -> Result<(Device, String)> {
        Err(Error::invalid(
            "--device",
            format!(
                "`{}`: this earlyexit was built without the `vulkan` feature; rebuild with `--features vulkan` \
                 (cargo build --release --features vulkan) or use --device cpu",
                DeviceSpec::Vulkan(index)
            ),
        ))
    }
}

#[cfg(feature = "vulkan")]
mod vulkan {
    use std::sync::Mutex;

    use burn::tensor::DeviceKind;
    use burn::tensor::wgpu::WgpuBackend;
    use burn::tensor::wgpu::wgpu::DeviceType;

    use super::*;

    /// Burn registers one runtime per adapter and refuses a second initialisation: keep the
    /// devices already opened in this process.
    static OPENED: Mutex<Vec<(Option<usize>, Device, String)>> = Mutex::new(Vec::new());

    pub(super) fn open(index: Option<usize>) -> Result<(Device, String)> {
        let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, d, s)) = opened.iter().find(|(i, ..)| *i == index) {
            return Ok((d.clone(), s.clone()));
        }
        let spec = DeviceSpec::Vulkan(index);
        let fail = |why: String| {
            Error::invalid(
                "--device",
                format!(
                    "`{spec}`: no usable Vulkan GPU: {why}. A GPU, its Vulkan driver (ICD, e.g. \
                     VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json) and the loader \
                     libvulkan.so.1 are needed; use --device cpu otherwise"
                ),
            )
        };
        let kind = index.map_or(DeviceKind::DefaultDevice, DeviceKind::DiscreteGpu);
        // Adapter and device creation may panic deep in wgpu/cubecl: turn that into an error too,
        // without the default hook's backtrace noise.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let got = std::panic::catch_unwind(|| {
            Device::wgpu_options()
                .device_kind(kind)
                .graphics_api(WgpuBackend::Vulkan)
                .init_with_setup()
        });
        std::panic::set_hook(hook);
        let (device, setup) = match got {
            Ok(Ok(ds)) => ds,
            Ok(Err(e)) => return Err(fail(e.to_string())),
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "the Vulkan runtime panicked".into());
                return Err(fail(msg));
            }
        };
        let info = setup.adapter.get_info();
        if info.device_type == DeviceType::Cpu {
            return Err(fail(format!(
                "the only adapter is a software one ({}, {:?})",
                info.name, info.device_type
            )));
        }
        let desc = format!(
            "{spec}: {} ({:?}, {:?}, driver {} {})",
            info.name, info.device_type, info.backend, info.driver, info.driver_info
        );
        opened.push((index, device.clone(), desc.clone()));
        Ok((device, desc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("CPU", DeviceSpec::Cpu),
            ("flex", DeviceSpec::Cpu),
            ("vulkan", DeviceSpec::Vulkan(None)),
            ("gpu", DeviceSpec::Vulkan(None)),
            ("vulkan:0", DeviceSpec::Vulkan(Some(0))),
            (" vulkan:3 ", DeviceSpec::Vulkan(Some(3))),
        ] {
            assert_eq!(s.parse::<DeviceSpec>().unwrap(), d, "{s}");
        }
        for d in [DeviceSpec::Cpu, DeviceSpec::Vulkan(None), DeviceSpec::Vulkan(Some(2))] {
            assert_eq!(d.to_string().parse::<DeviceSpec>().unwrap(), d);
        }
        assert_eq!(DeviceSpec::default(), DeviceSpec::Cpu);
    }

    #[test]
    fn bad_specs_name_the_value() {
        for s in ["", "cuda", "vulkan:", "vulkan:x", "vulkan:-1", "cpu:0"] {
            let e = s.parse::<DeviceSpec>().unwrap_err().to_string();
            assert!(e.contains("--device") && e.contains(&format!("`{s}`")), "{s}: {e}");
        }
    }

    #[test]
    fn cpu_opens() {
        let (d, desc) = DeviceSpec::Cpu.open().unwrap();
        assert_eq!(d, Device::flex());
        assert!(desc.contains("cpu"));
    }

    #[cfg(not(feature = "vulkan"))]
    #[test]
    fn vulkan_without_the_feature_says_how_to_rebuild() {
        for spec in [DeviceSpec::Vulkan(None), DeviceSpec::Vulkan(Some(1))] {
            let e = spec.device().unwrap_err().to_string();
            assert!(e.contains("built without the `vulkan` feature"), "{e}");
            assert!(e.contains("--features vulkan"), "{e}");
            assert!(e.contains(&spec.to_string()), "{e}");
        }
        const { assert!(!VULKAN_BUILT) };
    }
}
