//! The admin API and the Prometheus metrics it serves:
//! bearer-token guard, `/status`, adding / removing / draining backends at
//! run time, changes that outlive reloads and restarts, `POST /reload`,
//! `/metrics`, and the `admin:` config checks.
//!
//! Every proxy here runs with `health_check: {type: none}` unless the test is
//! about health, so backends take traffic at once.

use crate::common::*;
use serde_json::json;

use std::thread;
use std::time::{Duration, Instant};

/// The usual `admin:` body: the `{admin}` port, a state file in the temp dir.
const ADMIN: &str = "listen: \"{admin}\", state_file: \"{dir}/state.json\"";
const WEB: &str = "{default_pool: web}";
const BY_APP: &str = "{header: App-Name, default_pool: web}";

/// `admin: {ADMIN_BODY}` and [`proxy_config`]`(routing, pools)`.
fn admin_config_with(admin_body: &str, routing: &str, pools: &[String]) -> String {
    format!("admin: {{{admin_body}}}\n{}", proxy_config(routing, pools))
}

/// [`ADMIN`], `default_pool: web`, `pools`.
fn admin_config(pools: &[String]) -> String {
    admin_config_with(ADMIN, WEB, pools)
}

/// Backends `names` and the proxy of [`admin_config`] with them as pool `web`, admin API up.
fn web_admin<const N: usize>(names: [&str; N]) -> ([TestBackend; N], Switchyard) {
    let bs = backends(names);
    let sy = Switchyard::start_admin(&admin_config(&[pool("web", &urls(&bs.each_ref()), &[])]));
    (bs, sy)
}

/// An admin request, with this `Authorization` header when given.
fn admin_as(sy: &Switchyard, auth: Option<&str>, method: &str, path: &str, body: &str) -> Response {
    let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", *a)).collect();
    if !body.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    request(sy.admin_addr(), method, path, &headers, body.as_bytes())
}

/// An admin request without a token, asserting the answer's status.
fn call(sy: &Switchyard, method: &str, path: &str, body: &str, code: u16) -> Response {
    let r = admin_as(sy, None, method, path, body);
    assert_eq!(r.status, code, "{method} {path} {body}: {}", r.text());
    r
}

fn status(sy: &Switchyard) -> serde_json::Value {
    call(sy, "GET", "/status", "", 200).json()
}

fn metrics(sy: &Switchyard) -> String {
    call(sy, "GET", "/metrics", "", 200).text()
}

/// The backends that answered `n` requests to the default pool (None: no 200).
fn serve_n(sy: &Switchyard, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| who(sy, None)).collect()
}

/// `n` requests to the default pool, each a 200 from `name`, none of them
/// reaching a backend of `idle` (deleted or drained); `when` for the messages.
fn assert_served_only_by(sy: &Switchyard, n: usize, name: &str, when: &str, idle: &[&TestBackend]) {
    let before: Vec<usize> = idle.iter().map(|b| b.app_count()).collect();
    for (i, b) in serve_n(sy, n).into_iter().enumerate() {
        assert_eq!(b.as_deref(), Some(name), "{when} request {i}");
    }
    let after: Vec<usize> = idle.iter().map(|b| b.app_count()).collect();
    assert_eq!(after, before, "{when}: a deleted or drained backend got traffic");
}

/// The backend objects of pool `name` in a `/status` answer.
fn status_backends(st: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    let bs = st["pools"][name]["backends"].as_array();
    bs.unwrap_or_else(|| panic!("no backends array for pool {name} in {st}")).clone()
}

fn status_backend(st: &serde_json::Value, name: &str, url: &str) -> Option<serde_json::Value> {
    status_backends(st, name).into_iter().find(|b| b["url"].as_str() == Some(url))
}

/// The sorted URLs of pool `name` in a `/status` answer.
fn status_urls(st: &serde_json::Value, name: &str) -> Vec<String> {
    let mut v: Vec<String> = status_backends(st, name).iter().map(|b| b["url"].as_str().unwrap_or("").into()).collect();
    v.sort();
    v
}

/// `METHOD /backends` with the JSON of [`body_json`], asserting the status.
fn expect_call(sy: &Switchyard, method: &str, pool: Option<&str>, url: &str, extra: &str, code: u16) -> Response {
    call(sy, method, "/backends", &body_json(pool, url, extra), code)
}

fn body_json(pool: Option<&str>, url: &str, extra: &str) -> String {
    let pool = pool.map(|p| format!("\"pool\": \"{p}\", ")).unwrap_or_default();
    format!("{{{pool}\"url\": \"{url}\"{extra}}}")
}

/// `/metrics` once `ready` holds for it (2 s bound; a request is counted when
/// the proxy finishes it, a moment after the client has read the answer).
fn settled(sy: &Switchyard, ready: impl Fn(&str) -> bool) -> String {
    let mut text = metrics(sy);
    poll_until(Duration::from_secs(2), || {
        text = metrics(sy);
        ready(&text)
    });
    text
}

