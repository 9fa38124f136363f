//! A process-wide panic hook that logs every panic through tracing and counts it.
//!
//! Panics are contained (a connection task's panic ends only that task; a broker
//! panic stops the server with exit status 1), but none should ever happen: the
//! count is checked by every integration test and reported by the audit.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

static PANICS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

/// Installs the hook once per process; later calls do nothing. The previous hook
/// still runs after ours, so test output keeps its usual panic messages.
pub fn install() {
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::Relaxed);
            let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
            tracing::error!(location = location.as_deref().unwrap_or("unknown"), "panic: {info}");
            previous(info);
        }));
    });
}

/// Whether the hook is installed in this process.
pub fn installed() -> bool {
    INSTALL.is_completed()
}

/// How many panics the hook has seen in this process.
pub fn count() -> u64 {
    PANICS.load(Ordering::Relaxed)
}
