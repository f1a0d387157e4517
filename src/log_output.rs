//! Log output that never blocks the caller: each log (the access log and
//! the error log) is a bounded queue of lines drained by a thread of its
//! own, which does the `write(2)`s.
//!
//! A request thread only formats its line and tries to queue it. When the
//! output cannot keep up (a stalled stdout pipe, a full or slow disk, a
//! journald that stopped reading) the queue fills up and further lines are
//! dropped and counted (`switchyard_log_lines_dropped_total{log}`), with a
//! warning at most once per [`WARN_EVERY`]; request handling never waits
//! for log output. This is the behaviour of HAProxy's log rings; nginx,
//! which writes from its workers, stalls instead.
//!
//! Where the lines go is the log's *sink*; [`Output::reopen`] switches it
//! (access log rotation on reload) without losing queued lines.
//!
//! The writer thread is started on first use by the process that uses it:
//! pingora daemonizes with `fork()` after this module may have started a
//! thread, and a forked child starts its own.

use arc_swap::ArcSwapOption;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Lines a log queues before it drops new ones. With lines of about 250
/// bytes that is at most ~256 KiB per log, and it absorbs an output stall
/// of ~50 ms at 20,000 requests per second.
pub const QUEUE_LINES: usize = 1024;

/// Shortest time between two warnings about dropped lines of one log.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Bytes the writer gathers into one `write(2)`.
const WRITE_BUFFER: usize = 16 * 1024;

/// Lines the writer takes off the queue before it flushes (one `write(2)`
/// for many lines when the queue is busy).
const BATCH: usize = 256;

/// The access log (`log.access`).
pub static ACCESS: Output = Output::new("access");
/// The error log (the `log` crate's output: ours and pingora's).
pub static ERROR: Output = Output::new("error");

