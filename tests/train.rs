//! Training (src/train): gradients against finite differences, optimiser rules, determinism,
//! checkpoints, bad input, and accuracy on a 1,000-image MNIST subset.

use diagfim::model::load_safetensors;
use diagfim::train::{
    permutation, select_backend, Backend, CpuBackend, Dataset, Optimizer, TrainConfig, Trainer,
};
use diagfim::{Activation, EngineKind, Error, Mlp};
use ndarray::Array2;

/// A small data set with inputs in (−1, 1) from the crate's RNG and labels i mod classes.
fn toy_data(n: usize, d: usize, classes: usize, seed: u64) -> Dataset {
    let mut x = Array2::zeros((n, d));
    for ((i, j), v) in x.indexed_iter_mut() {
        let w = diagfim::rng::block(seed, 7, i as u32, j as u32, 0);
        *v = 2.0 * diagfim::rng::uniform(w[0]) - 1.0;
    }
    let labels = (0..n).map(|i| (i * 7 + 3) % classes).collect();
    Dataset::new(x, labels, classes).unwrap()
}

fn quiet(config: TrainConfig) -> TrainConfig {
    TrainConfig {
        progress: false,
        ..config
    }
}

fn params(model: &Mlp) -> Vec<f64> {
    model
        .layers()
        .iter()
        .flat_map(|d| d.weight.iter().chain(d.bias.iter().flatten()).copied())
        .collect()
}

/// Mean loss with one parameter (flat index in layer order, weight then bias) moved by `h`.
fn loss_moved(model: &Mlp, data: &Dataset, index: usize, h: f64) -> f64 {
    let mut m = model.clone();
    let mut k = 0;
    for d in m.layers_mut() {
        for v in d.weight.iter_mut().chain(d.bias.iter_mut().flatten()) {
            if k == index {
                *v += h;
            }
            k += 1;
        }
    }
    let s = CpuBackend::default()
        .evaluate(&m, data.inputs(), data.labels())
        .unwrap();
    s.mean_loss()
}

#[test]
fn gradients_match_finite_differences_for_every_activation() {
    let data = toy_data(7, 5, 3, 1);
    for act in Activation::ALL {
        if act == Activation::Relu {
            continue; // kinks make central differences unreliable
        }
        let model = Mlp::init(&[5, 4, 3, 3], vec![act, act], 9).unwrap();
        // Chunks of 2 rows: the batch of 7 is summed over 4 work items.
        let backend = CpuBackend { chunk_rows: 2 };
        let (stats, grads) = backend
            .loss_and_gradient(&model, data.inputs(), data.labels())
            .unwrap();
        assert_eq!(stats.count, 7);
        let g: Vec<f64> = grads.values().collect();
        assert_eq!(g.len(), model.num_params());
        let h = 1e-5;
        for (i, &gi) in g.iter().enumerate() {
            let fd =
                (loss_moved(&model, &data, i, h) - loss_moved(&model, &data, i, -h)) / (2.0 * h);
            assert!(
                (gi - fd).abs() < 1e-7 * (1.0 + fd.abs()),
                "{act} parameter {i}: backprop {gi} vs finite difference {fd}"
            );
        }
        let direct = backend
            .evaluate(&model, data.inputs(), data.labels())
            .unwrap();
        assert!((direct.mean_loss() - stats.mean_loss()).abs() < 1e-12);
    }
}

#[test]
fn evaluation_matches_the_model_forward_pass() {
    let data = toy_data(20, 6, 4, 2);
    let model = Mlp::init(&[6, 5, 4], vec![Activation::Tanh], 3).unwrap();
    let (mut loss, mut correct) = (0.0, 0);
    for (x, &y) in data.inputs().rows().into_iter().zip(data.labels()) {
        let h = model.forward(x);
        let max = h.fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let lse = max + h.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
        loss += lse - h[y];
        let arg = (0..h.len()).fold(0, |a, k| if h[k] > h[a] { k } else { a });
        correct += usize::from(arg == y);
    }
    let trainer = Trainer::new(model, quiet(TrainConfig::default())).unwrap();
    let e = trainer.evaluate(&data).unwrap();
    assert_eq!(e.count, 20);
    assert!((e.loss - loss / 20.0).abs() < 1e-12);
    assert_eq!(e.accuracy, correct as f64 / 20.0);
}

