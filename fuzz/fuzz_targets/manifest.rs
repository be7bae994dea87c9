//! plugin.toml text from a user: parsed and checked, never a panic; an
//! error always names the file. Launch tables are planned by the built-in
//! backends (which read the mode's own keys) and endpoints parsed.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use plugboard_host::{Backends, Manifest};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/nonexistent/fuzz/plugin.toml");
    match Manifest::parse(path, text) {
        Ok(m) => {
            let backends = Backends::builtin(None);
            if let Ok(b) = backends.for_mode(&m.unique_id(), m.execution_mode) {
                let _ = b.plan(&m, &Default::default());
            }
            let _ = m.metadata();
        }
        Err(e) => assert!(e.to_string().contains("plugin.toml"), "{e}"),
    }
    let _ = text.parse::<plugboard_host::Endpoint>();
});
