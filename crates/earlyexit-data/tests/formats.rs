//! Every reader on files the tests write themselves in the datasets' true layouts.

mod common;

use std::path::Path;

use common::*;
use earlyexit_data::mat::{MX_DOUBLE, MX_UINT8, write_mat, write_svhn};
use earlyexit_data::*;

#[test]
fn idx_raw_and_gzip_give_the_same_dataset() {
    let t = tmp();
    let px = bytes(7 * 5 * 4, 1);
    let labels = [3u8, 1, 4, 1, 5, 9, 2];
    let img = idx_images(7, 5, 4, &px);
    let lab = idx_labels(&labels);
    std::fs::write(t.path().join("raw-images"), &img).unwrap();
    std::fs::write(t.path().join("raw-labels"), &lab).unwrap();
    std::fs::write(t.path().join("gz-images"), gzip(&img)).unwrap();
    std::fs::write(t.path().join("gz-labels"), gzip(&lab)).unwrap();
    let a = mnist_idx(&t.path().join("raw-images"), &t.path().join("raw-labels")).unwrap();
    let b = mnist_idx(&t.path().join("gz-images"), &t.path().join("gz-labels")).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.shape(), [1, 5, 4]);
    assert_eq!(a.pixels(), px.as_slice());
    assert_eq!(a.labels(), &[3, 1, 4, 1, 5, 9, 2]);
    let parsed = parse_idx_images(&img).unwrap();
    assert_eq!((parsed.count, parsed.rows, parsed.cols), (7, 5, 4));
}

#[test]
fn load_finds_standard_idx_names_raw_or_gz() {
    let t = tmp();
    // Raw files, torchvision layout (FashionMNIST/raw).
    let d = t.path().join("FashionMNIST").join("raw");
    std::fs::create_dir_all(&d).unwrap();
    let px = bytes(3 * 28 * 28, 2);
    std::fs::write(d.join("t10k-images-idx3-ubyte"), idx_images(3, 28, 28, &px)).unwrap();
    std::fs::write(d.join("t10k-labels-idx1-ubyte"), idx_labels(&[0, 9, 4])).unwrap();
    let ds = load(DatasetKind::FashionMnist, t.path(), Split::Test).unwrap();
    assert_eq!(ds.labels(), &[0, 9, 4]);
    assert_eq!(ds.name(), "fashion-mnist");
    let e = load(DatasetKind::FashionMnist, t.path(), Split::Train).unwrap_err();
    assert!(matches!(e, Error::Missing { .. }), "{e}");
    assert!(e.to_string().contains("train-images-idx3-ubyte"), "{e}");
}

#[test]
fn cifar10_batches_in_true_layout() {
    let t = tmp();
    let d = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d).unwrap();
    let mut all_px = Vec::new();
    let mut all_lab = Vec::new();
    for i in 1..=5 {
        let px = bytes(4 * 3072, i);
        let lab: Vec<u8> = (0..4).map(|k| ((i as usize * 4 + k) % 10) as u8).collect();
        std::fs::write(d.join(format!("data_batch_{i}.bin")), cifar10_bytes(&px, &lab)).unwrap();
        all_px.extend(px);
        all_lab.extend(lab.iter().map(|&l| l as u32));
    }
    let tpx = bytes(3 * 3072, 99);
    std::fs::write(d.join("test_batch.bin"), cifar10_bytes(&tpx, &[9, 0, 5])).unwrap();
    std::fs::write(d.join("batches.meta.txt"), "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n\n").unwrap();
    let train = load(DatasetKind::Cifar10, t.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 20);
    assert_eq!(train.shape(), [3, 32, 32]);
    assert_eq!(train.pixels(), all_px.as_slice());
    assert_eq!(train.labels(), all_lab.as_slice());
    assert_eq!(train.class_names().unwrap()[9], "j"); // names from batches.meta.txt
    let test = load(DatasetKind::Cifar10, t.path(), Split::Test).unwrap();
    assert_eq!(test.labels(), &[9, 0, 5]);
    assert_eq!(test.image(2), &tpx[2 * 3072..3 * 3072]);
    // Verify recognises the folder and reports the counts as wrong (not the official 50k/10k).
    let r = verify(t.path()).unwrap();
    assert!(!r.ok());
    assert!(r.to_string().contains("20 samples, expected 50000"), "{r}");
}

