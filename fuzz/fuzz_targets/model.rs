//! The model (safetensors) reader: any bytes give a model or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(model) = diagfim::model::model_from_bytes(Path::new("fuzz.safetensors"), data, None) {
        // A model that loads describes itself and runs forward without panicking.
        let _ = model.describe();
        let x = ndarray_zeros(model.input_dim());
        let _ = model.forward(x.view());
    }
});

fn ndarray_zeros(n: usize) -> diagfim::ndarray::Array1<f64> {
    diagfim::ndarray::Array1::zeros(n)
}
