//! `verify`: recognise the datasets in a folder (or its subfolders) and check them.
//!
//! Every split present is read with the dataset's own reader (so every parse error surfaces), the
//! sample counts are compared with the official ones, and the sha256 of each file is compared with
//! the known sum where one is known (the uncompressed IDX files of MNIST and Fashion-MNIST; the sum
//! is taken of the decompressed content, so any gzip packing of the canonical files passes).
//! CIFAR-100's coarse labels are also checked against the fine-to-superclass map.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cifar;
use crate::dataset::{Cifar100Label, Dataset, DatasetKind, Split};
use crate::error::{Error, Result, read_file};
use crate::gz::maybe_gunzip;
use crate::{digits, folder, idx, locate, mat, names};

/// sha256 of the canonical uncompressed IDX files: (dataset, file, sum).
pub const KNOWN_SHA256: [(DatasetKind, &str, &str); 8] = [
    (
        DatasetKind::Mnist,
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        DatasetKind::Mnist,
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        DatasetKind::Mnist,
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        DatasetKind::Mnist,
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
    (
        DatasetKind::FashionMnist,
        "train-images-idx3-ubyte",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        DatasetKind::FashionMnist,
        "train-labels-idx1-ubyte",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        DatasetKind::FashionMnist,
        "t10k-images-idx3-ubyte",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        DatasetKind::FashionMnist,
        "t10k-labels-idx1-ubyte",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
];

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// What one split holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitInfo {
    /// The split.
    pub split: Split,
    /// Samples read.
    pub samples: usize,
    /// The official count, where known.
    pub expected: Option<usize>,
    /// Sample shape `[c, h, w]`.
    pub shape: [usize; 3],
    /// Number of classes.
    pub classes: usize,
    /// Samples per class.
    pub class_counts: Vec<usize>,
}

/// One pass/fail check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it passed.
    pub ok: bool,
    /// Details (the sum, the error, ...).
    pub detail: String,
}

/// The checks of one dataset found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetCheck {
    /// The dataset as recognised (`cifar100` stands for both label choices).
    pub kind: DatasetKind,
    /// A display name (the kind's CLI name, or the folder name for image folders).
    pub name: String,
    /// The folder holding its files.
    pub dir: PathBuf,
    /// The splits read.
    pub splits: Vec<SplitInfo>,
    /// The checks.
    pub checks: Vec<Check>,
}

impl DatasetCheck {
    /// True if every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, what: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            what: what.into(),
            ok,
            detail: detail.into(),
        });
    }

    fn add_split(&mut self, split: Split, ds: &Dataset, expected: Option<usize>) {
        let info = SplitInfo {
            split,
            samples: ds.len(),
            expected,
            shape: ds.shape(),
            classes: ds.classes(),
            class_counts: ds.class_counts(),
        };
        if let Some(e) = expected {
            self.check(
                format!("{split} count"),
                ds.len() == e,
                format!("{} samples, expected {e}", ds.len()),
            );
        }
        if let Some(shape) = self.kind.shape() {
            self.check(
                format!("{split} shape"),
                ds.shape() == shape,
                format!("{:?}, expected {shape:?}", ds.shape()),
            );
        }
        self.splits.push(info);
    }
}

/// The result of [`verify`]; `Display` prints a readable report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The folder verified.
    pub root: PathBuf,
    /// The datasets found, in folder order.
    pub datasets: Vec<DatasetCheck>,
    /// Subfolders of `root` in which no dataset was recognised.
    pub unrecognised: Vec<PathBuf>,
}

impl VerifyReport {
    /// True if every check of every dataset passed.
    pub fn ok(&self) -> bool {
        self.datasets.iter().all(DatasetCheck::ok)
    }

    /// The dataset found of this kind (CIFAR-100 matches either label choice), if any.
    pub fn get(&self, kind: DatasetKind) -> Option<&DatasetCheck> {
        let norm = |k: DatasetKind| match k {
            DatasetKind::Cifar100 { .. } => DatasetKind::Cifar100 {
                label: Cifar100Label::Fine,
            },
            k => k,
        };
        self.datasets.iter().find(|d| norm(d.kind) == norm(kind))
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data verify {}", self.root.display())?;
        for d in &self.datasets {
            let status = if d.ok() { "OK" } else { "FAILED" };
            writeln!(f, "{} [{}] in {}", d.name, status, d.dir.display())?;
            for s in &d.splits {
                let exp = s.expected.map_or(String::new(), |e| format!(" (expected {e})"));
                writeln!(
                    f,
                    "  {:<5} {} samples{exp}, {}x{}x{}, {} classes, per class {:?}",
                    s.split.to_string(),
                    s.samples,
                    s.shape[0],
                    s.shape[1],
                    s.shape[2],
                    s.classes,
                    s.class_counts
                )?;
            }
            for c in &d.checks {
                writeln!(f, "  [{}] {}: {}", if c.ok { "ok" } else { "FAIL" }, c.what, c.detail)?;
            }
        }
        for u in &self.unrecognised {
            writeln!(f, "no dataset recognised in {}", u.display())?;
        }
        let failed = self.datasets.iter().filter(|d| !d.ok()).count();
        write!(
            f,
            "{} dataset(s) found, {}",
            self.datasets.len(),
            if failed == 0 {
                "all checks passed".to_string()
            } else {
                format!("{failed} with failed checks")
            }
        )
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_image_folder(dir: &Path) -> bool {
    let train = dir.join("train");
    subdirs(&train).first().is_some_and(|class| {
        std::fs::read_dir(class).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                e.path()
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| folder::IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
            })
        })
    })
}

