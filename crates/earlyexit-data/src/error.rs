//! The crate's error type.
//!
//! Every error that comes from reading a file names the file (`path`) and says what is wrong, with the
//! expected and the found value where there are two to compare. Parsers that work on byte slices
//! (the fuzzing entry points) report the path `<memory>`; the file readers replace it with the real path.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The placeholder path that byte-slice parsers put into their errors.
pub const MEMORY_PATH: &str = "<memory>";

/// Everything that can go wrong when reading, checking or batching a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or folder could not be opened, read or listed.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: std::io::Error,
    },
    /// The file ends before the data its header (or the format) promises.
    #[error("{}: truncated {what}: expected {expected} bytes, found {found}", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What was being read (e.g. "IDX image data").
        what: String,
        /// Bytes needed.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The file does not start with the magic number (signature) of its format.
    #[error("{}: wrong magic number for {format}: expected {expected}, found {found}", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The format expected (e.g. "IDX images").
        format: String,
        /// The magic expected, as text.
        expected: String,
        /// The magic found, as text.
        found: String,
    },
    /// The number of images differs from the number of labels.
    #[error(
        "{}: {images} images but {} has {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// Where the images come from.
        images_path: PathBuf,
        /// Where the labels come from.
        labels_path: PathBuf,
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not in `0..classes` (after the format's own mapping, e.g. SVHN's 10 → 0).
    #[error("{}: label {label} of sample {index} is out of range (expected {expected})", path.display())]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// Sample index within the file.
        index: usize,
        /// The label as stored.
        label: i64,
        /// The valid range, as text (e.g. "0..=9").
        expected: String,
    },
    /// An image in a folder dataset does not have the size of the others (or of the format).
    #[error(
        "{}: image is {}x{} but expected {}x{} (width x height)",
        path.display(),
        found.0,
        found.1,
        expected.0,
        expected.1
    )]
    ImageSize {
        /// The image file.
        path: PathBuf,
        /// Expected (width, height).
        expected: (u32, u32),
        /// Found (width, height).
        found: (u32, u32),
    },
    /// A file is present but its content is malformed in a way the other variants do not cover
    /// (undecodable image, corrupt gzip stream, bad CSV field, unsupported MAT element, ...).
    #[error("{}: {what}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A file that a dataset needs is not in the folder.
    #[error("{}: {what}", dir.display())]
    Missing {
        /// The folder searched.
        dir: PathBuf,
        /// What was looked for.
        what: String,
    },
    /// A checksum differs from the known one.
    #[error("{}: sha256 mismatch: expected {expected}, found {found}", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
        /// Known sum (hex).
        expected: String,
        /// Computed sum (hex).
        found: String,
    },
    /// A dataset name that this crate does not know.
    #[error("unknown dataset '{name}' (known: {known})")]
    UnknownDataset {
        /// The name given.
        name: String,
        /// The names accepted.
        known: String,
    },
    /// Invalid arguments (split sizes larger than the data, batch size 0, wrong channel count, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Downloading failed (no network, HTTP error, checksum of the download wrong, ...).
    #[error("fetch {name}: {what}")]
    Fetch {
        /// The dataset being fetched.
        name: String,
        /// What went wrong.
        what: String,
    },
}

impl Error {
    /// The file or folder the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Error::Io { path, .. }
            | Error::Truncated { path, .. }
            | Error::BadMagic { path, .. }
            | Error::LabelOutOfRange { path, .. }
            | Error::ImageSize { path, .. }
            | Error::Format { path, .. }
            | Error::Checksum { path, .. } => Some(path),
            Error::CountMismatch { images_path, .. } => Some(images_path),
            Error::Missing { dir, .. } => Some(dir),
            _ => None,
        }
    }

    /// Replaces the `<memory>` placeholder path of a byte-slice parser's error with the real file.
    pub fn at(mut self, file: &Path) -> Self {
        let fix = |p: &mut PathBuf| {
            if p.as_os_str() == MEMORY_PATH {
                *p = file.to_path_buf();
            }
        };
        match &mut self {
            Error::Io { path, .. }
            | Error::Truncated { path, .. }
            | Error::BadMagic { path, .. }
            | Error::LabelOutOfRange { path, .. }
            | Error::ImageSize { path, .. }
            | Error::Format { path, .. }
            | Error::Checksum { path, .. } => fix(path),
            Error::CountMismatch {
                images_path,
                labels_path,
                ..
            } => {
                fix(images_path);
                fix(labels_path);
            }
            Error::Missing { dir, .. } => fix(dir),
            _ => {}
        }
        self
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, what: impl Into<String>) -> Self {
        Error::Format {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }

    pub(crate) fn truncated(path: &Path, what: impl Into<String>, expected: u64, found: u64) -> Self {
        Error::Truncated {
            path: path.to_path_buf(),
            what: what.into(),
            expected,
            found,
        }
    }

    pub(crate) fn missing(dir: &Path, what: impl Into<String>) -> Self {
        Error::Missing {
            dir: dir.to_path_buf(),
            what: what.into(),
        }
    }
}

pub(crate) fn mem() -> &'static Path {
    Path::new(MEMORY_PATH)
}

/// Reads a whole file, mapping failures to [`Error::Io`] with the path.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}
