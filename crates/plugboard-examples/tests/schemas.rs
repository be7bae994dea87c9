//! The bundled manifests' schema files are exactly the Rust plugins'
//! derived schemas (the host also checks this when a worker starts).
//! `PLUGBOARD_BLESS=1 cargo test -p plugboard-examples` rewrites them.

use std::path::Path;

use plugboard_protocol::Executor;

#[test]
fn schema_files_match_the_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/plugins");
    for name in ["word_count", "reverse"] {
        let exec = plugboard_examples::by_name(name).unwrap();
        let schema = exec.manifest().config_schema;
        let path = root.join(name).join("schema.json");
        if std::env::var_os("PLUGBOARD_BLESS").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&schema).unwrap() + "\n").unwrap();
        }
        let on_disk: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            on_disk,
            schema,
            "{} is stale: run with PLUGBOARD_BLESS=1",
            path.display()
        );
    }
}