#[test]
fn cifar100_fine_and_coarse() {
    let t = tmp();
    let px = bytes(5 * 3072, 5);
    let fine = [49u8, 33, 72, 51, 0];
    let coarse: Vec<u8> = fine
        .iter()
        .map(|&f| names::CIFAR100_FINE_TO_COARSE[f as usize])
        .collect();
    std::fs::write(t.path().join("train.bin"), cifar100_bytes(&px, &coarse, &fine)).unwrap();
    std::fs::write(
        t.path().join("test.bin"),
        cifar100_bytes(&px[..3072], &coarse[..1], &fine[..1]),
    )
    .unwrap();
    let f = load("cifar100".parse().unwrap(), t.path(), Split::Train).unwrap();
    let c = load("cifar100-coarse".parse().unwrap(), t.path(), Split::Train).unwrap();
    assert_eq!(f.labels(), &[49, 33, 72, 51, 0]);
    assert_eq!(
        c.labels(),
        coarse.iter().map(|&x| x as u32).collect::<Vec<_>>().as_slice()
    );
    assert_eq!(f.pixels(), c.pixels());
    assert_eq!((f.classes(), c.classes()), (100, 20));
    assert_eq!(c.name(), "cifar100-coarse");
    let b = parse_cifar100(&cifar100_bytes(&px, &coarse, &fine)).unwrap();
    assert_eq!(b.coarse.as_deref(), Some(coarse.as_slice()));
    // verify checks the coarse labels against the superclass map.
    let mut bad = coarse.clone();
    bad[1] = (bad[1] + 1) % 20;
    std::fs::write(t.path().join("train.bin"), cifar100_bytes(&px, &bad, &fine)).unwrap();
    let r = verify(t.path()).unwrap();
    assert!(r.to_string().contains("record 1: fine 33"), "{r}");
}

fn svhn_fixture_check(ds: &Dataset) {
    // X[r, c, ch, k] = (7r + 3c + 50ch + 11k) mod 256; y = [1, 10, 5, 3].
    assert_eq!(ds.len(), 4);
    assert_eq!(ds.shape(), [3, 32, 32]);
    assert_eq!(ds.labels(), &[1, 0, 5, 3]);
    for k in 0..4 {
        let img = ds.image(k);
        for ch in 0..3 {
            for r in 0..32 {
                for c in 0..32 {
                    let want = ((7 * r + 3 * c + 50 * ch + 11 * k) % 256) as u8;
                    assert_eq!(img[ch * 1024 + r * 32 + c], want, "k{k} ch{ch} r{r} c{c}");
                }
            }
        }
    }
}

#[test]
fn svhn_mat_written_by_scipy_plain_and_compressed() {
    // Independent writer: scipy.io.savemat (tests/fixtures/make_fixtures.py).
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let plain = svhn_mat(&fx.join("svhn_scipy_plain.mat")).unwrap();
    let compressed = svhn_mat(&fx.join("svhn_scipy_compressed.mat")).unwrap();
    svhn_fixture_check(&plain);
    svhn_fixture_check(&compressed);
    let m = read_mat(&fx.join("svhn_scipy_compressed.mat")).unwrap();
    assert!(m.header_text.starts_with("MATLAB 5.0 MAT-file"));
    assert_eq!(m.get("X").unwrap().dims, [32, 32, 3, 4]);
    assert_eq!(m.get("y").unwrap().class, MX_UINT8);
    assert!(m.get("note").is_none(), "char arrays are skipped");
}

