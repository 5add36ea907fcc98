//! Results of an analysis: per-parameter tensors under the contract keys, per-layer summaries,
//! and their serialisation (RESULT.safetensors, SUMMARY.json, a printed table).

use crate::io::{write_safetensors, NamedTensor, StoreDtype};
use crate::model::ParamInfo;
use crate::{Error, Result};
use ndarray::ArrayD;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The output keys of the CLI contract (README, "Output keys").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// Exact FIM diagonal I(θ_i|x) (MATH §4, Eq. 23).
    Fisher,
    /// N·Var[Î1(θ_i|x)] (Eq. 24).
    Var1,
    /// N·Var[Î2(θ_i|x)] (Eq. 25).
    Var2,
    /// Monte-Carlo Î1 with N labels.
    Mc1,
    /// Monte-Carlo Î2 with N labels.
    Mc2,
    /// Unbiased sample variance of the per-label Î1 values.
    McVar1,
    /// Unbiased sample variance of the per-label Î2 values.
    McVar2,
    /// Variance of the data-set estimator Î1 with N_x = B inputs, N_y = N labels (Thm 4.7).
    VarJoint1,
    /// The same for Î2.
    VarJoint2,
    /// Empirical Fisher with the data labels (MATH §5.10).
    Ef,
}

impl Key {
    pub const ALL: [Key; 10] = [
        Key::Fisher,
        Key::Var1,
        Key::Var2,
        Key::Mc1,
        Key::Mc2,
        Key::McVar1,
        Key::McVar2,
        Key::VarJoint1,
        Key::VarJoint2,
        Key::Ef,
    ];

    /// The key's name in RESULT.safetensors (`<name>/<param>`).
    pub fn name(self) -> &'static str {
        match self {
            Key::Fisher => "fisher",
            Key::Var1 => "var1",
            Key::Var2 => "var2",
            Key::Mc1 => "mc1",
            Key::Mc2 => "mc2",
            Key::McVar1 => "mc_var1",
            Key::McVar2 => "mc_var2",
            Key::VarJoint1 => "var_joint1",
            Key::VarJoint2 => "var_joint2",
            Key::Ef => "ef",
        }
    }

    /// Whether the key is a per-input quantity (gets a leading input axis with `--per-input`);
    /// the joint variances describe the whole input set and never do.
    pub fn is_per_input(self) -> bool {
        !matches!(self, Key::VarJoint1 | Key::VarJoint2)
    }
}

/// All results of one parameter tensor.
#[derive(Clone, Debug)]
pub struct ParamReport {
    pub info: ParamInfo,
    pub values: BTreeMap<Key, ArrayD<f64>>,
}

/// How the analysis was run.
#[derive(Clone, Debug, Serialize)]
pub struct RunInfo {
    pub engine: String,
    pub adapter: String,
    pub family: String,
    pub samples: usize,
    pub seed: u64,
    pub inputs: usize,
    pub per_input: bool,
    pub wall_time_s: f64,
}

/// The result of an analysis.
#[derive(Clone, Debug)]
pub struct Report {
    pub params: Vec<ParamReport>,
    pub run: RunInfo,
}

/// Per-tensor summary: means over the tensor's entries of each key.
#[derive(Clone, Debug, Serialize)]
pub struct ParamSummary {
    pub name: String,
    pub layer: usize,
    pub kind: &'static str,
    pub count: usize,
    pub means: BTreeMap<&'static str, f64>,
}

/// SUMMARY.json.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub run: RunInfo,
    pub layers: Vec<ParamSummary>,
}

impl Report {
    /// The array of `key` for the parameter named `param` (e.g. `"0.weight"`).
    pub fn get(&self, key: Key, param: &str) -> Option<&ArrayD<f64>> {
        self.params
            .iter()
            .find(|p| p.info.name == param)
            .and_then(|p| p.values.get(&key))
    }

    /// All tensors as (`<key>/<param>`, array), in parameter then key order.
    pub fn tensors(&self) -> impl Iterator<Item = (String, &ArrayD<f64>)> {
        self.params.iter().flat_map(|p| {
            p.values
                .iter()
                .map(move |(k, v)| (format!("{}/{}", k.name(), p.info.name), v))
        })
    }

    /// Writes RESULT.safetensors (float64 tensors, metadata describing the run).
    pub fn save(&self, path: &Path) -> Result<()> {
        let owned: Vec<(String, Vec<usize>, Vec<f64>)> = self
            .tensors()
            .map(|(name, a)| (name, a.shape().to_vec(), a.iter().copied().collect()))
            .collect();
        let tensors: Vec<NamedTensor<'_>> = owned
            .iter()
            .map(|(name, shape, values)| NamedTensor {
                name: name.clone(),
                shape: shape.clone(),
                values,
            })
            .collect();
        let meta = serde_json::to_value(&self.run)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k, v.to_string().trim_matches('"').to_string()))
                    .collect()
            });
        write_safetensors(path, &tensors, StoreDtype::F64, meta)
    }

    /// Per-tensor means of every key (SUMMARY.json's `layers`).
    pub fn summary(&self) -> Summary {
        let layers = self
            .params
            .iter()
            .map(|p| ParamSummary {
                name: p.info.name.clone(),
                layer: p.info.layer,
                kind: if p.info.is_bias { "bias" } else { "weight" },
                count: p.info.numel(),
                means: p
                    .values
                    .iter()
                    .map(|(k, v)| (k.name(), v.mean().unwrap_or(f64::NAN)))
                    .collect(),
            })
            .collect();
        Summary {
            run: self.run.clone(),
            layers,
        }
    }

    /// Writes SUMMARY.json.
    pub fn save_summary(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.summary()).map_err(|e| Error::Output {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
        std::fs::write(path, text + "\n").map_err(|e| Error::io("write", path, e))
    }

    /// A per-tensor table of the key means, for the terminal.
    pub fn table(&self) -> String {
        let s = self.summary();
        let keys: Vec<Key> = Key::ALL
            .into_iter()
            .filter(|k| self.params.iter().any(|p| p.values.contains_key(k)))
            .collect();
        let mut out = format!("{:<14} {:>8}", "param", "count");
        for k in &keys {
            out += &format!(" {:>11}", k.name());
        }
        out.push('\n');
        for l in &s.layers {
            out += &format!("{:<14} {:>8}", l.name, l.count);
            for k in &keys {
                out += &format!(
                    " {:>11.4e}",
                    l.means.get(k.name()).copied().unwrap_or(f64::NAN)
                );
            }
            out.push('\n');
        }
        out
    }
}
