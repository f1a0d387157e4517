//! Integration tests of the `switchyard` command line: `-t` on
//! good and bad files, quick mode (`--backends`, `SWITCHYARD_BACKENDS`) and
//! the exit codes for bad flags and a listen port in use.

use std::net::TcpListener;
use std::time::Duration;

use crate::common::*;

/// Runs `switchyard -t -c DIR/NAME` on `yaml` written verbatim (no
/// placeholder expansion) after a line 1 `listen:` unless `yaml` starts
/// with its own. Returns the output and the path as passed on the command line.
fn check(name: &str, yaml: &str) -> (Output, String) {
    let dir = TempDir::new();
    let path = dir.join(name);
    let listen = if yaml.starts_with("listen:") { "" } else { "listen: [{addr: \"127.0.0.1:18080\"}]\n" };
    std::fs::write(&path, format!("{listen}{yaml}")).expect("write config");
    let out = check_config_file(&path);
    assert!(!out.stderr.contains("panicked") && !out.stderr.contains("RUST_BACKTRACE"), "panic on {name}: {out:?}");
    (out, path.display().to_string())
}

// === -t ===

#[test]
fn check_accepts_a_good_file() {
    // -t starts nothing: a listen port in use does not matter.
    let holder = bind_fresh();
    let addr = holder.local_addr().unwrap();
    let (out, _) = check(
        "good.yaml",
        &format!(
            "listen: [{{addr: \"{addr}\"}}]\n\
             routing: {{header: X-Pool, default_pool: web}}\n\
             pools:\n  \
             web:\n    strategy: least_conn\n    fallback: legacy\n    \
             backends:\n      - url: http://127.0.0.1:8001\n        weight: 3\n      \
             - url: http://127.0.0.1:8002\n        enabled: false\n        name: web-2\n    \
             health_check: {{type: http, path: /health, interval: 100ms, timeout: 1s, rise: 1, fall: 2}}\n    \
             timeouts: {{connect: 2s, read: 30s, request: 1m}}\n    \
             retries: {{attempts: 2, on: [connect_failure, http_502], max_body: 16KiB}}\n  \
             legacy:\n    strategy: consistent\n    hash_key: \"header:X-User\"\n    \
             backends: [{{url: \"http://127.0.0.1:8003\"}}]\n"
        ),
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "configuration ok", "{out:?}");
}

/// Files `-t` rejects (after the `listen:` line), each with what its stderr must
/// name (`{path}` stands for the file's path as given, `{path}:N:` for line N of it).
const REJECTED: &[(&str, &str, &[&str])] = &[
    (
        "typo.yaml",
        "routing: {default_pool: web}\n\
         pools:\n  \
         web:\n    \
         backends:\n      \
         - url: http://127.0.0.1:8001\n        \
         wieght: 3\n",
        &["{path}:7:", "pools.web.backends[0]", "wieght"],
    ),
    (
        "top.yaml", // a top-level typo too
        "routeing: {default_pool: web}\n\
         pools:\n  web: {backends: [{url: \"http://127.0.0.1:8001\"}]}\n",
        &["{path}:2:", "routeing"],
    ),
    (
        "url.yaml",
        "pools:\n  \
         web:\n    \
         backends:\n      \
         - url: http://127.0.0.1:8001\n      \
         - url: \"127.0.0.1 port 8002\"\n",
        &["{path}:6:", "pools.web.backends[1].url", "127.0.0.1 port 8002"],
    ),
    (
        "default.yaml",
        "routing: {default_pool: wbe}\n\
         pools:\n  web: {backends: [{url: \"http://127.0.0.1:8001\"}]}\n",
        &["{path}", "routing.default_pool", "wbe"],
    ),
    (
        "cycle.yaml",
        "pools:\n  \
         a: {fallback: b, backends: [{url: \"http://127.0.0.1:8001\"}]}\n  \
         b: {fallback: c, backends: [{url: \"http://127.0.0.1:8002\"}]}\n  \
         c: {fallback: a, backends: [{url: \"http://127.0.0.1:8003\"}]}\n",
        &["{path}", "fallback", "cycle"],
    ),
    (
        "fb.yaml", // an unknown fallback pool
        "pools:\n  a: {fallback: nowhere, backends: [{url: \"http://127.0.0.1:8001\"}]}\n",
        &["{path}", "pools.a.fallback", "nowhere"],
    ),
    (
        "dup.yaml",
        "pools:\n  \
         web:\n    \
         backends:\n      \
         - url: http://127.0.0.1:8001\n      \
         - url: http://127.0.0.1:8001\n",
        &["{path}:6:", "pools.web.backends[1]", "duplicate"],
    ),
];

