//! Lifecycle: SIGHUP reload (a valid one in `admin`), graceful shutdown on SIGTERM and the
//! graceful binary upgrade (`-u` + SIGQUIT) under load.

use crate::common::*;
use serde_json::json;

use std::thread;
use std::time::{Duration, Instant};

const FAST_HC: &str = "health_check: { type: http, path: /health, interval: 100ms, timeout: 300ms, rise: 1, fall: 1 }";

#[test]
fn invalid_reload_keeps_the_running_configuration() {
    let web = TestBackend::start("web");
    let sy = start_pools("{default_pool: web}", &[pool("web", &[web.url()], &[FAST_HC])]);
    sy.write_config("pools:\n  web:\n    backends: [ { url: \"not a url\" } ]\n    colour: blue\n");
    sy.signal(libc::SIGHUP);
    eventually!(10, sy.logs().contains("reload rejected"), "rejection not logged");
    assert!(sy.logs().contains("unknown field `colour`"));
    for _ in 0..20 {
        assert_eq!(who(&sy, Some("web")).as_deref(), Some("web"));
    }
}

#[test]
fn backend_added_by_reload_gets_no_request_before_its_probe_passes() {
    let [good, sick] = backends(["good", "sick"]);
    // `sick` answers the app but fails /health; pingora alone would call it
    // healthy until 3 failed probes (15 s)
    sick.set_healthy(false);
    let hc = "health_check: { type: http, path: /health, interval: 5s, timeout: 300ms, rise: 1, fall: 3 }";
    let sy = start_pools("{default_pool: web}", &[pool("web", &[good.url()], &[hc])]);

    sy.write_config(&proxy_config("{default_pool: web}", &[pool("web", &[good.url(), sick.url()], &[hc])]));
    sy.signal(libc::SIGHUP);
    eventually!(10, sy.logs().contains("configuration reloaded"));
    // at once: the reload probed it before publishing the new table
    for _ in 0..30 {
        assert_eq!(who(&sy, Some("web")).as_deref(), Some("good"));
    }
    assert_eq!(sick.app_count(), 0);

    // once healthy it joins (next periodic probe)
    sick.set_healthy(true);
    eventually!(15, who(&sy, Some("web")).as_deref() == Some("sick"));
}

#[test]
fn reload_keeps_the_health_of_unchanged_backends() {
    let [up, down] = backends(["up", "down"]);
    // rise 3 at 2 s: a backend that recovers needs 4 s or more to come back
    let slow_hc = "health_check: { type: http, path: /health, interval: 2s, timeout: 300ms, rise: 3, fall: 1 }";
    let pools = |extra: bool| {
        let other = if extra { pool("other", &[up.url()], &[slow_hc]) } else { String::new() };
        proxy_config("{default_pool: web}", &[pool("web", &[up.url(), down.url()], &[slow_hc]), other])
    };
    let sy = Switchyard::start(&pools(false));
    // both admitted at start; now `down` fails its probes and leaves
    down.set_healthy(false);
    eventually!(10, { (0..6).all(|_| who(&sy, Some("web")).as_deref() == Some("up")) });
    // it answers probes again, but has not risen yet when the reload comes:
    // a reload that forgot its health would probe it once and let it in
    down.set_healthy(true);
    let recovered = Instant::now();
    let before = down.app_count();
    sy.write_config(&pools(true));
    sy.signal(libc::SIGHUP);
    eventually!(10, sy.logs().contains("configuration reloaded"));
    for _ in 0..20 {
        let _ = who(&sy, Some("web"));
    }
    // 3 passing probes take more than 2 intervals
    assert!(recovered.elapsed() < Duration::from_millis(3900), "test too slow");
    assert_eq!(down.app_count(), before, "backend taken back before its third passing probe");
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let slow = TestBackend::start("slow");
    slow.set_delay(Duration::from_millis(800));
    let yaml = server_line(2, 2) + &web_pool_config(&[slow.url()], "");
    let mut sy = Switchyard::start(&yaml);
    let addr = sy.addr();
    let inflight = thread::spawn(move || try_get(addr, "/slow", &[]));
    eventually!(5, slow.app_count() == 1);
    sy.signal(libc::SIGTERM);
    inflight.join().expect("client thread").expect("in-flight request failed").expect_status(200);
    assert_eq!(sy.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn graceful_upgrade_under_load_drops_no_request() {
    let [a, b] = backends(["a", "b"]);
    let yaml =
        server_line(1, 1) + &web_pool_config(&[a.url(), b.url()], "health_check: { type: tcp, interval: 200ms }");
    let mut old = Switchyard::start(&yaml);
    let load = Load::start(old.addr(), 4);
    eventually!(5, load.ok() > 20);
    let mut new = old.spawn_sibling(&["-u"]);
    // the new process waits on the upgrade socket; hand the listeners over
    eventually!(10, old.dir().join("sy.sock").exists());
    old.signal(libc::SIGQUIT);
    assert_eq!(old.wait_exit(Duration::from_secs(20)), Some(0));
    let served_after = load.ok();
    eventually!(5, load.ok() > served_after + 20, "new instance does not serve");
    load.finish(&new.logs());
    assert!(new.is_running());
}

#[test]
fn access_log_lines_and_rotation_on_reload() {
    let web = TestBackend::start("web");
    let yaml = format!(
        "listen: [ {{ addr: \"{{listen}}\" }} ]\npools:\n{}log: {{ access: \"{{dir}}/access.log\", format: json }}\n",
        pool("web", &[web.url()], &[])
    );
    let sy = Switchyard::start(&yaml);
    let log = sy.dir().join("access.log");
    assert_eq!(get(sy.addr(), "/a?x=1", &[("App-Name", "web")]).status, 200);
    assert_eq!(get(sy.addr(), "/b", &[("App-Name", "nope")]).status, 404);
    let lines = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        serde_json::Deserializer::from_str(&text).into_iter().map(|l| l.expect("json line")).collect()
    };
    eventually!(5, lines().len() >= 2);
    let l = lines();
    let want = json!({"status": 200, "uri": "/a?x=1", "pool": "web", "backend": web.addr(), "client": "127.0.0.1", "attempts": 1});
    for (key, value) in want.as_object().expect("object") {
        assert_eq!(&l[0][key], value, "{key}: {}", l[0]);
    }
    assert!(l[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(l[1]["status"], 404);
    assert_eq!(l[1]["pool"], "");

    // rotate: rename, reload, the next line goes to a new file
    let rotated = sy.dir().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    sy.signal(libc::SIGHUP);
    eventually!(10, {
        let _ = try_get(sy.addr(), "/c", &[("App-Name", "web")]);
        lines().iter().any(|l| l["uri"] == "/c")
    });
}
