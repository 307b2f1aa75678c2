//! A small reader (and writer) for MATLAB level-5 MAT-files, enough for SVHN.
//!
//! Level 5 (MATLAB v5 to v7, not the HDF5-based v7.3): a 128-byte header (text starting
//! `MATLAB 5.0 MAT-file`, subsystem offset, version `0x0100`, endian indicator `IM` or `MI`), then data
//! elements. Each element has an 8-byte tag (type, byte count) or a 4-byte "small element" tag with up
//! to 4 data bytes, and is padded to 8 bytes. `miMATRIX` (14) elements hold an array: flags (class),
//! dimensions, name, real part (stored in any numeric type). `miCOMPRESSED` (15) elements hold a
//! zlib stream that inflates to further elements; the official SVHN files use them, scipy's
//! `savemat` writes uncompressed elements unless asked. Numeric arrays are read; cell, struct,
//! char, sparse and object arrays are skipped.
//!
//! SVHN (`train_32x32.mat`, `test_32x32.mat`): `X` is a 32x32x3xN `uint8` array in column-major
//! order (row fastest), `y` is Nx1 with labels 1..=10, where 10 stands for the digit 0.

use std::io::Write;
use std::path::Path;

use crate::dataset::Dataset;
use crate::error::{Error, Result, mem, read_file};
use crate::gz::inflate_zlib;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// MATLAB array class `mxDOUBLE_CLASS`.
pub const MX_DOUBLE: u8 = 6;
/// MATLAB array class `mxUINT8_CLASS`.
pub const MX_UINT8: u8 = 9;

/// The values of a numeric array: `uint8` arrays stay bytes, every other numeric class is widened to
/// `f64`.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// An `mxUINT8_CLASS` array stored as `miUINT8`.
    U8(Vec<u8>),
    /// Any other numeric array, widened to `f64`.
    F64(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }

    /// True if there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as `f64`. Panics if out of range.
    pub fn get(&self, i: usize) -> f64 {
        match self {
            MatData::U8(v) => v[i] as f64,
            MatData::F64(v) => v[i],
        }
    }
}

/// A numeric array read from (or to be written to) a MAT-file. Values are in column-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable name.
    pub name: String,
    /// The MATLAB class code (`mxDOUBLE_CLASS` = 6, `mxUINT8_CLASS` = 9, ...).
    pub class: u8,
    /// Dimensions (at least 2).
    pub dims: Vec<usize>,
    /// The real part.
    pub data: MatData,
}

/// The numeric arrays of a MAT-file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct MatFile {
    /// The descriptive text of the header.
    pub header_text: String,
    /// The numeric arrays (other array kinds are skipped).
    pub arrays: Vec<MatArray>,
}

impl MatFile {
    /// The array called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&MatArray> {
        self.arrays.iter().find(|a| a.name == name)
    }
}

#[derive(Clone, Copy)]
struct Endian {
    big: bool,
}

impl Endian {
    fn u16(self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64(self, b: &[u8]) -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.big {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}

/// One data element: its type, its data and the offset just after it (padding included).
struct Element<'a> {
    typ: u32,
    data: &'a [u8],
    next: usize,
}

fn read_element<'a>(buf: &'a [u8], pos: usize, e: Endian, path: &Path, what: &str) -> Result<Element<'a>> {
    let avail = buf.len() - pos;
    if avail < 4 {
        return Err(Error::truncated(path, format!("{what} tag"), 8, avail as u64));
    }
    let w0 = e.u32(&buf[pos..]);
    if w0 >> 16 != 0 {
        // Small data element: 2 bytes count, 2 bytes type, up to 4 data bytes.
        let n = (w0 >> 16) as usize;
        let typ = w0 & 0xffff;
        if n > 4 {
            return Err(Error::format(
                path,
                format!("{what}: small data element of {n} bytes at offset {pos} (at most 4)"),
            ));
        }
        if avail < 8 {
            return Err(Error::truncated(path, format!("{what} small element"), 8, avail as u64));
        }
        return Ok(Element {
            typ,
            data: &buf[pos + 4..pos + 4 + n],
            next: pos + 8,
        });
    }
    if avail < 8 {
        return Err(Error::truncated(path, format!("{what} tag"), 8, avail as u64));
    }
    let typ = w0;
    let n = e.u32(&buf[pos + 4..]) as usize;
    let start = pos + 8;
    if n > buf.len() - start {
        return Err(Error::truncated(
            path,
            format!("{what} (element type {typ} at offset {pos})"),
            (start + n) as u64,
            buf.len() as u64,
        ));
    }
    let end = start + n;
    // Compressed elements are not padded; all others are padded to a multiple of 8 bytes.
    let next = if typ == MI_COMPRESSED {
        end
    } else {
        end.next_multiple_of(8).min(buf.len())
    };
    Ok(Element {
        typ,
        data: &buf[start..end],
        next,
    })
}

