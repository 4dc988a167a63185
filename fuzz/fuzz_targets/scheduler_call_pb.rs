//! Frameworks' gRPC messages (subscriptions and calls), decoded and
//! converted as the master's door does.
#![no_main]

use cairn_proto as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = pb::SchedulerCall::decode(data) {
        let _ = cairn_master::convert::call_from_pb(&c);
    }
    if let Ok(s) = pb::SubscribeRequest::decode(data) {
        let _ = cairn_master::convert::subscribe_from_pb(&s);
    }
});
