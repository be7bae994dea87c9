//! A started worker seen as a core [`Plugin`] with the [`Lifecycle`]
//! capability, so the seed's helpers (`get_all_managed_pids`,
//! `force_cleanup`…) work on supervised plugins of every mode.

use std::sync::{Arc, Weak};

use plugboard_core::{CapabilityError, Lifecycle, Plugin};
use serde_json::{Map, Value, json};

use super::{Inner, Slot, stop};

/// A started worker as a core plugin.
pub struct SupervisedPlugin {
    inner: Weak<Inner>,
    slot: Arc<Slot>,
}

impl SupervisedPlugin {
    pub(super) fn new(inner: Weak<Inner>, slot: Arc<Slot>) -> Self {
        SupervisedPlugin { inner, slot }
    }
}

impl Plugin for SupervisedPlugin {
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl Lifecycle for SupervisedPlugin {
    fn execution_mode(&self) -> plugboard_core::ExecutionMode {
        self.slot.st().manifest.execution_mode
    }

    fn child_pids(&self) -> Vec<u32> {
        self.slot.pids()
    }

    fn managed_resources(&self) -> Map<String, Value> {
        let st = self.slot.status();
        let mut m = Map::new();
        m.insert("state".into(), json!(st.state));
        m.insert("backend".into(), json!(st.backend));
        m.insert("resource".into(), json!(st.resource));
        m.insert("endpoint".into(), json!(st.endpoint));
        m.insert("pids".into(), json!(self.child_pids()));
        m.insert("pid".into(), json!(st.pid));
        m.insert("pgid".into(), json!(st.pid));
        m.insert("resource_id".into(), json!(st.resource_id));
        m.insert("listen".into(), json!(st.listen));
        m.insert("log_path".into(), json!(st.log_path));
        if let Some(env) = &self.slot.st().manifest.launch.conda_env {
            m.insert("conda_env".into(), json!(env));
        }
        m
    }

    fn force_cleanup(&self) -> Result<(), CapabilityError> {
        let Some(inner) = self.inner.upgrade() else {
            return Ok(());
        };
        let slot = Arc::clone(&self.slot);
        // The capability is synchronous; the stop runs on a runtime of its own.
        let result = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                // Force: no grace beyond what the backend needs.
                match stop::stop(&inner, &slot).await {
                    Ok(()) | Err(crate::error::HostError::NotRunning { .. }) => Ok(()),
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                }
            })
        })
        .join()
        .map_err(|_| CapabilityError::from("cleanup thread panicked".to_string()))?;
        result.map_err(|e| CapabilityError::from(e.to_string()))
    }
}
