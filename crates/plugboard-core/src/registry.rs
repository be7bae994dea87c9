//! The unified registry: many domain-specific plugin managers (one per
//! category), their plugins' metadata, and config persistence.
//!
//! It keeps the seed's API shape: a manager is registered under a category,
//! discovery yields metadata without loading any plugin, plugins are found by
//! `{category}_{name}`, and configs are loaded and saved by that id. Configs
//! are validated against the plugin's schema before they are written; each
//! schema is compiled once, on first use.

use std::any::Any;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde_json::{Map, Value};
use thiserror::Error;

use crate::capability::CapabilityError;
use crate::config_store::ConfigStore;
use crate::error::ConfigError;
use crate::metadata::PluginMetadata;
use crate::schema::CompiledSchema;
use crate::schema_pool::SchemaPool;

/// A domain-specific plugin system that can list its plugins without loading
/// them (a speech-to-text manager, an LLM manager…).
///
/// ```
/// use plugboard_core::{CapabilityError, PluginManager, PluginMetadata};
///
/// struct Fixed(Vec<PluginMetadata>);
///
/// impl PluginManager for Fixed {
///     fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
///         Ok(self.0.clone())
///     }
/// }
/// ```
pub trait PluginManager: Any + Send + Sync {
    /// Finds the manager's plugins and describes each. The registry sets
    /// each plugin's category to the one the manager is registered under and
    /// `is_configured` from the config dir.
    fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError>;

    /// The config schema of plugin `name`, when the manager knows it better
    /// than the discovered metadata did (the seed's
    /// `get_plugin_config_schema`). By default the discovered schema is kept.
    fn config_schema(&self, name: &str) -> Option<Value> {
        let _ = name;
        None
    }
}

/// Errors from registering managers.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The manager failed to discover its plugins.
    #[error("plugin manager for category {category:?} failed to discover plugins")]
    Discovery {
        /// The category being registered.
        category: String,
        /// What the manager reported.
        #[source]
        source: CapabilityError,
    },
    /// The category name is empty.
    #[error("a category name must not be empty")]
    EmptyCategory,
}

/// The hasher of the id and category indexes. Ids are short strings, hashed
/// on every registration and lookup, and come from the registry's own
/// managers (manifests on disk, code), not from remote peers: foldhash,
/// seeded per process, hashes them in under half of SipHash's time, and
/// its weaker resistance to chosen collisions is not needed here.
type IdHasher = foldhash::fast::RandomState;

struct Category {
    manager: Box<dyn PluginManager>,
    display_name: Option<String>,
}

struct Entry {
    meta: PluginMetadata,
    schema: OnceLock<Result<Arc<CompiledSchema>, String>>,
}

/// The registry over every category's manager, with config persistence.
///
/// ```
/// use plugboard_core::{CapabilityError, PluginManager, PluginMetadata, UnifiedPluginRegistry};
/// use serde_json::json;
///
/// struct Stt;
/// impl PluginManager for Stt {
///     fn discover_plugins(&mut self) -> Result<Vec<PluginMetadata>, CapabilityError> {
///         Ok(vec![PluginMetadata::new("whisper", "", "Whisper").with_schema(json!({
///             "type": "object",
///             "properties": {"device": {"type": "string", "default": "cpu"}}
///         }))])
///     }
/// }
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut registry = UnifiedPluginRegistry::new(dir.path());
/// let found = registry.register_plugin_manager("speech_to_text", Stt, None, true).unwrap();
/// assert_eq!(found[0].unique_id(), "speech_to_text_whisper");
/// assert_eq!(registry.category_display_name("speech_to_text"), "Speech_To_Text");
/// assert!(registry.get_manager::<Stt>("speech_to_text").is_some());
///
/// let config = registry.load_plugin_config("speech_to_text_whisper").unwrap();
/// assert_eq!(config["device"], "cpu");
/// ```
pub struct UnifiedPluginRegistry {
    store: ConfigStore,
    categories: HashMap<String, Category>,
    entries: Vec<Entry>,
    by_id: HashMap<String, usize, IdHasher>,
    by_category: HashMap<String, Vec<usize>, IdHasher>,
    schemas: SchemaPool,
}

