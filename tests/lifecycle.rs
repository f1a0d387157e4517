//! Lifecycle: SIGHUP reload, graceful shutdown on SIGTERM and the
//! graceful binary upgrade (`-u` + SIGQUIT) under load.

mod common;
use common::*;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const FAST_HC: &str =
    "{ type: http, path: /health, interval: 100ms, timeout: 300ms, rise: 1, fall: 1 }";

fn one_pool(name: &str, urls: &[String], hc: &str) -> String {
    let backends: Vec<String> = urls.iter().map(|u| format!("{{ url: \"{u}\" }}")).collect();
    format!(
        "  {name}:\n    backends: [{}]\n    health_check: {hc}\n",
        backends.join(", ")
    )
}

fn config(default: &str, pools: &[String]) -> String {
    format!(
        "listen: [ {{ addr: \"{{listen}}\" }} ]\nrouting: {{ default_pool: {default} }}\npools:\n{}",
        pools.concat()
    )
}

fn served_by(sy: &Switchyard, app: &str) -> Option<String> {
    let r = try_get(sy.addr(), "/who", &[("App-Name", app)]).ok()?;
    (r.status == 200).then(|| r.header("x-backend").unwrap_or("").to_string())
}

#[test]
fn sighup_reload_adds_a_pool_and_routes_to_it() {
    let web = TestBackend::start("web");
    let api = TestBackend::start("api");
    let first = config("web", &[one_pool("web", &[web.url()], FAST_HC)]);
    let sy = Switchyard::start(&first);
    assert_eq!(
        served_by(&sy, "api").as_deref(),
        Some("web"),
        "{}",
        sy.logs()
    );

    sy.write_config(&config(
        "web",
        &[
            one_pool("web", &[web.url()], FAST_HC),
            one_pool("api", &[api.url()], FAST_HC),
        ],
    ));
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || served_by(&sy, "api").as_deref()
            == Some("api")),
        "api pool never served after reload\n{}",
        sy.logs()
    );
    assert_eq!(served_by(&sy, "web").as_deref(), Some("web"));
}

#[test]
fn invalid_reload_keeps_the_running_configuration() {
    let web = TestBackend::start("web");
    let sy = Switchyard::start(&config("web", &[one_pool("web", &[web.url()], FAST_HC)]));
    sy.write_config("pools:\n  web:\n    backends: [ { url: \"not a url\" } ]\n    colour: blue\n");
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || sy
            .logs()
            .contains("reload rejected")),
        "rejection not logged\n{}",
        sy.logs()
    );
    assert!(
        sy.logs().contains("unknown field `colour`"),
        "{}",
        sy.logs()
    );
    for _ in 0..20 {
        assert_eq!(
            served_by(&sy, "web").as_deref(),
            Some("web"),
            "{}",
            sy.logs()
        );
    }
}

#[test]
fn backend_added_by_reload_gets_no_request_before_its_probe_passes() {
    let good = TestBackend::start("good");
    let sick = TestBackend::start("sick");
    sick.set_healthy(false); // answers the app but fails /health
                             // pingora alone would call `sick` healthy until 3 failed probes (15 s)
    let hc = "{ type: http, path: /health, interval: 5s, timeout: 300ms, rise: 1, fall: 3 }";
    let sy = Switchyard::start(&config("web", &[one_pool("web", &[good.url()], hc)]));

    sy.write_config(&config(
        "web",
        &[one_pool("web", &[good.url(), sick.url()], hc)],
    ));
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || sy
            .logs()
            .contains("configuration reloaded")),
        "{}",
        sy.logs()
    );
    // at once: the reload probed it before publishing the new table
    for _ in 0..30 {
        assert_eq!(
            served_by(&sy, "web").as_deref(),
            Some("good"),
            "{}",
            sy.logs()
        );
    }
    assert_eq!(sick.app_count(), 0, "{}", sy.logs());

    // once healthy it joins (next periodic probe)
    sick.set_healthy(true);
    assert!(
        poll_until(Duration::from_secs(15), || served_by(&sy, "web").as_deref()
            == Some("sick")),
        "{}",
        sy.logs()
    );
}

