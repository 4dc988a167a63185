//! Credentials and ACL files, and `Authorization` values.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<cairn_model::auth::Acls>(data);
    let _ = serde_json::from_slice::<cairn_model::auth::Credentials>(data);
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = cairn_model::auth::parse_basic(s);
    }
});
