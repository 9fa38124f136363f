//! [`contained`]: how the broker's proven code runs an effect the proof cannot see
//! into.
//!
//! The `no_panic` proof of a function fails if any call in it could unwind. Some calls
//! cannot be proven, because their code is behind function pointers or deep in
//! another crate: waking a task (tokio's `try_send`, a token's `cancel`), dropping a
//! channel end, allocating, logging. The broker runs each such call, on its own,
//! inside `catch_unwind`; the proof then sees that nothing unwinds out of it, and a
//! panic inside, which none of these is known to raise, is caught and counted, and
//! the broker goes on with its next step.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::stats::Counters;

/// Runs `effect`, catching any panic in it: its result, or `None` if it panicked.
///
/// The panic payload is deliberately leaked rather than dropped: dropping a payload
/// runs arbitrary code (a payload type's `Drop` could itself panic), which would
/// defeat the point. Panics here are never expected, each one is logged by the panic
/// hook and counted by the caller, so the leak is bounded by the count. The panic
/// strategy must be `unwind` (the default, kept in every profile) for this to catch
/// anything.
///
/// Always inlined: an out-of-line copy would be a call the proof cannot see into,
/// which the optimiser makes once a closure type has several call sites.
#[inline(always)]
pub(crate) fn contained<T>(effect: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(effect)) {
        Ok(value) => Some(value),
        Err(payload) => {
            std::mem::forget(payload);
            None
        }
    }
}

/// Counts a panic caught in a contained effect (`None` from [`contained`]).
#[inline(always)]
pub(crate) fn caught(counters: &mut Counters, effect: Option<()>) {
    if effect.is_none() {
        counters.panics_caught = counters.panics_caught.wrapping_add(1);
    }
}
