//! Chromium (Debian's `chromium` package) driven over the Chrome DevTools
//! Protocol: `--remote-debugging-port=0` prints the browser's websocket on
//! stderr, `/json/list` names the page target, and `Runtime.evaluate` /
//! `Page.captureScreenshot` run on that target's websocket.

use super::browser::{listening_addr, Driver, Process};
use crate::common::*;

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// Where Debian and Ubuntu put the browser.
const EXES: [&str; 2] = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];

/// Starts headless chromium with a `width`×`height` viewport on `url`.
pub fn launch(url: &str, width: u32, height: u32, profile: &Path) -> (Process, Box<dyn Driver>) {
    let exe = EXES
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: run `make deps` (Debian package `chromium`)");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--headless",
        // tests run as root in CI containers, where the sandbox cannot start
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        &format!("--user-data-dir={}", profile.display()),
        &format!("--window-size={width},{height}"),
        url,
    ]);
    // its own temporary files (org.chromium.Chromium.*) go with the profile
    cmd.env("TMPDIR", profile);
    let mut process = Process::spawn(cmd, "chromium");
    // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
    let addr = listening_addr(&mut process, "DevTools listening on ws://");
    let page_ws = page_target(addr).unwrap_or_else(|| panic!("chromium shows no page\n{}", process.stderr()));
    let stream = TcpStream::connect(addr).expect("DevTools connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let (ws, _) = tungstenite::client(page_ws.as_str(), stream).expect("DevTools websocket");
    let mut cdp = Cdp { ws, next_id: 0 };
    // the window size includes the browser's frame: make the viewport exact
    cdp.set_viewport(width, height);
    (process, Box::new(cdp))
}

/// The websocket URL of the first page target.
fn page_target(addr: SocketAddr) -> Option<String> {
    let mut page_ws = None;
    poll_until(Duration::from_secs(10), || {
        let Ok(r) = try_get(addr, "/json/list", &[]) else {
            return false;
        };
        page_ws = r.json().as_array().and_then(|ts| {
            ts.iter().find(|t| t["type"] == "page").and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
        });
        page_ws.is_some()
    });
    page_ws
}

/// One page target's DevTools websocket.
struct Cdp {
    ws: WebSocket<TcpStream>,
    next_id: u64,
}

impl Cdp {
    /// Calls a DevTools method; its result (panics on a protocol error).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("DevTools send");
        loop {
            let Message::Text(t) = self.ws.read().expect("DevTools read") else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

impl Driver for Cdp {
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true}));
        assert!(r.get("exceptionDetails").is_none(), "{js}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    fn screenshot(&mut self) -> String {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        r["data"].as_str().unwrap_or("").to_string()
    }

    fn set_viewport(&mut self, width: u32, height: u32) {
        let metrics = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false});
        self.call("Emulation.setDeviceMetricsOverride", metrics);
    }
}
