//! Splits, transforms and the loader.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::bytes;
use earlyexit_data::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn synthetic(n: usize, shape: [usize; 3], classes: usize) -> Arc<Dataset> {
    let per = shape[0] * shape[1] * shape[2];
    let labels = (0..n).map(|i| (i % classes) as u32).collect();
    Arc::new(Dataset::new("synthetic", shape, classes, bytes(n * per, 42), labels).unwrap())
}

#[test]
fn splits_are_seeded_disjoint_and_paper_sized() {
    let cifar = Splits::paper(DatasetKind::Cifar10, 50_000, 10_000, 1).unwrap();
    assert_eq!(
        (cifar.train.len(), cifar.val.len(), cifar.test.len()),
        (40_000, 10_000, 10_000)
    );
    let mnist = Splits::paper(DatasetKind::FashionMnist, 60_000, 10_000, 1).unwrap();
    assert_eq!(
        (mnist.train.len(), mnist.val.len(), mnist.test.len()),
        (55_000, 5_000, 10_000)
    );
    let c100 = SplitSizes::paper("cifar100-coarse".parse().unwrap(), 50_000);
    assert_eq!(
        c100,
        SplitSizes {
            train: 40_000,
            val: 10_000
        }
    );
    assert_eq!(
        SplitSizes::paper(DatasetKind::Svhn, 73_257),
        SplitSizes {
            train: 65_932,
            val: 7_325
        }
    );

    let a = Splits::paper(DatasetKind::Cifar10, 50_000, 10_000, 1).unwrap();
    assert_eq!(a, cifar, "same seed, same splits");
    let b = Splits::paper(DatasetKind::Cifar10, 50_000, 10_000, 2).unwrap();
    assert_ne!(a.val, b.val, "another seed, other splits");
    let tr: HashSet<_> = a.train.iter().collect();
    assert!(a.val.iter().all(|i| !tr.contains(i)), "train and val overlap");
    assert!(a.train.iter().chain(&a.val).all(|&i| i < 50_000));
    assert!(a.train.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(a.test, (0..10_000).collect::<Vec<_>>());
    // Validation is roughly class-balanced on balanced data (random, not stratified).
    let e = Splits::new(100, 0, SplitSizes { train: 80, val: 30 }, 0).unwrap_err();
    assert!(e.to_string().contains("exceed"), "{e}");
    // Smaller training subsets for quick runs.
    let s = Splits::new(1000, 10, SplitSizes { train: 100, val: 50 }, 3).unwrap();
    assert_eq!((s.train.len(), s.val.len()), (100, 50));
}

#[test]
fn normalize_and_transform_values() {
    let n = Normalize::for_kind(DatasetKind::Cifar10).unwrap();
    assert_eq!(n.mean, [0.4914, 0.4822, 0.4465]);
    assert_eq!(n.std, [0.2470, 0.2435, 0.2616]);
    assert_eq!(Normalize::for_kind(DatasetKind::Mnist).unwrap().mean, [0.1307]);
    assert!(Normalize::for_kind(DatasetKind::ImageFolder).is_none());
    assert!(Normalize::new(vec![0.5], vec![0.0]).is_err());
    assert!(Normalize::new(vec![0.5, 0.5], vec![1.0]).is_err());

    let t = Transform::new(
        [1, 2, 2],
        255,
        &Normalize::new(vec![0.5], vec![0.25]).unwrap(),
        Augment::none(),
    )
    .unwrap();
    let mut out = [0f32; 4];
    t.apply_eval(&[0, 255, 51, 128], &mut out);
    let want = [-2.0, 2.0, (0.2 - 0.5) / 0.25, (128.0 / 255.0 - 0.5) / 0.25];
    for (o, w) in out.iter().zip(want) {
        assert!((o - w).abs() < 1e-6, "{out:?}");
    }
    // Wrong channel count is a configuration error.
    assert!(Transform::new([3, 2, 2], 255, &Normalize::identity(1), Augment::none()).is_err());
}

#[test]
fn crop_and_flip_geometry() {
    // 1x3x3 image 1..9; identity normalisation on pixel_max 1 keeps values.
    let t = Transform::new([1, 3, 3], 1, &Normalize::identity(1), Augment::cifar()).unwrap();
    let src = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
    let mut out = [0f32; 9];
    t.apply_with(&src, 0, 0, true, &mut out);
    assert_eq!(out, [3., 2., 1., 6., 5., 4., 9., 8., 7.]);
    // Shift down-right by one: the padding is black (0) at the top and left.
    t.apply_with(&src, -1, -1, false, &mut out);
    assert_eq!(out, [0., 0., 0., 0., 1., 2., 0., 4., 5.]);
    t.apply_with(&src, 1, 2, false, &mut out);
    assert_eq!(out, [6., 0., 0., 9., 0., 0., 0., 0., 0.]);
    // Random crops stay within pad 4 and are reproducible.
    let t = Transform::new([1, 32, 32], 255, &Normalize::identity(1), Augment::cifar()).unwrap();
    let img: Vec<u8> = (0..1024).map(|i| (i % 251) as u8 + 1).collect();
    let mut a = vec![0f32; 1024];
    let mut b = vec![0f32; 1024];
    let mut flips = 0;
    let mut shifted = 0;
    for s in 0..200 {
        t.apply(&img, &mut ChaCha8Rng::seed_from_u64(s), &mut a);
        t.apply(&img, &mut ChaCha8Rng::seed_from_u64(s), &mut b);
        assert_eq!(a, b);
        let zeros = a.iter().filter(|&&v| v == 0.0).count();
        assert!(zeros <= 32 * 8 * 2, "more than 4 rows and 4 columns of padding");
        shifted += (zeros > 0) as usize;
        // A flipped, unshifted copy equals the eval output mirrored; count flips by the centre row.
        let mut e = vec![0f32; 1024];
        t.apply_eval(&img, &mut e);
        let mut fl = vec![0f32; 1024];
        t.apply_with(&img, 0, 0, true, &mut fl);
        flips += (a == fl) as usize;
    }
    assert!(shifted > 150, "crops should usually shift: {shifted}");
    assert!(flips < 200);
    assert!(Augment::none().is_none() && !Augment::cifar().is_none());
    assert_eq!(Augment::paper(DatasetKind::Cifar10), Augment::cifar());
    assert!(Augment::paper(DatasetKind::Svhn).is_none());
    assert!(Augment::paper(DatasetKind::Mnist).is_none());
}

fn collect(loader: &Loader, epoch: usize) -> Vec<Batch> {
    loader.epoch(epoch).collect()
}

#[test]
fn loader_is_bit_identical_whatever_the_worker_count() {
    let ds = synthetic(1000, [3, 32, 32], 10);
    let norm = Normalize::for_kind(DatasetKind::Cifar10).unwrap();
    let mk = |workers, prefetch| {
        let cfg = LoaderConfig {
            workers,
            prefetch,
            ..LoaderConfig::train(64, norm.clone(), Augment::cifar(), 11)
        };
        Loader::new(ds.clone(), (0..900).collect(), cfg).unwrap()
    };
    let base = collect(&mk(0, 0), 3);
    assert_eq!(base.len(), 15); // ceil(900 / 64)
    assert_eq!(base.last().unwrap().n, 900 - 14 * 64);
    for (w, p) in [(1, 1), (2, 4), (3, 2), (5, 16)] {
        assert_eq!(collect(&mk(w, p), 3), base, "workers {w} prefetch {p}");
    }
    // Each epoch visits every index once, in a new order; batches carry their labels and indices.
    let l = mk(2, 4);
    let e0 = collect(&l, 0);
    let e1 = collect(&l, 1);
    let order0: Vec<usize> = e0.iter().flat_map(|b| b.indices.clone()).collect();
    let order1: Vec<usize> = e1.iter().flat_map(|b| b.indices.clone()).collect();
    assert_ne!(order0, order1);
    let mut sorted = order0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..900).collect::<Vec<_>>());
    assert_eq!(order0, l.order(0));
    for b in &e0 {
        assert_eq!(b.labels, b.indices.iter().map(|&i| ds.label(i)).collect::<Vec<_>>());
        assert_eq!(b.images.len(), b.n * 3072);
        assert_eq!(b.shape, [3, 32, 32]);
        assert_eq!(b.epoch, 0);
    }
    // Another seed, another order.
    let other = Loader::new(
        ds.clone(),
        (0..900).collect(),
        LoaderConfig::train(64, norm.clone(), Augment::cifar(), 12),
    )
    .unwrap();
    assert_ne!(other.order(0), l.order(0));
}

