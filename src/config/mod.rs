//! Configuration: the YAML file read into [`raw::RawConfig`], then
//! checked and resolved into the validated [`Config`] the rest of the program
//! uses.
//!
//! Loading never stops at the first problem: [`load`] returns every error at
//! once as [`ConfigErrors`], each naming the file, the key path and, where
//! known, the line.

mod admin_state;
pub mod cache;
pub mod edge;
mod pool;
pub mod quick;
pub mod raw;
pub mod units;
mod validate;
mod validate_backend;
mod validate_discovery;
mod validate_pool;

pub use admin_state::{AddedBackend, AdminState, PoolChanges};
pub use cache::{CachePolicy, CacheStoreSettings};
pub use edge::{CertPair, ClientLimits, ListenerTls, RateKey, RateLimit, UpstreamTls};
pub use pool::*;
pub use validate::validate;
pub use validate_backend::backend_from_url;

use http::HeaderName;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

/// A validated configuration, ready to build pools and a pingora server from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Process settings (pingora `ServerConf`).
    pub server: ServerSettings,
    /// Addresses to listen on.
    pub listen: Vec<Listener>,
    /// How a request picks its pool.
    pub routing: Routing,
    /// The pools, by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Access log settings.
    pub log: LogSettings,
    /// Admin API; `None` means no admin listener.
    pub admin: Option<AdminSettings>,
    /// The shared response store; `None` means no pool caches.
    pub cache: Option<CacheStoreSettings>,
}

/// `admin:` after checks.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// `host:port` of the admin listener.
    pub listen: String,
    /// The bearer token every endpoint but `/healthz` requires; `None` is
    /// no auth (the listener is then loopback-only).
    pub token: Option<String>,
    /// File keeping admin changes; `None` keeps them in memory only.
    pub state_file: Option<String>,
}

impl fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("state_file", &self.state_file)
            .finish()
    }
}

/// `server:` after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Worker threads of the proxy (default: one per CPU).
    pub threads: usize,
    /// PID file (default `/tmp/switchyard.pid`).
    pub pid_file: String,
    /// Upgrade socket (default `/tmp/switchyard_upgrade.sock`).
    pub upgrade_sock: String,
    /// Error log file; `None` is stderr.
    pub error_log: Option<String>,
    /// Grace period after SIGQUIT/SIGTERM, seconds (default 5).
    pub grace_period_seconds: u64,
    /// Final shutdown timeout, seconds (default 5).
    pub graceful_shutdown_timeout_seconds: u64,
    /// User to run as after daemonizing.
    pub user: Option<String>,
    /// Group to run as after daemonizing.
    pub group: Option<String>,
    /// Upstream keep-alive pool size; `None` is pingora's default.
    pub upstream_keepalive_pool_size: Option<usize>,
    /// Tokio work stealing between worker threads (default: on with several
    /// threads, off with one, where a single current-thread runtime is
    /// cheaper per request; README "Performance").
    pub work_stealing: bool,
    /// Forward request headers whose names contain `_` (default false: they
    /// are dropped before forwarding, nginx's `underscores_in_headers off`,
    /// so a backend mapping `_` and `-` alike never sees a spoofed header).
    /// Applied by a reload, unlike the other `server` keys.
    pub underscores_in_headers: bool,
}

impl ServerSettings {
    /// Whether `other` differs in a key that needs a binary upgrade (all
    /// but `underscores_in_headers`, which a reload applies).
    pub fn needs_upgrade_to_become(&self, other: &ServerSettings) -> bool {
        let mut same = other.clone();
        same.underscores_in_headers = self.underscores_in_headers;
        *self != same
    }
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// `host:port` exactly as written (pingora matches inherited sockets by this string).
    pub addr: String,
    /// TLS termination; `None` is plain HTTP.
    pub tls: Option<ListenerTls>,
    /// Limits on this listener's clients.
    pub limits: ClientLimits,
}

/// `routing:` after defaults.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Header naming the pool (default `app-name`).
    pub header: HeaderName,
    /// Pool used for a missing or unknown header value; `None` answers 404.
    pub default_pool: Option<String>,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLog {
    /// Not written.
    Off,
    /// To standard output.
    Stdout,
    /// Appended to a file.
    File(String),
}

