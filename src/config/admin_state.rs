//! Admin changes that outlive reloads, restarts and upgrades: backends
//! added, removed, drained or re-enabled through the admin API, kept in
//! `admin.state_file` as JSON and applied on top of the YAML file's pools
//! every time the configuration is built.

use super::{backend_from_url, Config};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Every admin change, by pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    /// Changes per pool name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolChanges>,
}

/// The admin changes of one pool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolChanges {
    /// Backends added (not in the file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added: Vec<AddedBackend>,
    /// URLs of file backends removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Enablement set by `PATCH`, by URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enabled: BTreeMap<String, bool>,
}

/// A backend added through the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedBackend {
    /// Normalised URL.
    pub url: String,
    /// Weight (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<usize>,
}

impl AdminState {
    /// Reads the state file; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<AdminState, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid admin state: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminState::default()),
            Err(e) => Err(format!("{}: cannot read admin state: {e}", path.display())),
        }
    }

    /// Writes the state file atomically (temporary file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text + "\n").map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file's configuration with these changes applied, and a warning
    /// for each change that no longer fits it (unknown pool, bad URL).
    pub fn apply(&self, file: &Config) -> (Config, Vec<String>) {
        let mut c = file.clone();
        let mut warnings = Vec::new();
        for (name, ch) in &self.pools {
            let Some(p) = c.pools.get_mut(name) else {
                warnings.push(format!(
                    "admin state names pool {name:?}, which the file no longer has"
                ));
                continue;
            };
            p.backends.retain(|b| !ch.removed.contains(&b.url));
            for a in &ch.added {
                match backend_from_url(&a.url, a.weight) {
                    Ok(b)
                        if !p
                            .backends
                            .iter()
                            .any(|x| x.url == b.url || x.addr == b.addr) =>
                    {
                        p.backends.push(b)
                    }
                    Ok(_) => {} // the file has it now
                    Err(e) => warnings.push(format!("pool {name}: admin-added backend: {e}")),
                }
            }
            for (url, on) in &ch.enabled {
                if let Some(b) = p.backends.iter_mut().find(|b| b.url == *url) {
                    b.enabled = *on;
                }
            }
        }
        (c, warnings)
    }
}
