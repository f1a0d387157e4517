//! Command line: flags, the config file search, quick mode, and
//! the exit codes.

use crate::config::{self, Config, ConfigErrors};
use clap::Parser;
use std::path::PathBuf;

/// Exit code for invalid configuration or arguments.
pub const EXIT_CONFIG: u8 = 1;
/// Exit code for a failure to start (port in use, unreadable cert).
pub const EXIT_START: u8 = 2;

/// `switchyard` command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "HTTP load balancer: routes by App-Name to health-checked pools"
)]
pub struct Args {
    /// The YAML configuration file [default: conf/switchyard.yaml if it
    /// exists, else /etc/switchyard/switchyard.yaml]
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Load and validate the configuration, print the result, start nothing.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// Take the listening sockets over from a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Detach into the background (for Type=forking units).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Quick mode without a file: `KEY-http://h:p,...`; URLs without a KEY
    /// prefix form pool `default`, the default pool.
    #[arg(long = "backends", env = "SWITCHYARD_BACKENDS", value_name = "LIST")]
    pub backends: Option<String>,
    /// Print one effective setting of the configuration and exit
    /// (`pid_file`, `upgrade_sock`, `listen`); for scripts such as the
    /// upgrade script.
    #[arg(long = "show", value_name = "KEY")]
    pub show: Option<String>,
    /// Quick-mode listen port on 0.0.0.0 (1 to 65535).
    #[arg(
        long = "port",
        env = "SWITCHYARD_PORT",
        default_value_t = 8080,
        value_name = "PORT",
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub port: u16,
}

impl Args {
    /// The config file to use: `-c`, else `conf/switchyard.yaml` if it
    /// exists, else `/etc/switchyard/switchyard.yaml`. `None` in quick mode.
    pub fn config_path(&self) -> Option<PathBuf> {
        if self.backends.is_some() && self.config.is_none() {
            return None;
        }
        Some(self.config.clone().unwrap_or_else(|| {
            let local = PathBuf::from("conf/switchyard.yaml");
            if local.exists() {
                local
            } else {
                PathBuf::from("/etc/switchyard/switchyard.yaml")
            }
        }))
    }

    /// Loads the configuration this command line names.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        match (self.config_path(), &self.backends) {
            (Some(path), _) => config::load(&path),
            (None, Some(list)) => config::quick::from_backends(list, self.port),
            (None, None) => unreachable_config(),
        }
    }
}

/// The value `--show KEY` prints, or an error naming the known keys.
pub fn show(config: &Config, key: &str) -> Result<String, String> {
    match key {
        "pid_file" => Ok(config.server.pid_file.clone()),
        "upgrade_sock" => Ok(config.server.upgrade_sock.clone()),
        "listen" => Ok(config
            .listen
            .iter()
            .map(|l| l.addr.as_str())
            .collect::<Vec<_>>()
            .join(" ")),
        other => Err(format!(
            "--show: unknown key {other:?} (pid_file, upgrade_sock, listen)"
        )),
    }
}

fn unreachable_config() -> Result<Config, ConfigErrors> {
    Err(ConfigErrors {
        source: "command line".into(),
        errors: vec![config::ConfigError::new("", "no configuration given")],
    })
}
