//! What the server logs, captured for the tests that assert on log lines.
//!
//! The subscriber is process-wide, so a test binary that captures holds one test:
//! every line captured is then that test's own.

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::Level;

/// The log lines written so far, as the text format renders them (without time or
/// colour, with their spans: `LEVEL span{fields}: target: message fields`).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Installs a process-wide subscriber that keeps every event at `max_level` or
    /// more severe. Fails the test if a subscriber is already installed.
    pub fn capture(max_level: Level) -> Self {
        let logs = Self::default();
        let sink = logs.clone();
        tracing_subscriber::fmt()
            .with_max_level(max_level)
            .with_ansi(false)
            .without_time()
            .with_writer(move || sink.clone())
            .try_init()
            .expect("no other subscriber is installed in this test binary");
        logs
    }

    /// Every line captured so far.
    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).lines().map(str::to_owned).collect()
    }

    /// The lines logged at `level`.
    pub fn at(&self, level: Level) -> Vec<String> {
        self.lines().into_iter().filter(|l| l.split_whitespace().next() == Some(level.as_str())).collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // A poisoned lock means the test already failed; the bytes are not needed.
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
