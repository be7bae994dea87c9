//! A config schema and a config from a user: the schema is compiled (a bad
//! one is an error with its location), the config validated against it and
//! its defaults filled, with total work bounded even for schemas that
//! refer to themselves. Input: a schema and a config separated by a NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugboard_core::CompiledSchema;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (schema, config) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let Ok(schema) = serde_json::from_slice::<Value>(schema) else { return };
    let Ok(compiled) = CompiledSchema::compile("fuzz_plugin", &schema) else { return };
    let Ok(Value::Object(mut config)) = serde_json::from_slice::<Value>(config) else { return };
    let _ = compiled.validate("fuzz_plugin", &Value::Object(config.clone()));
    let _ = compiled.fill_defaults(&mut config);
    let _ = compiled.violations(&Value::Object(config));
});
