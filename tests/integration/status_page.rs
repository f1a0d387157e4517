//! The status page on the admin listener (`GET /`), driven in a real
//! headless browser: Debian's `chromium` over the DevTools protocol
//! (a websocket, no browser download). The page must show every
//! backend once given the token, show nothing without it, follow a health
//! flip without a page reload, and drain a backend from its button.
//!
//! With `SWITCHYARD_SCREENSHOT=PATH` the first test writes a screenshot of
//! the page to PATH (`docs/status-page.png` is the README's).

use crate::common::*;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tungstenite::{Message, WebSocket};

const TOKEN: &str = "page-test-token";

/// One browser at a time: the machine running the suite may be small.
fn one_browser() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A headless chromium showing one page, driven over the DevTools
/// protocol's websocket; killed by PID on drop.
struct Tab {
    child: Child,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    _profile: TempDir,
}

impl Drop for Tab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tab {
    /// Chromium with a `width`×`height` window, opened on `url`.
    fn open(url: &str, width: u32, height: u32) -> Tab {
        let exe = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is not installed: run `make deps` (Debian package `chromium`)");
        let profile = TempDir::new();
        let mut child = Command::new(exe)
            .args([
                "--headless",
                // tests run as root in CI containers, where the sandbox cannot start
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                &format!("--window-size={width},{height}"),
                url,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID"
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("ws://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or("").to_string());
                }
            }
        });
        let host = rx.recv_timeout(Duration::from_secs(30)).expect("chromium did not open its DevTools port");
        let addr: std::net::SocketAddr = host.parse().expect("DevTools address");
        let mut page_ws = None;
        poll_until(Duration::from_secs(10), || {
            let Ok(r) = try_get(addr, "/json/list", &[]) else {
                return false;
            };
            page_ws = r.json().as_array().and_then(|ts| {
                ts.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            page_ws.is_some()
        });
        let page_ws = page_ws.expect("no page target");
        let stream = TcpStream::connect(addr).expect("DevTools connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
        let (ws, _) = tungstenite::client(page_ws.as_str(), stream).expect("DevTools websocket");
        let mut tab = Tab { child, ws, next_id: 0, _profile: profile };
        // the target may still show about:blank: wait for the page's own form
        let loaded = format!(
            "location.href === {} && document.readyState === 'complete' \
             && !!document.getElementById('tokenform')",
            Value::String(url.to_string())
        );
        tab.wait_js(&loaded, Duration::from_secs(15)).expect("page load");
        tab
    }

    /// Calls a DevTools method; its result (panics on a protocol error).
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).expect("DevTools send");
        loop {
            let m = self.ws.read().expect("DevTools read");
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(t.as_str()).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `js` in the page; its JSON value (`Null` if none).
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({"expression": js, "returnByValue": true}));
        r["result"]["value"].clone()
    }

    /// Polls `js` until it evaluates to `true`; the time it took, or `None`.
    fn wait_js(&mut self, js: &str, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        poll_until(timeout, || self.eval(js) == Value::Bool(true)).then(|| start.elapsed())
    }

    /// A PNG of the viewport.
    fn screenshot(&mut self) -> Vec<u8> {
        use base64::Engine as _;
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap_or("")).expect("base64 PNG")
    }
}

/// The page of `sy` in a `width`×`height` browser window.
fn open(sy: &Switchyard, width: u32, height: u32) -> Tab {
    Tab::open(&format!("http://{}/", sy.admin_addr()), width, height)
}

/// Enters the token in the page's form.
fn enter_token(tab: &mut Tab, token: &str) {
    let js = format!(
        "document.getElementById('token').value = {}; \
         document.getElementById('tokenform').requestSubmit(); true",
        Value::String(token.into())
    );
    tab.eval(&js);
}

/// JS: the state word shown for backend `url`.
fn state_js(url: &str) -> String {
    format!("(document.querySelector('tr[data-url=\"{url}\"] .state') || {{}}).dataset?.state")
}

/// Switchyard with an admin token and HTTP health checks every `interval`.
fn start(pools: &str) -> Switchyard {
    let yaml = format!(
        "listen: [{{addr: \"{{listen}}\"}}]\n\
         admin: {{listen: \"{{admin}}\", token_env: SY_PAGE_TOKEN}}\n\
         routing: {{default_pool: web}}\n\
         pools:\n{pools}"
    );
    let sy = Switchyard::builder().config(&yaml).env("SY_PAGE_TOKEN", TOKEN).start();
    assert!(
        poll_until(Duration::from_secs(10), || {
            try_get(sy.admin_addr(), "/healthz", &[]).is_ok_and(|r| r.status == 200)
        }),
        "admin API never answered\n{}",
        sy.logs()
    );
    sy
}

fn status(sy: &Switchyard) -> Value {
    let auth = format!("Bearer {TOKEN}");
    get(sy.admin_addr(), "/status", &[("Authorization", &auth)]).json()
}

