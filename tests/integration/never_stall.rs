//! Never stall, never lose the service (issue 11): logs that cannot block
//! requests, upgrades that cannot end in an outage, a durable admin state,
//! admin token rotation.

use crate::common::*;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

/// A switchyard process whose stdout and stderr are pipes nobody reads
/// (a stalled journald): spawned by hand, killed by PID on drop.
struct Stalled {
    child: Child,
    /// Holds the config; removed on drop.
    _dir: TempDir,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    // held open, never read
    _stdout: Option<std::process::ChildStdout>,
    _stderr: Option<std::process::ChildStderr>,
}

impl Stalled {
    fn start(yaml: &str, rust_log: &str) -> Stalled {
        let dir = TempDir::new();
        let (port, admin_port) = (free_port(), free_port());
        let config = dir.join("switchyard.yaml");
        fs::write(&config, expand_config(yaml, dir.path(), port, admin_port)).expect("config");
        let mut child = Command::new(SWITCHYARD_BIN)
            .arg("-c")
            .arg(&config)
            .current_dir(dir.path())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switchyard");
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
        let up = poll_until(READY_TIMEOUT, || {
            matches!(child.try_wait(), Ok(None))
                && try_get(admin, "/healthz", &[]).is_ok_and(|r| r.status == 200)
                // the admin listener can answer before the proxy's is bound
                && try_get(addr, "/", &[]).is_ok()
        });
        assert!(up, "switchyard with stalled output did not come up");
        Stalled { child, _dir: dir, addr, admin, _stdout: stdout, _stderr: stderr }
    }

    /// `switchyard_log_lines_dropped_total{log="NAME"}`.
    fn dropped(&self, log: &str) -> u64 {
        let text = get(self.admin, "/metrics", &[]).text();
        let key = format!("switchyard_log_lines_dropped_total{{log=\"{log}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in /metrics:\n{text}"))
    }
}

