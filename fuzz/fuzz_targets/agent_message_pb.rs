//! Agents' session messages (registration, status updates, usage), decoded
//! and converted as the master's door does.
#![no_main]

use cairn_proto as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = pb::AgentMessage::decode(data) else {
        return;
    };
    match m.message {
        Some(pb::agent_message::Message::Register(r)) => {
            let _ = cairn_master::convert::register_from_pb(&r);
        }
        Some(pb::agent_message::Message::StatusUpdate(u)) => {
            let _ = cairn_master::convert::status_update_from_pb(&u);
        }
        Some(pb::agent_message::Message::Usage(u)) => {
            for e in &u.executors {
                let _ = cairn_model::convert::usage_from_pb("usage", e);
            }
        }
        _ => {}
    }
});
