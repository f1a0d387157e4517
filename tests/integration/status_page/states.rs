//! The states a person must tell apart at a glance, seen in the browser:
//! an `ejected` backend (passive `max_fails`) and one `not yet admitted`
//! (failing the probe that would admit it), each in words, with its detail
//! line and in its state colour (the page's `--bad` and `--warn`), not the
//! healthy one's. [`assert_badge`] checks the other states' badges too.

use super::{enter_token, in_each_browser, one_browser, open, start, Browser, Tab, TOKEN};
use crate::common::*;

use serde_json::Value;
use std::time::Duration;

in_each_browser!(the_page_shows_ejected_and_not_yet_admitted_backends);

/// JS: what the page shows for backend `url`: its state badge (`state`
/// word, `text`, `class`, computed `color` and `background`) and the detail
/// line under it; `null` while the row is missing.
fn badge_js(url: &str) -> String {
    format!(
        "(() => {{ const s = document.querySelector('tr[data-url=\"{url}\"] .state'); if (!s) return null; \
         const cs = getComputedStyle(s), d = s.parentElement.querySelector('.detail'); \
         return {{ state: s.dataset.state, text: s.textContent, class: s.className, color: cs.color, \
         background: cs.backgroundColor, detail: d ? d.textContent : null }}; }})()"
    )
}

/// JS: the computed value of CSS colour `css` (such as `var(--bad)`) in the page.
fn colour_js(css: &str) -> String {
    format!(
        "(() => {{ const e = document.createElement('span'); e.style.color = '{css}'; document.body.append(e); \
         const c = getComputedStyle(e).color; e.remove(); return c; }})()"
    )
}

/// Asserts the badge of `url` reads `text`, has class `s-{state}`, is drawn
/// in `colour` (a CSS colour of the page, such as `var(--bad)`; not the
/// healthy one unless `state` is `healthy`) on a background of its own,
/// and has a detail line starting with `detail` (`None`: no detail line).
pub(super) fn assert_badge(tab: &mut Tab, url: &str, state: &str, text: &str, colour: &str, detail: Option<&str>) {
    let b = tab.eval(&badge_js(url));
    let expected = tab.eval(&colour_js(colour));
    assert_ne!(expected, tab.eval("getComputedStyle(document.body).color"), "{colour} is not defined by the page");
    assert_eq!(b["state"], state, "{b}");
    assert_eq!(b["text"], text, "{b}");
    let class = b["class"].as_str().unwrap_or("");
    assert!(class.split(' ').any(|c| c == format!("s-{state}")), "{state}: class {class}");
    assert_eq!(b["color"], expected, "{state} not drawn in {colour}: {b}");
    if state != "healthy" {
        assert_ne!(b["color"], tab.eval(&colour_js("var(--ok)")), "{state} drawn in the healthy colour: {b}");
    }
    assert_ne!(b["background"], Value::String("rgba(0, 0, 0, 0)".into()), "{state} has no background: {b}");
    match detail {
        Some(detail) => {
            let shown = b["detail"].as_str().unwrap_or("");
            assert!(shown.starts_with(detail), "{state}: detail {shown:?}, expected {detail:?}...");
        }
        None => assert_eq!(b["detail"], Value::Null, "{state}: {b}"),
    }
}

fn the_page_shows_ejected_and_not_yet_admitted_backends(browser: Browser) {
    let (ok, gated) = (TestBackend::start("ok"), TestBackend::start("gated"));
    // its probe fails, but `fall` is far away: it stays up and not admitted
    gated.set_healthy(false);
    let dead = dead_url();
    let pools = format!(
        "  web:\n    backends: [{{url: \"{}\", name: web-ok}}, {{url: \"{dead}\", name: web-dead}}]\n    \
         health_check: {{type: none}}\n    passive: {{max_fails: 1, fail_timeout: 30s, max_ejected_percent: 100}}\n\
         \x20 gate:\n    backends: [{{url: \"{}\", name: gate-new}}]\n    \
         health_check: {{type: http, path: /health, interval: 1s, timeout: 500ms, rise: 1, fall: 1000}}\n",
        ok.url(),
        gated.url()
    );
    let sy = start(&pools);
    let _one = one_browser();
    let mut tab = open(browser, &sy, 1280, 800);
    enter_token(&mut tab, TOKEN);
    let state_is = |url: &str, s: &str| format!("({}||{{}}).state === '{s}'", badge_js(url));
    tab.wait_js(&state_is(&ok.url(), "healthy"), Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no data shown: {}", tab.eval("document.body.innerText")));

    // round robin reaches the dead backend within a few requests
    let ejected = state_is(&dead, "ejected");
    assert!(
        poll_until(Duration::from_secs(10), || {
            let _ = try_get(sy.addr(), "/", &[]);
            tab.eval(&ejected) == Value::Bool(true)
        }),
        "the dead backend not shown ejected: {}",
        tab.eval(&badge_js(&dead))
    );
    assert_badge(&mut tab, &dead, "ejected", "ejected", "var(--bad)", Some("until "));

    // shown pending once a probe has failed, not just before the first one
    assert!(poll_until(Duration::from_secs(5), || gated.path_count("/health") > 0), "gated never probed");
    tab.wait_js(&state_is(&gated.url(), "pending"), Duration::from_secs(5))
        .unwrap_or_else(|| panic!("gated not shown pending: {}", tab.eval(&badge_js(&gated.url()))));
    assert_badge(
        &mut tab,
        &gated.url(),
        "pending",
        "not yet admitted",
        "var(--warn)",
        Some("waiting for a passing probe"),
    );
    assert_badge(&mut tab, &ok.url(), "healthy", "healthy", "var(--ok)", None);
}