#[test]
fn svhn_mat_written_in_true_layout() {
    let t = tmp();
    let d = t.path().join("svhn");
    std::fs::create_dir_all(&d).unwrap();
    let px = bytes(6 * 3072, 8);
    let labels = [0u32, 1, 2, 9, 0, 5];
    std::fs::write(d.join("train_32x32.mat"), write_svhn(&px, &labels, true)).unwrap();
    std::fs::write(
        d.join("test_32x32.mat"),
        write_svhn(&px[..2 * 3072], &labels[..2], false),
    )
    .unwrap();
    let train = load(DatasetKind::Svhn, t.path(), Split::Train).unwrap();
    assert_eq!(train.labels(), &labels);
    assert_eq!(train.pixels(), px.as_slice());
    let test = load(DatasetKind::Svhn, t.path(), Split::Test).unwrap();
    assert_eq!(test.labels(), &[0, 1]);
    // The raw file holds 10 for the digit 0, in a double Nx1 array.
    let m = read_mat(&d.join("test_32x32.mat")).unwrap();
    let y = m.get("y").unwrap();
    assert_eq!((y.class, y.dims.as_slice()), (MX_DOUBLE, &[2usize, 1][..]));
    assert_eq!(y.data, MatData::F64(vec![10.0, 1.0]));
    // Column-major X (row fastest): X[1, 0] (second byte) is the CHW pixel at row 1, column 0,
    // and X[0, 1] (byte 32) the pixel at row 0, column 1.
    let x = m.get("X").unwrap();
    let MatData::U8(xb) = &x.data else { panic!("X is uint8") };
    assert_eq!(xb[1], px[32]);
    assert_eq!(xb[32], px[1]);
}

