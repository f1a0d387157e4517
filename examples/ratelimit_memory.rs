//! Memory of the rate limiter's bucket table with many distinct clients.
//!
//! ```text
//! cargo run --release --example ratelimit_memory
//! ```
//!
//! Fills one pool's limiter (`max_keys: 100000`, the default) with 100 000
//! distinct client IPs spread over 127.0.0.0/8, then with 1 000 000 (the
//! table stays at `max_keys`, the least recently seen are forgotten), and
//! prints the resident memory each step added (Linux `/proc/self/statm`).

use std::sync::Arc;
use std::time::Duration;
use switchyard::config::{RateKey, RateLimit};
use switchyard::ratelimit::Limiter;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let config = RateLimit {
        interval: Duration::from_millis(10),
        burst: 200,
        key: RateKey::ClientIp,
        max_keys: 100_000,
    };
    let before = rss_bytes();
    let limiter = Limiter::new(config, Arc::default());
    for (step, keys) in [(1, 100_000u32), (2, 1_000_000u32)] {
        for i in 0..keys {
            let ip = std::net::Ipv4Addr::from(0x7f00_0000 | (i + 1));
            let _ = limiter.check(format!("i{ip}").as_bytes());
        }
        let used = rss_bytes().saturating_sub(before);
        println!(
            "step {step}: {keys} distinct keys seen, {} tracked, {:.1} MiB resident ({:.0} B per tracked key)",
            limiter.len(),
            used as f64 / 1048576.0,
            used as f64 / limiter.len() as f64
        );
    }
}