#[test]
fn sgd_and_adam_follow_pytorch_update_rules() {
    let data = toy_data(8, 3, 2, 4);
    let model = Mlp::init(&[3, 2], vec![], 5).unwrap();
    let (_, g) = CpuBackend::default()
        .loss_and_gradient(&model, data.inputs(), data.labels())
        .unwrap();
    let g: Vec<f64> = g.values().collect();
    let p0 = params(&model);
    let one_batch = |optimizer| {
        let config = quiet(TrainConfig {
            batch_size: 8,
            optimizer,
            ..Default::default()
        });
        let mut t = Trainer::new(model.clone(), config).unwrap();
        t.train_epoch(&data).unwrap();
        params(t.model())
    };
    // Plain SGD: θ − lr g.
    let p = one_batch(Optimizer::sgd(0.1, 0.0));
    for i in 0..p0.len() {
        assert!((p[i] - (p0[i] - 0.1 * g[i])).abs() < 1e-15);
    }
    // Momentum: the first step is a plain step (buffer = g).
    let p = one_batch(Optimizer::sgd(0.1, 0.9));
    for i in 0..p0.len() {
        assert!((p[i] - (p0[i] - 0.1 * g[i])).abs() < 1e-15);
    }
    // Adam's first step: θ − lr ĝ/(|ĝ| + eps) with bias-corrected moments m̂ = g, v̂ = g².
    let p = one_batch(Optimizer::adam(0.01));
    for i in 0..p0.len() {
        let expected = p0[i] - 0.01 * g[i] / (g[i].abs() + 1e-8);
        assert!(
            (p[i] - expected).abs() < 1e-12,
            "{i}: {} vs {expected}",
            p[i]
        );
    }
    // Momentum over two batches of 4: b2 = 0.9 g1 + g2.
    let config = quiet(TrainConfig {
        batch_size: 4,
        optimizer: Optimizer::sgd(0.1, 0.9),
        ..Default::default()
    });
    let mut t = Trainer::new(model.clone(), config.clone()).unwrap();
    t.train_epoch(&data).unwrap();
    let order = permutation(8, config.seed, 0);
    let (x1, y1) = data.gather(&order[..4]).unwrap();
    let (x2, y2) = data.gather(&order[4..]).unwrap();
    let be = CpuBackend::default();
    let g1: Vec<f64> = be
        .loss_and_gradient(&model, x1.view(), &y1)
        .unwrap()
        .1
        .values()
        .collect();
    let mut m1 = model.clone();
    let mut k = 0;
    for d in m1.layers_mut() {
        for v in d.weight.iter_mut().chain(d.bias.iter_mut().flatten()) {
            *v -= 0.1 * g1[k];
            k += 1;
        }
    }
    let g2: Vec<f64> = be
        .loss_and_gradient(&m1, x2.view(), &y2)
        .unwrap()
        .1
        .values()
        .collect();
    let p = params(t.model());
    for i in 0..p0.len() {
        let expected = p0[i] - 0.1 * g1[i] - 0.1 * (0.9 * g1[i] + g2[i]);
        assert!((p[i] - expected).abs() < 1e-14);
    }
}

#[test]
fn training_is_deterministic_and_independent_of_the_thread_count() {
    let data = toy_data(300, 10, 4, 6);
    let run = |threads: usize, seed: u64| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let model = Mlp::init(&[10, 16, 8, 4], vec![Activation::Sigmoid; 2], 1).unwrap();
            let config = quiet(TrainConfig {
                epochs: 2,
                batch_size: 50,
                seed,
                ..Default::default()
            });
            let mut t = Trainer::new(model, config).unwrap();
            let stats = t.fit(&data, None, |_, _| Ok(())).unwrap();
            (params(t.model()), stats[1].train_loss)
        })
    };
    let (a, la) = run(1, 0);
    let (b, lb) = run(2, 0);
    let (c, _) = run(3, 0);
    assert_eq!(a, b, "1 vs 2 threads");
    assert_eq!(a, c, "1 vs 3 threads");
    assert_eq!(la.to_bits(), lb.to_bits());
    let (d, _) = run(2, 1);
    assert_ne!(a, d, "another seed gives another batch order");
}

