//! Firefox (Debian's `firefox-esr` package) driven over WebDriver BiDi,
//! which Firefox speaks natively (no geckodriver): `--remote-debugging-port=0`
//! prints `WebDriver BiDi listening on ws://127.0.0.1:PORT`, a websocket to
//! `/session` opens a session (`session.new`), and `browsingContext.*` /
//! `script.evaluate` drive the first tab. Protocol:
//! <https://w3c.github.io/webdriver-bidi/>.

use super::browser::{listening_addr, Driver, Process};

use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tungstenite::{Message, WebSocket};

/// Where Debian puts the browser (`firefox` where ESR is not the package).
const EXES: [&str; 2] = ["/usr/bin/firefox-esr", "/usr/bin/firefox"];

/// Preferences that keep a test profile off the network and free of
/// first-run pages (the remote agent sets more once it runs).
const USER_JS: &str = r#"
user_pref("app.update.disabledForTesting", true);
user_pref("app.normandy.enabled", false);
user_pref("browser.shell.checkDefaultBrowser", false);
user_pref("browser.startup.homepage_override.mstone", "ignore");
user_pref("browser.startup.page", 0);
user_pref("datareporting.policy.dataSubmissionEnabled", false);
user_pref("messaging-system.rsexperimentloader.enabled", false);
user_pref("network.captive-portal-service.enabled", false);
user_pref("network.connectivity-service.enabled", false);
user_pref("services.settings.server", "data:,#remote-settings-dummy/v1");
user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);
"#;

/// Starts headless Firefox with a `width`×`height` viewport on `url`.
pub fn launch(url: &str, width: u32, height: u32, profile: &Path) -> (Process, Box<dyn Driver>) {
    let exe = EXES
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("firefox is not installed: run `make deps` (Debian package `firefox-esr`)");
    std::fs::write(profile.join("user.js"), USER_JS).expect("write user.js");
    let mut cmd = Command::new(exe);
    cmd.args(["--headless", "--no-remote", "--remote-debugging-port=0", "--profile"])
        .arg(profile)
        .arg("about:blank")
        .env("MOZ_CRASHREPORTER_DISABLE", "1")
        // its own temporary files go with the profile
        .env("TMPDIR", profile);
    let mut process = Process::spawn(cmd, "firefox");
    let addr = listening_addr(&mut process, "WebDriver BiDi listening on ws://");
    let stream = TcpStream::connect(addr).expect("BiDi connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let (ws, _) = tungstenite::client(format!("ws://{addr}/session"), stream).expect("BiDi websocket");
    let mut bidi = Bidi { ws, next_id: 0, context: String::new() };
    bidi.call("session.new", json!({"capabilities": {}}));
    let tree = bidi.call("browsingContext.getTree", json!({"maxDepth": 0}));
    bidi.context = tree["contexts"][0]["context"].as_str().expect("a browsing context").to_string();
    let context = bidi.context.clone();
    bidi.call(
        "browsingContext.setViewport",
        json!({"context": context, "viewport": {"width": width, "height": height}}),
    );
    bidi.call("browsingContext.navigate", json!({"context": context, "url": url, "wait": "complete"}));
    (process, Box::new(bidi))
}

/// A BiDi session on the browser's first top-level browsing context.
struct Bidi {
    ws: WebSocket<TcpStream>,
    next_id: u64,
    context: String,
}

impl Bidi {
    /// Sends a command; its result (panics on an error answer).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("BiDi send");
        loop {
            let Message::Text(t) = self.ws.read().expect("BiDi read") else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("BiDi JSON");
            // events (none are subscribed) carry no id
            if v["id"] == id {
                assert_eq!(v["type"], "success", "{method}: {v}");
                return v["result"].clone();
            }
        }
    }
}

impl Driver for Bidi {
    fn eval(&mut self, js: &str) -> Value {
        let target = json!({"context": self.context});
        let r = self.call("script.evaluate", json!({"expression": js, "target": target, "awaitPromise": false}));
        assert_eq!(r["type"], "success", "{js}: {}", r["exceptionDetails"]);
        to_json(&r["result"])
    }

    fn screenshot(&mut self) -> String {
        let r = self.call("browsingContext.captureScreenshot", json!({"context": self.context}));
        r["data"].as_str().unwrap_or("").to_string()
    }

    fn set_viewport(&mut self, width: u32, height: u32) {
        let viewport = json!({"width": width, "height": height});
        self.call("browsingContext.setViewport", json!({"context": self.context, "viewport": viewport}));
    }
}

/// A BiDi `script.RemoteValue` as plain JSON: primitives as themselves,
/// arrays and objects recursively, anything else (`undefined`, `NaN`,
/// nodes, functions) as `Null`.
fn to_json(remote: &Value) -> Value {
    let items = || remote["value"].as_array().cloned().unwrap_or_default();
    match remote["type"].as_str().unwrap_or("") {
        "string" | "boolean" => remote["value"].clone(),
        "number" if remote["value"].is_number() => remote["value"].clone(),
        "bigint" => remote["value"].clone(),
        "array" => Value::Array(items().iter().map(to_json).collect()),
        "object" => Value::Object(
            items().iter().filter_map(|kv| Some((kv[0].as_str()?.to_string(), to_json(&kv[1])))).collect(),
        ),
        _ => Value::Null,
    }
}