#[test]
fn the_page_shows_every_backend_once_given_the_token() {
    let (a, b, c) = (TestBackend::start("a"), TestBackend::start("b"), TestBackend::start("c"));
    let dead = dead_url();
    let hc = "health_check: {type: http, path: /health, interval: 1s, timeout: 500ms, rise: 1, fall: 1}";
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\", name: web-1}}, {{url: \"{}\", name: web-2}}, {{url: \"{dead}\", name: web-3}}]\n    {hc}\n    fallback: api\n\
         \x20 api:\n    strategy: least_conn\n    backends: [{{url: \"{}\", name: api-1}}]\n    {hc}\n",
        a.url(),
        b.url(),
        c.url()
    );
    let sy = start(&pools);
    // some traffic, so rates and latencies have values
    for i in 0..40 {
        let app = if i % 4 == 0 { "api" } else { "web" };
        let _ = try_get(sy.addr(), "/", &[("App-Name", app)]);
    }

    let _one = one_browser();
    let mut tab = open(&sy, 1280, 800);
    enter_token(&mut tab, TOKEN);
    let urls = [a.url(), b.url(), dead.clone(), c.url()];
    let all_shown = urls
        .iter()
        .map(|u| format!("!!document.querySelector('tr[data-url=\"{u}\"]')"))
        .collect::<Vec<_>>()
        .join(" && ");
    assert!(
        tab.wait_js(&all_shown, Duration::from_secs(10)).is_some(),
        "not every backend shown: {}",
        tab.eval("document.body.innerText")
    );
    // the dead backend is never healthy; the others are
    tab.wait_js(&format!("{} === 'down'", state_js(&dead)), Duration::from_secs(10))
        .expect("the dead backend shown down");
    assert_eq!(tab.eval(&state_js(&a.url())), "healthy");
    let text = tab.eval("document.body.innerText").to_string();
    for needle in ["web-1", "api-1", "least_conn", "fallback api", "version"] {
        assert!(text.contains(needle), "{needle} missing from the page: {text}");
    }
    // the token stays out of the URL, in session storage
    assert!(!tab.eval("location.href").to_string().contains(TOKEN));
    assert_eq!(tab.eval("sessionStorage.getItem('switchyard-admin-token')"), TOKEN);
    let png = tab.screenshot();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
    // `SWITCHYARD_SCREENSHOT=docs/status-page.png` refreshes the README's picture
    if let Ok(out) = std::env::var("SWITCHYARD_SCREENSHOT") {
        std::fs::write(&out, png).unwrap_or_else(|e| panic!("write {out}: {e}"));
    }

    // phone width: everything fits without sideways scrolling
    let phone = browser_phone_check(&sy);
    assert!(phone, "the page is wider than a phone screen");
}

/// Whether the page, with data, fits a 390 px wide window.
fn browser_phone_check(sy: &Switchyard) -> bool {
    let mut tab = open(sy, 390, 844);
    enter_token(&mut tab, TOKEN);
    tab.wait_js("document.querySelectorAll('tr[data-url]').length > 0", Duration::from_secs(10))
        .expect("data shown at phone width");
    tab.eval("document.documentElement.scrollWidth <= window.innerWidth") == Value::Bool(true)
}

#[test]
fn without_the_token_no_data_is_shown() {
    let a = TestBackend::start("a");
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\", name: secret-name}}]\n    health_check: {{type: none}}\n",
        a.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(&sy, 1280, 800);
    tab.wait_js("!document.getElementById('auth').hidden", Duration::from_secs(10))
        .expect("the page asks for the token");
    enter_token(&mut tab, "wrong-token");
    tab.wait_js("document.getElementById('autherr').textContent.includes('refused')", Duration::from_secs(10))
        .expect("a wrong token is refused");
    // a few refresh rounds later, still nothing
    std::thread::sleep(Duration::from_millis(1500));
    let text = tab.eval("document.documentElement.outerHTML").to_string();
    assert!(!text.contains("secret-name"), "data shown without token");
    assert!(!text.contains(&a.url()), "data shown without token");
    assert_eq!(tab.eval("document.querySelectorAll('tr[data-url]').length"), 0);
}

#[test]
fn a_failing_backend_turns_down_without_a_page_reload() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let interval = Duration::from_secs(2);
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]\n    health_check: {{type: http, path: /health, interval: 2s, timeout: 500ms, rise: 1, fall: 1}}\n",
        a.url(),
        b.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(&sy, 1280, 800);
    enter_token(&mut tab, TOKEN);
    tab.wait_js(
        &format!("{} === 'healthy'", state_js(&b.url())),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|| {
        panic!(
            "b not shown healthy: {}",
            tab.eval("document.getElementById('msg').textContent + '|' + document.getElementById('auth').hidden + '|' + sessionStorage.getItem('switchyard-admin-token') + '|' + document.body.innerText")
        )
    });
    tab.eval("window.__sameDocument = 1; true");
    b.set_healthy(false);
    let took = tab.wait_js(&format!("{} === 'down'", state_js(&b.url())), interval * 2);
    assert!(took.is_some(), "b not shown down within two probe intervals: {}", tab.eval("document.body.innerText"));
    assert_eq!(tab.eval("window.__sameDocument"), 1, "the page reloaded");
    assert_eq!(tab.eval(&state_js(&a.url())), "healthy");
}

