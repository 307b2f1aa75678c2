//! `fetch`: download a dataset's official files and check them.
//!
//! Downloads run through the system `curl` (no HTTP stack is linked into the crate) with a connect
//! timeout and an overall time limit, so a machine without network gets a clear error within
//! seconds and never hangs. Each download is checked before it is kept: MNIST and Fashion-MNIST by
//! the sha256 of the decompressed IDX files ([`crate::verify::KNOWN_SHA256`]), the others by the md5
//! sums their publishers give. Archives are unpacked with the system `tar` or `unzip`. Files land in
//! `<dir>/<name>/...`, the layout [`crate::load`] and [`crate::verify()`] look for.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::dataset::DatasetKind;
use crate::error::{Error, Result, read_file};
use crate::gz::maybe_gunzip;
use crate::verify::{KNOWN_SHA256, sha256_hex};

/// Options of [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Replace the official base URL (the part before the file name), e.g. for a local mirror.
    pub base_url: Option<String>,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
    /// Give up on one file after this long.
    pub max_time: Duration,
    /// The `curl` program.
    pub curl: PathBuf,
}

impl Default for FetchOptions {
    /// Official URLs, 15 s to connect, 1 h per file, `curl` from `PATH`.
    fn default() -> Self {
        FetchOptions {
            base_url: None,
            connect_timeout: Duration::from_secs(15),
            max_time: Duration::from_secs(3600),
            curl: PathBuf::from("curl"),
        }
    }
}

enum Sum {
    /// sha256 of the gunzipped file, from [`KNOWN_SHA256`].
    IdxSha256(DatasetKind, &'static str),
    /// md5 of the file as downloaded.
    Md5(&'static str),
}

struct Source {
    base: &'static str,
    files: &'static [(&'static str, Sum)],
    subdir: &'static str,
    unpack: Option<&'static str>,
}

