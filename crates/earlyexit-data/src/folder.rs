//! Image-folder datasets, decoded with the `image` crate on worker threads.
//!
//! - One folder per class (CINIC-10 and any user data): `<root>/<class>/<image>`; the classes are the
//!   sub-folder names in sorted order. A dataset folder may hold `train/` and `test/` (or `val/`,
//!   `valid/`) roots, or be a single root of class folders (train only).
//! - Tiny-ImageNet-200: `wnids.txt`, `words.txt`, `train/<wnid>/images/*.JPEG`, and
//!   `val/images/*.JPEG` labelled by `val/val_annotations.txt` (file, wnid, box). The classes are the
//!   wnids in sorted order (as an image-folder reader would give); images are 64x64 RGB (the few
//!   greyscale JPEGs are expanded to RGB). `val/` serves as the test split, since the official test
//!   labels are not public.
//!
//! All images of a dataset must have the same size; a different one is an [`Error::ImageSize`].
//! Images are colour (3 channels) unless every image of the folder is greyscale.

use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Split};
use crate::error::{Error, Result, read_file};

/// File extensions (lower-case) read as images.
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        out.push(entry.path());
    }
    out.sort();
    Ok(out)
}

/// The class folder names under `root`, sorted. Errors if there are none.
pub fn class_dirs(root: &Path) -> Result<Vec<String>> {
    let names: Vec<String> = read_dir_sorted(root)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    if names.is_empty() {
        return Err(Error::missing(root, "no class folders (expected <class>/<images>)"));
    }
    Ok(names)
}

fn has_subdirs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().any(|e| e.path().is_dir()))
        .unwrap_or(false)
}

/// The root of class folders for `split` in an image-folder dataset `dir`: `train/` (or `dir` itself
/// when it has no `train/`, `test/`, `val/` or `valid/`) for training; `test/`, `val/` or `valid/` for test.
pub(crate) fn folder_split_dir(dir: &Path, split: Split) -> Option<PathBuf> {
    let names: &[&str] = match split {
        Split::Train => &["train"],
        Split::Test => &["test", "val", "valid"],
    };
    for n in names {
        let d = dir.join(n);
        if d.is_dir() && has_subdirs(&d) {
            return Some(d);
        }
    }
    let split_roots = ["train", "test", "val", "valid"];
    if split == Split::Train && has_subdirs(dir) && !split_roots.iter().any(|n| dir.join(n).is_dir()) {
        return Some(dir.to_path_buf());
    }
    None
}

/// Decoded images, CHW, all of one size.
struct Decoded {
    pixels: Vec<u8>,
    shape: [usize; 3],
}

fn decode_one(path: &Path) -> Result<image::DynamicImage> {
    let bytes = read_file(path)?;
    image::load_from_memory(&bytes).map_err(|e| Error::format(path, format!("cannot decode image: {e}")))
}

/// Writes `img` as RGB CHW into `out` (3*h*w bytes); returns true if the image was greyscale.
fn put_rgb(img: &image::DynamicImage, out: &mut [u8]) -> bool {
    let grey = !img.color().has_color();
    let rgb = img.to_rgb8();
    let plane = (rgb.width() * rgb.height()) as usize;
    for (i, p) in rgb.pixels().enumerate() {
        out[i] = p[0];
        out[plane + i] = p[1];
        out[2 * plane + i] = p[2];
    }
    grey
}

/// Decodes `files` on up to `threads` worker threads. `size` fixes (width, height); when `None`, the
/// first image sets it. With `force_rgb`, the result is always 3 channels; otherwise 1 channel when
/// every image is greyscale.
fn decode_all(files: &[PathBuf], size: Option<(u32, u32)>, force_rgb: bool) -> Result<Decoded> {
    let Some(first) = files.first() else {
        let (w, h) = size.unwrap_or((1, 1));
        return Ok(Decoded {
            pixels: Vec::new(),
            shape: [3, h as usize, w as usize],
        });
    };
    let (w, h) = match size {
        Some(s) => s,
        None => {
            let img = decode_one(first)?;
            (img.width(), img.height())
        }
    };
    let plane = (w as usize) * (h as usize);
    let per = 3 * plane;
    let mut pixels = vec![0u8; files.len() * per];
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 8);
    let chunk = files.len().div_ceil(threads);
    let results: Vec<Result<bool>> = std::thread::scope(|s| {
        let handles: Vec<_> = pixels
            .chunks_mut(chunk * per)
            .zip(files.chunks(chunk))
            .map(|(out, fs)| {
                s.spawn(move || -> Result<bool> {
                    let mut all_grey = true;
                    for (o, f) in out.chunks_exact_mut(per).zip(fs) {
                        let img = decode_one(f)?;
                        if (img.width(), img.height()) != (w, h) {
                            return Err(Error::ImageSize {
                                path: f.clone(),
                                expected: (w, h),
                                found: (img.width(), img.height()),
                            });
                        }
                        all_grey &= put_rgb(&img, o);
                    }
                    Ok(all_grey)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Config("image decoding thread panicked".into())))
            })
            .collect()
    });
    let mut all_grey = true;
    for r in results {
        all_grey &= r?; // the first error in file order
    }
    if all_grey && !force_rgb {
        // Keep the first (= every) channel.
        let mut grey = Vec::with_capacity(files.len() * plane);
        for img in pixels.chunks_exact(per) {
            grey.extend_from_slice(&img[..plane]);
        }
        return Ok(Decoded {
            pixels: grey,
            shape: [1, h as usize, w as usize],
        });
    }
    Ok(Decoded {
        pixels,
        shape: [3, h as usize, w as usize],
    })
}