/// Where a log's lines go.
#[derive(Clone, Debug)]
pub enum Sink {
    /// Lines are discarded (`log.access: off`).
    Discard,
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// An open file (opened for appending by the caller).
    File(Arc<File>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Discard => Ok(buf.len()),
            Sink::Stdout => std::io::stdout().write(buf),
            Sink::Stderr => std::io::stderr().write(buf),
            Sink::File(f) => f.as_ref().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Discard | Sink::File(_) => Ok(()),
            Sink::Stdout => std::io::stdout().flush(),
            Sink::Stderr => std::io::stderr().flush(),
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

/// The writer thread of one process.
struct Worker {
    pid: u32,
    tx: SyncSender<Msg>,
}

/// One log: its queue, writer thread, sink and drop counter.
pub struct Output {
    name: &'static str,
    worker: ArcSwapOption<Worker>,
    starting: Mutex<()>,
    sink: Mutex<Option<Sink>>,
    generation: AtomicU64,
    dropped: AtomicU64,
    last_warn: AtomicU64,
    warn_pending: AtomicBool,
}

impl Output {
    const fn new(name: &'static str) -> Output {
        Output {
            name,
            worker: ArcSwapOption::const_empty(),
            starting: Mutex::new(()),
            sink: Mutex::new(None),
            generation: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_warn: AtomicU64::new(0),
            warn_pending: AtomicBool::new(false),
        }
    }

    /// Sends the following lines to `sink`. Lines already queued go to the
    /// sink current when the writer takes them. Never blocks on output.
    pub fn reopen(&self, sink: Sink) {
        if let Ok(mut s) = self.sink.lock() {
            *s = Some(sink);
        }
        self.generation.fetch_add(1, Relaxed);
    }

    /// Queues one line (with its newline); drops and counts it when the
    /// queue is full. Never blocks on output.
    pub fn push(&'static self, line: Vec<u8>) {
        let sent = match self.worker() {
            Some(w) => match w.tx.try_send(Msg::Line(line)) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !sent {
            self.count_drop();
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// The log's name (`access`, `error`): the metric's `log` label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Waits up to `timeout` until the lines queued so far are written
    /// (before the process exits).
    pub fn flush(&'static self, timeout: Duration) {
        let Some(w) = self.worker() else { return };
        let (tx, rx) = sync_channel(1);
        if w.tx.try_send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(timeout);
        }
    }

    /// The writer of this process, started on first use (and again in a
    /// forked child, whose parent's thread does not exist there).
    fn worker(&'static self) -> Option<Arc<Worker>> {
        let pid = std::process::id();
        let current = self.worker.load_full();
        if current.as_ref().is_some_and(|w| w.pid == pid) {
            return current;
        }
        let _starting = self.starting.lock().ok()?;
        let current = self.worker.load_full();
        if current.as_ref().is_some_and(|w| w.pid == pid) {
            return current;
        }
        let (tx, rx) = sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name(format!("{}-log", self.name))
            .spawn(move || self.run(rx))
            .ok()?;
        let worker = Arc::new(Worker { pid, tx });
        self.worker.store(Some(worker.clone()));
        Some(worker)
    }

    fn count_drop(&self) {
        let n = self.dropped.fetch_add(1, Relaxed) + 1;
        let now = unix_secs();
        let last = self.last_warn.load(Relaxed);
        if now < last + WARN_EVERY.as_secs()
            || self
                .last_warn
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        if std::ptr::eq(self, &ERROR) {
            // the error log cannot report its own drops through itself now:
            // its writer adds the warning when it catches up
            self.warn_pending.store(true, Relaxed);
        } else {
            log::warn!(
                "{} log: output cannot keep up, {n} line(s) dropped so far \
                 (switchyard_log_lines_dropped_total{{log=\"{}\"}})",
                self.name,
                self.name
            );
        }
    }

    /// The writer thread: takes lines off the queue, writes them in
    /// batches to the current sink; ends when the process forgets it.
    fn run(&self, rx: Receiver<Msg>) {
        let mut generation = u64::MAX;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, Sink::Discard);
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(msg) = next.take() {
                let current = self.generation.load(Relaxed);
                if current != generation {
                    let _ = out.flush();
                    generation = current;
                    let sink = self.sink.lock().ok().and_then(|s| s.clone());
                    *out.get_mut() = sink.unwrap_or(Sink::Discard);
                }
                match msg {
                    Msg::Line(line) => {
                        let _ = out.write_all(&line);
                    }
                    Msg::Flush(done) => {
                        let _ = out.flush();
                        let _ = done.try_send(());
                    }
                }
                taken += 1;
                if taken < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if self.warn_pending.swap(false, Relaxed) {
                let _ = out.write_all(
                    format!(
                        "[{} WARN  switchyard::log_output] {} log: output could not keep up, \
                         {} line(s) dropped so far (switchyard_log_lines_dropped_total{{log=\"{}\"}})\n",
                        rfc3339(SystemTime::now()),
                        self.name,
                        self.dropped(),
                        self.name
                    )
                    .as_bytes(),
                );
            }
            let _ = out.flush();
        }
    }
}

/// The `log` crate's output (through env_logger) as a [`Write`] that
/// queues each record on [`ERROR`] and never blocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct ErrorLogWriter;

impl Write for ErrorLogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        ERROR.push(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-11-21T22:01:02.345Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // civil-from-days (Howard Hinnant), days since 1970-01-01
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_time() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_305_662_345);
        assert_eq!(rfc3339(t), "2026-11-22T00:01:02.345Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn lines_reach_the_current_sink_and_reopen_switches_it() {
        static LOG: Output = Output::new("test");
        let dir = std::env::temp_dir().join(format!("sy-logout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (a, b) = (dir.join("a.log"), dir.join("b.log"));
        let open = |p: &std::path::Path| {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("open");
            Sink::File(Arc::new(f))
        };
        LOG.reopen(open(&a));
        LOG.push(b"one\n".to_vec());
        LOG.flush(Duration::from_secs(5));
        LOG.reopen(open(&b));
        LOG.push(b"two\n".to_vec());
        LOG.flush(Duration::from_secs(5));
        assert_eq!(std::fs::read_to_string(&a).expect("a"), "one\n");
        assert_eq!(std::fs::read_to_string(&b).expect("b"), "two\n");
        assert_eq!(LOG.dropped(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