#[test]
fn reload_keeps_the_health_of_unchanged_backends() {
    let up = TestBackend::start("up");
    let down = TestBackend::start("down");
    // rise 3 at 2 s: a backend that recovers needs 4 s or more to come back
    let slow_hc = "{ type: http, path: /health, interval: 2s, timeout: 300ms, rise: 3, fall: 1 }";
    let pools = |extra: bool| {
        let mut p = vec![one_pool("web", &[up.url(), down.url()], slow_hc)];
        if extra {
            p.push(one_pool("other", &[up.url()], slow_hc));
        }
        config("web", &p)
    };
    let sy = Switchyard::start(&pools(false));
    // both admitted at start; now `down` fails its probes and leaves
    down.set_healthy(false);
    assert!(
        poll_until(Duration::from_secs(10), || {
            (0..6).all(|_| served_by(&sy, "web").as_deref() == Some("up"))
        }),
        "{}",
        sy.logs()
    );
    // it answers probes again, but has not risen yet when the reload comes:
    // a reload that forgot its health would probe it once and let it in
    down.set_healthy(true);
    let recovered = Instant::now();
    let before = down.app_count();
    sy.write_config(&pools(true));
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || sy
            .logs()
            .contains("configuration reloaded")),
        "{}",
        sy.logs()
    );
    for _ in 0..20 {
        let _ = served_by(&sy, "web");
    }
    // 3 passing probes take more than 2 intervals
    assert!(
        recovered.elapsed() < Duration::from_millis(3900),
        "test too slow"
    );
    assert_eq!(
        down.app_count(),
        before,
        "backend taken back before its third passing probe\n{}",
        sy.logs()
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let slow = TestBackend::start("slow");
    slow.set_delay(Duration::from_millis(800));
    let yaml = "server: { pid_file: \"{pid_file}\", upgrade_sock: \"{upgrade_sock}\", grace_period_seconds: 2, graceful_shutdown_timeout_seconds: 2 }\n"
        .to_string()
        + &config("web", &[one_pool("web", &[slow.url()], "{ type: none }")]);
    let mut sy = Switchyard::start(&yaml);
    let addr = sy.addr();
    let inflight = thread::spawn(move || try_get(addr, "/slow", &[]));
    assert!(poll_until(Duration::from_secs(5), || slow.app_count() == 1));
    sy.signal(libc::SIGTERM);
    let r = inflight
        .join()
        .expect("client thread")
        .expect("in-flight request failed");
    assert_eq!(r.status, 200);
    assert_eq!(
        sy.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        sy.logs()
    );
}

#[test]
fn graceful_upgrade_under_load_drops_no_request() {
    let a = TestBackend::start("a");
    let b = TestBackend::start("b");
    let yaml = "server: { pid_file: \"{pid_file}\", upgrade_sock: \"{upgrade_sock}\", grace_period_seconds: 1, graceful_shutdown_timeout_seconds: 1 }\n"
        .to_string()
        + &config("web", &[one_pool("web", &[a.url(), b.url()], "{ type: tcp, interval: 200ms }")]);
    let mut old = Switchyard::start(&yaml);
    let addr = old.addr();

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut errors = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match try_get(addr, "/load", &[("Connection", "close")]) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors.push(format!("{:?}", other.map(|r| r.status)));
                        }
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                errors
            })
        })
        .collect();

    assert!(poll_until(Duration::from_secs(5), || ok
        .load(Ordering::Relaxed)
        > 20));
    let mut new = old.spawn_sibling(&["-u"]);
    // the new process waits on the upgrade socket; hand the listeners over
    assert!(
        poll_until(Duration::from_secs(10), || old
            .dir()
            .join("sy.sock")
            .exists()),
        "{}",
        new.logs()
    );
    old.signal(libc::SIGQUIT);
    assert_eq!(
        old.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        old.logs()
    );
    let served_after = ok.load(Ordering::Relaxed);
    assert!(
        poll_until(Duration::from_secs(5), || ok.load(Ordering::Relaxed)
            > served_after + 20),
        "new instance does not serve\n{}",
        new.logs()
    );
    stop.store(true, Ordering::Relaxed);
    let errors: Vec<String> = load
        .into_iter()
        .flat_map(|t| t.join().expect("load thread"))
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the upgrade: {:?}\n{}\n{}",
        errors.len(),
        ok.load(Ordering::Relaxed) + errors.len(),
        &errors[..errors.len().min(10)],
        old.logs(),
        new.logs()
    );
    assert!(new.is_running(), "{}", new.logs());
}

#[test]
fn access_log_lines_and_rotation_on_reload() {
    let web = TestBackend::start("web");
    let yaml = format!(
        "listen: [ {{ addr: \"{{listen}}\" }} ]\npools:\n{}log: {{ access: \"{{dir}}/access.log\", format: json }}\n",
        one_pool("web", &[web.url()], "{ type: none }")
    );
    let sy = Switchyard::start(&yaml);
    let log = sy.dir().join("access.log");
    assert_eq!(get(sy.addr(), "/a?x=1", &[("App-Name", "web")]).status, 200);
    assert_eq!(get(sy.addr(), "/b", &[("App-Name", "nope")]).status, 404);
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    assert!(
        poll_until(Duration::from_secs(5), || lines().len() >= 2),
        "{}",
        sy.logs()
    );
    let l = lines();
    assert_eq!(l[0]["status"], 200);
    assert_eq!(l[0]["uri"], "/a?x=1");
    assert_eq!(l[0]["pool"], "web");
    assert_eq!(l[0]["backend"], format!("{}", web.addr()));
    assert_eq!(l[0]["client"], "127.0.0.1");
    assert_eq!(l[0]["attempts"], 1);
    assert!(l[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(l[1]["status"], 404);
    assert_eq!(l[1]["pool"], "");

    // rotate: rename, reload, the next line goes to a new file
    let rotated = sy.dir().join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    sy.signal(libc::SIGHUP);
    assert!(
        poll_until(Duration::from_secs(10), || {
            let _ = try_get(sy.addr(), "/c", &[("App-Name", "web")]);
            lines().iter().any(|l| l["uri"] == "/c")
        }),
        "{}",
        sy.logs()
    );
}
