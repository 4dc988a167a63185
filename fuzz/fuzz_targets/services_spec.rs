//! App specs `cairn apply` sends to cairn-services.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(apps) = cairn_services::spec::parse(s)
    {
        for a in &apps {
            let _ = a.version();
        }
    }
});
