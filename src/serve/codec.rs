//! Tensors on the wire: f32 or f16 values, little endian, optionally lz4- or zstd-compressed.
//!
//! Decoding never trusts the sender: the shape's element count is checked against a limit
//! before anything is allocated, the payload must have exactly the size the shape and dtype
//! imply (after decompression, which is bounded by that size), and values must be finite.

use std::fmt;
use std::str::FromStr;

use super::error::{ServeError, ServeResult};
use super::proto;

/// Element type on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WireDType {
    /// 4 bytes per value.
    #[default]
    F32,
    /// 2 bytes per value (IEEE half precision).
    F16,
}

/// Compression of a tensor's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WireCompression {
    /// Raw bytes.
    #[default]
    None,
    /// LZ4 block with the size prepended.
    Lz4,
    /// zstd frame at the given level.
    Zstd(i32),
}

/// How a tier encodes what it forwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WireFormat {
    /// Element type.
    pub dtype: WireDType,
    /// Compression.
    pub compression: WireCompression,
}

impl FromStr for WireDType {
    type Err = ServeError;
    fn from_str(s: &str) -> ServeResult<Self> {
        match s {
            "f32" => Ok(WireDType::F32),
            "f16" => Ok(WireDType::F16),
            _ => Err(ServeError::invalid(format!("unknown dtype `{s}`; expected f32 or f16"))),
        }
    }
}

impl fmt::Display for WireDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireDType::F32 => "f32",
            WireDType::F16 => "f16",
        })
    }
}

impl FromStr for WireCompression {
    type Err = ServeError;
    /// `none`, `lz4`, `zstd` or `zstd:LEVEL`.
    fn from_str(s: &str) -> ServeResult<Self> {
        match s.split_once(':') {
            None if s == "none" => Ok(WireCompression::None),
            None if s == "lz4" => Ok(WireCompression::Lz4),
            None if s == "zstd" => Ok(WireCompression::Zstd(3)),
            Some(("zstd", l)) => l
                .parse()
                .ok()
                .filter(|l| (1..=22).contains(l))
                .map(WireCompression::Zstd)
                .ok_or_else(|| ServeError::invalid(format!("zstd level `{l}` must be 1..=22"))),
            _ => Err(ServeError::invalid(format!(
                "unknown compression `{s}`; expected none, lz4, zstd or zstd:LEVEL"
            ))),
        }
    }
}

impl fmt::Display for WireCompression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireCompression::None => f.write_str("none"),
            WireCompression::Lz4 => f.write_str("lz4"),
            WireCompression::Zstd(l) => write!(f, "zstd:{l}"),
        }
    }
}

impl WireDType {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            WireDType::F32 => 4,
            WireDType::F16 => 2,
        }
    }
}

/// Encodes `values` (row-major, `shape`) into a wire tensor.
///
/// ```
/// use earlyexit::serve::codec::{WireFormat, WireDType, WireCompression, encode, decode};
/// let fmt = WireFormat { dtype: WireDType::F16, compression: WireCompression::Lz4 };
/// let t = encode(&[0.5, -1.0, 2.0, 0.0], &[2, 2], fmt);
/// let (v, shape) = decode(&t, 100).unwrap();
/// assert_eq!(shape, vec![2, 2]);
/// assert_eq!(v, vec![0.5, -1.0, 2.0, 0.0]);
/// ```
pub fn encode(values: &[f32], shape: &[usize], fmt: WireFormat) -> proto::Tensor {
    debug_assert_eq!(values.len(), shape.iter().product::<usize>());
    let raw: Vec<u8> = match fmt.dtype {
        WireDType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        WireDType::F16 => values
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect(),
    };
    let data = match fmt.compression {
        WireCompression::None => raw,
        WireCompression::Lz4 => lz4_flex::compress_prepend_size(&raw),
        WireCompression::Zstd(level) => zstd::bulk::compress(&raw, level).expect("zstd compresses in memory"),
    };
    proto::Tensor {
        shape: shape.iter().map(|&d| d as u32).collect(),
        dtype: match fmt.dtype {
            WireDType::F32 => proto::DType::F32,
            WireDType::F16 => proto::DType::F16,
        } as i32,
        compression: match fmt.compression {
            WireCompression::None => proto::Compression::None,
            WireCompression::Lz4 => proto::Compression::Lz4,
            WireCompression::Zstd(_) => proto::Compression::Zstd,
        } as i32,
        data,
    }
}