// === Authentication ===

#[test]
fn healthz_answers_ok_and_no_token_configured_means_open_api() {
    let ([_b1], sy) = web_admin(["b1"]);
    assert_eq!(call(&sy, "GET", "/healthz", "", 200).text().trim(), "ok");
    // no token configured: everything is open (loopback only)
    call(&sy, "GET", "/status", "", 200);
    call(&sy, "GET", "/metrics", "", 200);
}

/// Every guarded endpoint with a request body that succeeds (with the right
/// token) on a pool `web` holding `b1`, given a spare backend `spare`.
fn guarded_requests(spare: &str) -> Vec<(&'static str, &'static str, String, u16)> {
    vec![
        ("GET", "/status", String::new(), 200),
        ("GET", "/metrics", String::new(), 200),
        ("POST", "/reload", String::new(), 200),
        ("POST", "/backends", body_json(Some("web"), spare, ""), 201),
        ("PATCH", "/backends", body_json(Some("web"), spare, ", \"enabled\": false"), 200),
        ("DELETE", "/backends", body_json(Some("web"), spare, ""), 200),
    ]
}

fn assert_token_guard(sy: &Switchyard, token: &str, spare: &TestBackend) {
    let (right, wrong, basic) = (format!("Bearer {token}"), format!("Bearer {token}x"), format!("Basic {token}"));
    // /healthz never needs the token
    for auth in [None, Some("Bearer wrong")] {
        let r = admin_as(sy, auth, "GET", "/healthz", "");
        assert_eq!(r.status, 200, "/healthz with Authorization {auth:?}");
        assert_eq!(r.text().trim(), "ok");
    }
    // no token, a wrong one, the token in another scheme
    for (method, path, body, _) in guarded_requests(&spare.url()) {
        for auth in [None, Some(wrong.as_str()), Some(basic.as_str())] {
            let r = admin_as(sy, auth, method, path, &body);
            assert_eq!(r.status, 401, "{method} {path} with Authorization {auth:?}: {}", r.text());
        }
    }
    // nothing was changed by the refused requests
    let st = admin_as(sy, Some(&right), "GET", "/status", "").expect_status(200);
    let added = status_backend(&st.json(), "web", &spare.url());
    assert!(added.is_none(), "an unauthorised POST /backends changed the pool: {}", st.text());
    assert_eq!(spare.app_count(), 0);

    // with the right token each endpoint does its job
    for (method, path, body, code) in guarded_requests(&spare.url()) {
        let r = admin_as(sy, Some(&right), method, path, &body);
        assert_eq!(r.status, code, "{method} {path} with the right token: {}", r.text());
    }
    let text = admin_as(sy, Some(&right), "GET", "/metrics", "").text();
    assert!(text.contains("switchyard_requests_total"), "{text}");
}

#[test]
fn token_from_env_or_file_guards_every_endpoint_but_healthz() {
    let [b1, spare] = backends(["b1", "spare"]);
    let web = [pool("web", &[b1.url()], &[])];
    let yaml = admin_config_with(&format!("{ADMIN}, token_env: SY_ADMIN_TEST_TOKEN"), WEB, &web);
    let sy = Switchyard::builder().config(&yaml).env("SY_ADMIN_TEST_TOKEN", "env-s3cret").start();
    sy.wait_admin();
    assert_token_guard(&sy, "env-s3cret", &spare);

    let own = TempDir::new();
    let token_file = own.join("admin.token");
    // surrounding whitespace / the final newline are not part of the token
    std::fs::write(&token_file, "file-t0ken\n").expect("write token file");
    let yaml = admin_config_with(&format!("{ADMIN}, token_file: \"{}\"", token_file.display()), WEB, &web);
    let sy = Switchyard::start_admin(&yaml);
    assert_token_guard(&sy, "file-t0ken", &spare);
}

// === /status ===

