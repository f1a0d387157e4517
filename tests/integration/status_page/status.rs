//! What the status page reads, checked without a browser: the page is
//! self-contained and its data needs the token; `/status` names an ejected
//! backend with its deadline and last failure.

use super::{start, status, TOKEN};
use crate::common::*;

use serde_json::Value;
use std::time::Duration;

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
