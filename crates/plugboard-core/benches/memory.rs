//! Memory per registered plugin, counted by a global allocator wrapper, next
//! to the bytes of the same metadata held in a plain `Vec` (the reference).
//!
//! Run: `cargo bench -p plugboard-core --bench memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use plugboard_core::{CapabilityError, PluginManager, PluginMetadata, UnifiedPluginRegistry};
use serde_json::json;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator and only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Fixed(Vec<PluginMetadata>);

impl PluginManager for Fixed {
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
        Ok(std::mem::take(&mut self.0))
    }
}

/// `n` plugins; with `own_schema` each holds its own copy of the schema
/// (set directly, not through `with_schema`, which would share it).
fn plugins(n: usize, own_schema: bool) -> Vec<PluginMetadata> {
    (0..n)
        .map(|i| {
            let schema = json!({"type": "object", "properties": {"device": {"type": "string", "default": "cpu"}}});
            let mut m = PluginMetadata::new(format!("plugin_{i}"), "cat", format!("Plugin number {i}"));
            if own_schema {
                m.config_schema = std::sync::Arc::new(schema);
            } else {
                m = m.with_schema(schema);
            }
            m.version = Some("1.0.0".into());
            m
        })
        .collect()
}

fn main() {
    let n = 100_000;
    let dir = std::env::temp_dir().join(format!("plugboard-membench-{}", std::process::id()));

    let before = LIVE.load(Ordering::Relaxed);
    let reference = plugins(n, true);
    let reference_bytes = LIVE.load(Ordering::Relaxed) - before;
    drop(reference);

    // Everything the registry holds once the discovered list has moved in.
    let before = LIVE.load(Ordering::Relaxed);
    let mut registry = UnifiedPluginRegistry::new(&dir);
    registry
        .register_plugin_manager("cat", Fixed(plugins(n, true)), None, true)
        .ok();
    let registry_bytes = LIVE.load(Ordering::Relaxed) - before;
    let per_plugin_registry = registry_bytes as f64 / n as f64;
    let per_plugin_reference = reference_bytes as f64 / n as f64;
    println!("plugins: {n}");
    println!("reference (Vec<PluginMetadata>): {per_plugin_reference:.0} bytes/plugin");
    println!("registry (metadata + index + schema slot): {per_plugin_registry:.0} bytes/plugin");
    println!("ratio: {:.2}x", per_plugin_registry / per_plugin_reference);
    drop(registry);
}