#[test]
fn status_lists_pools_backends_and_counters() {
    let [b1, b2, b3, b4] = backends(["b1", "b2", "b3", "b4"]);
    let dead = dead_url();
    let sy = Switchyard::start_admin(&admin_config_with(
        ADMIN,
        BY_APP,
        &[
            pool("web", &[be(&b1.url(), ", name: alpha"), be(&b2.url(), ", weight: 3")], &[]),
            pool("api", &[be(&b3.url(), ", enabled: false"), b4.url()], &["strategy: least_conn"]),
            pool("flaky", &[be(&dead, ""), b4.url()], &[]),
        ],
    ));

    for _ in 0..8 {
        assert!(who(&sy, Some("web")).is_some());
    }
    // until the dead backend was tried once (then it is ejected)
    let mut tries = 0;
    eventually!(
        5,
        {
            tries += 1;
            assert_eq!(who(&sy, Some("flaky")).as_deref(), Some("b4"));
            let st = status(&sy);
            status_backend(&st, "flaky", &dead).is_some_and(|b| b["failures"].as_u64() >= Some(1))
        },
        "the dead backend's failures never showed in /status: {}",
        status(&sy)
    );

    let st = status(&sy);
    let mut names: Vec<&String> = st["pools"].as_object().expect("pools object").keys().collect();
    names.sort();
    assert_eq!(names, ["api", "flaky", "web"], "{st}");

    let web = &st["pools"]["web"];
    assert_eq!(web["strategy"], "round_robin", "{st}");
    assert_eq!(web["healthy"], 2, "{st}");
    let web_backends = status_backends(&st, "web");
    assert_eq!(web_backends.len(), 2, "{st}");
    for b in &web_backends {
        for key in ["url", "name", "healthy", "enabled", "weight", "active_connections", "requests", "failures"] {
            assert!(b.get(key).is_some(), "backend without {key:?}: {b}");
        }
    }
    let a = status_backend(&st, "web", &b1.url()).expect("b1 listed");
    let want =
        json!({"name": "alpha", "weight": 1, "healthy": true, "enabled": true, "active_connections": 0, "failures": 0});
    for (key, value) in want.as_object().expect("object") {
        assert_eq!(&a[key], value, "{key}: {a}");
    }
    let b = status_backend(&st, "web", &b2.url()).expect("b2 listed");
    assert_eq!(b["name"], b2.addr().to_string(), "{b}");
    assert_eq!(b["weight"], 3, "{b}");
    // `requests` counts the requests proxied to each backend
    assert_eq!(a["requests"].as_u64(), Some(b1.app_count() as u64), "{st}");
    assert_eq!(b["requests"].as_u64(), Some(b2.app_count() as u64), "{st}");
    assert_eq!(b1.app_count() + b2.app_count(), 8);

    assert_eq!(st["pools"]["api"]["strategy"], "least_conn", "{st}");
    assert_eq!(status_backend(&st, "api", &b3.url()).expect("b3 listed")["enabled"], false, "{st}");
    assert_eq!(status_backend(&st, "api", &b4.url()).expect("b4 listed")["enabled"], true, "{st}");

    let flaky = status_backend(&st, "flaky", &b4.url()).expect("b4 in flaky");
    assert_eq!(flaky["requests"].as_u64(), Some(tries as u64), "{st}");
    assert_eq!(flaky["failures"], 0, "{st}");
}

// === POST / DELETE / PATCH /backends ===

#[test]
fn post_backend_adds_a_backend_that_takes_traffic() {
    let ([_b1], sy) = web_admin(["b1"]);
    let b2 = TestBackend::start("b2");
    expect_call(&sy, "POST", Some("web"), &b2.url(), ", \"weight\": 2", 201);
    eventually!(5, who(&sy, None).as_deref() == Some("b2"), "added backend never served");
    let st = status(&sy);
    let added = status_backend(&st, "web", &b2.url()).expect("b2 in /status");
    assert_eq!(added["weight"], 2, "{st}");
    assert_eq!(added["enabled"], true, "{st}");
    let got = serve_n(&sy, 12);
    assert!(got.iter().all(Option::is_some), "{got:?}");
    assert!(got.iter().any(|b| b.as_deref() == Some("b1")), "{got:?}");
    assert!(got.iter().any(|b| b.as_deref() == Some("b2")), "{got:?}");
}

/// Refused `POST`, `PATCH` and `DELETE /backends` requests change nothing.
#[test]
fn backends_requests_with_a_bad_url_pool_backend_or_json_are_refused() {
    let ([b1], sy) = web_admin(["b1"]);
    let b2 = TestBackend::start("b2");
    let (off, web) = (", \"enabled\": false", Some("web"));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("POST", body_json(web, "not a url", ""), 400, "bad URL"),
        ("POST", body_json(web, "http://", ""), 400, "URL without host"),
        ("POST", body_json(Some("nope"), &b2.url(), ""), 404, "unknown pool"),
        ("POST", body_json(web, &b1.url(), ""), 409, "already there"),
        ("POST", body_json(web, &format!("{}/", b1.url()), ""), 409, "already there, written with a trailing slash"),
        ("POST", body_json(web, "ftp://127.0.0.1:21", ""), 400, "bad scheme"),
        ("POST", body_json(web, &format!("{}/path", b2.url()), ""), 400, "URL with a path"),
        ("POST", "{\"pool\": \"web\", \"url\": ".to_string(), 400, "truncated JSON"),
        ("POST", "not json at all".to_string(), 400, "not JSON"),
        ("POST", "{\"pool\": \"web\"}".to_string(), 400, "no url"),
        ("POST", String::new(), 400, "empty body"),
        ("PATCH", body_json(web, &b1.url(), ""), 400, "no `enabled`"),
        ("PATCH", body_json(web, &dead_url(), off), 404, "unknown backend"),
        ("PATCH", body_json(Some("nope"), &b1.url(), off), 404, "unknown pool"),
        ("DELETE", body_json(web, &dead_url(), ""), 404, "never-known backend"),
        ("DELETE", body_json(Some("nope"), &b1.url(), ""), 404, "unknown pool"),
        ("DELETE", "{\"pool\": ".to_string(), 400, "bad JSON"),
    ];
    for (method, body, code, what) in cases {
        let r = admin_as(&sy, None, method, "/backends", &body);
        assert_eq!(r.status, code, "{method} {what}: {body:?} -> {}", r.text());
        let error = r.json()["error"].as_str().is_some_and(|e| !e.is_empty());
        assert!(error, "{method} {what}: no error message: {}", r.text());
    }
    let st = status(&sy);
    assert_eq!(status_urls(&st, "web"), [b1.url()], "{st}");
    assert_eq!(status_backend(&st, "web", &b1.url()).expect("b1")["enabled"], true, "{st}");
    assert_served_only_by(&sy, 5, "b1", "after the refused requests", &[&b2]);
    // and a good request after all this still works
    expect_call(&sy, "POST", web, &b2.url(), "", 201);
    expect_call(&sy, "POST", web, &b2.url(), "", 409); // second add of the same backend
}

