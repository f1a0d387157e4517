//! What the status page tests need of a browser, whichever it is: start it
//! headless on a page ([`Browser::open`]), evaluate JavaScript in the page,
//! take a screenshot. Each browser is its own process group, started with a
//! temporary profile and killed by its PID (the group's) when the [`Tab`]
//! is dropped, so no content process outlives a test.

use super::{chromium, firefox};
use crate::common::*;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The browsers the page is checked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Browser {
    /// Debian's `chromium`, over the DevTools protocol.
    Chromium,
    /// Debian's `firefox-esr`, over WebDriver BiDi.
    Firefox,
}

/// One page in a browser, driven by its remote protocol.
pub trait Driver {
    /// Evaluates `js` (a script: its last expression is the value) in the
    /// page; that value as JSON (`Null` for `undefined`). Panics when `js`
    /// throws.
    fn eval(&mut self, js: &str) -> Value;
    /// A PNG of the viewport, base64-encoded.
    fn screenshot(&mut self) -> String;
    /// Sets the viewport to `width`×`height` CSS pixels (device pixel ratio 1).
    fn set_viewport(&mut self, width: u32, height: u32);
}

/// A browser showing one page; the browser is killed on drop.
pub struct Tab {
    // dropped in this order: the connection, then the processes, then the profile
    driver: Box<dyn Driver>,
    _process: Process,
    _profile: TempDir,
}

impl Browser {
    /// The status page at `url` in a `width`×`height` viewport, loaded.
    pub fn open(self, url: &str, width: u32, height: u32) -> Tab {
        let profile = TempDir::new();
        let (process, driver) = match self {
            Browser::Chromium => chromium::launch(url, width, height, profile.path()),
            Browser::Firefox => firefox::launch(url, width, height, profile.path()),
        };
        let mut tab = Tab { driver, _process: process, _profile: profile };
        // chromium's target may still show about:blank: wait for the page's own form
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete' \
             && !!document.getElementById('tokenform')",
            Value::String(url.to_string())
        );
        tab.wait_js(&loaded, Duration::from_secs(15)).unwrap_or_else(|| panic!("{self:?}: the page did not load"));
        tab
    }
}

impl Tab {
    /// Evaluates `js` in the page; its JSON value (`Null` if none).
    pub fn eval(&mut self, js: &str) -> Value {
        self.driver.eval(js)
    }

    /// Polls `js` until it evaluates to `true`; the time it took, or `None`.
    pub fn wait_js(&mut self, js: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        poll_until(timeout, || self.eval(js) == Value::Bool(true)).then(|| start.elapsed())
    }

    /// Resizes the viewport to `width`×`height`, without reloading the page.
    pub fn set_viewport(&mut self, width: u32, height: u32) {
        self.driver.set_viewport(width, height);
        let resized = format!("innerWidth === {width} && innerHeight === {height}");
        self.wait_js(&resized, Duration::from_secs(5)).expect("viewport resized");
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let b64 = self.driver.screenshot();
        base64::engine::general_purpose::STANDARD.decode(b64).expect("base64 PNG")
    }
}

/// A browser's process group, killed on drop; its stderr is kept.
pub struct Process {
    child: Child,
    name: &'static str,
    stderr: Arc<Mutex<String>>,
    lines: Receiver<String>,
}

impl Process {
    /// Starts `cmd` (stdin and stdout closed) as the leader of a new process
    /// group, reading its stderr.
    pub fn spawn(mut cmd: Command, name: &'static str) -> Process {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = channel();
        let kept = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut s) = kept.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        Process { child, name, stderr, lines }
    }

    /// What the browser printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // the whole group: the browser and the content processes it started
            // SAFETY: kill(2) on a process group we created; no memory involved.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `127.0.0.1:PORT` that follows `marker` (such as `"... on ws://"`) in
/// the browser's stderr, within 30 s.
pub fn listening_addr(process: &mut Process, marker: &str) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = process.lines.recv_timeout(left) else {
            panic!("{} did not print {marker:?}; its stderr:\n{}", process.name, process.stderr());
        };
        if let Some(rest) = line.split(marker).nth(1) {
            let host = rest.split(['/', ' ']).next().unwrap_or("");
            return host.parse().unwrap_or_else(|e| panic!("{} address {host:?}: {e}", process.name));
        }
    }
}
