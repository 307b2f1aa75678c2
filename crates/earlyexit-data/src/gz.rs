//! Transparent gzip and zlib decompression with a size cap.

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest decompressed size accepted (4 GiB + 64 KiB): more than any supported dataset file needs,
/// and a bound that stops a forged stream from exhausting memory.
pub(crate) const MAX_DECOMPRESSED: u64 = (1 << 32) + (1 << 16);

/// True if `bytes` start with the gzip magic `1f 8b`.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

fn read_capped(mut reader: impl Read, path: &Path, what: &str, size_hint: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(size_hint.min(1 << 28));
    let mut limited = (&mut reader).take(MAX_DECOMPRESSED + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| Error::format(path, format!("corrupt or truncated {what} stream: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(Error::format(
            path,
            format!("{what} stream decompresses to more than {MAX_DECOMPRESSED} bytes"),
        ));
    }
    Ok(out)
}

/// Decompresses `bytes` if they are gzip (all members), else borrows them unchanged.
pub(crate) fn maybe_gunzip<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>> {
    if is_gzip(bytes) {
        let dec = flate2::read::MultiGzDecoder::new(bytes);
        Ok(Cow::Owned(read_capped(dec, path, "gzip", bytes.len() * 4)?))
    } else {
        Ok(Cow::Borrowed(bytes))
    }
}

/// Inflates a zlib stream (as in MAT-file `miCOMPRESSED` elements).
pub(crate) fn inflate_zlib(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    let dec = flate2::read::ZlibDecoder::new(bytes);
    read_capped(dec, path, "zlib", bytes.len() * 4)
}
