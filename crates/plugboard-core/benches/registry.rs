//! Registry and config-store speed, each next to a reference measured in the
//! same run: a plain `HashMap` insert/lookup for the registry, and a raw
//! write + fsync + rename of the same bytes for config saves.
//!
//! Run pinned to one CPU: `taskset -c 0 cargo bench -p plugboard-core --bench registry`.

use std::collections::HashMap;
use std::fs;
use std::hint::black_box;
use std::io::Write;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use plugboard_core::{
    CapabilityError, ConfigStore, ExecutionMode, PluginManager, PluginMetadata, UnifiedPluginRegistry, plugin_stats,
};
use serde_json::{Map, Value, json};

/// `n` plugins with one small schema, built as a manager would: through
/// `with_schema`, which shares a schema equal to the one built just before.
fn plugins(n: usize) -> Vec<PluginMetadata> {
    (0..n).map(|i| plugin(i).with_schema(schema())).collect()
}

/// The same plugins, each holding its own copy of the schema (set without
/// `with_schema`): the registry then compares every copy itself.
fn plugins_built_apart(n: usize) -> Vec<PluginMetadata> {
    (0..n)
        .map(|i| {
            let mut m = plugin(i);
            m.config_schema = std::sync::Arc::new(schema());
            m
        })
        .collect()
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"device": {"type": "string", "default": "cpu"}}})
}

fn plugin(i: usize) -> PluginMetadata {
    let mut m = PluginMetadata::new(format!("plugin_{i}"), "", format!("Plugin number {i}"));
    m.version = Some("1.0.0".into());
    m.description = Some("A plugin used to measure the registry.".into());
    if i.is_multiple_of(3) {
        m.execution_mode = ExecutionMode::Subprocess;
    }
    m
}

struct Fixed(Vec<PluginMetadata>);

impl PluginManager for Fixed {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Ok(std::mem::take(&mut self.0))
    }
}

/// 10 categories sharing `n` plugins.
fn registry(n: usize, dir: &std::path::Path) -> UnifiedPluginRegistry {
    let mut r = UnifiedPluginRegistry::new(dir);
    let all = plugins(n);
    for (c, chunk) in all.chunks(n.div_ceil(10)).enumerate() {
        r.register_plugin_manager(&format!("cat{c}"), Fixed(chunk.to_vec()), None, true)
            .ok();
    }
    r
}

fn bench_register(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut g = c.benchmark_group("register");
    g.sample_size(10);
    for n in [1_000usize, 10_000, 100_000] {
        let source = plugins(n);
        let register = |list: Vec<PluginMetadata>| {
            let mut r = UnifiedPluginRegistry::new(dir.path());
            r.register_plugin_manager("cat", Fixed(list), None, true).ok();
            r
        };
        if n == 100_000 {
            let apart = plugins_built_apart(n);
            g.bench_with_input(BenchmarkId::new("registry_schemas_built_apart", n), &n, |b, _| {
                b.iter_batched(|| apart.clone(), register, BatchSize::LargeInput)
            });
        }
        g.bench_with_input(BenchmarkId::new("registry", n), &n, |b, _| {
            b.iter_batched(|| source.clone(), register, BatchSize::LargeInput)
        });
        g.bench_with_input(BenchmarkId::new("reference_hashmap_insert", n), &n, |b, _| {
            b.iter_batched(
                || source.clone(),
                |list| {
                    let mut m = HashMap::new();
                    for p in list {
                        m.insert(format!("{}_{}", "cat", p.name), p);
                    }
                    m
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// What building the metadata costs a manager, with `with_schema` sharing
/// the schema and with a copy per plugin.
fn bench_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build_100k");
    g.sample_size(10);
    g.bench_function("with_schema", |b| b.iter(|| plugins(100_000)));
    g.bench_function("reference_schema_per_plugin", |b| {
        b.iter(|| plugins_built_apart(100_000))
    });
    g.finish();
}

fn bench_queries(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let r = registry(100_000, dir.path());
    let reference: HashMap<String, PluginMetadata> = r
        .all_plugins()
        .into_iter()
        .map(|p| (p.unique_id(), p.clone()))
        .collect();
    let mut g = c.benchmark_group("query_100k");
    g.bench_function("get_plugin", |b| {
        b.iter(|| black_box(r.get_plugin(black_box("cat7_plugin_77777"))).map(|p| p.is_configured))
    });
    g.bench_function("reference_hashmap_get", |b| {
        b.iter(|| black_box(reference.get(black_box("cat7_plugin_77777"))).map(|p| p.is_configured))
    });
    g.bench_function("plugins_by_category", |b| {
        b.iter(|| r.plugins_by_category(black_box("cat3")).len())
    });
    g.bench_function("plugin_stats", |b| b.iter(|| plugin_stats(r.all_plugins()).total));
    g.bench_function("reference_iterate_all", |b| {
        b.iter(|| r.all_plugins().iter().filter(|p| black_box(p.is_configured)).count())
    });
    g.finish();
}

fn config(i: usize) -> Map<String, Value> {
    let v = json!({"device": "cuda", "beam_size": i % 10, "language": "en", "prompt": "x".repeat(200)});
    v.as_object().cloned().unwrap_or_default()
}

fn bench_configs(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let store = ConfigStore::new(dir.path());
    let configs: Vec<(String, Map<String, Value>)> =
        (0..1000).map(|i| (format!("cat_plugin_{i}"), config(i))).collect();
    let bytes: Vec<Vec<u8>> = configs
        .iter()
        .map(|(_, c)| serde_json::to_vec_pretty(c).unwrap_or_default())
        .collect();
    let mut g = c.benchmark_group("configs_1000");
    g.sample_size(10);
    g.bench_function("save_and_load", |b| {
        b.iter(|| {
            for (id, cfg) in &configs {
                store.save(id, cfg, None).ok();
            }
            for (id, _) in &configs {
                black_box(store.load(id).ok());
            }
        })
    });
    g.bench_function("reference_raw_write_fsync_rename_read", |b| {
        b.iter(|| {
            for (i, data) in bytes.iter().enumerate() {
                let tmp = dir.path().join(format!("raw_{i}.tmp"));
                let dst = dir.path().join(format!("raw_{i}.json"));
                if let Ok(mut f) = fs::File::create(&tmp) {
                    f.write_all(data).ok();
                    f.sync_all().ok();
                }
                fs::rename(&tmp, &dst).ok();
                if let Ok(d) = fs::File::open(dir.path()) {
                    d.sync_all().ok();
                }
            }
            for i in 0..bytes.len() {
                black_box(fs::read(dir.path().join(format!("raw_{i}.json"))).ok());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_register, bench_build, bench_queries, bench_configs);
criterion_main!(benches);