#[test]
fn checkpoints_are_contract_safetensors_with_the_exact_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let data = toy_data(40, 5, 3, 8);
    let model = Mlp::init(&[5, 6, 3], vec![Activation::LogSigmoid], 2).unwrap();
    let config = quiet(TrainConfig {
        epochs: 2,
        batch_size: 16,
        checkpoint_dir: Some(dir.path().join("ckpt")),
        ..Default::default()
    });
    let mut t = Trainer::new(model, config).unwrap();
    let mut seen = Vec::new();
    t.fit(&data, Some(&data), |t, s| {
        seen.push((t.epoch(), s.epoch));
        assert!(s.test_accuracy >= 0.0 && s.test_accuracy <= 1.0);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, vec![(1, 1), (2, 2)]);
    for e in 1..=2 {
        assert!(dir
            .path()
            .join(format!("ckpt/epoch-{e:03}.safetensors"))
            .exists());
    }
    let loaded = load_safetensors(&dir.path().join("ckpt/epoch-002.safetensors"), None).unwrap();
    assert_eq!(&loaded, t.model());
    let path = dir.path().join("final.safetensors");
    t.save_checkpoint(&path).unwrap();
    assert_eq!(&load_safetensors(&path, None).unwrap(), t.model());
    // A callback error stops training and is returned.
    let err = t
        .fit(&data, None, |_, _| Err(Error::Input("stop".into())))
        .unwrap_err();
    assert!(err.to_string().contains("stop"));
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let x = Array2::zeros((3, 2));
    assert!(matches!(
        Dataset::new(x.clone(), vec![0, 1], 2),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        Dataset::new(x.clone(), vec![0, 1, 2], 2),
        Err(Error::Input(m)) if m.contains("class 2")
    ));
    assert!(Dataset::new(Array2::zeros((0, 2)), vec![], 2).is_err());
    assert!(Dataset::new(x.clone(), vec![0, 0, 0], 1).is_err());
    let mut nan = x.clone();
    nan[[1, 1]] = f64::NAN;
    assert!(matches!(
        Dataset::new(nan, vec![0, 1, 0], 2),
        Err(Error::NonFinite { index: 3, .. })
    ));
    let data = Dataset::new(x, vec![0, 1, 0], 2).unwrap();
    assert!(data.gather(&[0, 3]).is_err());

    let model = Mlp::init(&[2, 3, 2], vec![Activation::Sigmoid], 0).unwrap();
    let with = |config: TrainConfig| Trainer::new(model.clone(), quiet(config));
    assert!(with(TrainConfig {
        batch_size: 0,
        ..Default::default()
    })
    .is_err());
    for bad in [
        Optimizer::adam(0.0),
        Optimizer::adam(f64::NAN),
        Optimizer::sgd(-1.0, 0.0),
        Optimizer::sgd(0.1, 1.0),
        Optimizer::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 1.0,
            eps: 1e-8,
        },
        Optimizer::Adam {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
        },
    ] {
        let cfg = TrainConfig {
            optimizer: bad,
            ..Default::default()
        };
        assert!(matches!(with(cfg), Err(Error::Input(_))), "{bad:?}");
    }
    // GPU training needs an adapter (a clear error otherwise); auto skips software adapters.
    #[cfg(feature = "gpu")]
    match diagfim::engine::gpu::GpuContext::shared() {
        Ok(ctx) => {
            let name = select_backend(EngineKind::Gpu, None).unwrap().name();
            assert!(name.starts_with("gpu"), "{name}");
            let auto = select_backend(EngineKind::Auto, None).unwrap().name();
            assert_eq!(auto.starts_with("cpu"), ctx.is_software(), "{auto}");
            // An explicit device: Gpu trains on it; Auto uses it only if it is hardware.
            let name = select_backend(EngineKind::Gpu, Some(&ctx)).unwrap().name();
            assert_eq!(name, format!("gpu: {}", ctx.describe()));
            let auto = select_backend(EngineKind::Auto, Some(&ctx)).unwrap().name();
            assert_eq!(auto.starts_with("cpu"), ctx.is_software(), "{auto}");
        }
        Err(_) => {
            assert!(matches!(
                select_backend(EngineKind::Gpu, None),
                Err(Error::Gpu(_))
            ));
            assert!(select_backend(EngineKind::Auto, None)
                .unwrap()
                .name()
                .starts_with("cpu"));
        }
    }
    // Without the `gpu` feature: GPU training is an error that names the feature; auto is
    // the CPU.
    #[cfg(not(feature = "gpu"))]
    {
        let err = select_backend(EngineKind::Gpu, None).err().unwrap();
        assert!(matches!(err, Error::Gpu(_)), "{err}");
        assert!(err.to_string().contains("`gpu` feature"), "{err}");
        assert!(select_backend(EngineKind::Auto, None)
            .unwrap()
            .name()
            .starts_with("cpu"));
    }

    let mut t = with(TrainConfig::default()).unwrap();
    let wide = toy_data(4, 3, 2, 0);
    assert!(matches!(t.train_epoch(&wide), Err(Error::Input(_))));
    assert!(t.evaluate(&wide).is_err());
    let many = toy_data(4, 2, 5, 0);
    assert!(matches!(t.train_epoch(&many), Err(Error::Input(_))));
    let be = CpuBackend::default();
    assert!(be
        .loss_and_gradient(&model, data.inputs(), &[0, 1, 2])
        .is_err());
    assert!(be
        .loss_and_gradient(&model, data.inputs(), &[0, 1])
        .is_err());
}