#[test]
fn mat_big_endian_and_small_elements() {
    // A hand-built big-endian ('MI') file with a 2x3 double array whose data is stored as miUINT8 and
    // whose name uses the small-element format, followed by trailing zero padding.
    let mut f = b"MATLAB 5.0 MAT-file, hand made".to_vec();
    f.resize(116, b' ');
    f.extend([0u8; 8]);
    f.extend(0x0100u16.to_be_bytes());
    f.extend(b"MI");
    let mut body = Vec::new();
    body.extend(6u32.to_be_bytes()); // miUINT32
    body.extend(8u32.to_be_bytes());
    body.extend(6u32.to_be_bytes()); // mxDOUBLE_CLASS
    body.extend(0u32.to_be_bytes());
    body.extend(5u32.to_be_bytes()); // miINT32 dims
    body.extend(8u32.to_be_bytes());
    body.extend(2i32.to_be_bytes());
    body.extend(3i32.to_be_bytes());
    body.extend(((1u32 << 16) | 1).to_be_bytes()); // small miINT8, 1 byte
    body.extend([b'y', 0, 0, 0]);
    body.extend(2u32.to_be_bytes()); // miUINT8 data, 6 bytes, padded to 8
    body.extend(6u32.to_be_bytes());
    body.extend([1, 2, 3, 4, 5, 6, 0, 0]);
    f.extend(14u32.to_be_bytes());
    f.extend((body.len() as u32).to_be_bytes());
    f.extend(&body);
    f.extend([0u8; 4]);
    let m = parse_mat(&f).unwrap();
    let y = m.get("y").unwrap();
    assert_eq!(y.dims, [2, 3]);
    assert_eq!(y.data, MatData::F64(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
}

#[test]
fn mat_writer_round_trip() {
    let arrays = vec![
        MatArray {
            name: "longer_name".into(),
            class: MX_DOUBLE,
            dims: vec![1, 3],
            data: MatData::F64(vec![0.5, -2.0, 1e9]),
        },
        MatArray {
            name: "b".into(),
            class: MX_UINT8,
            dims: vec![2, 2],
            data: MatData::U8(vec![1, 2, 3, 255]),
        },
    ];
    for compress in [false, true] {
        let m = parse_mat(&write_mat(&arrays, compress)).unwrap();
        assert_eq!(m.arrays, arrays);
    }
}

#[test]
fn tiny_imagenet_layout() {
    let t = tmp();
    let root = t.path().join("tiny-imagenet-200");
    let wnids = ["n02", "n01", "n03"]; // unsorted in wnids.txt, as in the real file
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("wnids.txt"), wnids.join("\n") + "\n").unwrap();
    std::fs::write(
        root.join("words.txt"),
        "n01\tgoldfish, Carassius auratus\nn02\tbullfrog\nn03\ttabby, cat\nn99\tother\n",
    )
    .unwrap();
    let mut expected = Vec::new();
    for (k, w) in ["n01", "n02", "n03"].iter().enumerate() {
        for j in 0..2 {
            let px = bytes(3 * 64 * 64, (k * 10 + j) as u64);
            let p = root.join("train").join(w).join("images").join(format!("{w}_{j}.JPEG"));
            if k == 2 && j == 1 {
                // One greyscale image, as the real set has: expanded to RGB.
                write_png_grey(&p.with_extension("png"), 64, 64, &px[..4096]);
                let mut rgb = px[..4096].to_vec();
                rgb.extend_from_slice(&px[..4096]);
                rgb.extend_from_slice(&px[..4096]);
                expected.push((rgb, k as u32));
            } else {
                write_png_rgb(&p.with_extension("png"), 64, 64, &px);
                expected.push((px, k as u32));
            }
        }
        std::fs::write(root.join("train").join(w).join(format!("{w}_boxes.txt")), "x\n").unwrap();
    }
    let vdir = root.join("val").join("images");
    let vpx = bytes(3 * 64 * 64, 77);
    write_png_rgb(&vdir.join("val_0.png"), 64, 64, &vpx);
    write_png_rgb(&vdir.join("val_1.png"), 64, 64, &vpx);
    std::fs::write(
        root.join("val").join("val_annotations.txt"),
        "val_0.png\tn03\t0\t0\t10\t10\nval_1.png\tn01\t1\t2\t3\t4\n",
    )
    .unwrap();

    let train = load(DatasetKind::TinyImageNet, t.path(), Split::Train).unwrap();
    assert_eq!(train.len(), 6);
    assert_eq!(train.shape(), [3, 64, 64]);
    assert_eq!(train.classes(), 3);
    assert_eq!(
        train.class_names().unwrap(),
        ["goldfish, Carassius auratus", "bullfrog", "tabby, cat"]
    );
    for (i, (px, l)) in expected.iter().enumerate() {
        assert_eq!(train.image(i), px.as_slice(), "image {i}");
        assert_eq!(train.label(i), *l);
    }
    let val = load(DatasetKind::TinyImageNet, t.path(), Split::Test).unwrap();
    assert_eq!(val.labels(), &[2, 0]);
    assert_eq!(val.image(0), vpx.as_slice());
}

#[test]
fn image_folder_cinic_layout_and_grey() {
    let t = tmp();
    let root = t.path().join("cinic-10");
    let classes = ["airplane", "cat", "dog"];
    for split in ["train", "valid", "test"] {
        for (k, c) in classes.iter().enumerate() {
            for j in 0..2 {
                let px = bytes(3 * 32 * 32, (k * 7 + j) as u64);
                write_png_rgb(&root.join(split).join(c).join(format!("{split}-{j}.png")), 32, 32, &px);
            }
        }
    }
    // A stray non-image file is ignored.
    std::fs::write(root.join("train").join("cat").join("notes.txt"), "hello").unwrap();
    let train = load("cinic-10".parse().unwrap(), t.path(), Split::Train).unwrap();
    assert_eq!(train.name(), "cinic-10");
    let test = load(DatasetKind::ImageFolder, t.path(), Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (6, 6));
    assert_eq!(train.class_names().unwrap(), classes);
    assert_eq!(train.labels(), &[0, 0, 1, 1, 2, 2]);
    assert_eq!(train.image(2), bytes(3 * 32 * 32, 7).as_slice());

    // An all-greyscale folder gives one channel; a folder without train/ is the train split itself.
    let g = t.path().join("grey");
    for (k, c) in ["a", "b"].iter().enumerate() {
        write_png_grey(&g.join(c).join("0.png"), 5, 3, &bytes(15, k as u64));
    }
    let ds = image_folder(&g, None).unwrap();
    assert_eq!(ds.shape(), [1, 3, 5]);
    assert_eq!(ds.image(1), bytes(15, 1).as_slice());
    let ds2 = load(DatasetKind::ImageFolder, &g, Split::Train).unwrap();
    assert_eq!(ds2.len(), 2);
    // A JPEG decodes too (lossy: compare the size and a loose bound).
    let j = t.path().join("jpeg");
    let img = image::RgbImage::from_pixel(16, 16, image::Rgb([200, 100, 50]));
    std::fs::create_dir_all(j.join("x")).unwrap();
    img.save(j.join("x").join("0.jpg")).unwrap();
    let dj = image_folder(&j, None).unwrap();
    assert_eq!(dj.shape(), [3, 16, 16]);
    assert!((dj.image(0)[0] as i32 - 200).abs() < 8);
}

#[test]
fn digits_csv_written_raw_and_gzip() {
    let t = tmp();
    let mut csv = String::new();
    for k in 0..4u32 {
        let row: Vec<String> = (0..64).map(|i| ((i + k) % 17).to_string()).collect();
        csv += &format!("{},{}\n", row.join(","), k);
    }
    std::fs::write(t.path().join("digits.csv"), &csv).unwrap();
    let a = digits_csv(&t.path().join("digits.csv")).unwrap();
    let b = parse_digits_csv(&gzip(csv.as_bytes())).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.labels(), &[0, 1, 2, 3]);
    assert_eq!(a.image(1)[15], 16);
    let tr = load(DatasetKind::Digits, t.path(), Split::Train).unwrap();
    let te = load(DatasetKind::Digits, t.path(), Split::Test).unwrap();
    assert_eq!((tr.labels(), te.labels()), (&[0u32, 1][..], &[2u32, 3][..]));
}

