//! Tests on real files: the MNIST copy shipped in the repository's `data/` (always run) and the
//! shared folder `../shared/data/` beside the clone. Tests that need the shared folder are
//! `#[ignore = "needs ../shared/data"]` so a bare clone passes; `--include-ignored` runs them and
//! they fail if the folder is missing.

mod common;

use std::sync::Arc;

use common::*;
use earlyexit_data::*;

const MNIST_TRAIN_COUNTS: [usize; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const MNIST_TEST_COUNTS: [usize; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

#[test]
fn mnist_real_counts_and_first_labels() {
    // The shipped copy (checked against the known sums by `shipped_mnist_matches_shared`).
    let dir = repo_data_dir();
    let train = load(DatasetKind::Mnist, &dir, Split::Train).unwrap();
    let test = load(DatasetKind::Mnist, &dir, Split::Test).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.shape(), [1, 28, 28]);
    assert_eq!(train.name(), "mnist");
    assert_eq!(train.class_counts(), MNIST_TRAIN_COUNTS);
    assert_eq!(test.class_counts(), MNIST_TEST_COUNTS);
    assert_eq!(&train.labels()[..10], &[5, 0, 4, 1, 9, 2, 1, 3, 1, 4]);
    assert_eq!(&test.labels()[..10], &[7, 2, 1, 0, 4, 1, 4, 9, 5, 9]);
    // Row 14 of the first training image (a "5"): a known stretch of the stroke.
    assert_eq!(&train.image(0)[14 * 28 + 13..14 * 28 + 18], &[81, 240, 253, 253, 119]);
    // Normalising constants agree with the data.
    let n = Normalize::fit(&train, &[]);
    assert!(
        (n.mean[0] - 0.1307).abs() < 1e-3 && (n.std[0] - 0.3081).abs() < 1e-3,
        "{n:?}"
    );
}

#[test]
#[ignore = "needs ../shared/data"]
fn fashion_mnist_real_counts_and_first_labels() {
    let dir = shared_data();
    let train = load(DatasetKind::FashionMnist, &dir, Split::Train).unwrap();
    let test = load(DatasetKind::FashionMnist, &dir, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(&train.labels()[..10], &[9, 0, 0, 3, 0, 2, 7, 2, 5, 5]);
    assert_eq!(&test.labels()[..10], &[9, 2, 1, 1, 6, 1, 4, 6, 5, 7]);
    assert_eq!(train.class_names().unwrap()[9], "Ankle boot");
    let n = Normalize::fit(&train, &[]);
    assert!(
        (n.mean[0] - 0.2860).abs() < 1e-3 && (n.std[0] - 0.3530).abs() < 1e-3,
        "{n:?}"
    );
}

#[test]
#[ignore = "needs ../shared/data"]
fn idx_pixels_match_the_sample_pngs() {
    // The sample PNGs are the first 20 test images: the IDX reader must give exactly their pixels.
    let dir = shared_data();
    for (kind, set) in [
        (DatasetKind::Mnist, "mnist"),
        (DatasetKind::FashionMnist, "fashionMNIST"),
    ] {
        let test = load(kind, &dir, Split::Test).unwrap();
        let s = samples(set);
        assert_eq!(s.len(), 20, "{set} samples");
        for (path, index, label) in s {
            let png = image::open(&path).unwrap().to_luma8();
            assert_eq!(png.as_raw().as_slice(), test.image(index), "{}", path.display());
            assert_eq!(test.label(index), label, "{}", path.display());
        }
    }
}

#[test]
#[ignore = "needs ../shared/data"]
fn digits_csv_real() {
    let dir = shared_data();
    let all = digits_csv(&dir.join("digits/digits.csv.gz")).unwrap();
    assert_eq!(all.len(), 1797);
    assert_eq!(all.shape(), [1, 8, 8]);
    assert_eq!(all.pixel_max(), 16);
    assert_eq!(all.class_counts(), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
    assert_eq!(&all.labels()[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(&all.image(0)[..8], &[0, 0, 5, 13, 9, 1, 0, 0]);
    let train = load(DatasetKind::Digits, &dir, Split::Train).unwrap();
    let test = load(DatasetKind::Digits, &dir, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (898, 899));
    let n = Normalize::fit(&all, &[]);
    let k = Normalize::for_kind(DatasetKind::Digits).unwrap();
    assert!((n.mean[0] - k.mean[0]).abs() < 1e-3 && (n.std[0] - k.std[0]).abs() < 1e-3);
}

#[test]
#[ignore = "needs ../shared/data"]
fn cifar_sample_pngs_through_image_folder() {
    // Lay the 20 real CIFAR-10 PNGs out as <class>/<file> and read them back with their labels.
    let t = tmp();
    let s = samples("cifar10");
    assert_eq!(s.len(), 20);
    for (path, index, label) in &s {
        let dst = t.path().join("train").join(names::CIFAR10[*label as usize]);
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::copy(path, dst.join(format!("{index:02}.png"))).unwrap();
    }
    let ds = load(DatasetKind::ImageFolder, t.path(), Split::Train).unwrap();
    assert_eq!(ds.len(), 20);
    assert_eq!(ds.shape(), [3, 32, 32]);
    let classes = ds.class_names().unwrap().to_vec();
    for (path, _, label) in &s {
        let png = image::open(path).unwrap().to_rgb8();
        // Find the sample by its pixels; its label (via the class folder name) must match the file name.
        let chw: Vec<u8> = (0..3).flat_map(|c| png.pixels().map(move |p| p[c])).collect();
        let i = (0..ds.len())
            .find(|&i| ds.image(i) == chw.as_slice())
            .expect("image present");
        assert_eq!(classes[ds.label(i) as usize], names::CIFAR10[*label as usize]);
    }
}

#[test]
#[ignore = "needs ../shared/data"]
fn cifar_sample_pngs_through_binary_batches() {
    // Write the real CIFAR-10 and CIFAR-100 PNGs into binary batches in the official layout.
    let t = tmp();
    let s10 = samples("cifar10");
    let s100 = samples("cifar100");
    assert_eq!((s10.len(), s100.len()), (20, 20));
    let chw = |p: &std::path::Path| -> Vec<u8> {
        let png = image::open(p).unwrap().to_rgb8();
        (0..3).flat_map(|c| png.pixels().map(move |px| px[c])).collect()
    };
    let d10 = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir_all(&d10).unwrap();
    let mut rec = Vec::new();
    for (p, _, l) in &s10 {
        rec.push(*l as u8);
        rec.extend(chw(p));
    }
    std::fs::write(d10.join("test_batch.bin"), &rec).unwrap();
    let d100 = t.path().join("cifar-100-binary");
    std::fs::create_dir_all(&d100).unwrap();
    let mut rec = Vec::new();
    for (p, _, l) in &s100 {
        rec.push(names::CIFAR100_FINE_TO_COARSE[*l as usize]);
        rec.push(*l as u8);
        rec.extend(chw(p));
    }
    std::fs::write(d100.join("test.bin"), &rec).unwrap();

    let c10 = load(DatasetKind::Cifar10, t.path(), Split::Test).unwrap();
    assert_eq!(c10.labels(), s10.iter().map(|s| s.2).collect::<Vec<_>>().as_slice());
    assert_eq!(&c10.labels()[..4], &[3, 8, 8, 0]); // cat, ship, ship, airplane
    for (i, (p, _, _)) in s10.iter().enumerate() {
        assert_eq!(c10.image(i), chw(p).as_slice());
    }
    let fine: DatasetKind = "cifar100".parse().unwrap();
    let coarse: DatasetKind = "cifar100-coarse".parse().unwrap();
    let f = load(fine, t.path(), Split::Test).unwrap();
    let c = load(coarse, t.path(), Split::Test).unwrap();
    assert_eq!(f.labels(), s100.iter().map(|s| s.2).collect::<Vec<_>>().as_slice());
    assert_eq!(f.class_names().unwrap()[49], "mountain");
    assert_eq!((f.classes(), c.classes()), (100, 20));
    assert_eq!(c.label(0), 10); // mountain -> large natural outdoor scenes
    assert_eq!(c.class_names().unwrap()[10], "large_natural_outdoor_scenes");
}

#[test]
#[ignore = "needs ../shared/data"]
fn verify_shared_data() {
    let dir = shared_data();
    let report = verify(&dir).unwrap();
    let text = report.to_string();
    assert!(report.ok(), "{text}");
    let m = report.get(DatasetKind::Mnist).expect("mnist recognised");
    assert_eq!(m.splits.iter().map(|s| s.samples).collect::<Vec<_>>(), [60_000, 10_000]);
    assert_eq!(m.checks.iter().filter(|c| c.what.starts_with("sha256")).count(), 4);
    let f = report
        .get(DatasetKind::FashionMnist)
        .expect("fashion-mnist recognised by its sums");
    assert!(
        f.checks
            .iter()
            .filter(|c| c.what.starts_with("sha256"))
            .all(|c| !c.detail.contains("no known"))
    );
    assert!(report.get(DatasetKind::Digits).is_some());
    assert!(report.unrecognised.iter().any(|p| p.ends_with("samples")), "{text}");
    assert!(text.contains("all checks passed"), "{text}");
    // One dataset folder on its own is recognised too.
    let one = verify(&dir.join("fashion-mnist")).unwrap();
    assert_eq!(one.datasets.len(), 1);
    assert_eq!(one.datasets[0].kind, DatasetKind::FashionMnist);
}

#[test]
fn shipped_mnist_matches_shared() {
    let repo = repo_data_dir();
    let report = verify(&repo).unwrap();
    assert!(report.ok(), "{report}");
    assert_eq!(report.datasets.len(), 1);
    assert_eq!(report.datasets[0].kind, DatasetKind::Mnist);
    let test = load(DatasetKind::Mnist, &repo, Split::Test).unwrap();
    assert_eq!(test.len(), 10_000);
}

#[test]
fn mnist_pipeline_end_to_end() {
    // The shipped copy (checked against the known sums by `shipped_mnist_matches_shared`).
    let dir = repo_data_dir();
    let kind = DatasetKind::Mnist;
    let train = Arc::new(load(kind, &dir, Split::Train).unwrap());
    let test = load(kind, &dir, Split::Test).unwrap();
    let splits = Splits::for_datasets(kind, &train, &test, 7).unwrap();
    assert_eq!(
        (splits.train.len(), splits.val.len(), splits.test.len()),
        (55_000, 5_000, 10_000)
    );
    let cfg = LoaderConfig::train(256, Normalize::for_kind(kind).unwrap(), Augment::paper(kind), 7);
    let loader = Loader::new(train, splits.train.clone(), cfg).unwrap();
    let mut epoch = loader.epoch(0);
    let mut seen = 0;
    for b in epoch.by_ref().take(5) {
        assert_eq!(b.images.len(), b.n * 784);
        seen += b.n;
    }
    assert_eq!(seen, 5 * 256);
    assert_eq!(epoch.len(), loader.batches_per_epoch() - 5);
}
