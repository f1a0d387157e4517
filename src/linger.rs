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
//! [`Lingering`] wraps the proxy and delays that cleanup by
//! [`ACCEPT_LINGER`] (at most the grace period): requests that arrive in the
//! meantime on connections the instance already holds are served, with
//! `Connection: close` since the instance is shutting down; then the idle
//! connections are closed as before. Nothing is accepted during the linger:
//! new connections go to the new instance (upgrade) or are refused (stop).

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// A [`ServerApp`] that delays the wrapped app's shutdown cleanup.
pub struct Lingering<A> {
    inner: Arc<A>,
    linger: Duration,
}

impl<A> Lingering<A> {
    /// Wraps `inner`; its cleanup runs `min(ACCEPT_LINGER, grace)` after the
    /// listeners stopped (`grace`: `server.grace_period_seconds`).
    pub fn new(inner: A, grace: Duration) -> Self {
        Lingering {
            inner: Arc::new(inner),
            linger: ACCEPT_LINGER.min(grace),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Lingering<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        RETIRING.store(true, Ordering::Release);
        tokio::time::sleep(self.linger).await;
        self.inner.cleanup().await;
    }
}