#[test]
fn post_backend_without_pool_uses_the_default_pool() {
    let [b1, api, extra] = backends(["b1", "api", "extra"]);
    let sy = Switchyard::start_admin(&web_and_api(&b1, &[], Some(&api)));
    expect_call(&sy, "POST", None, &extra.url(), "", 201);
    let st = status(&sy);
    let mut want = vec![b1.url(), extra.url()];
    want.sort();
    assert_eq!(status_urls(&st, "web"), want, "{st}");
    assert_eq!(status_urls(&st, "api"), [api.url()], "{st}");
    eventually!(5, who(&sy, Some("web")).as_deref() == Some("extra"));
    for _ in 0..6 {
        assert_eq!(who(&sy, Some("api")).as_deref(), Some("api"));
    }
    // PATCH and DELETE without pool also mean the default pool
    expect_call(&sy, "PATCH", None, &extra.url(), ", \"enabled\": false", 200);
    expect_call(&sy, "DELETE", None, &extra.url(), "", 200);
    assert_eq!(status_urls(&status(&sy), "web"), [b1.url()]);
}

#[test]
fn delete_backend_stops_its_traffic() {
    let ([b1, b2], sy) = web_admin(["b1", "b2"]);
    let got = serve_n(&sy, 6);
    assert!(got.iter().any(|b| b.as_deref() == Some("b2")), "{got:?}");

    expect_call(&sy, "DELETE", Some("web"), &b2.url(), "", 200);
    assert_served_only_by(&sy, 20, "b1", "after DELETE", &[&b2]);
    assert_eq!(status_urls(&status(&sy), "web"), [b1.url()]);
    expect_call(&sy, "DELETE", Some("web"), &b2.url(), "", 404); // second delete
}

#[test]
fn file_backend_deleted_re_added_and_deleted_again_gets_no_traffic() {
    let ([b1, b2], sy) = web_admin(["b1", "b2"]);
    let web_b2 = body_json(Some("web"), &b2.url(), "");
    call(&sy, "DELETE", "/backends", &web_b2, 200);
    call(&sy, "POST", "/backends", &web_b2, 201);
    eventually!(5, who(&sy, None).as_deref() == Some("b2"), "re-added backend never served");
    call(&sy, "DELETE", "/backends", &web_b2, 200);
    let st = status(&sy);
    assert_eq!(
        status_urls(&st, "web"),
        [b1.url()],
        "DELETE answered 200 but the backend is still in the pool: {st}\nstate file: {}",
        std::fs::read_to_string(sy.dir().join("state.json")).unwrap_or_default()
    );
    assert_served_only_by(&sy, 10, "b1", "after the second DELETE", &[&b2]);
}

#[test]
fn delete_backend_lets_in_flight_requests_finish() {
    let ([slow, fast], sy) = web_admin(["slow", "fast"]);
    slow.set_delay(Duration::from_millis(800));
    // only `slow` takes new requests for now
    expect_call(&sy, "PATCH", Some("web"), &fast.url(), ", \"enabled\": false", 200);

    let addr = sy.addr();
    let inflight = thread::spawn(move || try_get(addr, "/slow", &[]));
    eventually!(5, slow.path_count("/slow") == 1, "the slow request never reached the slow backend");
    let t = Instant::now();
    expect_call(&sy, "DELETE", Some("web"), &slow.url(), "", 200);
    let took = t.elapsed();
    assert!(!inflight.is_finished(), "DELETE took {took:?}; the request was no longer in flight, test inconclusive");
    let got = inflight.join().expect("client thread");
    let got = got.unwrap_or_else(|e| panic!("in-flight request failed after DELETE: {e}")).expect_status(200);
    assert_eq!(got.header("x-backend"), Some("slow"));
    assert_eq!(got.text(), "slow");

    // new requests never go to the deleted backend
    expect_call(&sy, "PATCH", Some("web"), &fast.url(), ", \"enabled\": true", 200);
    assert_served_only_by(&sy, 6, "fast", "after DELETE", &[]);
    assert_eq!(slow.app_count(), 1);
}