impl Drop for Stalled {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` requests from 4 keep-alive clients; every status that is not 200
/// (or I/O error) is returned. A client gives up after 3 failures, so a
/// stalled proxy fails the test in seconds.
fn hammer(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let per = n / 4;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut failures = Vec::new();
                let mut client = None;
                for i in 0..per {
                    if failures.len() >= 3 {
                        break;
                    }
                    if client.is_none() {
                        client = Client::connect(addr).ok();
                    }
                    let Some(c) = client.as_mut() else {
                        failures.push("connect failed".to_string());
                        continue;
                    };
                    let _ = c.set_timeout(Duration::from_secs(5));
                    match c.get(&format!("/r{i}"), &[]) {
                        Ok(r) if r.status == 200 => {}
                        Ok(r) => failures.push(format!("status {}", r.status)),
                        Err(e) => {
                            failures.push(format!("{e}"));
                            client = None;
                        }
                    }
                }
                failures
            })
        })
        .collect();
    workers.into_iter().flat_map(|w| w.join().expect("client thread")).collect()
}

const ADMIN: &str = "admin: { listen: \"{admin}\" }\n";

#[test]
fn access_log_to_a_stalled_stdout_pipe_never_blocks_requests() {
    let web = TestBackend::start("web");
    let yaml = web_pool_config(&[web.url()], "") + ADMIN + "log: { access: stdout, format: json }\n";
    let sy = Stalled::start(&yaml, "warn");
    let failures = hammer(sy.addr, 2000);
    assert!(
        failures.is_empty(),
        "{} of 2000 requests failed with stdout stalled: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sy.dropped("access") > 0, "no access log line counted as dropped");
}

#[test]
fn error_log_to_a_stalled_stderr_pipe_never_blocks_requests() {
    let web = TestBackend::start("web");
    // debug: pingora and switchyard log several lines per request
    let yaml = web_pool_config(&[web.url()], "") + ADMIN + "log: { access: off }\n";
    let sy = Stalled::start(&yaml, "debug");
    let failures = hammer(sy.addr, 2000);
    assert!(
        failures.is_empty(),
        "{} of 2000 requests failed with stderr stalled: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(sy.dropped("error") > 0, "no error log line counted as dropped");
}

#[test]
fn corrupt_state_file_is_set_aside_and_an_upgrade_under_load_drops_nothing() {
    let [web, extra] = backends(["web", "extra"]);
    let yaml = server_line(1, 1)
        + &web_pool_config(&[web.url()], "")
        + "admin: { listen: \"{admin}\", state_file: \"{dir}/state.json\" }\n";
    let mut old = Switchyard::start(&yaml);
    // an admin change writes the state file
    let added = request(
        old.admin_addr(),
        "POST",
        "/backends",
        &[("Content-Type", "application/json")],
        format!("{{\"pool\": \"web\", \"url\": \"{}\"}}", extra.url()).as_bytes(),
    );
    assert_eq!(added.status, 201, "{}", added.text());
    let state = old.dir().join("state.json");
    let saved = fs::read_to_string(&state).expect("state file written");
    assert!(saved.contains(&extra.url()), "{saved}");
    // a crash left it truncated
    fs::write(&state, &saved[..saved.len() / 2]).expect("truncate state");

    // -t reports it, changes nothing, and still passes (a start copes)
    let t = check_config_file(old.config_path());
    assert_eq!(t.code, 0, "{t:?}");
    assert!(t.stdout.contains("configuration ok"), "{t:?}");
    assert!(t.stderr.contains("state.json") && t.stderr.contains("set"), "-t does not report the state file: {t:?}");
    assert!(state.exists(), "-t must not move the state file");

    let load = Load::start(old.addr(), 6);
    assert!(poll_until(Duration::from_secs(5), || load.ok() > 30));

    let mut new = old.spawn_sibling(&["-u"]);
    assert!(
        poll_until(Duration::from_secs(10), || old.dir().join("sy.sock").exists()),
        "new instance never opened the upgrade socket\n{}",
        new.logs()
    );
    old.signal(libc::SIGQUIT);
    assert_eq!(old.wait_exit(Duration::from_secs(20)), Some(0), "{}", old.logs());
    let served_after = load.ok();
    assert!(
        poll_until(Duration::from_secs(5), || load.ok() > served_after + 30),
        "new instance does not serve\n{}",
        new.logs()
    );
    load.finish(&new.logs());
    assert!(new.is_running(), "{}", new.logs());
    let aside: Vec<_> = fs::read_dir(old.dir())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "bad state file not set aside: {aside:?}");
    assert!(new.stderr().contains("set aside"), "no loud log line about the state file\n{}", new.logs());
    // the new instance serves the file's pool without the lost admin change
    let status = get(new.admin_addr(), "/status", &[]).json();
    let backends = status["pools"]["web"]["backends"].as_array().map_or(0, |b| b.len());
    assert_eq!(backends, 1, "{status}");
}

/// A "new binary" that passes `-t` and `--show` but dies at once when
/// started for the upgrade (`-u`).
fn dying_binary(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("switchyard-broken");
    fs::write(
        &path,
        format!("#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -u ] && exit 3; done\nexec \"{SWITCHYARD_BIN}\" \"$@\"\n"),
    )
    .expect("write script");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

fn upgrade_script() -> String {
    format!("{}/deploy/upgrade.sh", env!("CARGO_MANIFEST_DIR"))
}

/// `deploy/upgrade.sh` with `bin` as the new binary on `sy`'s config:
/// (success, stderr). Output goes to files: the daemonized new instance
/// inherits them and would hold pipes open.
fn run_upgrade_script(sy: &Switchyard, bin: &std::path::Path) -> (bool, String) {
    let err = sy.dir().join("upgrade.stderr");
    let mut child = Command::new("bash")
        .arg(upgrade_script())
        .env("SWITCHYARD_BIN", bin)
        .env("SWITCHYARD_CONF", sy.config_path())
        .env("SWITCHYARD_UPGRADE_TIMEOUT", "10")
        .current_dir(sy.dir())
        .stdin(Stdio::null())
        .stdout(fs::File::create(sy.dir().join("upgrade.stdout")).expect("stdout file"))
        .stderr(fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("run upgrade.sh");
    let Some(status) = wait_child(&mut child, Duration::from_secs(60)) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("upgrade.sh still running after 60 s");
    };
    (status.success(), fs::read_to_string(&err).unwrap_or_default())
}

#[test]
fn upgrade_script_leaves_the_old_instance_serving_when_the_new_binary_dies() {
    let web = TestBackend::start("web");
    let sy = Switchyard::start(&web_pool_config(&[web.url()], ""));
    let pid = sy.pid().expect("pid");
    // a foreground instance writes no pid file; the unit's daemon does
    fs::write(sy.pid_file(), format!("{pid}\n")).expect("pid file");
    let broken = dying_binary(sy.dir());

    let (success, stderr) = run_upgrade_script(&sy, &broken);
    assert!(!success, "upgrade.sh succeeded: {stderr}");
    assert!(stderr.contains("keeps serving"), "{stderr}");
    // the old instance was never told to go, and keeps serving
    let quit = || sy.stderr().contains("SIGQUIT");
    assert!(!poll_until(Duration::from_secs(2), quit), "the old instance got SIGQUIT\n{}", sy.logs());
    assert!(pid_alive(pid));
    for _ in 0..20 {
        assert_eq!(get(sy.addr(), "/", &[]).status, 200);
    }
}

#[test]
fn upgrade_script_hands_over_to_a_working_new_binary() {
    let web = TestBackend::start("web");
    let yaml = server_line(1, 1) + &web_pool_config(&[web.url()], "");
    let mut sy = Switchyard::start(&yaml);
    let pid = sy.pid().expect("pid");
    fs::write(sy.pid_file(), format!("{pid}\n")).expect("pid file");

    let (success, stderr) = run_upgrade_script(&sy, std::path::Path::new(SWITCHYARD_BIN));
    assert!(success, "upgrade.sh failed: {stderr}\n{}", sy.logs());
    assert_eq!(sy.wait_exit(Duration::from_secs(20)), Some(0), "{}", sy.logs());
    let new: u32 = fs::read_to_string(sy.pid_file()).expect("pid file").trim().parse().expect("pid");
    assert_ne!(new, pid);
    assert!(pid_alive(new));
    assert_eq!(get(sy.addr(), "/", &[]).status, 200);
}

fn admin_get(sy: &Switchyard, auth: &str) -> u16 {
    get(sy.admin_addr(), "/status", &[("Authorization", auth)]).status
}

#[test]
fn a_token_rotated_by_reload_replaces_the_old_one_at_once() {
    let web = TestBackend::start("web");
    let secrets = TempDir::new();
    let token = secrets.join("token");
    fs::write(&token, "old-token\n").expect("token");
    let yaml = web_pool_config(&[web.url()], "")
        + &format!("admin: {{ listen: \"{{admin}}\", token_file: \"{}\" }}\n", token.display());
    let sy = Switchyard::start(&yaml);
    assert_eq!(admin_get(&sy, "Bearer old-token"), 200);
    assert_eq!(admin_get(&sy, "Bearer new-token"), 401);

    fs::write(&token, "new-token\n").expect("token");
    let reload = request(sy.admin_addr(), "POST", "/reload", &[("Authorization", "Bearer old-token")], b"");
    assert_eq!(reload.status, 200, "{}", reload.text());
    assert_eq!(admin_get(&sy, "Bearer old-token"), 401, "old token still works");
    assert_eq!(admin_get(&sy, "Bearer new-token"), 200, "new token refused");

    // and by SIGHUP
    fs::write(&token, "third-token\n").expect("token");
    sy.signal(libc::SIGHUP);
    assert!(poll_until(Duration::from_secs(10), || admin_get(&sy, "Bearer third-token") == 200), "{}", sy.logs());
    assert_eq!(admin_get(&sy, "Bearer new-token"), 401);
}

#[test]
fn the_bearer_scheme_is_case_insensitive() {
    let web = TestBackend::start("web");
    let yaml = web_pool_config(&[web.url()], "") + "admin: { listen: \"{admin}\", token_env: SY_TEST_TOKEN }\n";
    let sy = Switchyard::builder().config(&yaml).env("SY_TEST_TOKEN", "s3cret").start();
    assert_eq!(admin_get(&sy, "Bearer s3cret"), 200);
    assert_eq!(admin_get(&sy, "bearer s3cret"), 200);
    assert_eq!(admin_get(&sy, "BEARER s3cret"), 200);
    assert_eq!(admin_get(&sy, "bearer wrong"), 401);
    assert_eq!(admin_get(&sy, "Basic s3cret"), 401);
}
