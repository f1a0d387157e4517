//! Failure accounting: for one failed upstream attempt, whether it is
//! retried, whether it counts against the backend (passive ejection,
//! `failures`), and how the attempt is labelled in the metrics.
//!
//! The decision is a pure function of what happened ([`Cause`]), where
//! ([`Attempt`]) and the pool's retry policy, so every rule has a unit test.
//! The rules (SPEC §3, after nginx's `max_fails` and Envoy's outlier
//! detection):
//! - only the backend's own failures before the response head count:
//!   connection refused or timed out, a reset, a timeout or an invalid answer;
//! - a pooled keep-alive connection that fails before any answer byte
//!   (pingora's `ReusedOnly`) was most likely closed by the backend's idle
//!   timeout while we reused it: retried on the same backend over another
//!   connection without counting and without using up one of
//!   `retries.attempts` (a failure on that fresh connection then counts);
//! - the proxy's own resource errors (out of file descriptors, buffers or
//!   memory, no local port) never count and are not retried: another backend
//!   would fail the same way;
//! - the client leaving or being slow never counts;
//! - a failure after the response head (a body cut short) never counts: the
//!   backend did answer, and the request cannot be retried anyway;
//! - a retry of a request the backend received (a reset or timeout after
//!   connecting) draws on the pool's retry budget; connect failures and
//!   stale pooled connections never do (`retries.budget`, SPEC §2).

use crate::config::RetryPolicy;
use crate::counters::AttemptResult;
use crate::retry::{self, AttemptState, Failure};
use pingora_core::{Error, ErrorSource, ErrorType, RetryType};

/// What went wrong, as far as accounting cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The client went away, timed out or sent something invalid.
    Client,
    /// The proxy itself ran out of a resource (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM, EADDRNOTAVAIL) or failed internally before connecting.
    Local,
    /// The connection could not be made; `timeout` when it timed out.
    Connect {
        /// The connect or TLS handshake timed out.
        timeout: bool,
    },
    /// The connection broke or the answer was invalid.
    Reset,
    /// A read or write timed out.
    Timeout,
}

/// Where the attempt was when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The upstream connection came from the keep-alive pool.
    pub reused: bool,
    /// Pingora marked the error retryable on reused connections only
    /// (`RetryType::ReusedOnly`: nothing of the answer was read).
    pub reused_only: bool,
    /// The response head had arrived before the failure.
    pub head_received: bool,
    /// What the retry policy needs to know about the request.
    pub state: AttemptState,
}

/// What to do about a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Try again (on another backend when one exists).
    pub retry: bool,
    /// The retry is free: it does not use up one of `retries.attempts`.
    pub free: bool,
    /// Count the failure against the backend (passive ejection).
    pub count_against_backend: bool,
    /// The attempt's `result` label; `None` for client and local errors,
    /// which are not the backend's attempts going wrong.
    pub result: Option<AttemptResult>,
    /// The retry draws on the pool's retry budget ([`crate::budget`]): the
    /// backend received the request (a reset or timeout after connecting).
    /// When the budget is spent the caller answers the failure as if no
    /// retry were configured.
    pub draws_budget: bool,
}

/// Decides what a failed attempt means; see the module doc for the rules.
pub fn decide(cause: Cause, at: Attempt, policy: &RetryPolicy) -> Decision {
    const NOTHING: Decision = Decision {
        retry: false,
        free: false,
        count_against_backend: false,
        result: None,
        draws_budget: false,
    };
    let result = match cause {
        Cause::Client | Cause::Local => return NOTHING,
        Cause::Connect { timeout: true } | Cause::Timeout => AttemptResult::Timeout,
        Cause::Connect { timeout: false } => AttemptResult::ConnectFailure,
        Cause::Reset => AttemptResult::Reset,
    };
    if at.head_received {
        // the backend answered; the body broke off: nothing to retry or count
        return Decision {
            result: Some(result),
            ..NOTHING
        };
    }
    let stale = at.reused && at.reused_only && matches!(cause, Cause::Reset);
    if stale {
        let s = at.state;
        let replayable = s.idempotent && s.replayable && !s.response_started;
        return Decision {
            retry: replayable,
            free: replayable,
            count_against_backend: false,
            result: Some(result),
            draws_budget: false,
        };
    }
    let failure = match cause {
        Cause::Connect { timeout } => Failure::Connect { timeout },
        Cause::Timeout => Failure::Timeout,
        _ => Failure::Reset,
    };
    let retry = retry::should_retry(policy, failure, at.state);
    Decision {
        retry,
        free: false,
        count_against_backend: true,
        result: Some(result),
        // a connect failure (even a timed-out one) reached no backend
        draws_budget: retry && !matches!(failure, Failure::Connect { .. }),
    }
}