#[test]
fn patch_backend_drains_and_re_enables() {
    let ([_b1, b2], sy) = web_admin(["b1", "b2"]);
    expect_call(&sy, "PATCH", Some("web"), &b2.url(), ", \"enabled\": false", 200);
    let st = status(&sy);
    assert_eq!(status_backend(&st, "web", &b2.url()).expect("drained b2 still listed")["enabled"], false, "{st}");
    assert_served_only_by(&sy, 20, "b1", "after PATCH enabled: false", &[&b2]);

    expect_call(&sy, "PATCH", Some("web"), &b2.url(), ", \"enabled\": true", 200);
    eventually!(5, who(&sy, None).as_deref() == Some("b2"), "re-enabled backend never served");
    let st = status(&sy);
    assert_eq!(status_backend(&st, "web", &b2.url()).expect("b2")["enabled"], true);
}

// === Admin changes outlive reloads and restarts ===

/// The persistence tests' backends: `b1`, `b2` in the file, `b3` added at run time.
type Trio = [TestBackend; 3];

/// The file's pools: `web` = b1, b2; with `api` = b1 when `with_api`.
fn trio_pools([b1, b2, _]: &Trio, with_api: bool) -> Vec<String> {
    let api = if with_api { pool("api", &[b1.url()], &[]) } else { String::new() };
    vec![pool("web", &[b1.url(), b2.url()], &[]), api]
}

/// Adds b3, deletes b2, drains b1: only b3 serves `web` afterwards.
fn change(sy: &Switchyard, t: &Trio) {
    expect_call(sy, "POST", Some("web"), &t[2].url(), "", 201);
    expect_call(sy, "DELETE", Some("web"), &t[1].url(), "", 200);
    expect_call(sy, "PATCH", Some("web"), &t[0].url(), ", \"enabled\": false", 200);
    assert_changed(sy, t, "after the changes");
}

fn assert_changed(sy: &Switchyard, [b1, b2, b3]: &Trio, when: &str) {
    let st = status(sy);
    let mut want = vec![b1.url(), b3.url()];
    want.sort();
    assert_eq!(status_urls(&st, "web"), want, "{when}: {st}");
    assert_eq!(status_backend(&st, "web", &b1.url()).expect("b1")["enabled"], false, "{when}: {st}");
    assert_served_only_by(sy, 12, "b3", when, &[b1, b2]);
}

#[test]
fn admin_changes_survive_sighup_and_post_reload() {
    for how in ["SIGHUP", "POST /reload"] {
        let t = backends(["b1", "b2", "b3"]);
        let sy = Switchyard::start_admin(&admin_config(&trio_pools(&t, false)));
        change(&sy, &t);
        assert!(sy.dir().join("state.json").exists(), "{how}: state file not written");
        // an edit that shows the reload happened: a new pool `api`
        sy.write_config(&admin_config_with(ADMIN, BY_APP, &trio_pools(&t, true)));
        reload(&sy, how);
        eventually!(10, who(&sy, Some("api")).as_deref() == Some("b1"), "{how}: the reload never happened");
        assert_changed(&sy, &t, &format!("after {how}"));
        if how == "POST /reload" {
            // and again with an unchanged file
            call(&sy, "POST", "/reload", "", 200);
            assert_changed(&sy, &t, "after a second POST /reload");
        }
    }
}

#[test]
fn admin_changes_survive_a_restart_with_the_same_state_file() {
    let t = backends(["b1", "b2", "b3"]);
    let own = TempDir::new();
    let state = own.join("state.json");
    let admin_body = format!("listen: \"{{admin}}\", state_file: \"{}\"", state.display());
    let yaml = admin_config_with(&admin_body, WEB, &trio_pools(&t, false));

    let mut first = Switchyard::start_admin(&yaml);
    change(&first, &t);
    let saved = std::fs::read_to_string(&state).unwrap_or_else(|e| panic!("state file {}: {e}", state.display()));
    assert!(saved.contains(&t[2].url()), "state file lacks b3: {saved}");
    first.kill(Duration::from_secs(5));
    drop(first);

    let second = Switchyard::start_admin(&yaml);
    assert_changed(&second, &t, "after a restart");
    // the restarted process keeps recording changes in the same file
    expect_call(&second, "PATCH", Some("web"), &t[0].url(), ", \"enabled\": true", 200);
    eventually!(5, who(&second, None).as_deref() == Some("b1"));
}

// === POST /reload ===

/// Config with pool `web` and, given `api`, pool `api` (both with `extra` keys), routed by App-Name.
fn web_and_api(web: &TestBackend, extra: &[&str], api: Option<&TestBackend>) -> String {
    let api = api.map(|a| pool("api", &[a.url()], extra)).unwrap_or_default();
    admin_config_with(ADMIN, BY_APP, &[pool("web", &[web.url()], extra), api])
}

