//! The Mesos scheduler API's JSON calls (`POST /api/v1/scheduler`), as the
//! master's door reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data)
        && let Ok(cairn_master::mesos_json::SchedulerCall::Call { call, .. }) =
            cairn_master::mesos_json::scheduler_call(&v)
    {
        let _ = cairn_master::convert::call_from_pb(&call);
    }
});