#[test]
fn loader_resume_skips_batches() {
    let ds = synthetic(300, [1, 8, 8], 3);
    let cfg = LoaderConfig::train(32, Normalize::identity(1), Augment::cifar(), 5);
    let l = Loader::new(ds, (0..300).collect(), cfg).unwrap();
    let full = collect(&l, 2);
    let resumed: Vec<Batch> = l.epoch_from(2, 4).collect();
    assert_eq!(resumed.len(), full.len() - 4);
    assert_eq!(resumed.as_slice(), &full[4..]);
    assert_eq!(resumed[0].index, 4);
    assert_eq!(l.batch(2, 7).unwrap(), full[7]);
    assert!(l.batch(2, full.len()).is_none());
    assert_eq!(l.epoch_from(2, 1000).count(), 0);
    // Dropping an epoch early stops its workers (no hang).
    let mut e = l.epoch(3);
    let first = e.next().unwrap();
    assert_eq!(first.index, 0);
    drop(e);
}

#[test]
fn eval_loader_is_sequential_and_unaugmented() {
    let ds = synthetic(50, [3, 4, 4], 5);
    let norm = Normalize::new(vec![0.5; 3], vec![0.5; 3]).unwrap();
    let l = Loader::new(ds.clone(), (10..50).collect(), LoaderConfig::eval(16, norm)).unwrap();
    let b = collect(&l, 0);
    assert_eq!(b.iter().map(|b| b.n).collect::<Vec<_>>(), [16, 16, 8]);
    assert_eq!(b[0].indices, (10..26).collect::<Vec<_>>());
    let again = collect(&l, 5);
    assert!(
        again
            .iter()
            .zip(&b)
            .all(|(x, y)| x.images == y.images && x.indices == y.indices),
        "eval batches do not depend on the epoch"
    );
    let v = ds.image(10)[0] as f32 / 255.0;
    assert!((b[0].images[0] - (v - 0.5) / 0.5).abs() < 1e-6);
    // drop_last
    let cfg = LoaderConfig {
        drop_last: true,
        ..LoaderConfig::eval(16, Normalize::identity(3))
    };
    let l = Loader::new(ds.clone(), (10..50).collect(), cfg).unwrap();
    assert_eq!(l.batches_per_epoch(), 2);
    assert_eq!(collect(&l, 0).len(), 2);
    // Configuration errors.
    assert!(Loader::new(ds.clone(), vec![50], LoaderConfig::default()).is_err());
    let zero = LoaderConfig {
        batch_size: 0,
        ..LoaderConfig::default()
    };
    assert!(Loader::new(ds.clone(), vec![0], zero).is_err());
    let wrong = LoaderConfig::eval(4, Normalize::identity(1));
    assert!(Loader::new(ds, vec![0], wrong).is_err());
}