/// OS errors that mean the proxy, not the backend, ran out of something.
const LOCAL_ERRNOS: [i32; 5] = [
    libc::EMFILE,
    libc::ENFILE,
    libc::ENOBUFS,
    libc::ENOMEM,
    libc::EADDRNOTAVAIL,
];

/// Whether `e` (or any error it wraps) is a local resource error.
pub fn is_local_resource_error(e: &Error) -> bool {
    if matches!(
        e.etype(),
        ErrorType::SocketError | ErrorType::BindError | ErrorType::InternalError
    ) && e.esource() != &ErrorSource::Downstream
    {
        // pingora wraps socket()/bind() failures as these before connecting
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.cause.as_deref().map(|c| c as _);
    while let Some(c) = next {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.raw_os_error().is_some_and(|n| LOCAL_ERRNOS.contains(&n)) {
                return true;
            }
        }
        if let Some(inner) = c.downcast_ref::<Error>() {
            if matches!(inner.etype(), ErrorType::SocketError | ErrorType::BindError) {
                return true;
            }
            next = inner.cause.as_deref().map(|c| c as _);
        } else {
            next = c.source();
        }
    }
    false
}

/// Classifies a connect error (`fail_to_connect`).
pub fn connect_cause(e: &Error) -> Cause {
    if is_local_resource_error(e) {
        return Cause::Local;
    }
    Cause::Connect {
        timeout: matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
        ),
    }
}

/// Classifies an error after the connection was made (`error_while_proxy`).
pub fn proxy_cause(e: &Error) -> Cause {
    if e.esource() == &ErrorSource::Downstream {
        return Cause::Client;
    }
    if is_local_resource_error(e) && e.esource() != &ErrorSource::Upstream {
        return Cause::Local;
    }
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Cause::Timeout,
        _ => Cause::Reset,
    }
}

/// Whether pingora marked `e` retryable on reused connections only. Must be
/// read before `RetryType::decide_reuse` resolves it.
pub fn is_reused_only(e: &Error) -> bool {
    matches!(e.retry, RetryType::ReusedOnly)
}

