//! The MNIST study of examples/mnist_tradeoffs.rs (src/train/study.rs): flags, a tiny run's
//! files (CSV columns and values, PNG, SVG, checkpoint), and that the CSV is reproduced by
//! analysing the saved checkpoint on the saved inputs.

use diagfim::train::curves::{InputKind, COLUMNS};
use diagfim::train::study::{parse_layers, run, StudyConfig, USAGE};
use diagfim::{analyze, Activation, AnalysisOptions, Categorical, EngineKind, Error, Request};
use std::io::Read;
use std::path::Path;

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn parse(list: &[&str]) -> diagfim::Result<Option<StudyConfig>> {
    StudyConfig::from_args(&args(list))
}

#[test]
fn flags_parse_to_the_documented_defaults_and_values() {
    let d = parse(&[]).unwrap().unwrap();
    assert_eq!(d, StudyConfig::default());
    assert_eq!(d.epochs, 2);
    assert_eq!(d.widths, vec![784, 256, 128, 64, 10]);
    assert_eq!(d.activations, vec![Activation::Sigmoid; 3]);
    assert_eq!((d.samples, d.seed, d.engine), (16, 0, EngineKind::Auto));
    assert_eq!(d.train_subset, None);
    assert_eq!(parse(&["--help"]).unwrap(), None);
    for flag in [
        "--epochs",
        "--layers",
        "--activation",
        "--samples",
        "--seed",
        "--engine",
        "--train-subset",
        "--out",
    ] {
        assert!(USAGE.contains(flag), "{flag} missing from the usage text");
    }

    let c = parse(&[
        "--epochs",
        "20",
        "--layers",
        "784,32,10",
        "--activation",
        "tanh",
        "--samples=4",
        "--seed",
        "7",
        "--engine",
        "cpu",
        "--train-subset",
        "500",
        "--out",
        "/tmp/x",
    ])
    .unwrap()
    .unwrap();
    assert_eq!(c.epochs, 20);
    assert_eq!(c.widths, vec![784, 32, 10]);
    assert_eq!(c.activations, vec![Activation::Tanh]);
    assert_eq!((c.samples, c.seed, c.engine), (4, 7, EngineKind::Cpu));
    assert_eq!(c.train_subset, Some(500));
    assert_eq!(c.out, Path::new("/tmp/x"));

    // Appendix E: --activation logsigmoid --layers 5.
    let e = parse(&["--activation", "logsigmoid", "--layers", "5"])
        .unwrap()
        .unwrap();
    assert_eq!(e.widths, vec![784, 256, 128, 64, 32, 10]);
    assert_eq!(e.activations, vec![Activation::LogSigmoid; 4]);
    assert_eq!(parse_layers("4").unwrap(), vec![784, 256, 128, 64, 10]);
    assert_eq!(parse_layers("1").unwrap(), vec![784, 10]);
    let mixed = parse(&["--layers", "784,8,8,10", "--activation", "sigmoid,relu"])
        .unwrap()
        .unwrap();
    assert_eq!(
        mixed.activations,
        vec![Activation::Sigmoid, Activation::Relu]
    );
}

#[test]
fn bad_flags_are_errors_that_say_what_to_fix() {
    for (list, needle) in [
        (&["--epoch", "3"][..], "unknown flag"),
        (&["--bogus"][..], "unknown flag '--bogus'"),
        (&["--epochs"][..], "needs a value"),
        (&["--epochs", "two"][..], "--epochs expects"),
        (&["--layers", "100,10"][..], "784 inputs first"),
        (&["--layers", "784,64,9"][..], "10 classes last"),
        (&["--layers", "784,0,10"][..], "at least 1"),
        (&["--layers", "0"][..], "depth of 0"),
        (&["--layers", "784;10"][..], "expected widths"),
        (&["--samples", "1"][..], "at least 2"),
        (&["--train-subset", "0"][..], "at least 1 image"),
        (&["--engine", "tpu"][..], "unknown engine"),
        (&["--activation", "gelu"][..], "unknown activation"),
        (
            &["--activation", "sigmoid,tanh"][..],
            "one per hidden layer",
        ),
        (&["--seed", "-1"][..], "--seed expects"),
    ] {
        let err = parse(list).unwrap_err().to_string();
        assert!(err.contains(needle), "{list:?}: '{err}' lacks '{needle}'");
    }
    // More images than MNIST has: an error from the data, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let mut c = parse(&["--train-subset", "60001", "--layers", "784,10"])
        .unwrap()
        .unwrap();
    c.out = dir.path().to_path_buf();
    c.progress = false;
    let err = run(&c, &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("only 60000"), "{err}");
    // Without an adapter (or the `gpu` feature), --engine gpu is a clear error.
    #[cfg(feature = "gpu")]
    let no_adapter = diagfim::engine::gpu::GpuContext::shared().is_err();
    #[cfg(not(feature = "gpu"))]
    let no_adapter = true;
    if no_adapter {
        c.engine = EngineKind::Gpu;
        assert!(matches!(run(&c, &mut |_| {}), Err(Error::Gpu(_))));
    }
}

/// Parses curves.csv: header and rows of strings.
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

/// Checks the PNG signature, the IHDR size and that the IDAT stream inflates to the
/// expected number of bytes (8-bit RGB: one filter byte plus 3 bytes per pixel per row).
fn check_png(path: &Path, width: u32, height: u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    let mut at = 8;
    let mut idat = Vec::new();
    let mut dims = None;
    let mut ended = false;
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                let w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                let h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!((data[8], data[9]), (8, 2), "8-bit RGB");
                dims = Some((w, h));
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => ended = true,
            _ => {}
        }
        at += 12 + len;
    }
    assert!(ended, "IEND chunk");
    assert_eq!(dims, Some((width, height)));
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(idat.as_slice())
        .read_to_end(&mut raw)
        .unwrap();
    assert_eq!(raw.len(), (height * (1 + 3 * width)) as usize);
    // Not a blank image: some pixels are neither white nor the filter bytes' zeros.
    assert!(raw.iter().filter(|&&b| b != 255 && b != 0).count() > 1000);
}

