//! Where access-log lines go: a buffer that a background thread writes to stderr every `FLUSH_EVERY`, so a request
//! pays for copying its line, not for a `write` syscall of its own.
//!
//! Bounded: past `MAX_BUFFERED` bytes the request that fills it writes the buffer out itself, so a stderr that stalls
//! slows requests down (as tracing's own synchronous writes do) instead of growing a buffer without bound. Lines
//! are whole in every write, so they never interleave with the other log lines mid-line.

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// How long a line may wait in the buffer.
pub(super) const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Buffered bytes at most (about a thousand lines) before a request writes them out itself.
const MAX_BUFFERED: usize = 256 * 1024;

/// The lines not yet written.
static BUFFER: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

thread_local! {
    /// Each thread formats its lines here, so a line costs no allocation once the thread has formatted one.
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(512));
}

/// Formats a line with `format_line` and queues it.
pub(super) fn write(format_line: impl FnOnce(&mut String)) {
    LINE.with(|line| {
        // Only a line formatted while formatting another could find it borrowed: drop that one.
        let Ok(mut line) = line.try_borrow_mut() else { return };
        line.clear();
        format_line(&mut line);
        let buffer = BUFFER.get_or_init(start_flushing);
        let mut buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(line.as_bytes());
        if buffer.len() >= MAX_BUFFERED {
            write_out(&buffer);
            buffer.clear();
        }
    });
}

/// Writes out what is buffered now (the server calls it when it stops; the flushing thread every `FLUSH_EVERY`).
pub fn flush() {
    if let Some(buffer) = BUFFER.get() {
        let mut buffer = buffer.lock().unwrap_or_else(PoisonError::into_inner);
        write_out(&buffer);
        buffer.clear();
    }
}

/// The empty buffer, and the thread that writes it out every `FLUSH_EVERY` for the life of the process.
fn start_flushing() -> Mutex<Vec<u8>> {
    let spawned = std::thread::Builder::new().name("access-log".to_owned()).spawn(|| {
        // Swapped with the shared buffer under the lock, written out after it: requests never wait for stderr.
        let mut spare = Vec::with_capacity(64 * 1024);
        loop {
            std::thread::sleep(FLUSH_EVERY);
            let Some(buffer) = BUFFER.get() else { continue };
            std::mem::swap(&mut *buffer.lock().unwrap_or_else(PoisonError::into_inner), &mut spare);
            write_out(&spare);
            spare.clear();
        }
    });
    if let Err(error) = spawned {
        // Without the thread, lines still go out whenever the buffer fills and when the server stops.
        tracing::warn!(%error, "cannot start the access-log writer thread");
    }
    Mutex::new(Vec::with_capacity(64 * 1024))
}

fn write_out(bytes: &[u8]) {
    if !bytes.is_empty() {
        // Nowhere to report a failing stderr: the log is what failed.
        let _ = std::io::stderr().lock().write_all(bytes);
    }
}