/// A reload by `how`: "SIGHUP", or "POST /reload" (answered 200).
fn reload(sy: &Switchyard, how: &str) {
    match how {
        "SIGHUP" => sy.signal(libc::SIGHUP),
        _ => _ = call(sy, "POST", "/reload", "", 200),
    }
}

/// The new pool is health-checked: probed before it is routed to.
#[test]
fn sighup_and_post_reload_apply_a_valid_edit() {
    let hc = "health_check: {type: http, path: /health, interval: 100ms, timeout: 300ms, rise: 1, fall: 1}";
    for how in ["SIGHUP", "POST /reload"] {
        let [web, api] = backends(["web", "api"]);
        let sy = Switchyard::start_admin(&web_and_api(&web, &[hc], None));
        assert_eq!(who(&sy, Some("api")).as_deref(), Some("web"), "{how}");
        sy.write_config(&web_and_api(&web, &[hc], Some(&api)));
        reload(&sy, how);
        eventually!(10, who(&sy, Some("api")).as_deref() == Some("api"), "new pool never routed after {how}");
        assert_eq!(who(&sy, Some("web")).as_deref(), Some("web"), "{how}");
        assert!(status(&sy)["pools"]["api"].is_object(), "{how}");
    }
}

#[test]
fn post_reload_rejects_an_invalid_edit_and_keeps_serving() {
    let [web, api] = backends(["web", "api"]);
    let sy = Switchyard::start_admin(&web_and_api(&web, &[], None));
    sy.write_config(&web_and_api(&web, &["strategy: fastest"], Some(&api)));
    let v = call(&sy, "POST", "/reload", "", 400).json();
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors array: {v}"));
    assert!(!errors.is_empty(), "{v}");
    assert!(
        errors.iter().any(|e| e.as_str().is_some_and(|s| s.contains("pools.web.strategy"))),
        "errors do not name pools.web.strategy: {v}"
    );
    // the old configuration keeps serving; the new pool does not exist
    for _ in 0..10 {
        assert_eq!(who(&sy, Some("web")).as_deref(), Some("web"));
        assert_eq!(who(&sy, Some("api")).as_deref(), Some("web"));
    }
    assert_eq!(api.app_count(), 0);
    assert!(status(&sy)["pools"].get("api").is_none());

    // a YAML syntax error is reported too
    sy.write_config("pools: [unclosed\n");
    let r = call(&sy, "POST", "/reload", "", 400);
    assert!(r.json()["errors"].as_array().is_some_and(|e| !e.is_empty()), "{}", r.text());
    assert_eq!(who(&sy, Some("web")).as_deref(), Some("web"));
}

// === /metrics ===

