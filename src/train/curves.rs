//! The study's tidy table: per epoch, parameter group (layer) and input kind, the group means
//! of the FIM diagonal, the exact variances of Î1/Î2 with N labels, their Theorem 4.1 upper
//! bounds, the Monte-Carlo estimates and the log-ratios ln(UB/Var); written as `curves.csv`.

use crate::report::Report;
use crate::{Error, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Report key names of the Theorem 4.1 upper bounds (Eqs. 11–12) of `N·Var[Î1]` and `N·Var[Î2]`.
/// They are looked up by name so that this code works with and without them in the report.
pub const UB_VAR1_KEY: &str = "ub_var1";
/// Report key name of the Theorem 4.1 upper bound (Eq. 12) of `N·Var[Î2]`.
pub const UB_VAR2_KEY: &str = "ub_var2";

/// Which inputs a row describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// One fixed random test input.
    Fixed,
    /// The mean over a fixed set of test inputs.
    Mean,
}

impl InputKind {
    /// The `input` column's value: `fixed` or `mean`.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Fixed => "fixed",
            InputKind::Mean => "mean",
        }
    }
}

/// Group means (over all weights and biases of one layer) for one analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupValues {
    /// 1-based layer number (layer 1 takes the image).
    pub group: usize,
    /// Number of parameters in the group.
    pub params: usize,
    /// Mean of I(θ_i|x) (Eq. 23).
    pub fisher: f64,
    /// Mean of Var[Î1(θ_i|x)] with N labels (Eq. 24 divided by N).
    pub var1: f64,
    /// Mean of Var[Î2(θ_i|x)] with N labels (Eq. 25 divided by N).
    pub var2: f64,
    /// Mean of the Theorem 4.1 upper bound of `Var[Î1]` with N labels (Eq. 11), NaN when the
    /// report has no `ub_var1` key.
    pub ub_var1: f64,
    /// The same for `Var[Î2]` (Eq. 12).
    pub ub_var2: f64,
    /// Mean of the Monte-Carlo Î1 with N labels.
    pub mc1: f64,
    /// Mean of the Monte-Carlo Î2 with N labels.
    pub mc2: f64,
}

impl GroupValues {
    /// ln(UB/Var) for Î1: NaN when both are 0 or a bound is missing.
    pub fn logratio1(&self) -> f64 {
        (self.ub_var1 / self.var1).ln()
    }
    /// ln(UB/Var) for Î2: NaN when both are 0 (the last layer, Remark 4.4) or a bound is
    /// missing.
    pub fn logratio2(&self) -> f64 {
        (self.ub_var2 / self.var2).ln()
    }
}

/// Whether `report` holds the Theorem 4.1 bound keys.
pub fn bounds_available(report: &Report) -> bool {
    report.params.iter().any(|p| {
        p.values
            .keys()
            .any(|k| k.name() == UB_VAR1_KEY || k.name() == UB_VAR2_KEY)
    })
}

/// Per-layer means of `report` (as returned by `analyze` without `per_input`); variances and
/// bounds are divided by `samples` (N) to be those of the N-label estimators.
pub fn group_values(report: &Report, samples: usize) -> Vec<GroupValues> {
    let layers = report
        .params
        .iter()
        .map(|p| p.info.layer + 1)
        .max()
        .unwrap_or(0);
    let n = samples.max(1) as f64;
    (0..layers)
        .map(|l| {
            let params: Vec<_> = report.params.iter().filter(|p| p.info.layer == l).collect();
            let count: usize = params.iter().map(|p| p.info.numel()).sum();
            let mean = |name: &str| {
                let mut sum = 0.0;
                for p in &params {
                    match p.values.iter().find(|(k, _)| k.name() == name) {
                        Some((_, v)) => sum += v.sum(),
                        None => return f64::NAN,
                    }
                }
                sum / count as f64
            };
            GroupValues {
                group: l + 1,
                params: count,
                fisher: mean("fisher"),
                var1: mean("var1") / n,
                var2: mean("var2") / n,
                ub_var1: mean(UB_VAR1_KEY) / n,
                ub_var2: mean(UB_VAR2_KEY) / n,
                mc1: mean("mc1"),
                mc2: mean("mc2"),
            }
        })
        .collect()
}

/// One row of `curves.csv`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurveRow {
    /// 0 = initialisation, e = after epoch e.
    pub epoch: usize,
    /// Which inputs the row describes.
    pub input: InputKind,
    /// Number of test inputs analysed (1 for `fixed`).
    pub inputs: usize,
    /// N, labels sampled per input.
    pub samples: usize,
    /// Test-set accuracy of the model at this epoch.
    pub test_accuracy: f64,
    /// Test-set mean cross-entropy of the model at this epoch.
    pub test_loss: f64,
    /// The layer's group means.
    pub values: GroupValues,
}

/// The columns of `curves.csv`, in order.
pub const COLUMNS: [&str; 19] = [
    "epoch",
    "group",
    "params",
    "input",
    "inputs",
    "samples",
    "test_acc",
    "test_loss",
    "fisher",
    "var1",
    "var2",
    "ub_var1",
    "ub_var2",
    "mc1",
    "mc2",
    "logratio1",
    "logratio2",
    "std1",
    "std2",
];

/// The CSV text: a header line of [`COLUMNS`], then one line per row. Floats use Rust's
/// shortest round-trip exponent form (`1.25e-3`); `NaN` marks an undefined value.
pub fn to_csv(rows: &[CurveRow]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for r in rows {
        let v = &r.values;
        let _ = write!(
            out,
            "{},{},{},{},{},{}",
            r.epoch,
            v.group,
            v.params,
            r.input.name(),
            r.inputs,
            r.samples
        );
        for x in [
            r.test_accuracy,
            r.test_loss,
            v.fisher,
            v.var1,
            v.var2,
            v.ub_var1,
            v.ub_var2,
            v.mc1,
            v.mc2,
            v.logratio1(),
            v.logratio2(),
            v.var1.sqrt(),
            v.var2.sqrt(),
        ] {
            let _ = write!(out, ",{x:e}");
        }
        out.push('\n');
    }
    out
}

/// Writes `rows` to `path` as CSV (see [`to_csv`]).
pub fn write_csv(path: &Path, rows: &[CurveRow]) -> Result<()> {
    std::fs::write(path, to_csv(rows)).map_err(|e| Error::io("write", path, e))
}