/// Reads a one-folder-per-class dataset rooted at `root`. `classes` fixes the class list (so that a
/// test split's labels agree with the train split's); by default it is the sorted sub-folder names.
/// Files with other extensions than [`IMAGE_EXTENSIONS`] are ignored; images are decoded on worker
/// threads.
///
/// Errors: [`Error::ImageSize`] for an image whose size differs from the first one,
/// [`Error::Format`] for an undecodable image or a class folder not in `classes`, [`Error::Io`]
/// for an unreadable file or folder, [`Error::Missing`] when there are no images.
pub fn image_folder(root: &Path, classes: Option<&[String]>) -> Result<Dataset> {
    let own = class_dirs(root)?;
    let classes: Vec<String> = match classes {
        Some(c) => {
            if let Some(extra) = own.iter().find(|d| !c.contains(d)) {
                return Err(Error::format(
                    &root.join(extra),
                    format!("class folder '{extra}' is not among the {} training classes", c.len()),
                ));
            }
            c.to_vec()
        }
        None => own,
    };
    let mut files = Vec::new();
    let mut labels = Vec::new();
    for (label, class) in classes.iter().enumerate() {
        let d = root.join(class);
        if !d.is_dir() {
            continue;
        }
        for f in read_dir_sorted(&d)? {
            if f.is_file() && is_image(&f) {
                files.push(f);
                labels.push(label as u32);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::missing(
            root,
            "no images (.png, .jpg, .jpeg) in the class folders",
        ));
    }
    let dec = decode_all(&files, None, false)?;
    let name = root
        .file_name()
        .map_or("folder".into(), |n| n.to_string_lossy().into_owned());
    let n = classes.len();
    Ok(Dataset::new(name, dec.shape, n, dec.pixels, labels)?.with_class_names(classes))
}

/// Tiny-ImageNet image size (width, height).
pub const TINY_IMAGENET_SIZE: (u32, u32) = (64, 64);

fn tiny_wnids(root: &Path) -> Result<Vec<String>> {
    let path = root.join("wnids.txt");
    let text = String::from_utf8(read_file(&path)?).map_err(|_| Error::format(&path, "not UTF-8 text"))?;
    let mut wnids: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    wnids.sort();
    wnids.dedup();
    if wnids.is_empty() {
        return Err(Error::format(&path, "no class ids"));
    }
    Ok(wnids)
}

fn tiny_words(root: &Path, wnids: &[String]) -> Vec<String> {
    let map: std::collections::HashMap<String, String> = std::fs::read_to_string(root.join("words.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    wnids
        .iter()
        .map(|w| map.get(w).cloned().unwrap_or_else(|| w.clone()))
        .collect()
}

/// Reads Tiny-ImageNet-200 from its root folder (the one holding `wnids.txt`): `Split::Train` from
/// `train/<wnid>/images/`, `Split::Test` from `val/` and its `val_annotations.txt`.
pub fn tiny_imagenet(root: &Path, split: Split) -> Result<Dataset> {
    let wnids = tiny_wnids(root)?;
    let mut files = Vec::new();
    let mut labels = Vec::new();
    match split {
        Split::Train => {
            for (label, w) in wnids.iter().enumerate() {
                let d = root.join("train").join(w).join("images");
                if !d.is_dir() {
                    return Err(Error::missing(
                        &root.join("train"),
                        format!("no folder {w}/images for class {w}"),
                    ));
                }
                for f in read_dir_sorted(&d)? {
                    if f.is_file() && is_image(&f) {
                        files.push(f);
                        labels.push(label as u32);
                    }
                }
            }
        }
        Split::Test => {
            let ann = root.join("val").join("val_annotations.txt");
            let text = String::from_utf8(read_file(&ann)?).map_err(|_| Error::format(&ann, "not UTF-8 text"))?;
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let mut cols = line.split('\t');
                let (Some(file), Some(wnid)) = (cols.next(), cols.next()) else {
                    return Err(Error::format(
                        &ann,
                        format!("line {}: expected '<file>\\t<wnid>\\t<box>', found {line:?}", i + 1),
                    ));
                };
                let Ok(label) = wnids.binary_search(&wnid.trim().to_string()) else {
                    return Err(Error::format(
                        &ann,
                        format!("line {}: class id {wnid:?} is not in wnids.txt", i + 1),
                    ));
                };
                files.push(root.join("val").join("images").join(file.trim()));
                labels.push(label as u32);
            }
        }
    }
    if files.is_empty() {
        return Err(Error::missing(root, format!("no Tiny-ImageNet {split} images")));
    }
    let dec = decode_all(&files, Some(TINY_IMAGENET_SIZE), true)?;
    let names = tiny_words(root, &wnids);
    Ok(Dataset::new("tiny-imagenet", dec.shape, wnids.len(), dec.pixels, labels)?.with_class_names(names))
}
