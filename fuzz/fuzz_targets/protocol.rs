//! Protocol messages from a peer (a worker's answers, a host's requests):
//! every message type parses or fails cleanly, and what parses serializes
//! back; version checks never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_protocol as p;

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(data: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let _ = serde_json::to_vec(&v);
    }
}

fuzz_target!(|data: &[u8]| {
    round_trip::<p::WorkerManifest>(data);
    round_trip::<p::Health>(data);
    round_trip::<p::ConfigResult>(data);
    round_trip::<p::ExecuteRequest>(data);
    round_trip::<p::ExecuteResponse>(data);
    round_trip::<p::CancelRequest>(data);
    round_trip::<p::CancelResponse>(data);
    round_trip::<p::ErrorBody>(data);
    for line in data.split(|b| *b == b'\n') {
        round_trip::<p::StreamEvent>(line);
    }
    if let Ok(m) = serde_json::from_slice::<p::WorkerManifest>(data) {
        let _ = p::check_version(m.protocol_version);
    }
});