/// `log:` after defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Destination.
    pub access: AccessLog,
    /// `true` for JSON lines, `false` for text.
    pub json: bool,
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `pools.web.backends[1].url`; empty for file-level errors.
    pub path: String,
    /// What is wrong, in lowercase without a trailing period.
    pub message: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
}

impl ConfigError {
    /// An error at `path` with no line yet.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
            line: None,
        }
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct ConfigErrors {
    /// The file (or `--backends` for quick mode).
    pub source: String,
    /// The problems, in file order where known.
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", self.source)?;
            if let Some(line) = e.line {
                write!(f, ":{line}")?;
            }
            if e.path.is_empty() {
                write!(f, ": {}", e.message)?;
            } else {
                write!(f, ": {}: {}", e.path, e.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        source: source.clone(),
        errors: vec![ConfigError::new("", format!("cannot read file: {e}"))],
    })?;
    parse(&text, &source)
}

/// Parses and validates YAML `text`; `source` names it in errors.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigErrors> {
    let fail = |errors| ConfigErrors {
        source: source.to_string(),
        errors,
    };
    let raw: raw::RawConfig = if text.trim().is_empty() {
        raw::RawConfig::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| fail(vec![yaml_error(&e, text)]))?
    };
    validate(raw).map_err(|mut errors| {
        for e in &mut errors {
            e.line = e.line.or_else(|| locate(text, &e.path));
        }
        errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
        fail(errors)
    })
}

/// Turns a serde_yaml error into a [`ConfigError`], splitting off the key
/// path and the location serde_yaml appends.
fn yaml_error(e: &serde_yaml::Error, text: &str) -> ConfigError {
    let mut message = e.to_string();
    if let Some(at) = message.find(" at line ") {
        message.truncate(at);
    }
    // serde names our internal types; say what the file needs instead
    while let Some(at) = message.find("struct Raw") {
        let end = message[at + 7..]
            .find(|c: char| !c.is_alphanumeric())
            .map_or(message.len(), |i| at + 7 + i);
        message.replace_range(at..end, "a mapping of keys");
    }
    let (path, message) = match message.split_once(": ") {
        Some((p, m)) if !p.contains(' ') && !p.is_empty() => (p.to_string(), m.to_string()),
        _ => (String::new(), message),
    };
    let mut line = e.location().map(|l| l.line());
    let mut path = path;
    // serde_yaml places a duplicate key at the start of its mapping: name
    // the key and the line of its second occurrence instead
    if let Some(key) = message
        .strip_prefix("duplicate field `")
        .and_then(|m| m.strip_suffix('`'))
    {
        let second = text
            .lines()
            .enumerate()
            .skip(line.map_or(0, |l| l.saturating_sub(1)))
            .filter(|(_, l)| {
                let l = l
                    .trim_start()
                    .trim_start_matches("- ")
                    .trim_start_matches('{');
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .nth(1);
        if let Some((i, _)) = second {
            line = Some(i + 1);
            path = if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            };
        }
    }
    ConfigError {
        path,
        message,
        line,
    }
}

/// Best-effort line of a key path in the file: walks the path's keys in
/// order, each searched from the previous one's line on (block or flow
/// style).
fn locate(text: &str, path: &str) -> Option<usize> {
    if path.is_empty() {
        return None;
    }
    let lines: Vec<&str> = text.lines().collect();
    let has_key = |line: &str, key: &str| {
        let l = line.trim_start().trim_start_matches("- ");
        l.starts_with(&format!("{key}:"))
            || [
                format!("{{{key}:"),
                format!("{{ {key}:"),
                format!(", {key}:"),
                format!(",{key}:"),
            ]
            .iter()
            .any(|p| line.contains(p.as_str()))
    };
    let mut from = 0;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let at = (from..lines.len()).find(|&i| has_key(lines[i], key))?;
        from = at;
        if let Some(n) = index {
            // the n-th list item below the key (block style only)
            if let Some(item) = (at + 1..lines.len())
                .filter(|&i| lines[i].trim_start().starts_with("- "))
                .nth(n)
            {
                from = item;
            }
        }
    }
    Some(from + 1)
}

#[cfg(test)]
mod tests;