impl std::fmt::Debug for UnifiedPluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnifiedPluginRegistry")
            .field("config_dir", &self.store.dir())
            .field("categories", &self.categories())
            .field("plugins", &self.entries.len())
            .finish()
    }
}

impl Default for UnifiedPluginRegistry {
    fn default() -> Self {
        UnifiedPluginRegistry::with_store(ConfigStore::default())
    }
}

impl UnifiedPluginRegistry {
    /// A registry whose configs live in `config_dir`.
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        UnifiedPluginRegistry::with_store(ConfigStore::new(config_dir))
    }

    /// A registry over an existing config store.
    pub fn with_store(store: ConfigStore) -> Self {
        UnifiedPluginRegistry {
            store,
            categories: HashMap::new(),
            entries: Vec::new(),
            by_id: HashMap::default(),
            by_category: HashMap::default(),
            schemas: SchemaPool::default(),
        }
    }

    /// The config store.
    pub fn config_store(&self) -> &ConfigStore {
        &self.store
    }

    /// Registers `manager` under `category` and, with `auto_discover`,
    /// discovers its plugins; returns the discovered metadata. Registering a
    /// category again replaces its manager and its plugins.
    pub fn register_plugin_manager<M: PluginManager>(
        &mut self,
        category: &str,
        manager: M,
        display_name: Option<&str>,
        auto_discover: bool,
    ) -> Result<Vec<PluginMetadata>, RegistryError> {
        if category.is_empty() {
            return Err(RegistryError::EmptyCategory);
        }
        let mut manager: Box<dyn PluginManager> = Box::new(manager);
        let mut discovered = if auto_discover {
            manager.discover_plugins().map_err(|source| RegistryError::Discovery {
                category: category.to_owned(),
                source,
            })?
        } else {
            Vec::new()
        };
        self.remove_category_plugins(category);
        // One directory listing instead of a stat per plugin.
        let saved: HashSet<String> = self.store.ids().unwrap_or_default().into_iter().collect();
        let mut out = Vec::with_capacity(discovered.len());
        self.entries.reserve_exact(discovered.len());
        self.by_id.reserve(discovered.len());
        // Categories first, in one pass: their copies then lie side by side
        // in memory, which is what a scan over the registry reads most.
        for meta in &mut discovered {
            if meta.category != category {
                category.clone_into(&mut meta.category);
            }
        }
        for mut meta in discovered {
            if let Some(schema) = manager.config_schema(&meta.name) {
                meta.config_schema = schema.into();
            }
            let id = meta.unique_id();
            meta.is_configured = saved.contains(&id);
            meta.config_schema = self.schemas.share(&meta.config_schema);
            out.push(meta.clone());
            self.insert_as(id, meta);
        }
        self.categories.insert(
            category.to_owned(),
            Category {
                manager,
                display_name: display_name.map(str::to_owned),
            },
        );
        Ok(out)
    }

    /// Adds or replaces one plugin's metadata (a replaced plugin keeps its
    /// place in registration order).
    pub fn insert(&mut self, mut meta: PluginMetadata) {
        meta.config_schema = self.schemas.share(&meta.config_schema);
        self.insert_as(meta.unique_id(), meta);
    }

    /// [`insert`](Self::insert) for a plugin whose id and shared schema are
    /// already known.
    fn insert_as(&mut self, id: String, meta: PluginMetadata) {
        let entry = Entry {
            meta,
            schema: OnceLock::new(),
        };
        match self.by_id.get(&id) {
            Some(&i) => {
                if self.entries[i].meta.category != entry.meta.category {
                    self.entries[i] = entry;
                    self.reindex();
                } else {
                    self.entries[i] = entry;
                }
            }
            None => {
                let i = self.entries.len();
                self.by_id.insert(id, i);
                // The category's key is copied only the first time it is seen.
                match self.by_category.get_mut(&entry.meta.category) {
                    Some(ix) => ix.push(i),
                    None => {
                        self.by_category.insert(entry.meta.category.clone(), vec![i]);
                    }
                }
                self.entries.push(entry);
            }
        }
    }

    fn reindex(&mut self) {
        self.by_id.clear();
        self.by_category.clear();
        for (i, e) in self.entries.iter().enumerate() {
            self.by_id.insert(e.meta.unique_id(), i);
            self.by_category.entry(e.meta.category.clone()).or_default().push(i);
        }
    }

    fn remove_category_plugins(&mut self, category: &str) {
        if !self.entries.iter().any(|e| e.meta.category == category) {
            return;
        }
        self.entries.retain(|e| e.meta.category != category);
        self.reindex();
        self.schemas.prune();
    }

    /// The manager of `category`, downcast to its concrete type; `None` when
    /// the category is unknown or its manager is of another type.
    pub fn get_manager<M: PluginManager>(&self, category: &str) -> Option<&M> {
        let manager: &dyn Any = self.categories.get(category)?.manager.as_ref();
        manager.downcast_ref::<M>()
    }

    /// The manager of `category`, mutable and downcast.
    pub fn get_manager_mut<M: PluginManager>(&mut self, category: &str) -> Option<&mut M> {
        let manager: &mut dyn Any = self.categories.get_mut(category)?.manager.as_mut();
        manager.downcast_mut::<M>()
    }

    /// The manager of `category` as a trait object.
    pub fn manager(&self, category: &str) -> Option<&dyn PluginManager> {
        Some(self.categories.get(category)?.manager.as_ref())
    }

    /// Every registered category, sorted.
    pub fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self.categories.keys().cloned().collect();
        c.sort();
        c
    }

    /// The display name given at registration, else the category in Python
    /// `str.title()` form (`"speech_to_text"` -> `"Speech_To_Text"`).
    pub fn category_display_name(&self, category: &str) -> String {
        match self.categories.get(category).and_then(|c| c.display_name.as_ref()) {
            Some(name) => name.clone(),
            None => python_title(category),
        }
    }

    /// The plugin with this unique id.
    pub fn get_plugin(&self, unique_id: &str) -> Option<&PluginMetadata> {
        self.by_id.get(unique_id).map(|&i| &self.entries[i].meta)
    }

    /// The plugins of one category, in registration order.
    pub fn plugins_by_category(&self, category: &str) -> Vec<&PluginMetadata> {
        self.by_category
            .get(category)
            .map(|ix| ix.iter().map(|&i| &self.entries[i].meta).collect())
            .unwrap_or_default()
    }

    /// Every plugin, in registration order.
    pub fn all_plugins(&self) -> Vec<&PluginMetadata> {
        self.entries.iter().map(|e| &e.meta).collect()
    }

    /// How many plugins are registered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no plugin is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The categories that have at least one plugin, sorted.
    pub fn categories_with_plugins(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .by_category
            .iter()
            .filter(|(_, ix)| !ix.is_empty())
            .map(|(c, _)| c)
            .collect();
        set.into_iter().cloned().collect()
    }

    /// The compiled config schema of a registered plugin (compiled on first
    /// use); `Ok(None)` for an unknown id.
    pub fn compiled_schema(&self, unique_id: &str) -> Result<Option<Arc<CompiledSchema>>, ConfigError> {
        let Some(&i) = self.by_id.get(unique_id) else {
            return Ok(None);
        };
        let entry = &self.entries[i];
        let compiled = entry.schema.get_or_init(|| {
            CompiledSchema::compile(unique_id, &entry.meta.config_schema)
                .map(Arc::new)
                .map_err(|e| match e {
                    ConfigError::BadSchema { reason, .. } => reason,
                    other => other.to_string(),
                })
        });
        match compiled {
            Ok(s) => Ok(Some(Arc::clone(s))),
            Err(reason) => Err(ConfigError::BadSchema {
                unique_id: unique_id.to_owned(),
                reason: reason.clone(),
            }),
        }
    }

    /// The saved config with schema defaults filled in; `{}` (plus defaults)
    /// when none is saved. Unknown ids are allowed, as in the seed.
    pub fn load_plugin_config(&self, unique_id: &str) -> Result<Map<String, Value>, ConfigError> {
        let schema = self.compiled_schema(unique_id)?;
        self.store.load_with_defaults(unique_id, schema.as_deref())
    }

    /// Checks `config` against the plugin's schema without saving.
    pub fn validate_plugin_config(&self, unique_id: &str, config: &Map<String, Value>) -> Result<(), ConfigError> {
        crate::config_store::check_id(unique_id)?;
        match self.compiled_schema(unique_id)? {
            Some(s) => s.validate(unique_id, &Value::Object(config.clone())),
            None => Ok(()),
        }
    }

    /// Validates `config` against the plugin's schema (when the plugin is
    /// registered) and saves it atomically; marks the plugin configured.
    pub fn save_plugin_config(&mut self, unique_id: &str, config: &Map<String, Value>) -> Result<(), ConfigError> {
        let schema = self.compiled_schema(unique_id)?;
        self.store.save(unique_id, config, schema.as_deref())?;
        self.set_configured(unique_id, true);
        Ok(())
    }

    /// Read-modify-write of a plugin's saved config under its cross-process
    /// lock ([`ConfigStore::update`]): `change` edits the saved config (no
    /// defaults filled; `{}` when none is saved), the result is validated
    /// against the plugin's schema and saved atomically; marks the plugin
    /// configured and returns the config as saved. Concurrent updates of
    /// different keys, from any number of processes, all land. When `change`
    /// fails nothing is written and its error is returned.
    ///
    /// ```
    /// use plugboard_core::{ConfigError, UnifiedPluginRegistry};
    /// use serde_json::json;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut registry = UnifiedPluginRegistry::new(dir.path());
    /// let saved = registry
    ///     .update_plugin_config("stt_whisper", |c| {
    ///         c.insert("device".into(), json!("cuda"));
    ///         Ok::<_, ConfigError>(())
    ///     })
    ///     .unwrap();
    /// assert_eq!(saved["device"], "cuda");
    /// ```
    pub fn update_plugin_config<E, F>(&mut self, unique_id: &str, change: F) -> Result<Map<String, Value>, E>
    where
        F: FnOnce(&mut Map<String, Value>) -> Result<(), E>,
        E: From<ConfigError>,
    {
        let schema = self.compiled_schema(unique_id)?;
        let saved = self.store.update(unique_id, schema.as_deref(), change)?;
        self.set_configured(unique_id, true);
        Ok(saved)
    }

    /// Deletes the saved config; `Ok(false)` when there was none. Marks the
    /// plugin unconfigured.
    pub fn delete_plugin_config(&mut self, unique_id: &str) -> Result<bool, ConfigError> {
        let deleted = self.store.delete(unique_id)?;
        self.set_configured(unique_id, false);
        Ok(deleted)
    }

    /// Re-reads `is_configured` of every plugin from the config dir (after
    /// another process saved or deleted configs).
    pub fn refresh_configured(&mut self) {
        let saved: HashSet<String> = self.store.ids().unwrap_or_default().into_iter().collect();
        for e in &mut self.entries {
            e.meta.is_configured = saved.contains(&e.meta.unique_id());
        }
    }

    fn set_configured(&mut self, unique_id: &str, configured: bool) {
        if let Some(&i) = self.by_id.get(unique_id) {
            self.entries[i].meta.is_configured = configured;
        }
    }
}

/// Python's `str.title()`: a cased character is upper-cased when the one
/// before it is not cased, and lower-cased otherwise.
///
/// ```
/// use plugboard_core::registry::python_title;
///
/// assert_eq!(python_title("speech_to_text"), "Speech_To_Text");
/// assert_eq!(python_title("LLM models"), "Llm Models");
/// assert_eq!(python_title("3d_mesh"), "3D_Mesh");
/// ```
pub fn python_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        let cased = c.is_uppercase() || c.is_lowercase();
        if cased && !prev_cased {
            out.extend(c.to_uppercase());
        } else if cased {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        prev_cased = cased;
    }
    out
}