#[test]
fn the_drain_button_drains_a_backend() {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]\n    health_check: {{type: none}}\n",
        a.url(),
        b.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(&sy, 1280, 800);
    enter_token(&mut tab, TOKEN);
    let button = format!("document.querySelector('tr[data-url=\"{}\"] button[data-action=drain]')", b.url());
    tab.wait_js(&format!("!!{button}"), Duration::from_secs(10)).expect("a drain button once authorised");
    // cancelling the confirmation changes nothing
    tab.eval(&format!("{button}.click(); true"));
    assert_eq!(tab.eval("document.getElementById('confirm').hidden"), false);
    tab.eval("document.getElementById('cancel').click(); true");
    std::thread::sleep(Duration::from_millis(300));
    let enabled = |sy: &Switchyard| {
        status(sy)["pools"]["web"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|x| x["url"] == b.url()).cloned())
            .map(|x| x["enabled"].clone())
    };
    assert_eq!(enabled(&sy), Some(Value::Bool(true)));
    // confirming drains it
    tab.eval(&format!("{button}.click(); true"));
    tab.eval("document.getElementById('ok').click(); true");
    assert!(
        poll_until(Duration::from_secs(5), || enabled(&sy) == Some(Value::Bool(false))),
        "/status does not say b is drained: {}",
        status(&sy)
    );
    tab.wait_js(&format!("{} === 'disabled'", state_js(&b.url())), Duration::from_secs(5))
        .expect("the page shows b disabled");
    assert_eq!(tab.eval(&state_js(&a.url())), "healthy");
}

#[test]
fn the_page_is_self_contained_and_its_data_needs_the_token() {
    let a = TestBackend::start("a");
    let pools = format!("  web:\n    backends: [{{url: \"{}\"}}]\n    health_check: {{type: none}}\n", a.url());
    let sy = start(&pools);
    let page = get(sy.admin_addr(), "/", &[]);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").is_some_and(|v| v.starts_with("text/html")));
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp}");
    let html = page.text();
    for external in ["src=\"http", "href=\"http", "@import", "url(", "//cdn"] {
        assert!(!html.contains(external), "page loads {external}...");
    }
    assert!(!html.contains(&a.url()), "the page itself carries data");
    for path in ["/status", "/status/series"] {
        assert_eq!(get(sy.admin_addr(), path, &[]).status, 401, "{path}");
    }
    let auth = format!("Bearer {TOKEN}");
    let series = get(sy.admin_addr(), "/status/series", &[("Authorization", &auth)]).json();
    assert_eq!(series["pools"]["web"]["rps"].as_array().map(Vec::len), Some(30));
    assert_eq!(get(sy.admin_addr(), "/", &[]).status, 200);
    assert_eq!(request(sy.admin_addr(), "POST", "/", &[("Authorization", &auth)], b"").status, 405);
}

#[test]
fn status_names_an_ejected_backend_with_its_deadline_and_failure() {
    let a = TestBackend::start("a");
    let dead = dead_url();
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\"}}, {{url: \"{dead}\"}}]\n    health_check: {{type: none}}\n    passive: {{max_fails: 1, fail_timeout: 30s, max_ejected_percent: 100}}\n",
        a.url()
    );
    let sy = start(&pools);
    let backend = |sy: &Switchyard, url: &str| {
        status(sy)["pools"]["web"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|x| x["url"] == url).cloned())
            .unwrap_or(Value::Null)
    };
    // round robin reaches the dead backend within a few requests
    assert!(
        poll_until(Duration::from_secs(10), || {
            let _ = try_get(sy.addr(), "/", &[]);
            backend(&sy, &dead)["state"] == "ejected"
        }),
        "never ejected: {}",
        status(&sy)
    );
    let d = backend(&sy, &dead);
    let now = status(&sy)["process"]["now_ms"].as_u64().unwrap_or(0);
    let until = d["ejected_until_ms"].as_u64().unwrap_or(0);
    assert!(until > now && until <= now + 31_000, "ejected_until_ms {until} vs now {now}");
    assert_eq!(d["last_failure"]["reason"], "connect_failure", "{d}");
    assert!(d["last_minute"]["error_rate"].as_f64().unwrap_or(0.0) > 0.0, "{d}");
    let live = backend(&sy, &a.url());
    assert_eq!(live["state"], "healthy");
    assert!(live["last_minute"]["p99_ms"].as_f64().is_some(), "{live}");
}
