//! Resource and attribute strings (`--resources`, `--attributes`, and the
//! same syntax wherever it is read).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(r) = cairn_model::Resources::parse(s) {
            let _ = cairn_model::Resources::parse(&r.to_string());
        }
        let _ = cairn_model::parse_attributes(s);
    }
});
