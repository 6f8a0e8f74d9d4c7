//! The log writer. Every thread appends its lines to one shared buffer, and
//! a background thread writes what has gathered every few milliseconds in
//! one `write`. tracing-appender's non-blocking writer sends each line over
//! a channel and wakes its parked worker for most of them: at the ceiling
//! that was tens of thousands of wake-ups and context switches a second on
//! two cores, for lines nobody reads sooner than a few milliseconds later.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The longest a line waits in memory before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// With this much waiting, the writer is woken at once.
const WAKE_AT: usize = 256 * 1024;
/// With this much waiting, loggers wait for the writer: a stalled stdout
/// slows requests down rather than losing lines or growing memory. About
/// half a second of access lines at this machine's ceiling, so a disk's
/// brief stall does not reach the requests.
const LIMIT: usize = 8 * 1024 * 1024;
/// A buffer that grew past this in a burst is given back once written.
const KEEP: usize = 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    /// Asked to stop: write what is left, then end.
    closing: bool,
    /// The writer has ended; nothing appended now would be written.
    ended: bool,
    /// The writer sleeps until a line comes: an idle server is not woken
    /// every period for nothing.
    idle: bool,
    /// Times the writer has woken, for the tests.
    rounds: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// The writer waits here for a first line, then for `FLUSH_EVERY`, or
    /// until `WAKE_AT` or stop.
    wake: Condvar,
    /// Loggers wait here while the buffer is at `LIMIT`.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where lines go; `&Lines` is the `Write` each line is written to whole.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

/// Writes out every line appended before it is dropped, then stops the writer.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(Lines, Guard)> {
    let shared = Arc::new(Shared::default());
    let theirs = shared.clone();
    let thread = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || drain(&theirs, out))?;
    Ok((
        Lines(shared.clone()),
        Guard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn drain<W: Write>(shared: &Shared, mut out: W) {
    let mut taken = Vec::new();
    loop {
        {
            let mut st = shared.lock();
            if st.buf.is_empty() && !st.closing {
                st.idle = true;
                st = shared
                    .wake
                    .wait_while(st, |s| s.buf.is_empty() && !s.closing)
                    .unwrap_or_else(|p| p.into_inner());
                st.idle = false;
            }
            // Woken by the first line: let the period's others gather.
            if st.buf.len() < WAKE_AT && !st.closing {
                st = shared
                    .wake
                    .wait_timeout(st, FLUSH_EVERY)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            st.rounds += 1;
            if st.closing && st.buf.is_empty() {
                st.ended = true;
                return;
            }
            std::mem::swap(&mut st.buf, &mut taken);
        }
        shared.drained.notify_all();
        if !taken.is_empty() {
            // A failed write (stdout closed) loses only what it could not take.
            let _ = out.write_all(&taken).and_then(|()| out.flush());
            taken.clear();
            if taken.capacity() > KEEP {
                taken = Vec::new();
            }
        }
    }
}

impl Write for &Lines {
    /// Appends the whole line (tracing writes each event with one call).
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let shared = &*self.0;
        let mut st = shared.lock();
        while st.buf.len() >= LIMIT && !st.closing {
            st = shared.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if st.ended {
            return Err(io::Error::other("the log writer has stopped"));
        }
        let below = st.buf.len() < WAKE_AT;
        let first = st.idle && st.buf.is_empty();
        st.buf.extend_from_slice(line);
        let wake = first || (below && st.buf.len() >= WAKE_AT);
        drop(st);
        if wake {
            shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = &'a Lines;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        self.shared.drained.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An output the test can read while the writer holds its other end,
    /// counting the writes it was given.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(b);
            s.1 += 1;
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_whole_in_few_writes_and_flushed_on_drop() {
        let sink = Sink::default();
        let (lines, guard) = spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lines = lines.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        (&lines)
                            .write_all(format!("t{t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let (out, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(out).unwrap();
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..5000).collect::<Vec<_>>(),
                "thread {t}: all, in order"
            );
        }
        assert_eq!(text.lines().count(), 20_000, "no line split or merged");
        assert!(
            writes < 2_000,
            "lines are written in groups ({writes} writes)"
        );
        assert!(
            (&lines).write_all(b"late\n").is_err(),
            "refused once stopped"
        );
    }

    #[test]
    fn a_line_is_written_within_the_flush_period_and_an_idle_writer_sleeps() {
        let sink = Sink::default();
        let (lines, _guard) = spawn(sink.clone()).unwrap();
        (&lines).write_all(b"one\n").unwrap();
        let started = Instant::now();
        while sink.0.lock().unwrap().0.is_empty() {
            assert!(started.elapsed() < Duration::from_secs(2), "written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(sink.0.lock().unwrap().0, b"one\n");
        // Idle, the writer sleeps rather than waking every period.
        let rounds = lines.0.lock().rounds;
        std::thread::sleep(FLUSH_EVERY * 20);
        assert!(
            lines.0.lock().rounds <= rounds + 1,
            "idle wake-ups: {}",
            lines.0.lock().rounds - rounds
        );
        (&lines).write_all(b"two\n").unwrap();
        let started = Instant::now();
        while sink.0.lock().unwrap().0 != b"one\ntwo\n" {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "written after idling"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// An output that takes nothing until released: loggers must wait at
    /// the limit, not drop lines or grow the buffer past it.
    struct Stalled(Arc<(Mutex<bool>, Condvar)>, Sink);

    impl Write for Stalled {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut o = open.lock().unwrap();
            while !*o {
                o = cv.wait(o).unwrap();
            }
            self.1.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_makes_loggers_wait_and_loses_nothing() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let sink = Sink::default();
        let (lines, guard) = spawn(Stalled(gate.clone(), sink.clone())).unwrap();
        let line = [b'x'; 1023]
            .iter()
            .chain(b"\n")
            .copied()
            .collect::<Vec<u8>>();
        let n = 3 * LIMIT / line.len();
        let logger = {
            let (lines, line) = (lines.clone(), line.clone());
            std::thread::spawn(move || {
                for _ in 0..n {
                    (&lines).write_all(&line).unwrap();
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !logger.is_finished(),
            "the logger waits while output stalls"
        );
        assert!(lines.0.lock().buf.len() <= LIMIT + line.len(), "bounded");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.join().unwrap();
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().0.len(), n * line.len());
    }
}
