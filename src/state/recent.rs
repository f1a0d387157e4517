//! A backend's recent activity for the status page: responses, errors and
//! latency in 10-second slots over the last 5 minutes, and the last failure
//! with its reason.
//!
//! Latency goes into one `hdrhistogram` per slot (microseconds, 1 µs to
//! 60 s, 2 significant digits, so a percentile is within 1 %), allocated
//! only once a slot saw a response. Memory is bounded whatever the load:
//! at most [`SLOTS`] histograms of 10 KB (2560 `u32` counters) per backend,
//! 300 KB for a backend busy in every slot of the last 5 minutes.

use hdrhistogram::Histogram;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Length of one slot, in seconds.
pub const SLOT_SECS: u64 = 10;
/// Slots kept: 30 × 10 s = the last 5 minutes.
pub const SLOTS: usize = 30;
/// Largest latency recorded (longer ones count as this), in µs.
const MAX_US: u64 = 60_000_000;

/// One 10-second slot.
#[derive(Default)]
struct Slot {
    /// Slot number (seconds since the Unix epoch / [`SLOT_SECS`]).
    index: u64,
    /// Responses sent to clients.
    responses: u64,
    /// Responses with a 5xx status, plus failed attempts.
    errors: u64,
    /// Failed attempts (connect error, reset, timeout).
    failures: u64,
    /// Response latency, µs; `None` until a response arrives.
    latency: Option<Histogram<u32>>,
}

/// The last failure of a backend.
#[derive(Debug, Clone)]
pub struct LastFailure {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened (e.g. `connect_failure`, `health check: ...`).
    pub reason: String,
}

/// Totals over a span of slots.
#[derive(Debug, Clone, Default)]
pub struct Window {
    /// Seconds the span covers (the current slot counts only its elapsed part).
    pub seconds: f64,
    /// Responses.
    pub responses: u64,
    /// Errors (5xx responses and failed attempts).
    pub errors: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Merged latency histogram, µs (`None` when no response).
    pub latency: Option<Histogram<u32>>,
}

impl Window {
    /// Adds `other` (a backend's window over the same span) into this one.
    pub fn merge(&mut self, other: &Window) {
        self.seconds = self.seconds.max(other.seconds);
        self.responses += other.responses;
        self.errors += other.errors;
        self.failures += other.failures;
        if let Some(h) = &other.latency {
            match &mut self.latency {
                Some(mine) => {
                    // same bounds on both sides: cannot fail
                    let _ = mine.add(h);
                }
                None => self.latency = Some(h.clone()),
            }
        }
    }

    /// The `q` quantile (0..=1) of latency in milliseconds, if any response.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// Recent activity of one backend.
#[derive(Default)]
pub struct Recent {
    slots: Mutex<Vec<Slot>>,
    last_failure: Mutex<Option<LastFailure>>,
}

impl std::fmt::Debug for Recent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recent").finish_non_exhaustive()
    }
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// The current slot number.
pub fn current_slot() -> u64 {
    now().as_secs() / SLOT_SECS
}

impl Recent {
    fn with_slot(&self, f: impl FnOnce(&mut Slot)) {
        let index = current_slot();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.is_empty() {
            slots.resize_with(SLOTS, Slot::default);
        }
        let slot = &mut slots[(index % SLOTS as u64) as usize];
        if slot.index != index {
            // reuse the histogram's memory for the new slot
            let mut latency = slot.latency.take();
            if let Some(h) = &mut latency {
                h.reset();
            }
            *slot = Slot {
                index,
                latency,
                ..Slot::default()
            };
        }
        f(slot);
    }

    /// Records a response sent to a client after `latency`.
    pub fn record_response(&self, latency: Duration, status: u16) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_US);
        self.with_slot(|s| {
            s.responses += 1;
            if status >= 500 {
                s.errors += 1;
            }
            if s.latency.is_none() {
                s.latency = Histogram::new_with_bounds(1, MAX_US, 2).ok();
            }
            if let Some(h) = &mut s.latency {
                h.saturating_record(us);
            }
        });
    }

    /// Records a failed attempt or probe with its reason; `attempt` is
    /// false for a failing health probe (not counted as an error).
    pub fn record_failure(&self, reason: String, attempt: bool) {
        if attempt {
            self.with_slot(|s| {
                s.failures += 1;
                s.errors += 1;
            });
        }
        let failure = LastFailure {
            at_ms: now().as_millis() as u64,
            reason,
        };
        *self.last_failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(failure);
    }

    /// The last failure, if any.
    pub fn last_failure(&self) -> Option<LastFailure> {
        self.last_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Totals over the slots `first..=last` (slot numbers).
    pub fn window(&self, first: u64, last: u64) -> Window {
        let now = now().as_secs_f64();
        let start = (first * SLOT_SECS) as f64;
        let end = (((last + 1) * SLOT_SECS) as f64).min(now);
        let mut w = Window {
            seconds: (end - start).max(1.0),
            ..Window::default()
        };
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        for s in slots.iter().filter(|s| s.index >= first && s.index <= last) {
            w.merge(&Window {
                seconds: 0.0,
                responses: s.responses,
                errors: s.errors,
                failures: s.failures,
                latency: s.latency.clone(),
            });
        }
        w
    }

    /// Totals over the last minute (the current slot and the 5 before it).
    pub fn last_minute(&self) -> Window {
        let cur = current_slot();
        self.window(cur.saturating_sub(5), cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_rates_over_the_last_minute() {
        let r = Recent::default();
        for ms in 1..=100u64 {
            r.record_response(Duration::from_millis(ms), if ms > 90 { 503 } else { 200 });
        }
        r.record_failure("connect_failure".into(), true);
        let w = r.last_minute();
        assert_eq!(w.responses, 100);
        assert_eq!(w.errors, 11);
        let p50 = w.latency_ms(0.5).expect("p50");
        let p99 = w.latency_ms(0.99).expect("p99");
        assert!((49.0..=51.0).contains(&p50), "p50 {p50}");
        assert!((98.0..=100.0).contains(&p99), "p99 {p99}");
        assert_eq!(
            r.last_failure().map(|f| f.reason),
            Some("connect_failure".into())
        );
    }

    #[test]
    fn old_slots_are_not_counted() {
        let r = Recent::default();
        r.record_response(Duration::from_millis(5), 200);
        let cur = current_slot();
        assert_eq!(r.window(cur + 1, cur + 3).responses, 0);
        assert_eq!(r.window(cur, cur).responses, 1);
    }

    #[test]
    fn probe_failures_are_not_errors() {
        let r = Recent::default();
        r.record_failure("health check: refused".into(), false);
        assert_eq!(r.last_minute().errors, 0);
        assert!(r.last_failure().is_some());
    }
}