const MNIST_FILES: [(&str, Sum); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        Sum::IdxSha256(DatasetKind::Mnist, "train-images-idx3-ubyte"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        Sum::IdxSha256(DatasetKind::Mnist, "train-labels-idx1-ubyte"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        Sum::IdxSha256(DatasetKind::Mnist, "t10k-images-idx3-ubyte"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        Sum::IdxSha256(DatasetKind::Mnist, "t10k-labels-idx1-ubyte"),
    ),
];

const FASHION_FILES: [(&str, Sum); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        Sum::IdxSha256(DatasetKind::FashionMnist, "train-images-idx3-ubyte"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        Sum::IdxSha256(DatasetKind::FashionMnist, "train-labels-idx1-ubyte"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        Sum::IdxSha256(DatasetKind::FashionMnist, "t10k-images-idx3-ubyte"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        Sum::IdxSha256(DatasetKind::FashionMnist, "t10k-labels-idx1-ubyte"),
    ),
];

fn source(kind: DatasetKind) -> Result<Source> {
    Ok(match kind {
        DatasetKind::Mnist => Source {
            base: "https://ossci-datasets.s3.amazonaws.com/mnist/",
            files: &MNIST_FILES,
            subdir: "mnist",
            unpack: None,
        },
        DatasetKind::FashionMnist => Source {
            base: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            files: &FASHION_FILES,
            subdir: "fashion-mnist",
            unpack: None,
        },
        DatasetKind::Cifar10 => Source {
            base: "https://www.cs.toronto.edu/~kriz/",
            files: &[("cifar-10-binary.tar.gz", Sum::Md5("c32a1d4ab5d03f1284b67883e8d87530"))],
            subdir: "cifar10",
            unpack: Some("tar"),
        },
        DatasetKind::Cifar100 { .. } => Source {
            base: "https://www.cs.toronto.edu/~kriz/",
            files: &[("cifar-100-binary.tar.gz", Sum::Md5("03b5dce01913d631647c71ecec9e9cb8"))],
            subdir: "cifar100",
            unpack: Some("tar"),
        },
        DatasetKind::Svhn => Source {
            base: "http://ufldl.stanford.edu/housenumbers/",
            files: &[
                ("train_32x32.mat", Sum::Md5("e26dedcc434d2e4c54c9b2d4a06d8373")),
                ("test_32x32.mat", Sum::Md5("eb5a983be6a315427106f1b164d9cef3")),
            ],
            subdir: "svhn",
            unpack: None,
        },
        DatasetKind::TinyImageNet => Source {
            base: "http://cs231n.stanford.edu/",
            files: &[("tiny-imagenet-200.zip", Sum::Md5("90528d7ca1a48142e341f4ef8d21d0de"))],
            subdir: "tiny-imagenet",
            unpack: Some("unzip"),
        },
        DatasetKind::Digits => {
            return Err(Error::Fetch {
                name: kind.to_string(),
                what: "the digits CSV ships with scikit-learn (sklearn/datasets/data/digits.csv.gz); \
                       there is no official download"
                    .into(),
            });
        }
        DatasetKind::ImageFolder => {
            return Err(Error::Fetch {
                name: kind.to_string(),
                what: "image folders are user data; there is nothing to download".into(),
            });
        }
    })
}

/// Downloads `kind`'s official files into `<dir>/<name>/` (`mnist`, `fashion-mnist`, `cifar10`,
/// `cifar100`, `svhn`, `tiny-imagenet`), checks them and unpacks archives. Files already present
/// with the right sum are not downloaded again. Returns the dataset folder.
///
/// Errors: [`Error::Fetch`] when `curl` is missing, the network is unreachable, the server answers
/// with an error, a time limit passes, or a sum differs (the bad file is deleted).
pub fn fetch(kind: DatasetKind, dir: &Path, options: &FetchOptions) -> Result<PathBuf> {
    let src = source(kind)?;
    let name = kind.to_string();
    let out = dir.join(src.subdir);
    std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
    for (file, sum) in src.files {
        let path = out.join(file);
        if path.is_file() && check_sum(&path, sum).is_ok() {
            continue;
        }
        let base = options.base_url.as_deref().unwrap_or(src.base);
        let url = format!("{}/{file}", base.trim_end_matches('/'));
        let part = out.join(format!("{file}.part"));
        download(&name, &url, &part, options)?;
        if let Err(e) = check_sum(&part, sum) {
            let _ = std::fs::remove_file(&part);
            return Err(Error::Fetch {
                name,
                what: format!("{url}: {e}"),
            });
        }
        std::fs::rename(&part, &path).map_err(|e| Error::io(&path, e))?;
        if let Some(tool) = src.unpack {
            unpack(&name, tool, &path, &out)?;
        }
    }
    Ok(out)
}

fn download(name: &str, url: &str, to: &Path, o: &FetchOptions) -> Result<()> {
    let output = Command::new(&o.curl)
        .arg("--fail")
        .arg("--location")
        .arg("--silent")
        .arg("--show-error")
        .arg("--connect-timeout")
        .arg(o.connect_timeout.as_secs_f64().max(0.1).to_string())
        .arg("--max-time")
        .arg(o.max_time.as_secs_f64().max(0.1).to_string())
        .arg("--output")
        .arg(to)
        .arg(url)
        .output()
        .map_err(|e| Error::Fetch {
            name: name.into(),
            what: format!("cannot run {}: {e} (fetch needs curl)", o.curl.display()),
        })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(to);
        let code = output.status.code().unwrap_or(-1);
        let hint = match code {
            6 | 7 => " (no network? the host could not be resolved or reached)",
            28 => " (timed out)",
            22 => " (the server answered with an HTTP error)",
            _ => "",
        };
        return Err(Error::Fetch {
            name: name.into(),
            what: format!(
                "downloading {url} failed: curl exit {code}{hint}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn check_sum(path: &Path, sum: &Sum) -> Result<()> {
    let bytes = read_file(path)?;
    let (expected, found) = match sum {
        Sum::Md5(m) => (m.to_string(), md5_hex(&bytes)),
        Sum::IdxSha256(kind, file) => {
            let known = KNOWN_SHA256
                .iter()
                .find(|(k, f, _)| k == kind && f == file)
                .map(|(_, _, s)| s.to_string())
                .unwrap_or_default();
            (known, sha256_hex(&maybe_gunzip(&bytes, path)?))
        }
    };
    if expected == found {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.to_path_buf(),
            expected,
            found,
        })
    }
}

fn unpack(name: &str, tool: &str, archive: &Path, out: &Path) -> Result<()> {
    let mut cmd = Command::new(tool);
    if tool == "tar" {
        cmd.arg("-xzf").arg(archive).arg("-C").arg(out);
    } else {
        cmd.arg("-q").arg("-o").arg(archive).arg("-d").arg(out);
    }
    let status = cmd.status().map_err(|e| Error::Fetch {
        name: name.into(),
        what: format!("cannot run {tool} to unpack {}: {e}", archive.display()),
    })?;
    if !status.success() {
        return Err(Error::Fetch {
            name: name.into(),
            what: format!("{tool} failed to unpack {}", archive.display()),
        });
    }
    Ok(())
}

/// Hex MD5 of `bytes` (RFC 1321), for the publishers' archive sums. Not for security.
pub fn md5_hex(bytes: &[u8]) -> String {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14,
        20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6,
        10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) = (0x67452301u32, 0xefcdab89u32, 0x98badcfeu32, 0x10325476u32);
    let mut msg = bytes.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((bytes.len() as u64).wrapping_mul(8)).to_le_bytes());
    for chunk in msg.chunks_exact(64) {
        let m: Vec<u32> = chunk
            .chunks_exact(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    [a0, b0, c0, d0]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}
