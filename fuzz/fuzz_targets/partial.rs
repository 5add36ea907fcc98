//! The partial-result reader (`diagfim merge`'s inputs): any bytes give a partial or an
//! error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = diagfim::Partial::from_bytes(data) {
        let _ = p.finish();
    }
});
