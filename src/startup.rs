//! Everything a new instance loads and checks before it takes the listening
//! sockets, and what `switchyard -t` reports about the same.
//!
//! A graceful upgrade (`-u`) takes the sockets from the running instance in
//! pingora's `bootstrap()`; once it has them, the old instance is on its way
//! out. So nothing that can fail may come after that point: the YAML file
//! and the admin token (read by [`config::load`](crate::config::load)), the
//! admin state file and the access log are all loaded here, before.
//!
//! The state file is never a reason to exit: one that cannot be read or
//! parsed is set aside (`state.json.corrupt-UNIXTIME`), logged at error
//! level, and the instance starts from the YAML file (SPEC §5).

use crate::access_log;
use crate::config::AdminState;
use crate::config::{AccessLog, Config};
use crate::log_output::Sink;
use std::path::Path;
use std::sync::Arc;

/// What a starting instance runs on, all loaded and checked.
pub struct Prepared {
    /// The configuration file as loaded.
    pub file: Arc<Config>,
    /// Admin changes from `admin.state_file` (empty when there is none).
    pub state: AdminState,
    /// The file with the admin changes applied: what is served.
    pub effective: Arc<Config>,
    /// The open access log destination.
    pub access_log: Sink,
}

/// The state file `config` names, if any.
fn state_file(config: &Config) -> Option<&Path> {
    config
        .admin
        .as_ref()
        .and_then(|a| a.state_file.as_deref())
        .map(Path::new)
}

/// Loads the admin state (setting an unusable file aside) and opens the
/// access log. Blocking file I/O: call it before the runtime starts. The
/// error (an access log that cannot be opened) names the file.
pub fn prepare(file: Config) -> Result<Prepared, String> {
    let state = match state_file(&file) {
        Some(path) => {
            let (state, problem) = AdminState::load_or_set_aside(path);
            if let Some(p) = problem {
                log::error!("admin state file {}: {p}", path.display());
            }
            state
        }
        None => AdminState::default(),
    };
    let (effective, warnings) = state.apply(&file);
    for w in warnings {
        log::warn!("{w}");
    }
    let access_log = access_log::open_sink(&effective.log)?;
    Ok(Prepared {
        file: Arc::new(file),
        state,
        effective: Arc::new(effective),
        access_log,
    })
}

/// What `-t` finds beyond the configuration file itself, changing nothing:
/// `errors` would stop a start, `warnings` are worked around at start (an
/// unusable state file is set aside).
#[derive(Debug, Default)]
pub struct Report {
    /// Problems that make a start fail.
    pub errors: Vec<String>,
    /// Problems a start works around, each saying how.
    pub warnings: Vec<String>,
}

/// Checks the state file and the access log of `config` without changing
/// either (blocking file I/O).
pub fn check(config: &Config) -> Report {
    let mut report = Report::default();
    if let Some(path) = state_file(config) {
        match AdminState::load(path) {
            Ok(state) => report.warnings.extend(state.apply(config).1),
            Err(why) => report.warnings.push(format!(
                "{why}; a start sets the file aside ({}.corrupt-UNIXTIME) and serves the \
                 configuration file without the admin changes",
                path.display()
            )),
        }
    }
    if let AccessLog::File(path) = &config.log.access {
        if let Err(e) = can_append(Path::new(path)) {
            report.errors.push(format!(
                "log.access: cannot open the access log {path}: {e}"
            ));
        }
    }
    report
}

/// Whether `path` can be opened for appending, without creating it.
fn can_append(path: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            match dir.map(std::fs::metadata) {
                Some(Ok(m)) if !m.is_dir() => Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "its parent is not a directory",
                )),
                Some(Err(e)) => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `yaml` plus one pool, parsed.
    fn config(yaml: &str) -> Config {
        let yaml = format!(
            "{yaml}pools: {{ web: {{ backends: [{{ url: \"http://127.0.0.1:9\" }}] }} }}\n"
        );
        crate::config::parse(&yaml, "test.yaml").expect("valid config")
    }

    #[test]
    fn check_reports_an_unopenable_access_log_and_an_unreadable_state_file() {
        let dir = std::env::temp_dir().join(format!("sy-startup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let state = dir.join("state.json");
        std::fs::write(&state, "{ truncated").expect("state");
        let yaml = format!(
            "admin: {{ listen: \"127.0.0.1:9\", state_file: \"{}\" }}\n\
             log: {{ access: \"{}/missing/access.log\" }}\n",
            state.display(),
            dir.display()
        );
        let report = check(&config(&yaml));
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert!(report.errors[0].contains("log.access"), "{report:?}");
        assert_eq!(report.warnings.len(), 1, "{report:?}");
        assert!(
            report.warnings[0].contains("sets the file aside"),
            "{report:?}"
        );
        assert!(state.exists(), "check must not move the state file");

        // prepare sets it aside and fails on the access log only
        let ok = format!(
            "admin: {{ listen: \"127.0.0.1:9\", state_file: \"{}\" }}\n",
            state.display()
        );
        let prepared = prepare(config(&ok)).map_err(|e| e.to_string());
        assert!(prepared.is_ok_and(|p| p.state == AdminState::default()));
        assert!(!state.exists());
        assert!(prepare(config(&yaml)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
