//! Retry policy: which failed attempts are tried again on another backend.
//!
//! Pingora's proxy loop calls `upstream_peer` again whenever an error is
//! marked retryable; the phases in [`crate::proxy`] classify each failure
//! into a [`Failure`] and ask [`should_retry`]. The rules
//! (`retries:` in the configuration):
//! - a connect failure is always safe to retry: nothing was sent;
//! - once the request was sent (reset, timeout, an HTTP 502/503/504 answer)
//!   only idempotent methods are retried, only if the request body was fully
//!   buffered for replay, and never after a response byte reached the client;
//! - never more than `attempts` tries in all.

use crate::config::{RetryOn, RetryPolicy};
use pingora_core::{Error, ErrorType};

/// What went wrong with one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made; `timeout` if it timed out.
    Connect {
        /// The connect (or TLS handshake) timed out.
        timeout: bool,
    },
    /// The connection broke after the request was (partly) sent.
    Reset,
    /// A read or write timed out after the request was sent.
    Timeout,
    /// The backend answered with this 5xx status.
    Status(u16),
}

/// What the proxy knows about the request when an attempt fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptState {
    /// Attempts made so far, including the failed one.
    pub tries: usize,
    /// The method is idempotent (GET, HEAD, PUT, DELETE, OPTIONS, TRACE).
    pub idempotent: bool,
    /// The whole request body is buffered and can be sent again.
    pub replayable: bool,
    /// Some of the response already went to the client.
    pub response_started: bool,
}

/// Classifies an error that happened after the connection was made.
pub fn classify(e: &Error) -> Failure {
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        ErrorType::HTTPStatus(code) => Failure::Status(*code),
        _ => Failure::Reset,
    }
}

/// Classifies a connect error.
pub fn classify_connect(e: &Error) -> Failure {
    Failure::Connect {
        timeout: matches!(
            e.etype(),
            ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout
        ),
    }
}

/// The `retries.on` kind a status answer belongs to, if any.
pub fn status_kind(code: u16) -> Option<RetryOn> {
    match code {
        502 => Some(RetryOn::Http502),
        503 => Some(RetryOn::Http503),
        504 => Some(RetryOn::Http504),
        _ => None,
    }
}

/// Whether a failed attempt may be tried again.
pub fn should_retry(policy: &RetryPolicy, failure: Failure, at: AttemptState) -> bool {
    if at.tries >= policy.attempts {
        return false;
    }
    let sent_safely = at.idempotent && at.replayable && !at.response_started;
    match failure {
        Failure::Connect { timeout } => {
            policy.retries(RetryOn::ConnectFailure) || (timeout && policy.retries(RetryOn::Timeout))
        }
        Failure::Reset => sent_safely && policy.retries(RetryOn::Reset),
        Failure::Timeout => sent_safely && policy.retries(RetryOn::Timeout),
        Failure::Status(code) => {
            sent_safely && status_kind(code).is_some_and(|k| policy.retries(k))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn]) -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on: on.to_vec(),
            max_body: 65536,
            budget: Default::default(),
        }
    }

    fn at(tries: usize, idempotent: bool) -> AttemptState {
        AttemptState {
            tries,
            idempotent,
            replayable: true,
            response_started: false,
        }
    }

    #[test]
    fn connect_failures_retry_any_method_until_attempts() {
        let p = policy(&[RetryOn::ConnectFailure]);
        let f = Failure::Connect { timeout: false };
        assert!(should_retry(&p, f, at(1, false)));
        assert!(should_retry(&p, f, at(2, false)));
        assert!(!should_retry(&p, f, at(3, false)));
    }

    #[test]
    fn reset_retries_only_idempotent_replayable_unstarted() {
        let p = policy(&[RetryOn::Reset]);
        assert!(should_retry(&p, Failure::Reset, at(1, true)));
        assert!(!should_retry(&p, Failure::Reset, at(1, false)));
        let mut truncated = at(1, true);
        truncated.replayable = false;
        assert!(!should_retry(&p, Failure::Reset, truncated));
        let mut started = at(1, true);
        started.response_started = true;
        assert!(!should_retry(&p, Failure::Reset, started));
    }

    #[test]
    fn status_retries_are_opt_in() {
        assert!(!should_retry(
            &policy(&[RetryOn::Reset]),
            Failure::Status(503),
            at(1, true)
        ));
        let p = policy(&[RetryOn::Http503]);
        assert!(should_retry(&p, Failure::Status(503), at(1, true)));
        assert!(!should_retry(&p, Failure::Status(502), at(1, true)));
        assert!(!should_retry(&p, Failure::Status(503), at(1, false)));
    }
}
