//! docs/openapi.json describes every endpoint and message of the protocol.

use plugboard_protocol::*;
use serde_json::{Value, json};

fn doc() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_path_is_documented_and_nothing_else() {
    let d = doc();
    let mut documented: Vec<&str> = d["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    documented.sort();
    let mut ours = paths::ALL.to_vec();
    ours.sort();
    assert_eq!(documented, ours);
}

#[test]
fn documented_messages_validate_what_we_send() {
    let d = doc();
    let schemas = &d["components"]["schemas"];
    let check = |name: &str, value: Value| {
        // Resolve component refs by embedding the components under $defs.
        let mut schema = schemas[name].clone();
        let text = serde_json::to_string(&schema)
            .unwrap()
            .replace("#/components/schemas/", "#/$defs/");
        schema = serde_json::from_str(&text).unwrap();
        let defs = serde_json::from_str::<Value>(
            &serde_json::to_string(schemas)
                .unwrap()
                .replace("#/components/schemas/", "#/$defs/"),
        )
        .unwrap();
        schema.as_object_mut().unwrap().insert("$defs".into(), defs);
        let v = plugboard_core::CompiledSchema::compile(name, &schema).unwrap();
        assert!(
            v.violations(&value).is_empty(),
            "{name}: {:?} for {value}",
            v.violations(&value)
        );
    };
    check(
        "WorkerManifest",
        serde_json::to_value(WorkerManifest {
            protocol_version: PROTOCOL_VERSION,
            name: "x".into(),
            version: None,
            config_schema: json!({}),
            capabilities: Capabilities::default(),
            input_example: Some(json!({"text": "hello"})),
        })
        .unwrap(),
    );
    check(
        "ErrorBody",
        serde_json::to_value(ErrorBody::new(ErrorCode::TooLarge, "big")).unwrap(),
    );
    for ev in [
        StreamEvent::Progress {
            progress: 0.5,
            message: None,
        },
        StreamEvent::Log {
            level: "info".into(),
            message: "m".into(),
        },
        StreamEvent::Result { output: json!(1) },
        StreamEvent::Error {
            error: ErrorInfo {
                code: ErrorCode::Cancelled,
                message: "c".into(),
            },
        },
    ] {
        check("StreamEvent", serde_json::to_value(ev).unwrap());
    }
    check(
        "ExecuteRequest",
        serde_json::to_value(ExecuteRequest {
            input: json!({}),
            request_id: None,
        })
        .unwrap(),
    );
}

#[test]
fn unknown_fields_are_tolerated() {
    let m: WorkerManifest =
        serde_json::from_value(json!({"protocol_version": 1, "name": "x", "future_field": [1, 2]})).unwrap();
    assert_eq!(m.name, "x");
    let ev: StreamEvent = serde_json::from_value(json!({"type": "progress", "progress": 1.0, "eta_s": 3})).unwrap();
    assert!(matches!(ev, StreamEvent::Progress { .. }));
}
