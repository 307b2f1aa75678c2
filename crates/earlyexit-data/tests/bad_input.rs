//! Bad input gives a clear error naming the file and what is wrong — never a panic.

mod common;

use std::path::Path;

use common::*;
use earlyexit_data::mat::write_svhn;
use earlyexit_data::*;

fn names_file(e: &Error, file: &Path) {
    let msg = e.to_string();
    assert!(
        msg.contains(&file.display().to_string()),
        "error does not name {}: {msg}",
        file.display()
    );
}

// ---- truncated file ----

#[test]
fn truncated_idx_images() {
    let t = tmp();
    let full = idx_images(4, 28, 28, &bytes(4 * 784, 1));
    let p = t.path().join("train-images-idx3-ubyte");
    std::fs::write(&p, &full[..full.len() - 100]).unwrap();
    let e = read_idx_images(&p).unwrap_err();
    names_file(&e, &p);
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 3136,
                found: 3036,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("truncated"), "{e}");
    // Truncated inside the header, and a truncated gzip stream.
    std::fs::write(&p, &full[..10]).unwrap();
    assert!(matches!(
        read_idx_images(&p).unwrap_err(),
        Error::Truncated {
            expected: 16,
            found: 10,
            ..
        }
    ));
    let gz = gzip(&full);
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let e = read_idx_images(&p).unwrap_err();
    names_file(&e, &p);
    assert!(e.to_string().contains("gzip"), "{e}");
}

#[test]
fn truncated_cifar_batch() {
    let t = tmp();
    let p = t.path().join("data_batch_1.bin");
    let full = cifar10_bytes(&bytes(2 * 3072, 1), &[1, 2]);
    std::fs::write(&p, &full[..full.len() - 1]).unwrap();
    let e = read_cifar10(&p).unwrap_err();
    names_file(&e, &p);
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 6146,
                found: 6145,
                ..
            }
        ),
        "{e:?}"
    );
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        read_cifar10(&p).unwrap_err(),
        Error::Truncated { found: 0, .. }
    ));
}

#[test]
fn truncated_mat_file() {
    let t = tmp();
    let p = t.path().join("train_32x32.mat");
    let full = write_svhn(&bytes(2 * 3072, 1), &[1, 2], false);
    std::fs::write(&p, &full[..full.len() - 50]).unwrap();
    let e = svhn_mat(&p).unwrap_err();
    names_file(&e, &p);
    assert!(matches!(e, Error::Truncated { .. }), "{e:?}");
    let z = write_svhn(&bytes(2 * 3072, 1), &[1, 2], true);
    std::fs::write(&p, &z[..z.len() - 50]).unwrap();
    let e = svhn_mat(&p).unwrap_err();
    names_file(&e, &p);
    std::fs::write(&p, &full[..100]).unwrap();
    assert!(matches!(
        svhn_mat(&p).unwrap_err(),
        Error::Truncated {
            expected: 128,
            found: 100,
            ..
        }
    ));
}

#[test]
fn every_prefix_of_valid_files_is_an_error_not_a_panic() {
    let idx = idx_images(2, 3, 3, &bytes(18, 1));
    let lab = idx_labels(&[1, 2]);
    let cif = cifar100_bytes(&bytes(3072, 2), &[1], &[2]);
    let mat_plain = write_svhn(&bytes(3072, 3), &[7], false);
    let mat_z = write_svhn(&bytes(3072, 3), &[7], true);
    let gz = gzip(&idx);
    for n in 0..idx.len() {
        assert!(parse_idx_images(&idx[..n]).is_err());
    }
    for n in 0..lab.len() {
        assert!(parse_idx_labels(&lab[..n]).is_err());
    }
    for n in 0..gz.len() {
        assert!(parse_idx_images(&gz[..n]).is_err(), "gzip prefix {n}");
    }
    for n in 0..cif.len() {
        assert!(parse_cifar100(&cif[..n]).is_err());
    }
    for m in [&mat_plain, &mat_z] {
        for n in 0..m.len() {
            let _ = parse_mat(&m[..n]); // may succeed on a prefix with fewer arrays, must not panic
            assert!(parse_svhn(&m[..n]).is_err(), "mat prefix {n}");
        }
    }
}

// ---- wrong magic number ----

#[test]
fn wrong_magic_idx() {
    let t = tmp();
    let p = t.path().join("train-labels-idx1-ubyte");
    // An image file where a label file is expected.
    std::fs::write(&p, idx_images(1, 2, 2, &[0; 4])).unwrap();
    let e = read_idx_labels(&p).unwrap_err();
    names_file(&e, &p);
    match &e {
        Error::BadMagic { expected, found, .. } => {
            assert_eq!(expected, "0x00000801");
            assert_eq!(found, "0x00000803");
        }
        _ => panic!("{e:?}"),
    }
    assert!(e.to_string().contains("wrong magic number"), "{e}");
    std::fs::write(&p, b"PK\x03\x04 not an idx file").unwrap();
    assert!(matches!(read_idx_labels(&p).unwrap_err(), Error::BadMagic { .. }));
}