#[test]
fn digits_loader_uses_pixel_max_16() {
    let px = vec![16u8; 64];
    let ds = Arc::new(
        Dataset::new("d", [1, 8, 8], 10, px, vec![3])
            .unwrap()
            .with_pixel_max(16),
    );
    let l = Loader::all(ds, LoaderConfig::eval(1, Normalize::identity(1))).unwrap();
    let b = l.epoch(0).next().unwrap();
    assert!(b.images.iter().all(|&v| (v - 1.0).abs() < 1e-6));
}

#[test]
fn dataset_helpers() {
    let ds = synthetic(10, [1, 2, 2], 3);
    let s = ds.subset(&[9, 0, 9]).unwrap();
    assert_eq!(s.labels(), &[0, 0, 0]);
    assert_eq!(s.image(1), ds.image(0));
    assert!(ds.subset(&[10]).is_err());
    let mut a = ds.subset(&[1]).unwrap();
    a.append(ds.subset(&[2]).unwrap()).unwrap();
    assert_eq!(a.labels(), &[1, 2]);
    assert!(Dataset::new("x", [1, 2, 2], 2, vec![0; 4], vec![2]).is_err());
    assert!(Dataset::new("x", [1, 2, 2], 2, vec![0; 5], vec![1]).is_err());
    assert_eq!(ds.class_counts(), [4, 3, 3]);
    assert!(format!("{ds:?}").contains("len: 10"));
}
