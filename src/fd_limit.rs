//! Raises the open-files limit so that many connections work out of the box.
//!
//! Every connection is a file descriptor. Linux distributions commonly start
//! processes with a soft RLIMIT_NOFILE of 1024 and a hard limit far above it; any
//! process may raise its own soft limit up to the hard one, so the server does that
//! at start and logs both numbers.

use rlimit::Resource;

/// Descriptors the server needs besides its connections: the listener, the runtime's
/// epoll and wake-up descriptors, stdio, and some slack for accept bursts.
const RESERVED_FDS: u64 = 64;

/// What [`raise`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit before.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft limit to the hard limit and logs the result, warning when the
/// hard limit is below what `max_connections` needs. Failures are logged, not fatal:
/// the server still runs, and an `accept` that hits the limit backs off.
pub fn raise(max_connections: usize) -> Option<FdLimit> {
    let (before, hard) = match rlimit::getrlimit(Resource::NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE");
            return None;
        }
    };
    let soft = if before < hard {
        match rlimit::setrlimit(Resource::NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft = before, hard, "cannot raise RLIMIT_NOFILE");
                before
            }
        }
    } else {
        before
    };
    tracing::info!(soft_before = before, soft, hard, "RLIMIT_NOFILE");
    let needed = u64::try_from(max_connections).unwrap_or(u64::MAX).saturating_add(RESERVED_FDS);
    if soft < needed {
        tracing::warn!(
            soft,
            max_connections,
            "RLIMIT_NOFILE is below --max-connections plus reserve; accepts will fail (and back off) before the connection limit"
        );
    }
    Some(FdLimit { before, soft, hard })
}
