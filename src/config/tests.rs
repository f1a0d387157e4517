//! Unit tests of configuration parsing and validation.

use super::*;

fn errors(yaml: &str) -> Vec<ConfigError> {
    parse(yaml, "t.yaml").expect_err("should fail").errors
}

const GOOD: &str = "
listen:
  - addr: 127.0.0.1:8080
routing:
  default_pool: web
pools:
  web:
    backends:
      - url: http://127.0.0.1:8001
      - url: http://127.0.0.1:8002
        weight: 3
        name: web-2
    health_check: { type: http, path: /health, interval: 500ms }
  api:
    strategy: consistent
    hash_key: header:X-User
    backends:
      - url: http://localhost:9001/
    fallback: web
";

#[test]
fn good_file_validates_with_defaults() {
    let c = parse(GOOD, "t.yaml").expect("valid");
    assert_eq!(c.routing.header.as_str(), "app-name");
    assert_eq!(c.server.grace_period_seconds, 5);
    let web = &c.pools["web"];
    assert_eq!(web.backends[1].weight, 3);
    assert_eq!(web.backends[1].name, "web-2");
    assert_eq!(web.backends[0].name, "127.0.0.1:8001");
    assert_eq!(web.health.interval, Duration::from_millis(500));
    assert_eq!(web.health.rise, 2);
    let api = &c.pools["api"];
    assert_eq!(api.backends[0].url, "http://localhost:9001");
    assert!(matches!(&api.strategy, Strategy::Consistent(HashKey::Header(h)) if h == "x-user"));
}