/// Whether `e` is a timeout (connect, read, write or TLS handshake).
pub fn is_timeout(e: &Error) -> bool {
    use ErrorType::*;
    matches!(
        e.etype(),
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on: vec![RetryOn::ConnectFailure, RetryOn::Reset, RetryOn::Timeout],
            max_body: 65536,
            budget: Default::default(),
        }
    }

    fn fresh(idempotent: bool) -> Attempt {
        Attempt {
            reused: false,
            reused_only: false,
            head_received: false,
            state: AttemptState {
                tries: 1,
                idempotent,
                replayable: true,
                response_started: false,
            },
        }
    }

    #[test]
    fn connect_refused_counts_and_retries_any_method() {
        let d = decide(Cause::Connect { timeout: false }, fresh(false), &policy());
        assert!(d.retry && d.count_against_backend && !d.free);
        assert_eq!(d.result, Some(AttemptResult::ConnectFailure));
    }

    #[test]
    fn only_retries_of_received_requests_draw_on_the_budget() {
        for cause in [
            Cause::Connect { timeout: false },
            Cause::Connect { timeout: true },
        ] {
            let d = decide(cause, fresh(true), &policy());
            assert!(d.retry && !d.draws_budget, "{cause:?}");
        }
        for cause in [Cause::Reset, Cause::Timeout] {
            let d = decide(cause, fresh(true), &policy());
            assert!(d.retry && d.draws_budget, "{cause:?}");
        }
        // no retry, nothing to draw
        let d = decide(Cause::Reset, fresh(false), &policy());
        assert!(!d.retry && !d.draws_budget);
        let mut stale = fresh(true);
        stale.reused = true;
        stale.reused_only = true;
        let d = decide(Cause::Reset, stale, &policy());
        assert!(d.retry && d.free && !d.draws_budget);
    }

    #[test]
    fn connect_timeout_counts_as_timeout() {
        let d = decide(Cause::Connect { timeout: true }, fresh(true), &policy());
        assert!(d.retry && d.count_against_backend);
        assert_eq!(d.result, Some(AttemptResult::Timeout));
    }

    #[test]
    fn reset_before_the_head_counts_and_retries_idempotent_only() {
        let d = decide(Cause::Reset, fresh(true), &policy());
        assert!(d.retry && d.count_against_backend);
        let d = decide(Cause::Reset, fresh(false), &policy());
        assert!(!d.retry && d.count_against_backend);
    }

    #[test]
    fn timeout_before_the_head_counts() {
        let d = decide(Cause::Timeout, fresh(true), &policy());
        assert!(d.retry && d.count_against_backend);
        assert_eq!(d.result, Some(AttemptResult::Timeout));
    }

    #[test]
    fn stale_pooled_connection_is_retried_free_and_not_counted() {
        let mut at = fresh(true);
        at.reused = true;
        at.reused_only = true;
        let d = decide(Cause::Reset, at, &policy());
        assert!(d.retry && d.free && !d.count_against_backend);
        // even with every attempt used up: the retry is pingora's free one
        at.state.tries = 3;
        assert!(decide(Cause::Reset, at, &policy()).retry);
    }

    #[test]
    fn stale_pooled_connection_of_a_post_is_neither_retried_nor_counted() {
        let mut at = fresh(false);
        at.reused = true;
        at.reused_only = true;
        let d = decide(Cause::Reset, at, &policy());
        assert!(!d.retry && !d.count_against_backend);
    }

    #[test]
    fn reused_only_on_a_fresh_connection_is_the_backends_fault() {
        let mut at = fresh(true);
        at.reused_only = true;
        let d = decide(Cause::Reset, at, &policy());
        assert!(d.count_against_backend && !d.free);
    }

    #[test]
    fn local_resource_errors_never_count_nor_retry() {
        let d = decide(Cause::Local, fresh(true), &policy());
        assert!(!d.retry && !d.count_against_backend && d.result.is_none());
    }

    #[test]
    fn client_leaving_never_counts() {
        let d = decide(Cause::Client, fresh(true), &policy());
        assert!(!d.retry && !d.count_against_backend && d.result.is_none());
    }

    #[test]
    fn failures_after_the_head_never_count_nor_retry() {
        for cause in [Cause::Reset, Cause::Timeout] {
            let mut at = fresh(true);
            at.head_received = true;
            let d = decide(cause, at, &policy());
            assert!(!d.retry && !d.count_against_backend, "{cause:?}");
        }
    }

    #[test]
    fn emfile_on_socket_creation_is_local() {
        let io = std::io::Error::from_raw_os_error(libc::EMFILE);
        let inner = Error::because(ErrorType::SocketError, "failed to create socket", io);
        let e = Error::because(ErrorType::InternalError, "Fail to connect", inner);
        assert_eq!(connect_cause(&e), Cause::Local);
        let io = std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL);
        let e = Error::because(ErrorType::ConnectError, "connect", io);
        assert_eq!(connect_cause(&e), Cause::Local);
    }

    #[test]
    fn refused_connect_is_the_backends() {
        let io = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let e = Error::because(ErrorType::ConnectRefused, "connect", io);
        assert_eq!(connect_cause(&e), Cause::Connect { timeout: false });
        let e = Error::explain(ErrorType::ConnectTimedout, "slow");
        assert_eq!(connect_cause(&e), Cause::Connect { timeout: true });
    }

    #[test]
    fn downstream_errors_are_the_clients() {
        let mut e = Error::explain(ErrorType::ConnectionClosed, "client left");
        e.as_down();
        assert_eq!(proxy_cause(&e), Cause::Client);
        let mut e = Error::explain(ErrorType::ReadTimedout, "upstream slow");
        e.as_up();
        assert_eq!(proxy_cause(&e), Cause::Timeout);
    }
}
