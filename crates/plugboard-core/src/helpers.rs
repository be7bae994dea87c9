//! Filters and statistics over lists of plugin metadata (the seed's
//! `utils.helpers`), with `by_category` filled in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::execution_mode::ExecutionMode;
use crate::metadata::PluginMetadata;

/// The plugins whose execution mode is `mode`.
pub fn filter_plugins_by_execution_mode<'a, I>(plugins: I, mode: ExecutionMode) -> Vec<&'a PluginMetadata>
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    plugins.into_iter().filter(|p| p.execution_mode == mode).collect()
}

/// The plugins that run on cloud or remote resources.
#[doc(alias = "get_cloud_plugins")]
pub fn cloud_plugins<'a, I>(plugins: I) -> Vec<&'a PluginMetadata>
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    plugins.into_iter().filter(|p| p.is_cloud_execution()).collect()
}

/// The plugins that run locally.
#[doc(alias = "get_local_plugins")]
pub fn local_plugins<'a, I>(plugins: I) -> Vec<&'a PluginMetadata>
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    plugins.into_iter().filter(|p| p.is_local_execution()).collect()
}

/// The plugins that have a saved configuration.
#[doc(alias = "get_configured_plugins")]
pub fn configured_plugins<'a, I>(plugins: I) -> Vec<&'a PluginMetadata>
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    plugins.into_iter().filter(|p| p.is_configured).collect()
}

/// The plugins that still need configuration.
#[doc(alias = "get_unconfigured_plugins")]
pub fn unconfigured_plugins<'a, I>(plugins: I) -> Vec<&'a PluginMetadata>
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    plugins.into_iter().filter(|p| !p.is_configured).collect()
}

/// Statistics about a list of plugins (the seed's `get_plugin_stats` dict,
/// same keys).
///
/// ```
/// use plugboard_core::{plugin_stats, ExecutionMode, PluginMetadata};
///
/// let a = PluginMetadata::new("a", "stt", "A");
/// let b = PluginMetadata::new("b", "llm", "B").with_mode(ExecutionMode::CloudGpu);
/// let stats = plugin_stats([&a, &b]);
/// assert_eq!((stats.total, stats.local, stats.cloud), (2, 1, 1));
/// assert_eq!(stats.by_category["stt"], 1);
/// assert_eq!(serde_json::to_value(&stats).unwrap()["by_category"]["llm"], 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStats {
    /// Number of plugins.
    pub total: usize,
    /// Plugins with a saved config.
    pub configured: usize,
    /// Plugins without a saved config.
    pub unconfigured: usize,
    /// Plugins that run locally.
    pub local: usize,
    /// Plugins that run on cloud or remote resources.
    pub cloud: usize,
    /// Plugins holding processes, containers or running remote resources.
    pub with_active_resources: usize,
    /// Number of plugins per category, sorted by category.
    pub by_category: BTreeMap<String, usize>,
}

/// Computes [`PluginStats`] in one pass.
#[doc(alias = "get_plugin_stats")]
pub fn plugin_stats<'a, I>(plugins: I) -> PluginStats
where
    I: IntoIterator<Item = &'a PluginMetadata>,
{
    let mut s = PluginStats::default();
    // Plugins come grouped by category (a registry lists them so): count a
    // run of one category, then add it to the map.
    let mut run: Option<(&'a str, usize)> = None;
    for p in plugins {
        s.total += 1;
        if p.is_configured {
            s.configured += 1;
        } else {
            s.unconfigured += 1;
        }
        if p.is_local_execution() {
            s.local += 1;
        } else {
            s.cloud += 1;
        }
        if p.has_active_resources() {
            s.with_active_resources += 1;
        }
        match &mut run {
            Some((category, n)) if *category == p.category => *n += 1,
            _ => {
                if let Some((category, n)) = run.replace((p.category.as_str(), 1)) {
                    count(&mut s.by_category, category, n);
                }
            }
        }
    }
    if let Some((category, n)) = run {
        count(&mut s.by_category, category, n);
    }
    s
}

fn count(by_category: &mut BTreeMap<String, usize>, category: &str, n: usize) {
    match by_category.get_mut(category) {
        Some(total) => *total += n,
        None => {
            by_category.insert(category.to_owned(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_are_counted_whether_grouped_or_interleaved() {
        let p = |name: &str, category: &str| PluginMetadata::new(name, category, name);
        let list = [
            p("a", "stt"),
            p("b", "llm"),
            p("c", "stt"),
            p("d", "stt"),
            p("e", "llm"),
            p("f", "tts"),
        ];
        let stats = plugin_stats(&list);
        assert_eq!(stats.total, 6);
        let want: BTreeMap<String, usize> = [("llm".into(), 2), ("stt".into(), 3), ("tts".into(), 1)].into();
        assert_eq!(stats.by_category, want);
        assert_eq!(plugin_stats(&[] as &[PluginMetadata]).by_category.len(), 0);
    }
}
