//! The `Join` door: a protobuf request whose token is parsed and checked
//! and whose certificate request is parsed and signed, as the master does.
#![no_main]

use std::sync::OnceLock;

use cairn_proto as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn fixtures() -> &'static (cairn_tls::ClusterCa, cairn_tls::Tokens) {
    static F: OnceLock<(cairn_tls::ClusterCa, cairn_tls::Tokens)> = OnceLock::new();
    F.get_or_init(|| {
        let ca = cairn_tls::ClusterCa::generate("fuzz").expect("a CA");
        let tokens =
            cairn_tls::Tokens::generate(&ca.fingerprint(), std::time::Duration::from_secs(60))
                .expect("tokens");
        (ca, tokens)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = pb::JoinRequest::decode(data) else {
        return;
    };
    let (ca, tokens) = fixtures();
    let _ = tokens.check(&req.token, cairn_tls::unix_now());
    let _ = req.token.parse::<cairn_tls::Token>();
    let _ = ca.sign_request(&req.csr, &cairn_tls::Role::Agent { id: "fuzz".into() });
});
