//! The log sink of a server: request threads append each line to a shared in-memory buffer; a writer
//! thread swaps the buffer out and writes it to stdout every `interval`, or as soon as it holds 512 KiB.
//! So a busy relay makes one `write` per 512 KiB of lines, an idle one shows each line within
//! `interval`, and no request thread waits on stdout unless the writer falls 4 MiB behind (then the
//! request waits: lines are never dropped).
//!
//! It replaces tracing-appender's non-blocking writer, which per line allocated a copy and sent it over a
//! channel to a thread that copied it again into its buffer; here a line is one copy into a
//! buffer under an uncontended lock.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a line may wait in the buffer.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Write out as soon as this much is buffered. Large enough that a busy relay wakes the writer a few
/// dozen times a second, not hundreds (each wake is a context switch on the request threads' cores).
const HIGH_WATER: usize = 512 * 1024;
/// Past this, request threads wait for the writer (backpressure rather than loss or unbounded memory).
const CAPACITY: usize = 4 * 1024 * 1024;

struct Shared {
    buffer: Mutex<Vec<u8>>,
    /// The writer waits on this: woken at high water and at close.
    filled: Condvar,
    /// Request threads wait on this when the buffer is at capacity.
    drained: Condvar,
    closed: AtomicBool,
}

fn lock(buffer: &Mutex<Vec<u8>>) -> MutexGuard<'_, Vec<u8>> {
    // Appending bytes cannot leave the buffer inconsistent, so a panic elsewhere does not stop logging.
    buffer
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where log lines are written: `make_writer` hands out a cheap handle per line. Clones share the buffer.
#[derive(Clone)]
pub struct PacedWriter {
    shared: Arc<Shared>,
}

/// One line's writer.
pub struct PacedLine<'a> {
    shared: &'a Shared,
}

/// Stops the writer thread when dropped, after it has written out everything buffered.
pub struct PacedFlusher {
    shared: Arc<Shared>,
    writer: Option<std::thread::JoinHandle<()>>,
}

/// A paced writer over `out`, and the handle that flushes it on exit.
pub fn paced<W: Write + Send + 'static>(
    mut out: W,
    interval: Duration,
) -> io::Result<(PacedWriter, PacedFlusher)> {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Vec::with_capacity(HIGH_WATER)),
        filled: Condvar::new(),
        drained: Condvar::new(),
        closed: AtomicBool::new(false),
    });
    let writing = shared.clone();
    let writer = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(HIGH_WATER);
            loop {
                let closed = {
                    let mut buffer = lock(&writing.buffer);
                    let deadline = Instant::now() + interval;
                    loop {
                        let closed = writing.closed.load(Ordering::Acquire);
                        let now = Instant::now();
                        if closed || buffer.len() >= HIGH_WATER || now >= deadline {
                            break;
                        }
                        buffer = writing
                            .filled
                            .wait_timeout(buffer, deadline - now)
                            .map(|(guard, _)| guard)
                            .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                    }
                    std::mem::swap(&mut *buffer, &mut spare);
                    writing.closed.load(Ordering::Acquire)
                };
                writing.drained.notify_all();
                if !spare.is_empty() {
                    // Nowhere to report a failed log write; the lines are lost, the relay goes on.
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                }
                if closed && lock(&writing.buffer).is_empty() {
                    break;
                }
            }
        })?;
    Ok((
        PacedWriter {
            shared: shared.clone(),
        },
        PacedFlusher {
            shared,
            writer: Some(writer),
        },
    ))
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for PacedWriter {
    type Writer = PacedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        PacedLine {
            shared: &self.shared,
        }
    }
}

impl Write for PacedLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = lock(&self.shared.buffer);
        while buffer.len() >= CAPACITY && !self.shared.closed.load(Ordering::Acquire) {
            self.shared.filled.notify_one();
            buffer = self
                .shared
                .drained
                .wait(buffer)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        let before = buffer.len();
        buffer.extend_from_slice(bytes);
        if before < HIGH_WATER && buffer.len() >= HIGH_WATER {
            self.shared.filled.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // The writer thread writes out within the interval.
        Ok(())
    }
}

impl Drop for PacedFlusher {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.filled.notify_one();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    /// A sink whose contents the test can read while the writer thread owns it.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    fn write_line(writer: &PacedWriter, line: &[u8]) {
        writer
            .make_writer()
            .write_all(line)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_line_waits_in_the_buffer_then_the_writer_writes_it_out() {
        let sink = Sink::default();
        let (writer, _flusher) =
            paced(sink.clone(), Duration::from_millis(300)).unwrap_or_else(|e| panic!("{e}"));
        write_line(&writer, b"one\n");
        assert_eq!(sink.text(), "", "not written by the request thread");
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(sink.text(), "one\n", "written out by the writer thread");
    }

    #[test]
    fn dropping_the_flusher_writes_out_everything_in_order() {
        let sink = Sink::default();
        let (writer, flusher) =
            paced(sink.clone(), Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
        // Well past high water and capacity, so the writer thread runs while lines keep coming.
        let lines = CAPACITY / 50 * 2;
        for i in 0..lines {
            write_line(
                &writer,
                format!("line {i:08} ..........................\n").as_bytes(),
            );
        }
        drop(flusher);
        let text = sink.text();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), lines, "no line lost");
        for (i, line) in written.iter().enumerate() {
            assert!(
                line.starts_with(&format!("line {i:08} ")),
                "line {i} out of order: {line}"
            );
        }
    }
}
