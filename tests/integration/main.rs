//! switchyard's integration tests: one test binary (`cargo test --test
//! integration`), one module per area, the shared harness in `common`.
//! Each test starts the real `switchyard` / `switchyard-echo` binaries
//! against in-process backends on 127.0.0.1.

#[macro_use]
mod common;

mod admin;
mod backend_state;
mod cache;
mod cli;
mod core;
mod discovery;
mod echo;
mod edge;
mod failures;
mod hygiene;
mod latency;
mod lifecycle;
mod linger;
mod never_stall;
mod race;
mod relay;
mod status_page;
mod threads;
mod tls;