#[test]
fn metrics_are_prometheus_text_and_count_requests_by_pool_backend_code() {
    let b1 = TestBackend::start("b1");
    b1.set_delay(Duration::from_millis(30));
    b1.set_handler(|req| {
        (req.path() == "/missing").then(|| Reply::new(404, "nope").with_delay(Duration::from_millis(30)))
    });
    let sy = Switchyard::start_admin(&admin_config_with(ADMIN, "{header: App-Name}", &[pool("web", &[b1.url()], &[])]));
    // App-Name nope: unrouted, no pool takes it
    for (n, path, app, status) in [(5, "/ok", "web", 200), (2, "/missing", "web", 404), (3, "/x", "nope", 404)] {
        for _ in 0..n {
            assert_eq!(get(sy.addr(), path, &[("App-Name", app)]).status, status, "{path}");
        }
    }

    let count_is =
        |text: &str, n: f64| metric(text, "switchyard_request_duration_seconds_count", &[("pool", "web")]) == Some(n);
    settled(&sy, |t| {
        count_is(t, 7.0)
            && metric(t, "switchyard_requests_total", &[("pool", ""), ("backend", ""), ("code", "404")]) == Some(3.0)
    });
    let resp = call(&sy, "GET", "/metrics", "", 200);
    assert!(resp.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", resp.headers);
    let text = resp.text();
    // every line is a comment or a well-formed sample
    for line in text.lines() {
        assert!(line.starts_with('#') || is_sample_line(line), "malformed line {line:?} in\n{text}");
    }
    let types = "requests_total counter, request_duration_seconds histogram, upstream_attempts_total counter, \
                 retries_total counter, backend_healthy gauge, backend_active_connections gauge, \
                 rate_limited_total counter, config_reloads_total counter";
    for t in types.split(", ") {
        assert!(text.contains(&format!("# TYPE switchyard_{t}\n")), "no TYPE line for {t}:\n{text}");
    }

    let be1 = b1.addr().to_string();
    for (pool, backend, code, n) in [("web", be1.as_str(), "200", 5.0), ("web", &be1, "404", 2.0), ("", "", "404", 3.0)]
    {
        assert_metric(&text, "switchyard_requests_total", &[("pool", pool), ("backend", backend), ("code", code)], n);
    }

    // histogram: 7 requests of >= 30 ms each
    let bucket = |le: &str| must(&text, "switchyard_request_duration_seconds_bucket", &[("pool", "web"), ("le", le)]);
    let count = must(&text, "switchyard_request_duration_seconds_count", &[("pool", "web")]);
    let sum = must(&text, "switchyard_request_duration_seconds_sum", &[("pool", "web")]);
    assert_eq!(count, 7.0, "{text}");
    assert_eq!(bucket("+Inf"), 7.0, "{text}");
    assert_eq!(bucket("0.025"), 0.0, "requests faster than the backend delay?\n{text}");
    assert!(sum >= 7.0 * 0.03, "sum {sum} < 7 x 30 ms\n{text}");
    assert!(sum < 7.0 * 5.0, "sum {sum} absurd\n{text}");
    let web = samples(&text)
        .into_iter()
        .filter(|(n, l, _)| n == "switchyard_request_duration_seconds_bucket" && l["pool"] == "web");
    let web: Vec<f64> = web.map(|s| s.2).collect();
    assert!(web.windows(2).all(|w| w[0] <= w[1]), "buckets not cumulative: {web:?}\n{text}");
    let be1_ok = [("pool", "web"), ("backend", be1.as_str()), ("result", "ok")];
    assert_metric(&text, "switchyard_upstream_attempts_total", &be1_ok, 7.0);
    assert_metric(&text, "switchyard_retries_total", &[("pool", "web")], 0.0);
    assert_metric(&text, "switchyard_backend_healthy", &[("pool", "web"), ("backend", &be1)], 1.0);
    assert_metric(&text, "switchyard_rate_limited_total", &[("pool", "web")], 0.0);
}

#[test]
fn metrics_count_connect_failures_and_retries() {
    let b1 = TestBackend::start("b1");
    let dead = dead_addr();
    let dead_name = dead.to_string();
    let sy =
        Switchyard::start_admin(&admin_config(&[pool("web", &[be(&format!("http://{dead}"), ""), b1.url()], &[])]));
    let be1 = b1.addr().to_string();
    let (mut sent, dead_failed) = (0, [("pool", "web"), ("backend", &dead_name), ("result", "connect_failure")]);
    eventually!(
        5,
        {
            assert_eq!(who(&sy, None).as_deref(), Some("b1"));
            sent += 1;
            metric(&metrics(&sy), "switchyard_upstream_attempts_total", &dead_failed).is_some_and(|n| n >= 1.0)
        },
        "no connect_failure attempt counted:\n{}",
        metrics(&sy)
    );
    let be1_200 = [("pool", "web"), ("backend", be1.as_str()), ("code", "200")];
    let text = settled(&sy, |t| metric(t, "switchyard_requests_total", &be1_200) == Some(sent as f64));
    let attempts = |backend: &str, result: &str| {
        must(&text, "switchyard_upstream_attempts_total", &[("pool", "web"), ("backend", backend), ("result", result)])
    };
    // one refused connection ejects the dead backend for 10 s: exactly one try
    assert_eq!(attempts(&dead_name, "connect_failure"), 1.0, "{text}");
    assert_eq!(attempts(&dead_name, "ok"), 0.0, "{text}");
    assert_eq!(attempts(&be1, "ok"), sent as f64, "{text}");
    assert_metric(&text, "switchyard_retries_total", &[("pool", "web")], 1.0);
    assert_metric(&text, "switchyard_requests_total", &be1_200, sent as f64);
    // the ejected backend takes no traffic: not healthy
    assert_metric(&text, "switchyard_backend_healthy", &[("pool", "web"), ("backend", &dead_name)], 0.0);
}

#[test]
fn metrics_backend_healthy_follows_health_checks() {
    let [up, down] = backends(["up", "down"]);
    down.set_healthy(false);
    let hc = "health_check: {type: http, path: /health, interval: 100ms, timeout: 500ms, rise: 1, fall: 1}";
    let sy = Switchyard::start_admin(&admin_config(&[pool("web", &[up.url(), down.url()], &[hc])]));
    let (upn, downn) = (up.addr().to_string(), down.addr().to_string());
    let healthy =
        |name: &str| metric(&metrics(&sy), "switchyard_backend_healthy", &[("pool", "web"), ("backend", name)]);
    eventually!(5, healthy(&upn) == Some(1.0) && healthy(&downn) == Some(0.0), "{}", metrics(&sy));
    let st = status(&sy);
    assert_eq!(st["pools"]["web"]["healthy"], 1, "{st}");
    assert_eq!(status_backend(&st, "web", &down.url()).expect("down")["healthy"], false);

    down.set_healthy(true);
    up.set_healthy(false);
    eventually!(5, healthy(&upn) == Some(0.0) && healthy(&downn) == Some(1.0), "{}", metrics(&sy));
}

#[test]
fn metrics_show_active_connections() {
    let ([slow], sy) = web_admin(["slow"]);
    slow.set_delay(Duration::from_millis(800));
    let name = slow.addr().to_string();
    let active =
        || metric(&metrics(&sy), "switchyard_backend_active_connections", &[("pool", "web"), ("backend", &name)]);
    assert_eq!(active(), Some(0.0), "{}", metrics(&sy));

    let addr = sy.addr();
    let clients: Vec<_> = (0..2).map(|_| thread::spawn(move || try_get(addr, "/slow", &[]))).collect();
    eventually!(3, active() == Some(2.0), "active connections never 2 during two slow requests:\n{}", metrics(&sy));
    let st = status(&sy);
    assert_eq!(status_backend(&st, "web", &slow.url()).expect("slow")["active_connections"], 2, "{st}");
    for c in clients {
        c.join().expect("client").expect("slow request").expect_status(200);
    }
    eventually!(3, active() == Some(0.0), "active connections not back to 0:\n{}", metrics(&sy));
}

#[test]
fn metrics_count_config_reloads_by_result() {
    let web = TestBackend::start("web");
    let good = admin_config(&[pool("web", &[web.url()], &[])]);
    let sy = Switchyard::start_admin(&good);
    let reloads = |result: &str| must(&metrics(&sy), "switchyard_config_reloads_total", &[("result", result)]);
    let (ok0, err0) = (reloads("ok"), reloads("error"));

    call(&sy, "POST", "/reload", "", 200);
    assert_eq!(reloads("ok"), ok0 + 1.0);
    assert_eq!(reloads("error"), err0);

    sy.write_config("pools: {web: {backends: [], colour: blue}}\n");
    call(&sy, "POST", "/reload", "", 400);
    assert_eq!(reloads("ok"), ok0 + 1.0);
    assert_eq!(reloads("error"), err0 + 1.0);

    // SIGHUP counts the same way
    sy.signal(libc::SIGHUP);
    eventually!(5, reloads("error") == err0 + 2.0, "{}", metrics(&sy));
    sy.write_config(&good);
    sy.signal(libc::SIGHUP);
    eventually!(5, reloads("ok") == ok0 + 2.0, "{}", metrics(&sy));
    assert_eq!(who(&sy, None).as_deref(), Some("web"));
}

#[test]
fn metrics_count_won_races() {
    let [fast, slow] = backends(["fast", "slow"]);
    slow.set_delay(Duration::from_millis(300));
    let sy = Switchyard::start_admin(&admin_config_with(
        ADMIN,
        BY_APP,
        &[pool("web", &[fast.url(), slow.url()], &["race: {}"]), pool("plain", &[fast.url()], &[])],
    ));
    for _ in 0..3 {
        assert_eq!(who(&sy, Some("web")).as_deref(), Some("fast"));
    }
    assert_eq!(who(&sy, Some("plain")).as_deref(), Some("fast"));
    let text = metrics(&sy);
    let races = |pool: &str, outcome: &str| {
        metric(&text, "switchyard_race_requests_total", &[("pool", pool), ("outcome", outcome)]).unwrap_or(0.0)
    };
    assert_eq!(races("web", "won"), 3.0, "{text}");
    assert_eq!(races("web", "failed"), 0.0, "{text}");
    assert_eq!(races("plain", "won"), 0.0, "{text}");
}

// === Config validation of `admin:` ===

fn minimal(admin_body: &str) -> String {
    admin_config_with(admin_body, WEB, &[pool("web", &[be("http://127.0.0.1:9", "")], &[])])
}

/// `-t` on `admin:` bodies: a non-loopback listener needs a token, a
/// `token_env` must name a set variable.
#[test]
fn admin_config_needs_a_token_off_loopback_and_a_set_token_env() {
    let own = TempDir::new();
    let token = own.join("token");
    std::fs::write(&token, "t").expect("token file");
    let var = "SWITCHYARD_ADMIN_TEST_TOKEN_NEVER_SET";
    assert!(std::env::var_os(var).is_none());
    let cases: [(String, i32, &[&str]); 4] = [
        ("listen: \"0.0.0.0:{admin_port}\"".into(), 1, &["admin.listen"]),
        ("listen: \"{admin}\"".into(), 0, &[]), // loopback without a token is fine
        (format!("listen: \"0.0.0.0:{{admin_port}}\", token_file: \"{}\"", token.display()), 0, &[]),
        (format!("listen: \"{{admin}}\", token_env: {var}"), 1, &["admin.token_env", var]),
    ];
    for (body, want, needles) in cases {
        let Output { code, stdout: out, stderr: err, .. } = check_config(&minimal(&body));
        assert_eq!(code, want, "{body}\nstdout: {out}\nstderr: {err}");
        assert!(want != 0 || out.contains("configuration ok"), "{body}: {out}");
        for n in needles {
            assert!(err.contains(n), "{body}: stderr lacks {n:?}: {err}");
        }
    }
}
