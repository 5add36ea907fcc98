//! The .npy reader: header parsing, the length check and the conversion to f64 inputs must
//! return an error, never panic, abort or allocate from the header alone.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.npy");
    let header = diagfim::io::parse_npy_header(data);
    let inputs = diagfim::io::inputs_from_npy(path, data);
    if let Ok(x) = &inputs {
        // Whatever was read matches the header and is finite.
        let h = header.expect("inputs were read, so the header is valid");
        assert_eq!(x.shape(), h.shape.as_slice());
        assert!(x.iter().all(|v| v.is_finite()));
    }
});