/// Decodes a wire tensor into f32 values and its shape, refusing anything with more than
/// `max_elements` values, a payload that does not match the shape, or non-finite values.
pub fn decode(t: &proto::Tensor, max_elements: usize) -> ServeResult<(Vec<f32>, Vec<usize>)> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let count = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&c| c <= max_elements)
        .ok_or_else(|| {
            ServeError::invalid(format!(
                "tensor of shape {shape:?} has more than the {max_elements} values allowed"
            ))
        })?;
    let dtype = match proto::DType::try_from(t.dtype) {
        Ok(proto::DType::F32) => WireDType::F32,
        Ok(proto::DType::F16) => WireDType::F16,
        Err(_) => return Err(ServeError::invalid(format!("unknown dtype {}", t.dtype))),
    };
    let expected = count * dtype.size();
    let decompressed;
    let raw: &[u8] = match proto::Compression::try_from(t.compression) {
        Ok(proto::Compression::None) => &t.data,
        Ok(proto::Compression::Lz4) => {
            let declared = t
                .data
                .get(..4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
            if declared != Some(expected) {
                return Err(ServeError::invalid(format!(
                    "lz4 payload declares {declared:?} bytes, the shape needs {expected}"
                )));
            }
            let mut out = vec![0u8; expected];
            let n = lz4_flex::block::decompress_into(&t.data[4..], &mut out)
                .map_err(|e| ServeError::invalid(format!("corrupt lz4 payload: {e}")))?;
            out.truncate(n);
            decompressed = out;
            &decompressed
        }
        Ok(proto::Compression::Zstd) => {
            decompressed = zstd::bulk::decompress(&t.data, expected)
                .map_err(|e| ServeError::invalid(format!("corrupt or oversized zstd payload: {e}")))?;
            &decompressed
        }
        Err(_) => return Err(ServeError::invalid(format!("unknown compression {}", t.compression))),
    };
    if raw.len() != expected {
        return Err(ServeError::invalid(format!(
            "tensor of shape {shape:?} ({dtype}) needs {expected} bytes, got {}",
            raw.len()
        )));
    }
    let values: Vec<f32> = match dtype {
        WireDType::F32 => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect(),
        WireDType::F16 => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes(b.try_into().expect("2 bytes")).to_f32())
            .collect(),
    };
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(ServeError::invalid(format!("value {i} is not finite ({})", values[i])));
    }
    Ok((values, shape))
}

/// Bytes a tensor of `count` values takes on the wire before compression.
pub fn raw_bytes(count: usize, dtype: WireDType) -> usize {
    count * dtype.size()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_format() {
        let v: Vec<f32> = (0..600).map(|i| (i % 7) as f32 * 0.25 - 0.5).collect();
        for dtype in [WireDType::F32, WireDType::F16] {
            for c in [WireCompression::None, WireCompression::Lz4, WireCompression::Zstd(3)] {
                let fmt = WireFormat { dtype, compression: c };
                let t = encode(&v, &[2, 3, 10, 10], fmt);
                let (back, shape) = decode(&t, 1000).unwrap();
                assert_eq!(shape, vec![2, 3, 10, 10]);
                assert_eq!(back, v, "{dtype} {c}");
                if c != WireCompression::None {
                    assert!(t.data.len() < v.len() * dtype.size());
                }
            }
        }
    }

    #[test]
    fn refuses_lies() {
        let fmt = WireFormat::default();
        let mut t = encode(&[1.0; 8], &[8], fmt);
        t.shape = vec![9];
        assert!(decode(&t, 100).unwrap_err().to_string().contains("needs 36 bytes"));
        t.shape = vec![u32::MAX, u32::MAX, u32::MAX];
        assert!(decode(&t, 100).is_err());
        let t = encode(&[1.0; 8], &[8], fmt);
        assert!(decode(&t, 7).is_err());
        let t = encode(&[f32::NAN], &[1], fmt);
        assert!(decode(&t, 7).unwrap_err().to_string().contains("finite"));
        // A zstd bomb: small payload, huge declared output.
        let mut t = encode(
            &vec![0.0; 4096],
            &[4096],
            WireFormat {
                dtype: WireDType::F32,
                compression: WireCompression::Zstd(3),
            },
        );
        t.shape = vec![16];
        assert!(decode(&t, 1 << 20).is_err());
        let mut t = encode(
            &vec![0.0; 64],
            &[64],
            WireFormat {
                dtype: WireDType::F32,
                compression: WireCompression::Lz4,
            },
        );
        t.data[0] = 0xff;
        assert!(decode(&t, 1 << 20).is_err());
        assert_eq!("zstd:5".parse::<WireCompression>().unwrap(), WireCompression::Zstd(5));
        assert!("zstd:99".parse::<WireCompression>().is_err());
    }
}