#[test]
fn unknown_key_names_path_and_line() {
    let e = errors("pools:\n  web:\n    backends: []\n    retrys: 3\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].message.contains("unknown field `retrys`"), "{e:?}");
    assert_eq!(e[0].line, Some(4));
}

#[test]
fn all_semantic_errors_reported_at_once() {
    let e = errors(
        "routing: { default_pool: nope }
pools:
  a:
    hash_key: path
    fallback: b
    backends:
      - url: ftp://x:1
      - url: http://127.0.0.1:1
      - url: http://127.0.0.1:1
  b:
    fallback: a
    backends: [ { url: 'http://127.0.0.1:2', weight: 0 } ]
",
    );
    let text: Vec<String> = e
        .iter()
        .map(|e| format!("{}: {}", e.path, e.message))
        .collect();
    let joined = text.join("\n");
    for want in [
        "routing.default_pool: unknown pool \"nope\"",
        "pools.a.hash_key: hash_key needs strategy: consistent",
        "pools.a.backends[0].url",
        "pools.a.backends[2].url: duplicate backend",
        "pools.b.backends[0].weight",
        "fallback cycle: a -> b -> a",
    ] {
        assert!(joined.contains(want), "missing {want:?} in\n{joined}");
    }
    let dup = e
        .iter()
        .find(|e| e.path == "pools.a.backends[2].url")
        .unwrap();
    assert_eq!(dup.line, Some(9));
}

#[test]
fn yaml_syntax_error_has_line() {
    let e = errors("pools:\n  web:\n    backends: [\n");
    assert!(e[0].line.is_some(), "{e:?}");
}

#[test]
fn urls() {
    use validate_url as v;
    fn validate_url(u: &str) -> Result<(String, String, u16, bool), String> {
        super::validate_backend::parse_url(u)
    }
    assert_eq!(
        v("http://h:81").unwrap(),
        ("http://h:81".into(), "h".into(), 81, false)
    );
    assert_eq!(v("https://h").unwrap().2, 443);
    assert!(v("http://h:81/path").is_err());
    assert!(v("h:81").is_err());
    assert!(v("http://h:0").is_err());
    assert!(v("http://h:99999").is_err());
}

#[test]
fn quick_mode_pools() {
    let c = quick::from_backends(
        "fms-http://127.0.0.1:8001, lms-http://127.0.0.1:80,http://127.0.0.1:8000",
        9000,
    )
    .expect("valid");
    assert_eq!(c.routing.default_pool.as_deref(), Some("default"));
    assert_eq!(c.pools.len(), 3);
    assert_eq!(c.pools["fms"].backends[0].addr.port(), 8001);
    assert_eq!(c.listen[0].addr, "0.0.0.0:9000");
    assert!(quick::from_backends("nonsense", 1).is_err());
}

#[test]
fn work_stealing_defaults_off_for_one_thread_only() {
    let with = |server: &str| {
        let yaml = format!("server: {{ {server} }}\npools: {{ web: {{ backends: [ {{ url: 'http://127.0.0.1:1' }} ] }} }}");
        parse(&yaml, "t.yaml").expect("valid").server.work_stealing
    };
    assert!(!with("threads: 1"));
    assert!(with("threads: 2"));
    assert!(with("threads: 1, work_stealing: true"));
    assert!(!with("threads: 4, work_stealing: false"));
}

const LATENCY: &str = "
listen: [{addr: 127.0.0.1:8080}]
pools:
  web:
    strategy: peak_ewma
    backends: [{url: http://127.0.0.1:8001}]
    retries: {budget: {ratio: 0.5, min_per_second: 3}}
    race: {hedge_delay: p95}
  fixed:
    backends: [{url: http://127.0.0.1:8001}]
    race: {hedge_delay: 20ms}
";

#[test]
fn peak_ewma_budget_and_adaptive_hedging_parse() {
    let c = parse(LATENCY, "t.yaml").expect("valid");
    let web = &c.pools["web"];
    assert_eq!(web.strategy, Strategy::PeakEwma);
    assert_eq!(web.retries.budget, BudgetPolicy::new(0.5, 3));
    // 0.5 x 10 first attempts + 3/s x 10 s
    assert_eq!(web.retries.budget.allowed(10), 35);
    let race = web.race.expect("race");
    assert_eq!(race.hedge_percentile, Some(95));
    assert!(race.hedge_delay.is_zero() && race.hedged());
    let fixed = c.pools["fixed"].race.expect("race");
    assert_eq!(
        (fixed.hedge_delay, fixed.hedge_percentile),
        (Duration::from_millis(20), None)
    );
    // defaults: ratio 0.2, 10 per second
    assert_eq!(c.pools["fixed"].retries.budget, BudgetPolicy::new(0.2, 10));
}

#[test]
fn bad_budget_and_percentile_are_errors() {
    let e = errors(&LATENCY.replace("p95", "p100"));
    assert!(e[0].message.contains("not a percentile"), "{e:?}");
    let e = errors(&LATENCY.replace("ratio: 0.5", "ratio: -1"));
    assert!(e.iter().any(|e| e.path.ends_with("budget.ratio")), "{e:?}");
}

#[test]
fn underscore_routing_or_hash_headers_need_underscores_in_headers() {
    let yaml = "routing: { header: App_Name }
pools:
  a:
    strategy: consistent
    hash_key: header:X_User
    backends: [ { url: \"http://127.0.0.1:1\" } ]
";
    let e = errors(yaml);
    let paths: Vec<&str> = e.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["routing.header", "pools.a.hash_key"], "{e:?}");
    let allowed = format!("server: {{ underscores_in_headers: true }}\n{yaml}");
    let c = parse(&allowed, "t.yaml").expect("valid");
    assert!(c.server.underscores_in_headers);
    assert!(
        !parse(GOOD, "t.yaml")
            .expect("valid")
            .server
            .underscores_in_headers
    );
}

#[test]
fn a_file_without_pools_is_an_error() {
    for yaml in ["", "listen: [{addr: 127.0.0.1:8080}]\n"] {
        let e = errors(yaml);
        assert!(
            e.iter()
                .any(|e| e.path == "pools" && e.message.contains("no pool")),
            "{yaml:?}: {e:?}"
        );
    }
}

#[test]
fn a_bad_unit_value_is_reported_at_its_own_key_and_line() {
    let e = errors(
        "listen:\n  - addr: 127.0.0.1:8080\n    header_timeout: 5x\npools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n",
    );
    assert_eq!(
        (e[0].path.as_str(), e[0].line),
        ("listen[0].header_timeout", Some(3)),
        "{e:?}"
    );
    let e = errors("pools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n    timeouts:\n      read: 1.5\n");
    assert_eq!(
        (e[0].path.as_str(), e[0].line),
        ("pools.web.timeouts.read", Some(5)),
        "{e:?}"
    );
    assert!(e[0].message.contains("expected a duration"), "{e:?}");
    let e = errors("pools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n    retries: {max_body: 2 parsecs}\n");
    assert_eq!(e[0].path, "pools.web.retries.max_body", "{e:?}");
    let e = errors("pools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n    race: {hedge_delay: p100}\n");
    assert_eq!(e[0].path, "pools.web.race.hedge_delay", "{e:?}");
}

#[test]
fn a_duplicate_key_is_reported_at_its_second_occurrence() {
    let e = errors("routing: {default_pool: web}\npools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\nrouting: {default_pool: web}\n");
    assert_eq!(
        (e[0].path.as_str(), e[0].line),
        ("routing", Some(5)),
        "{e:?}"
    );
    let e = errors("pools:\n  web:\n    backends: [{url: \"http://127.0.0.1:1\"}]\n    strategy: random\n    strategy: round_robin\n");
    assert_eq!(
        (e[0].path.as_str(), e[0].line),
        ("pools.web.strategy", Some(5)),
        "{e:?}"
    );
}