#[test]
fn a_tiny_run_writes_the_documented_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let mut c = parse(&[
        "--epochs",
        "1",
        "--train-subset",
        "500",
        "--layers",
        "784,32,16,10",
        "--samples",
        "4",
        "--seed",
        "3",
        "--engine",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap()
    .unwrap();
    c.mean_inputs = 24;
    c.progress = false;
    let mut lines = Vec::new();
    let result = run(&c, &mut |l| lines.push(l.to_string())).unwrap();
    assert!(lines.iter().any(|l| l.starts_with("epoch   1/1")));
    assert_eq!(result.epochs.len(), 2);
    assert_eq!(result.mean_indices.len(), 24);
    assert!(!result.mean_indices.contains(&result.fixed_index));

    // curves.csv: documented columns, one row per epoch × group × input kind.
    let (header, rows) = read_csv(&out.join("curves.csv"));
    assert_eq!(header, COLUMNS);
    for needed in [
        "epoch",
        "group",
        "input",
        "test_acc",
        "fisher",
        "var1",
        "var2",
        "ub_var1",
        "ub_var2",
        "mc1",
        "mc2",
        "logratio1",
        "logratio2",
    ] {
        assert!(header.iter().any(|h| h == needed), "column {needed}");
    }
    assert_eq!(rows.len(), 2 * 3 * 2);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let bounds = result.bounds_available;
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len());
        let group: usize = row[col("group")].parse().unwrap();
        assert!(["fixed", "mean"].contains(&row[col("input")].as_str()));
        for (k, name) in header.iter().enumerate().skip(6) {
            let v: f64 = row[k]
                .parse()
                .unwrap_or_else(|_| panic!("{name} '{}'", row[k]));
            let last_layer_ratio = group == 3 && name == "logratio2";
            let needs_bounds = ["ub_var1", "ub_var2", "logratio1", "logratio2"].contains(&&**name);
            if last_layer_ratio || (needs_bounds && !bounds) {
                // Var[Î2] = UB = 0 in the last layer (Remark 4.4), or bounds missing.
                assert!(v.is_nan(), "row {r} {name} = {v}");
            } else {
                assert!(v.is_finite(), "row {r} {name} = {v}");
            }
        }
        let acc: f64 = row[col("test_acc")].parse().unwrap();
        assert!((0.0..=1.0).contains(&acc));
        let fisher: f64 = row[col("fisher")].parse().unwrap();
        assert!(fisher > 0.0);
        let var2: f64 = row[col("var2")].parse().unwrap();
        assert_eq!(
            var2 == 0.0,
            group == 3,
            "Var[Î2] = 0 exactly in the last layer only"
        );
    }
    // 8 Adam steps barely move a sigmoid net, but the test loss goes down.
    let losses: Vec<f64> = result.epochs.iter().map(|e| e.test_loss).collect();
    assert!(losses[1] < losses[0], "test loss {losses:?}");

    // The checkpoint and the saved inputs reproduce the last `mean` rows exactly.
    let model = diagfim::model::load_safetensors(&out.join("model.safetensors"), None).unwrap();
    assert_eq!(model.widths(), vec![784, 32, 16, 10]);
    assert_eq!(model.activations(), &[Activation::Sigmoid; 2]);
    let x = diagfim::io::read_inputs(&out.join("x_mean.npy")).unwrap();
    assert_eq!(x.dim(), (24, 784));
    let report = analyze(&Request {
        model: &model,
        family: &Categorical,
        inputs: x.view(),
        labels: None,
        options: AnalysisOptions {
            samples: 4,
            seed: 3,
            engine: EngineKind::Cpu,
            ..Default::default()
        },
        progress: None,
    })
    .unwrap();
    let groups = diagfim::train::curves::group_values(&report, 4);
    let last: Vec<_> = result
        .rows
        .iter()
        .filter(|r| r.epoch == 1 && r.input == InputKind::Mean)
        .collect();
    assert_eq!(last.len(), 3);
    for (g, r) in groups.iter().zip(&last) {
        assert_eq!(g.fisher, r.values.fisher);
        assert_eq!(g.var1, r.values.var1);
        assert_eq!(g.mc2, r.values.mc2);
    }
    // Group means by hand for layer 1: weights and biases together, variances over N.
    let w = report.get(diagfim::Key::Var1, "0.weight").unwrap();
    let b = report.get(diagfim::Key::Var1, "0.bias").unwrap();
    let by_hand = (w.sum() + b.sum()) / (w.len() + b.len()) as f64 / 4.0;
    assert!((groups[0].var1 - by_hand).abs() <= 1e-12 * by_hand.abs());
    assert_eq!(groups[0].params, 784 * 32 + 32);

    // Figure files: a decodable PNG of the documented size and an SVG document.
    check_png(&out.join("figure1.png"), 60 + 380 * 3, 1240);
    let svg = std::fs::read_to_string(out.join("figure1.svg")).unwrap();
    assert!(svg.trim_start().starts_with("<svg"), "SVG root element");
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("layer 1") && svg.contains("epoch"));
    assert!(svg.matches("<polyline").count() + svg.matches("<path").count() >= 12);
    assert_eq!(svg.matches("<svg").count(), svg.matches("</svg>").count());

    let run_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["fixed_index"], result.fixed_index);
    assert_eq!(run_json["per_epoch"].as_array().unwrap().len(), 2);
}