/// The dataset kinds whose files are in `dir` itself.
fn detect(dir: &Path) -> Vec<DatasetKind> {
    let mut kinds = Vec::new();
    let either = |k| locate::has_files(k, dir, Split::Train) || locate::has_files(k, dir, Split::Test);
    if either(DatasetKind::Mnist) {
        kinds.push(DatasetKind::Mnist); // or Fashion-MNIST: decided by the checksums
    }
    for k in [
        DatasetKind::Cifar10,
        DatasetKind::Cifar100 {
            label: Cifar100Label::Fine,
        },
        DatasetKind::Svhn,
        DatasetKind::Digits,
    ] {
        if either(k) {
            kinds.push(k);
        }
    }
    if dir.join("wnids.txt").is_file() {
        kinds.push(DatasetKind::TinyImageNet);
    } else if kinds.is_empty() && is_image_folder(dir) {
        kinds.push(DatasetKind::ImageFolder);
    }
    kinds
}

fn walk(dir: &Path, depth: usize, out: &mut Vec<(DatasetKind, PathBuf)>) {
    let kinds = detect(dir);
    if !kinds.is_empty() {
        out.extend(kinds.into_iter().map(|k| (k, dir.to_path_buf())));
        return;
    }
    if depth < 3 {
        for s in subdirs(dir) {
            walk(&s, depth + 1, out);
        }
    }
}

/// Recognises the datasets in `dir` (which may hold one dataset, or several in one subfolder each,
/// up to three levels down) and checks each: every split present is read in full, counts are
/// compared with the official ones, sha256 sums with the known ones. Problems with a dataset are
/// recorded as failed checks (see [`VerifyReport::ok`]); the call itself fails only when `dir` is not
/// a folder or holds no recognisable dataset.
pub fn verify(dir: &Path) -> Result<VerifyReport> {
    if !dir.is_dir() {
        return Err(Error::missing(dir, "data folder does not exist or is not a folder"));
    }
    let mut found = Vec::new();
    walk(dir, 0, &mut found);
    if found.is_empty() {
        return Err(Error::missing(
            dir,
            "no dataset recognised (looked for IDX files, CIFAR .bin batches, SVHN *_32x32.mat, \
             Tiny-ImageNet wnids.txt, digits.csv[.gz], train/<class>/ image folders, up to 3 levels down)",
        ));
    }
    let datasets: Vec<DatasetCheck> = found.iter().map(|(k, d)| check_dataset(*k, d)).collect();
    let unrecognised = subdirs(dir)
        .into_iter()
        .filter(|s| !found.iter().any(|(_, d)| d.starts_with(s)))
        .collect();
    Ok(VerifyReport {
        root: dir.to_path_buf(),
        datasets,
        unrecognised,
    })
}

fn check_dataset(kind: DatasetKind, dir: &Path) -> DatasetCheck {
    let mut c = DatasetCheck {
        kind,
        name: kind.cli_name().to_string(),
        dir: dir.to_path_buf(),
        splits: Vec::new(),
        checks: Vec::new(),
    };
    if matches!(kind, DatasetKind::Mnist | DatasetKind::FashionMnist) {
        check_idx(&mut c, dir);
        return c;
    }
    if kind == DatasetKind::ImageFolder {
        c.name = dir
            .file_name()
            .map_or("folder".into(), |n| n.to_string_lossy().into_owned());
    }
    let cinic = c.name.to_ascii_lowercase().contains("cinic");
    let mut train_classes = None;
    for split in [Split::Train, Split::Test] {
        if !locate::has_files(kind, dir, split) {
            if kind != DatasetKind::ImageFolder {
                c.check(format!("{split} split"), false, "files missing");
            }
            continue;
        }
        let result = match kind {
            DatasetKind::Cifar100 { .. } => read_cifar100_checked(&mut c, dir, split),
            DatasetKind::ImageFolder => folder::folder_split_dir(dir, split)
                .ok_or_else(|| Error::missing(dir, format!("no {split} folder")))
                .and_then(|root| folder::image_folder(&root, train_classes.as_deref())),
            DatasetKind::Cifar10 => {
                let files: Vec<PathBuf> = match split {
                    Split::Train => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
                    Split::Test => vec![dir.join("test_batch.bin")],
                };
                cifar::cifar10_files(&files)
            }
            DatasetKind::Svhn => mat::svhn_mat(&dir.join(format!("{split}_32x32.mat"))),
            DatasetKind::TinyImageNet => folder::tiny_imagenet(dir, split),
            DatasetKind::Digits => locate::find_file(dir, &["digits.csv"], true)
                .ok_or_else(|| Error::missing(dir, "digits.csv vanished"))
                .and_then(|f| digits::digits_csv(&f))
                .and_then(|all| {
                    if split == Split::Train {
                        c.check(
                            "total count",
                            all.len() == digits::DIGITS_TOTAL,
                            format!("{} samples, expected {}", all.len(), digits::DIGITS_TOTAL),
                        );
                    }
                    digits::digits_split(&all, split)
                }),
            _ => unreachable_kind(dir),
        };
        match result {
            Ok(ds) => {
                if split == Split::Train {
                    train_classes = ds.class_names().map(<[String]>::to_vec);
                }
                let expected = if cinic {
                    Some(90_000)
                } else {
                    kind.official_counts()
                        .map(|(tr, te)| if split == Split::Train { tr } else { te })
                };
                c.add_split(split, &ds, expected);
            }
            Err(e) => c.check(format!("read {split}"), false, e.to_string()),
        }
    }
    c
}