#[test]
fn check_rejects_bad_files_naming_path_line_and_key() {
    for (name, yaml, needles) in REJECTED {
        let (out, path) = check(name, yaml);
        let needles: Vec<String> = needles.iter().map(|n| n.replace("{path}", &path)).collect();
        out.assert_fails(1, &needles.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

#[test]
fn check_yaml_syntax_error_with_line() {
    let (out, path) = check(
        "syntax.yaml",
        "routing: {default_pool: web}\n\
         pools:\n  \
         web:\n    \
         backends: [{url: \"http://127.0.0.1:8001\"}\n  \
         other: x\n",
    );
    // The unclosed `[` is on line 5; the parser notices on line 5 or 6.
    assert_eq!(out.code, 1, "{out:?}");
    let lined = [5, 6].iter().any(|n| out.stderr.contains(&format!("{path}:{n}:")));
    assert!(lined, "no line for the syntax error:\n{}", out.stderr);
}

#[test]
fn check_reports_every_error_at_once() {
    let (out, path) = check(
        "many.yaml",
        "routing: {default_pool: nope}\n\
         pools:\n  \
         web:\n    \
         fallback: legacy\n    \
         backends:\n      \
         - url: http://127.0.0.1:8001\n      \
         - url: http://127.0.0.1:8001\n      \
         - url: \"ftp//bad\"\n  \
         legacy:\n    \
         fallback: web\n    \
         hash_key: client_ip\n    \
         retries: {attempts: 0}\n    \
         backends: [{url: \"http://127.0.0.1:8002\"}]\n",
    );
    let (line8, line9) = (format!("{path}:8:"), format!("{path}:9:"));
    out.assert_fails(
        1,
        &[&line8, "duplicate", &line9, "ftp//bad", "routing.default_pool", "cycle", "hash_key", "attempts"],
    );
    let error_lines = out.stderr.lines().filter(|l| l.starts_with(&path)).count();
    assert!(error_lines >= 6, "{error_lines} error lines:\n{}", out.stderr);
}

/// Refused before anything starts: exit 1, the problem named.
#[test]
fn missing_or_invalid_file_bad_flags_and_bad_quick_mode_lists_exit_1() {
    let dir = TempDir::new();
    let (absent, bad) = (dir.join("absent.yaml").display().to_string(), dir.join("bad.yaml"));
    std::fs::write(&bad, "listen: [{addr: \"127.0.0.1:18080\"}]\npools:\n  web: {backends: [{url: \"nope\"}]}\n")
        .unwrap();
    let bad = bad.display().to_string();
    let cases: [(&[&str], &[&str]); 8] = [
        (&["-t", "-c", &absent], &[&absent]),
        (&["-c", &bad], &[&bad, "pools.web.backends[0].url"]), // at start, not only with -t
        (&["--backends", "api-127.0.0.1:80", "--port", "18080"], &["127.0.0.1:80"]),
        (&["--backends", "http://127.0.0.1:80", "--port", "0", "-t"], &["1..=65535"]), // clients need the port
        (&["--bogus"], &[]),
        (&["--port", "not-a-port"], &[]),
        (&["-c"], &[]),
        (&["-t", "--config"], &[]),
    ];
    for (args, needles) in cases {
        run_switchyard(args).assert_fails(1, needles);
    }
}

// === Quick mode ===

#[test]
fn quick_mode_backends_flag_and_env() {
    let [api, web] = backends(["api", "web"]);
    let flag = Switchyard::builder().backends(&format!("api-{},{}", api.url(), web.url()));
    let env = Switchyard::builder().env("SWITCHYARD_BACKENDS", &format!("{}, api-{}", web.url(), api.url()));
    for (how, builder) in [("--backends", flag), ("SWITCHYARD_BACKENDS", env)] {
        let (api0, web0, mut sy) = (api.app_count(), web.app_count(), builder.start());
        // no header or an unknown one: the default pool
        for (app, want) in [(Some("api"), "api"), (Some(" API "), "api"), (None, "web"), (Some("unknown"), "web")] {
            assert_eq!(who(&sy, app).as_deref(), Some(want), "{how}: App-Name {app:?}");
        }
        assert_eq!((api.app_count() - api0, web.app_count() - web0), (2, 2), "{how}");
        // Quick mode has no server settings: shut down without the 5 s grace.
        sy.kill(Duration::from_millis(200));
    }
}

// === Exit codes ===

#[test]
fn port_in_use_exits_2() {
    let holder = bind_fresh();
    let addr = holder.local_addr().unwrap().to_string();
    let b = TestBackend::start("b");
    let yaml = proxy_config("{default_pool: web}", &[pool("web", &[b.url()], &[])]).replace("{listen}", &addr);
    let mut sy = Switchyard::builder().config(&yaml).ready(Ready::NoWait).start();
    assert_eq!(sy.wait_exit(Duration::from_secs(15)), Some(2));
    let err = sy.stderr();
    assert!(err.contains(&addr), "message does not name {addr}:\n{err}");
    assert!(err.to_ascii_lowercase().contains("in use"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    // Quick mode on a port in use (0.0.0.0:PORT).
    let holder = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    run_switchyard(&["--backends", &b.url(), "--port", &port]).assert_fails(2, &[&port]);
}