#[test]
fn wrong_magic_mat() {
    let t = tmp();
    let p = t.path().join("test_32x32.mat");
    let mut f = write_svhn(&bytes(3072, 1), &[3], true);
    f[126] = b'X';
    std::fs::write(&p, &f).unwrap();
    let e = svhn_mat(&p).unwrap_err();
    names_file(&e, &p);
    assert!(matches!(e, Error::BadMagic { .. }), "{e:?}");
    // An HDF5-based v7.3 file gets its own explanation.
    let mut h = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00".to_vec();
    h.resize(512, 0);
    std::fs::write(&p, &h).unwrap();
    let e = svhn_mat(&p).unwrap_err();
    assert!(e.to_string().contains("v7.3"), "{e}");
}

// ---- image count different from label count ----

#[test]
fn count_mismatch_idx() {
    let t = tmp();
    let ip = t.path().join("imgs");
    let lp = t.path().join("labs");
    std::fs::write(&ip, idx_images(3, 2, 2, &[0; 12])).unwrap();
    std::fs::write(&lp, gzip(&idx_labels(&[1, 2]))).unwrap();
    let e = mnist_idx(&ip, &lp).unwrap_err();
    names_file(&e, &ip);
    names_file(&e, &lp);
    assert!(
        matches!(
            e,
            Error::CountMismatch {
                images: 3,
                labels: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("3 images but"), "{e}");
}

#[test]
fn count_mismatch_svhn() {
    use earlyexit_data::mat::*;
    let f = write_mat(
        &[
            MatArray {
                name: "X".into(),
                class: MX_UINT8,
                dims: vec![32, 32, 3, 2],
                data: MatData::U8(bytes(2 * 3072, 1)),
            },
            MatArray {
                name: "y".into(),
                class: MX_DOUBLE,
                dims: vec![3, 1],
                data: MatData::F64(vec![1.0, 2.0, 3.0]),
            },
        ],
        true,
    );
    let e = parse_svhn(&f).unwrap_err();
    assert!(
        matches!(
            e,
            Error::CountMismatch {
                images: 2,
                labels: 3,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().starts_with(MEMORY_PATH));
}

// ---- label out of range ----

#[test]
fn label_out_of_range_idx() {
    let t = tmp();
    let ip = t.path().join("imgs");
    let lp = t.path().join("labs");
    std::fs::write(&ip, idx_images(3, 2, 2, &[0; 12])).unwrap();
    std::fs::write(&lp, idx_labels(&[1, 10, 2])).unwrap();
    let e = mnist_idx(&ip, &lp).unwrap_err();
    names_file(&e, &lp);
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn label_out_of_range_cifar() {
    let e = parse_cifar10(&cifar10_bytes(&bytes(2 * 3072, 1), &[9, 10])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{e:?}"
    );
    let e = parse_cifar100(&cifar100_bytes(&bytes(3072, 1), &[3], &[100])).unwrap_err();
    assert!(matches!(e, Error::LabelOutOfRange { label: 100, .. }), "{e:?}");
    let e = parse_cifar100(&cifar100_bytes(&bytes(3072, 1), &[20], &[5])).unwrap_err();
    assert!(e.to_string().contains("coarse"), "{e}");
}

#[test]
fn label_out_of_range_svhn_and_digits() {
    let t = tmp();
    let p = t.path().join("train_32x32.mat");
    // Label 0 is not valid in SVHN files (the digit 0 is stored as 10); 11 neither.
    for bad in [0.0, 11.0, 2.5] {
        let mut f = write_svhn(&bytes(2 * 3072, 1), &[1, 2], false);
        // Patch y's second value (last 8 bytes of the file) to `bad`.
        let n = f.len();
        f[n - 8..].copy_from_slice(&f64::to_le_bytes(bad));
        std::fs::write(&p, &f).unwrap();
        let e = svhn_mat(&p).unwrap_err();
        names_file(&e, &p);
        assert!(matches!(e, Error::LabelOutOfRange { index: 1, .. }), "{bad}: {e:?}");
    }
    let row: Vec<String> = (0..64).map(|_| "0".to_string()).collect();
    let csv = format!("{},3\n{},12\n", row.join(","), row.join(","));
    let e = parse_digits_csv(csv.as_bytes()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LabelOutOfRange {
                index: 1,
                label: 12,
                ..
            }
        ),
        "{e:?}"
    );
    let csv = format!("{},17,3\n", row[..63].join(","));
    let e = parse_digits_csv(csv.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("line 1: pixel 63 is 17"), "{e}");
}

// ---- image of the wrong size in a folder ----

#[test]
fn wrong_image_size_in_folder() {
    let t = tmp();
    write_png_rgb(&t.path().join("train/a/0.png"), 32, 32, &bytes(3072, 1));
    write_png_rgb(&t.path().join("train/b/1.png"), 32, 32, &bytes(3072, 2));
    let bad = t.path().join("train/b/2.png");
    write_png_rgb(&bad, 31, 32, &bytes(3 * 31 * 32, 3));
    let e = load(DatasetKind::ImageFolder, t.path(), Split::Train).unwrap_err();
    names_file(&e, &bad);
    assert!(
        matches!(
            e,
            Error::ImageSize {
                expected: (32, 32),
                found: (31, 32),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("image is 31x32 but expected 32x32"), "{e}");
    // Tiny-ImageNet fixes 64x64.
    let r = t.path().join("tiny");
    std::fs::create_dir_all(&r).unwrap();
    std::fs::write(r.join("wnids.txt"), "n1\n").unwrap();
    let bad = r.join("train/n1/images/n1_0.png");
    write_png_rgb(&bad, 32, 32, &bytes(3072, 1));
    let e = tiny_imagenet(&r, Split::Train).unwrap_err();
    names_file(&e, &bad);
    assert!(matches!(e, Error::ImageSize { expected: (64, 64), .. }), "{e:?}");
}

// ---- unreadable file ----

#[test]
fn unreadable_files() {
    let t = tmp();
    // A folder where a file is expected (unreadable even as root).
    let p = t.path().join("train-images-idx3-ubyte");
    std::fs::create_dir_all(&p).unwrap();
    let e = read_idx_images(&p).unwrap_err();
    names_file(&e, &p);
    assert!(matches!(e, Error::Io { .. }), "{e:?}");
    assert!(e.to_string().contains("cannot read"), "{e}");
    // A missing file.
    let q = t.path().join("nope.bin");
    let e = read_cifar10(&q).unwrap_err();
    names_file(&e, &q);
    assert!(matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
    // An image that does not decode.
    write_png_rgb(&t.path().join("f/train/a/0.png"), 4, 4, &bytes(48, 1));
    let bad = t.path().join("f/train/a/1.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let e = load(DatasetKind::ImageFolder, &t.path().join("f"), Split::Train).unwrap_err();
    names_file(&e, &bad);
    assert!(e.to_string().contains("cannot decode image"), "{e}");
    // A missing image listed in the Tiny-ImageNet annotations.
    let r = t.path().join("tiny");
    std::fs::create_dir_all(r.join("val")).unwrap();
    std::fs::write(r.join("wnids.txt"), "n1\n").unwrap();
    std::fs::write(r.join("val/val_annotations.txt"), "val_0.JPEG\tn1\t0\t0\t1\t1\n").unwrap();
    let e = tiny_imagenet(&r, Split::Test).unwrap_err();
    assert!(e.to_string().contains("val_0.JPEG"), "{e}");
    std::fs::write(r.join("val/val_annotations.txt"), "val_0.JPEG\tn7\t0\t0\t1\t1\n").unwrap();
    let e = tiny_imagenet(&r, Split::Test).unwrap_err();
    assert!(e.to_string().contains("\"n7\" is not in wnids.txt"), "{e}");
}

#[test]
fn other_malformed_input() {
    // Trailing bytes after IDX data.
    let mut f = idx_labels(&[1, 2]);
    f.push(0);
    assert!(parse_idx_labels(&f).unwrap_err().to_string().contains("1 bytes after"));
    // Unsupported IDX element type (float).
    let e = parse_idx_labels(&[0, 0, 0x0d, 1, 0, 0, 0, 0]).unwrap_err();
    assert!(e.to_string().contains("element type 0x0d"), "{e}");
    // Huge dimensions do not allocate or overflow.
    let e = parse_idx_images(&[0, 0, 8, 3, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255]).unwrap_err();
    assert!(e.to_string().contains("overflow"), "{e:?}");
    let e = parse_idx_images(&[0, 0, 8, 3, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Truncated {
                expected: 1_099_511_627_776,
                found: 0,
                ..
            }
        ),
        "{e:?}"
    );
    // SVHN X of the wrong shape.
    use earlyexit_data::mat::*;
    let f = write_mat(
        &[MatArray {
            name: "X".into(),
            class: MX_UINT8,
            dims: vec![28, 28, 1, 1],
            data: MatData::U8(vec![0; 784]),
        }],
        false,
    );
    assert!(
        parse_svhn(&f)
            .unwrap_err()
            .to_string()
            .contains("no numeric variable 'y'")
    );
    let e = load(DatasetKind::Svhn, Path::new("/definitely/not/here"), Split::Train).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn error_paths_are_replaced_by_file_readers() {
    let e = parse_cifar10(b"xx").unwrap_err();
    assert_eq!(e.path(), Some(Path::new(MEMORY_PATH)));
    let e = e.at(Path::new("/x/data_batch_1.bin"));
    assert_eq!(e.path(), Some(Path::new("/x/data_batch_1.bin")));
}