fn type_size(typ: u32) -> Option<usize> {
    Some(match typ {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

fn widen(typ: u32, data: &[u8], e: Endian) -> Vec<f64> {
    match typ {
        MI_INT8 => data.iter().map(|&b| b as i8 as f64).collect(),
        MI_UINT8 => data.iter().map(|&b| b as f64).collect(),
        MI_INT16 => data.chunks_exact(2).map(|c| e.u16(c) as i16 as f64).collect(),
        MI_UINT16 => data.chunks_exact(2).map(|c| e.u16(c) as f64).collect(),
        MI_INT32 => data.chunks_exact(4).map(|c| e.u32(c) as i32 as f64).collect(),
        MI_UINT32 => data.chunks_exact(4).map(|c| e.u32(c) as f64).collect(),
        MI_SINGLE => data.chunks_exact(4).map(|c| f32::from_bits(e.u32(c)) as f64).collect(),
        MI_DOUBLE => data.chunks_exact(8).map(|c| f64::from_bits(e.u64(c))).collect(),
        MI_INT64 => data.chunks_exact(8).map(|c| e.u64(c) as i64 as f64).collect(),
        MI_UINT64 => data.chunks_exact(8).map(|c| e.u64(c) as f64).collect(),
        _ => Vec::new(),
    }
}

fn parse_matrix(buf: &[u8], e: Endian, path: &Path) -> Result<Option<MatArray>> {
    if buf.is_empty() {
        return Ok(None);
    }
    let flags = read_element(buf, 0, e, path, "array flags")?;
    if flags.typ != MI_UINT32 || flags.data.len() != 8 {
        return Err(Error::format(
            path,
            format!(
                "array flags: expected an miUINT32 element of 8 bytes, found type {} of {} bytes",
                flags.typ,
                flags.data.len()
            ),
        ));
    }
    let class = (e.u32(flags.data) & 0xff) as u8;
    let dims_el = read_element(buf, flags.next, e, path, "array dimensions")?;
    if dims_el.typ != MI_INT32 || !dims_el.data.len().is_multiple_of(4) || dims_el.data.len() < 8 {
        return Err(Error::format(
            path,
            format!(
                "array dimensions: expected an miINT32 element of at least 2 values, found type {} of {} bytes",
                dims_el.typ,
                dims_el.data.len()
            ),
        ));
    }
    let mut dims = Vec::with_capacity(dims_el.data.len() / 4);
    for c in dims_el.data.chunks_exact(4) {
        let d = e.u32(c) as i32;
        if d < 0 {
            return Err(Error::format(path, format!("negative array dimension {d}")));
        }
        dims.push(d as usize);
    }
    let name_el = read_element(buf, dims_el.next, e, path, "array name")?;
    if name_el.typ != MI_INT8 && name_el.typ != MI_UINT8 {
        return Err(Error::format(
            path,
            format!("array name: expected an miINT8 element, found type {}", name_el.typ),
        ));
    }
    let name = String::from_utf8_lossy(name_el.data).into_owned();
    // Numeric classes are 6 (double) to 15 (uint64); skip cells, structs, chars, sparse, objects.
    if !(6..=15).contains(&class) {
        return Ok(None);
    }
    let real = read_element(buf, name_el.next, e, path, "array data")?;
    let Some(size) = type_size(real.typ) else {
        return Err(Error::format(
            path,
            format!("array '{name}': unsupported data type {} for its values", real.typ),
        ));
    };
    let count = real.data.len() / size;
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if !real.data.len().is_multiple_of(size) || expected != Some(count) {
        return Err(Error::format(
            path,
            format!(
                "array '{name}': {} data bytes of type {} do not fill dimensions {dims:?}",
                real.data.len(),
                real.typ
            ),
        ));
    }
    let data = if class == MX_UINT8 && real.typ == MI_UINT8 {
        MatData::U8(real.data.to_vec())
    } else if class == MX_UINT8 {
        let wide = widen(real.typ, real.data, e);
        let mut bytes = Vec::with_capacity(wide.len());
        for v in wide {
            if !(0.0..=255.0).contains(&v) || v.fract() != 0.0 {
                return Err(Error::format(
                    path,
                    format!("array '{name}': uint8 array holds value {v}"),
                ));
            }
            bytes.push(v as u8);
        }
        MatData::U8(bytes)
    } else {
        MatData::F64(widen(real.typ, real.data, e))
    };
    Ok(Some(MatArray {
        name,
        class,
        dims,
        data,
    }))
}

fn parse_elements(buf: &[u8], e: Endian, path: &Path, nested: bool, out: &mut Vec<MatArray>) -> Result<()> {
    let mut pos = 0;
    while pos < buf.len() {
        if buf.len() - pos < 8 && buf[pos..].iter().all(|&b| b == 0) {
            break; // trailing padding
        }
        let el = read_element(buf, pos, e, path, "data element")?;
        match el.typ {
            MI_MATRIX => {
                if let Some(a) = parse_matrix(el.data, e, path)? {
                    out.push(a);
                }
            }
            MI_COMPRESSED => {
                if nested {
                    return Err(Error::format(path, "compressed element inside a compressed element"));
                }
                let inflated = inflate_zlib(el.data, path)?;
                parse_elements(&inflated, e, path, true, out)?;
            }
            _ => {} // other top-level elements carry nothing we read
        }
        pos = el.next;
    }
    Ok(())
}

fn parse_at(bytes: &[u8], path: &Path) -> Result<MatFile> {
    if bytes.len() < 128 {
        return Err(Error::truncated(path, "MAT-file header", 128, bytes.len() as u64));
    }
    let text = &bytes[..116];
    if text.starts_with(b"MATLAB 7.3") {
        return Err(Error::format(
            path,
            "MATLAB v7.3 (HDF5) MAT-files are not supported; save with -v7 (or scipy.io.savemat)",
        ));
    }
    let indicator = &bytes[126..128];
    if !text.starts_with(b"MATLAB") || (indicator != b"IM" && indicator != b"MI") {
        return Err(Error::BadMagic {
            path: path.to_path_buf(),
            format: "MATLAB level-5 MAT-file".into(),
            expected: "header text 'MATLAB 5.0 MAT-file' and endian indicator 'IM' or 'MI' at byte 126".into(),
            found: format!(
                "{:?} ... {:?}",
                String::from_utf8_lossy(&text[..text.len().min(19)]),
                String::from_utf8_lossy(indicator)
            ),
        });
    }
    let e = Endian {
        big: indicator == b"MI",
    };
    let header_text = String::from_utf8_lossy(text).trim_end_matches([' ', '\0']).to_string();
    let mut arrays = Vec::new();
    parse_elements(&bytes[128..], e, path, false, &mut arrays)?;
    Ok(MatFile { header_text, arrays })
}

/// Parses a level-5 MAT-file held in memory. Errors report the path `<memory>`.
pub fn parse_mat(bytes: &[u8]) -> Result<MatFile> {
    parse_at(bytes, mem())
}

/// Reads a level-5 MAT-file.
pub fn read_mat(path: &Path) -> Result<MatFile> {
    parse_at(&read_file(path)?, path)
}

fn svhn_from_mat(m: &MatFile, path: &Path) -> Result<Dataset> {
    let x = m
        .get("X")
        .ok_or_else(|| Error::format(path, "no numeric variable 'X' (the SVHN images)"))?;
    let y = m
        .get("y")
        .ok_or_else(|| Error::format(path, "no numeric variable 'y' (the SVHN labels)"))?;
    let n = match x.dims.as_slice() {
        [32, 32, 3, n] => *n,
        [32, 32, 3] => 1,
        d => {
            return Err(Error::format(
                path,
                format!("'X' has dimensions {d:?}, expected [32, 32, 3, N]"),
            ));
        }
    };
    let MatData::U8(px) = &x.data else {
        return Err(Error::format(
            path,
            format!("'X' has class {} but SVHN images are uint8 (class 9)", x.class),
        ));
    };
    let labels_n = y.data.len();
    if y.dims.iter().filter(|&&d| d != 1).count() > 1 {
        return Err(Error::format(
            path,
            format!("'y' has dimensions {:?}, expected [N, 1]", y.dims),
        ));
    }
    if labels_n != n {
        return Err(Error::CountMismatch {
            images_path: path.to_path_buf(),
            labels_path: path.to_path_buf(),
            images: n,
            labels: labels_n,
        });
    }
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let v = y.data.get(i);
        if !(1.0..=10.0).contains(&v) || v.fract() != 0.0 {
            return Err(Error::LabelOutOfRange {
                path: path.to_path_buf(),
                index: i,
                label: if v.is_finite() { v as i64 } else { i64::MIN },
                expected: "1..=10 (10 stands for the digit 0)".into(),
            });
        }
        labels.push(v as u32 % 10);
    }
    // Column-major 32x32x3xN (row fastest) to CHW per sample (column fastest).
    let mut pixels = vec![0u8; n * 3072];
    for (dst, src) in pixels.chunks_exact_mut(3072).zip(px.chunks_exact(3072)) {
        for ch in 0..3 {
            let s = &src[ch * 1024..(ch + 1) * 1024];
            let d = &mut dst[ch * 1024..(ch + 1) * 1024];
            for col in 0..32 {
                for row in 0..32 {
                    d[row * 32 + col] = s[col * 32 + row];
                }
            }
        }
    }
    Dataset::new("svhn", [3, 32, 32], 10, pixels, labels).map(|d| d.with_class_names(crate::names::digits()))
}

/// Parses an SVHN cropped-digits MAT-file held in memory (labels mapped 10 → 0).
/// Errors report the path `<memory>`.
pub fn parse_svhn(bytes: &[u8]) -> Result<Dataset> {
    svhn_from_mat(&parse_at(bytes, mem())?, mem())
}

/// Reads an SVHN cropped-digits MAT-file (`train_32x32.mat`, `test_32x32.mat`, `extra_32x32.mat`):
/// a 10-class 3x32x32 dataset, labels mapped 10 → 0.
pub fn svhn_mat(path: &Path) -> Result<Dataset> {
    svhn_from_mat(&read_mat(path)?, path)
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn push_element(out: &mut Vec<u8>, typ: u32, data: &[u8]) {
    if data.len() <= 4 && typ != MI_MATRIX {
        // Small data element format, as MATLAB and scipy write short names.
        push_u32(out, ((data.len() as u32) << 16) | typ);
        out.extend_from_slice(data);
        out.resize(out.len() + 4 - data.len(), 0);
    } else {
        push_u32(out, typ);
        push_u32(out, data.len() as u32);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(8), 0);
    }
}

/// Writes numeric arrays as a little-endian level-5 MAT-file, with each array in an `miCOMPRESSED`
/// element (as the official SVHN files) or uncompressed (scipy's default). `U8` data is written as
/// `miUINT8`, `F64` data as `miDOUBLE`; the class is taken from [`MatArray::class`]. Used by the tests
/// to write SVHN files in their true layout, and handy for making small fixtures.
pub fn write_mat(arrays: &[MatArray], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut text = b"MATLAB 5.0 MAT-file, written by earlyexit-data".to_vec();
    text.resize(116, b' ');
    out.extend_from_slice(&text);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for a in arrays {
        let mut body = Vec::new();
        let mut flags = Vec::new();
        push_u32(&mut flags, a.class as u32);
        push_u32(&mut flags, 0);
        push_element(&mut body, MI_UINT32, &flags);
        let dims: Vec<u8> = a.dims.iter().flat_map(|&d| (d as i32).to_le_bytes()).collect();
        push_element(&mut body, MI_INT32, &dims);
        push_element(&mut body, MI_INT8, a.name.as_bytes());
        match &a.data {
            MatData::U8(v) => push_element(&mut body, MI_UINT8, v),
            MatData::F64(v) => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                push_element(&mut body, MI_DOUBLE, &bytes);
            }
        }
        let mut matrix = Vec::new();
        push_u32(&mut matrix, MI_MATRIX);
        push_u32(&mut matrix, body.len() as u32);
        matrix.extend_from_slice(&body);
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            // Writing to a Vec cannot fail.
            let _ = z.write_all(&matrix);
            let compressed = z.finish().unwrap_or_default();
            push_u32(&mut out, MI_COMPRESSED);
            push_u32(&mut out, compressed.len() as u32);
            out.extend_from_slice(&compressed);
        } else {
            out.extend_from_slice(&matrix);
        }
    }
    out
}

/// Writes an SVHN-layout MAT-file image from CHW samples and digit labels 0..=9: `X` as 32x32x3xN
/// `uint8` (column-major), `y` as Nx1 `double` with 0 written as 10. `pixels` must hold
/// `labels.len() * 3072` bytes.
pub fn write_svhn(pixels: &[u8], labels: &[u32], compress: bool) -> Vec<u8> {
    let n = labels.len();
    let mut x = vec![0u8; n * 3072];
    for (dst, src) in x.chunks_exact_mut(3072).zip(pixels.chunks_exact(3072)) {
        for ch in 0..3 {
            for row in 0..32 {
                for col in 0..32 {
                    dst[ch * 1024 + col * 32 + row] = src[ch * 1024 + row * 32 + col];
                }
            }
        }
    }
    let y = labels.iter().map(|&l| if l == 0 { 10.0 } else { l as f64 }).collect();
    write_mat(
        &[
            MatArray {
                name: "X".into(),
                class: MX_UINT8,
                dims: vec![32, 32, 3, n],
                data: MatData::U8(x),
            },
            MatArray {
                name: "y".into(),
                class: MX_DOUBLE,
                dims: vec![n, 1],
                data: MatData::F64(y),
            },
        ],
        compress,
    )
}
