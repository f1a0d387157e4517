//! The status page on the admin listener (`GET /`), driven in real headless
//! browsers: Debian's `chromium` over the DevTools protocol and `firefox-esr`
//! over WebDriver BiDi (websockets, no browser download, no driver binary).
//! In each browser the page must show every backend once given the token,
//! show nothing without it, follow a health flip without a page reload,
//! drain a backend from its button (`draining` while a request is in
//! flight, then `disabled`), and show every state in words, class and
//! colour (`states.rs`: ejected and not yet admitted). `in_each_browser!`
//! turns one check into a test per browser (`status_page::CHECK::chromium`,
//! `::firefox`); a missing browser fails its test with the package to
//! install. Drivers: `browser.rs` (the [`Browser`] enum, [`Tab`], the
//! process group), `chromium.rs`, `firefox.rs`; `status.rs` checks what the
//! page reads without a browser.
//!
//! With `SWITCHYARD_SCREENSHOT=PATH` the chromium run of the first check
//! writes a screenshot of the page to PATH (`docs/status-page.png` is the
//! README's).

mod browser;
mod chromium;
mod firefox;
mod states;
mod status;

use crate::common::*;
use browser::{Browser, Tab};
use states::assert_badge;

use serde_json::Value;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const TOKEN: &str = "page-test-token";

/// `in_each_browser!(check, ...)`: for each `fn check(Browser)`, a module
/// `check` with the tests `chromium` and `firefox`.
macro_rules! in_each_browser {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            #[test]
            fn chromium() {
                super::$check(super::Browser::Chromium)
            }
            #[test]
            fn firefox() {
                super::$check(super::Browser::Firefox)
            }
        }
    )*};
}
use in_each_browser;

in_each_browser!(
    the_page_shows_every_backend_once_given_the_token,
    without_the_token_no_data_is_shown,
    a_failing_backend_turns_down_without_a_page_reload,
    the_drain_button_drains_a_backend,
);

/// One browser at a time: the machine running the suite may be small.
fn one_browser() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The page of `sy` in a `width`×`height` viewport of `browser`.
fn open(browser: Browser, sy: &Switchyard, width: u32, height: u32) -> Tab {
    browser.open(&format!("http://{}/", sy.admin_addr()), width, height)
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

/// Switchyard with an admin token ([`TOKEN`]), default pool `web`, and
/// `pools` (the YAML lines under `pools:`); returns once the admin API answers.
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

/// `GET /status` with the token.
fn status(sy: &Switchyard) -> Value {
    let auth = format!("Bearer {TOKEN}");
    get(sy.admin_addr(), "/status", &[("Authorization", &auth)]).json()
}

fn the_page_shows_every_backend_once_given_the_token(browser: Browser) {
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
    let mut tab = open(browser, &sy, 1280, 800);
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
    if let (Browser::Chromium, Ok(out)) = (browser, std::env::var("SWITCHYARD_SCREENSHOT")) {
        std::fs::write(&out, png).unwrap_or_else(|e| panic!("write {out}: {e}"));
    }

    // phone width: everything fits without sideways scrolling
    tab.set_viewport(390, 844);
    let widths = "document.documentElement.scrollWidth + ' px of content in ' + innerWidth";
    assert_eq!(
        tab.eval("document.documentElement.scrollWidth <= innerWidth"),
        true,
        "the page is wider than a phone screen: {}",
        tab.eval(widths)
    );
}

fn without_the_token_no_data_is_shown(browser: Browser) {
    let a = TestBackend::start("a");
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\", name: secret-name}}]\n    health_check: {{type: none}}\n",
        a.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(browser, &sy, 1280, 800);
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

fn a_failing_backend_turns_down_without_a_page_reload(browser: Browser) {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let interval = Duration::from_secs(2);
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]\n    health_check: {{type: http, path: /health, interval: 2s, timeout: 500ms, rise: 1, fall: 1}}\n",
        a.url(),
        b.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(browser, &sy, 1280, 800);
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
    assert_badge(&mut tab, &b.url(), "down", "down", "var(--bad)", Some("failing its health checks"));
    assert_badge(&mut tab, &a.url(), "healthy", "healthy", "var(--ok)", None);
}

fn the_drain_button_drains_a_backend(browser: Browser) {
    let (a, b) = (TestBackend::start("a"), TestBackend::start("b"));
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\"}}, {{url: \"{}\"}}]\n    health_check: {{type: none}}\n",
        a.url(),
        b.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(browser, &sy, 1280, 800);
    enter_token(&mut tab, TOKEN);
    let button = format!("document.querySelector('tr[data-url=\"{}\"] button[data-action=drain]')", b.url());
    tab.wait_js(&format!("!!{button}"), Duration::from_secs(10)).expect("a drain button once authorised");
    // cancelling the confirmation changes nothing
    tab.eval(&format!("{button}.click(); true"));
    assert_eq!(tab.eval("document.getElementById('confirm').hidden"), false);
    tab.eval("document.getElementById('cancel').click(); true");
    std::thread::sleep(Duration::from_millis(300)); // absence check: the cancel sent nothing
    let enabled = |sy: &Switchyard| {
        status(sy)["pools"]["web"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|x| x["url"] == b.url()).cloned())
            .map(|x| x["enabled"].clone())
    };
    assert_eq!(enabled(&sy), Some(Value::Bool(true)));
    // a slow request in flight on b (round robin: one of two lands there)
    b.set_delay(Duration::from_secs(4));
    let addr = sy.addr();
    let slow = std::thread::spawn(move || (0..2).for_each(|_| drop(try_get(addr, "/", &[]))));
    let in_flight = |sy: &Switchyard| {
        status(sy)["pools"]["web"]["backends"]
            .as_array()
            .and_then(|bs| bs.iter().find(|x| x["url"] == b.url()).cloned())
            .is_some_and(|x| x["active_connections"] == 1)
    };
    assert!(poll_until(Duration::from_secs(5), || in_flight(&sy)), "no request in flight on b: {}", status(&sy));
    // confirming drains it: draining while the request runs, then disabled
    tab.eval(&format!("{button}.click(); true"));
    tab.eval("document.getElementById('ok').click(); true");
    assert!(
        poll_until(Duration::from_secs(3), || enabled(&sy) == Some(Value::Bool(false))),
        "/status does not say b is drained: {}",
        status(&sy)
    );
    tab.wait_js(&format!("{} === 'draining'", state_js(&b.url())), Duration::from_secs(3))
        .unwrap_or_else(|| panic!("the page does not show b draining: {}", tab.eval(&state_js(&b.url()))));
    assert_badge(&mut tab, &b.url(), "draining", "draining", "var(--warn)", Some("1 in flight"));
    tab.wait_js(&format!("{} === 'disabled'", state_js(&b.url())), Duration::from_secs(8))
        .expect("the page shows b disabled once its request finished");
    slow.join().expect("slow requests");
    assert_badge(&mut tab, &b.url(), "disabled", "disabled", "var(--off)", None);
    assert_eq!(tab.eval(&state_js(&a.url())), "healthy");
}
