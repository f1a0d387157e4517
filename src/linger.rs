//! Retiring without dropping connections accepted just before the listeners
//! stopped.
//!
//! When an instance retires (SIGQUIT for an upgrade, SIGTERM), pingora stops
//! its accept loops and then calls the app's `cleanup()`, which for the HTTP
//! proxy closes every connection still waiting for a request head. That is
//! meant for idle keep-alive connections, but it also closes a connection
//! accepted a few microseconds before the listener stopped whose first request
//! has not been read yet: its client did nothing wrong and gets no answer
//! (curl: "Empty reply from server"). Under a continuous stream of new
//! connections that happened about once per upgrade or two.
//!
//! The edge ([`crate::edge::EdgeApp`]) does the cleanup itself: for
//! [`ACCEPT_LINGER`] (at most the grace period) a request that arrives on a
//! connection the instance already holds (a first one, or the next one on
//! an idle keep-alive connection whose last answer may have said
//! keep-alive an instant before the instance began to retire) is served,
//! with `Connection: close` since the instance is shutting down; then the
//! idle connections are closed and pingora's own cleanup runs. Nothing is
//! accepted during the linger: new connections go to the new instance
//! (upgrade) or are refused (stop).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a retiring instance keeps reading requests on the connections it
/// holds after its listeners stopped: a few round trips of a distant client,
/// well inside the default 5 s grace period.
pub const ACCEPT_LINGER: Duration = Duration::from_secs(1);

/// Whether this process has begun to retire (set when its listeners stop,
/// before the linger). A process retires once and for all, so this is
/// process-wide state; responses written from then on say
/// `Connection: close` (see `proxy::downstream`).
static RETIRING: AtomicBool = AtomicBool::new(false);

/// Whether this process is retiring (upgrade hand-off or shutdown begun).
pub fn retiring() -> bool {
    RETIRING.load(Ordering::Acquire)
}

/// Marks this process as retiring (called once its listeners stopped).
pub fn retire() {
    RETIRING.store(true, Ordering::Release);
}