#[test]
fn dataset_kind_names() {
    for k in DatasetKind::ALL {
        assert_eq!(k.cli_name().parse::<DatasetKind>().unwrap(), k);
        assert_eq!(k.to_string(), k.cli_name());
    }
    assert_eq!(
        "CIFAR100-Coarse".parse::<DatasetKind>().unwrap(),
        DatasetKind::Cifar100 {
            label: Cifar100Label::Coarse
        }
    );
    assert_eq!(
        "fashion_mnist".parse::<DatasetKind>().unwrap(),
        DatasetKind::FashionMnist
    );
    let e = "imagenet".parse::<DatasetKind>().unwrap_err();
    assert!(e.to_string().contains("unknown dataset 'imagenet'") && e.to_string().contains("tiny-imagenet"));
}

#[test]
fn verify_recognises_several_layouts() {
    let t = tmp();
    // SVHN, CIFAR-10 nested two levels down, an image folder, and an empty folder.
    let s = t.path().join("svhn");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::write(s.join("train_32x32.mat"), write_svhn(&bytes(3072, 1), &[4], true)).unwrap();
    std::fs::write(s.join("test_32x32.mat"), write_svhn(&bytes(3072, 2), &[5], true)).unwrap();
    let c = t.path().join("cifar10").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&c).unwrap();
    std::fs::write(c.join("test_batch.bin"), cifar10_bytes(&bytes(3072, 3), &[1])).unwrap();
    write_png_rgb(&t.path().join("mine/train/a/0.png"), 8, 8, &bytes(192, 1));
    write_png_rgb(&t.path().join("mine/test/a/0.png"), 8, 8, &bytes(192, 2));
    std::fs::create_dir_all(t.path().join("empty")).unwrap();
    let r = verify(t.path()).unwrap();
    let text = r.to_string();
    assert_eq!(r.datasets.len(), 3, "{text}");
    assert!(r.get(DatasetKind::Svhn).is_some(), "{text}");
    let cifar = r.get(DatasetKind::Cifar10).unwrap();
    assert!(cifar.checks.iter().any(|c| c.what == "train split" && !c.ok), "{text}");
    let mine = r.get(DatasetKind::ImageFolder).unwrap();
    assert!(mine.ok(), "{text}");
    assert_eq!(mine.name, "mine");
    assert!(r.unrecognised.iter().any(|p| p.ends_with("empty")));
    // Nothing recognisable: an error, not an empty report.
    let e = verify(&t.path().join("empty")).unwrap_err();
    assert!(e.to_string().contains("no dataset recognised"), "{e}");
}