#[test]
fn diverging_training_is_reported() {
    let data = toy_data(64, 4, 2, 3);
    let model = Mlp::init(&[4, 8, 2], vec![Activation::Identity], 0).unwrap();
    let config = quiet(TrainConfig {
        batch_size: 8,
        optimizer: Optimizer::sgd(1e200, 0.0),
        ..Default::default()
    });
    let mut t = Trainer::new(model, config).unwrap();
    let err = t.train_epoch(&data).unwrap_err();
    assert!(err.to_string().contains("learning rate"), "{err}");
}

/// The brief's accuracy check: 6 epochs on the first 1,000 MNIST training images give ≥ 85%
/// on the 10,000 test images (784-128-10 sigmoid, Adam 1e-2, batches of 32: ≈ 88%).
#[cfg(feature = "study")]
#[test]
fn mnist_subset_of_1000_reaches_85_percent() {
    let mnist = diagfim::data::Mnist::load(diagfim::data::default_dir()).unwrap();
    let train = Dataset::mnist_train(&mnist, Some(1000)).unwrap();
    let test = Dataset::mnist_test(&mnist).unwrap();
    assert_eq!((train.len(), test.len()), (1000, 10_000));
    assert!(Dataset::mnist_train(&mnist, Some(60_001)).is_err());
    assert!(Dataset::mnist_train(&mnist, Some(0)).is_err());
    let model = Mlp::init(&[784, 128, 10], vec![Activation::Sigmoid], 0).unwrap();
    let config = quiet(TrainConfig {
        epochs: 6,
        batch_size: 32,
        optimizer: Optimizer::adam(1e-2),
        ..Default::default()
    });
    let mut t = Trainer::new(model, config).unwrap();
    let before = t.evaluate(&test).unwrap().accuracy;
    let stats = t.fit(&train, Some(&test), |_, _| Ok(())).unwrap();
    let accs: Vec<f64> = stats.iter().map(|s| s.test_accuracy).collect();
    let last = *accs.last().unwrap();
    assert!(before < 0.3, "untrained accuracy {before}");
    assert!(last >= 0.85, "test accuracy per epoch {accs:?}");
    assert!(stats[5].train_loss < stats[0].train_loss);
}