fn unreachable_kind(dir: &Path) -> Result<Dataset> {
    Err(Error::missing(dir, "internal: dataset kind not handled by verify"))
}

fn read_cifar100_checked(c: &mut DatasetCheck, dir: &Path, split: Split) -> Result<Dataset> {
    let path = dir.join(format!("{split}.bin"));
    let b = cifar::read_cifar100(&path)?;
    let coarse = b.coarse.clone().unwrap_or_default();
    let bad = b
        .labels
        .iter()
        .zip(&coarse)
        .position(|(&f, &co)| names::CIFAR100_FINE_TO_COARSE[f as usize] != co);
    c.check(
        format!("{split} coarse labels match the fine-to-superclass map"),
        bad.is_none(),
        match bad {
            None => "all agree".to_string(),
            Some(i) => format!("record {i}: fine {} has coarse {}", b.labels[i], coarse[i]),
        },
    );
    Dataset::new(
        "cifar100",
        [3, 32, 32],
        100,
        b.pixels,
        b.labels.into_iter().map(u32::from).collect(),
    )
}

fn check_idx(c: &mut DatasetCheck, dir: &Path) {
    // Read and hash every file first: the sums decide MNIST or Fashion-MNIST.
    let mut parts = Vec::new();
    for split in [Split::Train, Split::Test] {
        let Some((img, lab)) = locate::idx_files(dir, split) else {
            c.check(format!("{split} split"), false, "IDX files missing");
            continue;
        };
        let read = |p: &Path| -> Result<Vec<u8>> { Ok(maybe_gunzip(&read_file(p)?, p)?.into_owned()) };
        match (read(&img), read(&lab)) {
            (Ok(i), Ok(l)) => parts.push((split, img, i, lab, l)),
            (Err(e), _) | (_, Err(e)) => c.check(format!("read {split}"), false, e.to_string()),
        }
    }
    let base = |p: &Path| {
        let n = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        n.trim_end_matches(".gz").replace(".idx", "-idx")
    };
    let mut sums = Vec::new();
    for (_, ip, i, lp, l) in &parts {
        sums.push((base(ip), sha256_hex(i)));
        sums.push((base(lp), sha256_hex(l)));
    }
    let known_kind = |k: DatasetKind| {
        sums.iter()
            .any(|(_, s)| KNOWN_SHA256.iter().any(|(kk, _, ks)| *kk == k && ks == s))
    };
    let kind = if known_kind(DatasetKind::FashionMnist) {
        DatasetKind::FashionMnist
    } else if known_kind(DatasetKind::Mnist) {
        DatasetKind::Mnist
    } else if dir.to_string_lossy().to_ascii_lowercase().contains("fashion") {
        DatasetKind::FashionMnist
    } else {
        DatasetKind::Mnist
    };
    c.kind = kind;
    c.name = kind.cli_name().to_string();
    for (file, sum) in &sums {
        match KNOWN_SHA256.iter().find(|(k, f, _)| *k == kind && f == file) {
            Some((_, _, known)) => c.check(
                format!("sha256 {file}"),
                known == sum,
                if known == sum {
                    sum.clone()
                } else {
                    format!("found {sum}, expected {known}")
                },
            ),
            None => c.check(format!("sha256 {file}"), true, format!("{sum} (no known sum)")),
        }
    }
    for (split, ip, i, lp, l) in parts {
        let ds = idx::parse_idx_images(&i)
            .map_err(|e| e.at(&ip))
            .and_then(|im| Ok((im, idx::parse_idx_labels(&l).map_err(|e| e.at(&lp))?)))
            .and_then(|(im, la)| idx::idx_dataset(im, la, &ip, &lp));
        match ds {
            Ok(ds) => {
                let expected = kind
                    .official_counts()
                    .map(|(tr, te)| if split == Split::Train { tr } else { te });
                c.add_split(split, &ds, expected);
            }
            Err(e) => c.check(format!("read {split}"), false, e.to_string()),
        }
    }
}
