//! DNS queries to cairn-services' server.
#![no_main]

use std::collections::BTreeMap;

use cairn_services::dns::Endpoint;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut services = BTreeMap::new();
    services.insert(
        "web".to_string(),
        vec![Endpoint {
            name: "web-1".into(),
            ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
            port: 31000,
        }],
    );
    let _ = cairn_services::dns::answer(data, "services.cairn", &services);
});
