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
    /// Reads the state file; a missing file is an empty state. Errors name
    /// the file and say what is wrong with it.
    pub fn load(path: &Path) -> Result<AdminState, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| format!("{}: invalid admin state: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AdminState::default()),
            Err(e) => Err(format!("{}: cannot read admin state: {e}", path.display())),
        }
    }

    /// Reads the state file, never failing: a file that cannot be read or
    /// parsed (truncated by a crash, edited by hand) is renamed aside to
    /// `PATH.corrupt-UNIXTIME` and the state starts empty, i.e. from the
    /// YAML file alone. The second value says what happened, for a loud log
    /// line.
    pub fn load_or_set_aside(path: &Path) -> (AdminState, Option<String>) {
        match AdminState::load(path) {
            Ok(s) => (s, None),
            Err(why) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut aside = path.as_os_str().to_owned();
                aside.push(format!(".corrupt-{secs}"));
                let aside = std::path::PathBuf::from(aside);
                let what = match std::fs::rename(path, &aside) {
                    Ok(()) => format!("set aside as {}", aside.display()),
                    Err(e) => format!("could not be set aside as {}: {e}", aside.display()),
                };
                let msg = format!(
                    "{why}; the file was {what}; starting from the configuration file \
                     alone: admin changes (added, removed, drained backends) are lost"
                );
                (AdminState::default(), Some(msg))
            }
        }
    }

    /// Writes the state file durably: a temporary file in the same
    /// directory (created exclusively, with an unpredictable name, mode
    /// 0600), fsync'd, renamed over `path`, then the directory fsync'd, so a
    /// crash leaves either the old or the new file, never a truncated one.
    /// Blocking: call it on a blocking thread.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())? + "\n";
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => std::path::PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let fail = |e: std::io::Error| format!("{}: cannot save admin state: {e}", path.display());
        let mut tmp = tempfile::Builder::new()
            .prefix(".state.")
            .suffix(".tmp")
            .tempfile_in(&dir)
            .map_err(fail)?;
        tmp.write_all(text.as_bytes()).map_err(fail)?;
        tmp.as_file().sync_all().map_err(fail)?;
        tmp.persist(path).map_err(|e| fail(e.error))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(fail)
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
                match backend_from_url(&a.url, a.weight).map(|mut b| {
                    b.source = super::BackendSource::Admin;
                    b
                }) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sy-state-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).expect("dir");
        d
    }

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let d = dir().join("rt");
        let path = d.join("state.json");
        let mut s = AdminState::default();
        s.pools
            .entry("web".into())
            .or_default()
            .removed
            .push("http://a:1".into());
        s.save(&path).expect("save");
        assert_eq!(AdminState::load(&path).expect("load"), s);
        let names: Vec<_> = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unparsable_state_file_is_set_aside_and_the_state_starts_empty() {
        let d = dir().join("bad");
        std::fs::create_dir_all(&d).expect("dir");
        let path = d.join("state.json");
        std::fs::write(&path, "{\"pools\": {\"web\": {\"added\": [").expect("write");
        assert!(AdminState::load(&path).is_err());
        let (s, problem) = AdminState::load_or_set_aside(&path);
        assert_eq!(s, AdminState::default());
        assert!(problem.is_some_and(|p| p.contains("set aside")));
        assert!(!path.exists());
        let aside = std::fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("state.json.corrupt-")
            });
        assert!(aside);
        // a missing file is simply empty
        assert_eq!(
            AdminState::load_or_set_aside(&path),
            (AdminState::default(), None)
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}
