//! The lame-duck drain (`--drain-duration`): on the first stop signal the server
//! stops accepting, `/healthz` turns 503, and the connections are closed with 1012
//! (service restart) evenly over the drain window, so that their reconnects reach
//! the other nodes as a steady trickle rather than all at once (what NATS calls lame
//! duck mode). [`ServerHandle::end_drain`] (a second signal) closes the rest at once.
//!
//! The schedule is decided here; which members go is the broker's (`Rooms::shed`,
//! proven like the rest of its state changes), and closing them is their own
//! connections' (each reader, seeing its `kick`, has its writer send 1012).

use std::time::Duration;

use tokio::time::Instant;

use super::ServerHandle;

/// Closes are scheduled at least this far apart: a finer schedule would spend
/// more on timers than it spreads.
const MIN_STEP: Duration = Duration::from_millis(10);

/// How many of `total` connections are due to have been shed `elapsed` into a drain
/// of `window`: evenly, the first at once and the last at the window's end.
pub(super) fn due(total: usize, elapsed: Duration, window: Duration) -> usize {
    if elapsed >= window || window.is_zero() {
        return total;
    }
    // total × elapsed / window in u128 nanoseconds: no overflow, no division by zero.
    let (elapsed, window) = (elapsed.as_nanos(), window.as_nanos());
    let share = (total as u128).saturating_mul(elapsed).checked_div(window).unwrap_or(0);
    usize::try_from(share).unwrap_or(total).min(total)
}

/// The interval between scheduled closes for `total` connections over `window`:
/// one per connection, but not below [`MIN_STEP`].
fn step(total: usize, window: Duration) -> Duration {
    let count = u32::try_from(total).unwrap_or(u32::MAX).max(1);
    window.checked_div(count).unwrap_or(window).max(MIN_STEP)
}

/// Sheds every member over `window`, or until `handle.end_drain()` is called or the
/// broker is gone. Members are counted at the start (connections still in their
/// handshake included); any that remain at the end are closed by the shutdown,
/// with 1012 all the same.
pub(super) async fn run(handle: &ServerHandle, window: Duration) {
    let total = handle.open_connections();
    tracing::info!(connections = total, window = ?window, "draining: closing connections with 1012");
    let (started, step) = (Instant::now(), step(total, window));
    let mut next = started;
    let mut shed = 0usize;
    loop {
        let target = due(total, next.saturating_duration_since(started), window);
        while shed < target {
            match handle.shed(target.saturating_sub(shed)).await {
                Some(0) | None => return,
                Some(n) => shed = shed.saturating_add(n),
            }
        }
        if shed >= total {
            return;
        }
        next = next.checked_add(step).unwrap_or(next);
        tokio::select! {
            () = handle.drain_ended() => return,
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_are_due_evenly_across_the_window() {
        let window = Duration::from_secs(2);
        assert_eq!(due(200, Duration::ZERO, window), 0);
        assert_eq!(due(200, Duration::from_millis(10), window), 1);
        assert_eq!(due(200, Duration::from_millis(500), window), 50);
        assert_eq!(due(200, Duration::from_secs(1), window), 100);
        assert_eq!(due(200, window, window), 200);
        assert_eq!(due(200, Duration::from_secs(60), window), 200);
        assert_eq!(due(usize::MAX, Duration::from_secs(1), window), usize::MAX >> 1);
        assert_eq!(due(7, Duration::ZERO, Duration::ZERO), 7);
    }

    #[test]
    fn steps_are_one_per_connection_but_not_below_ten_milliseconds() {
        assert_eq!(step(200, Duration::from_secs(2)), Duration::from_millis(10));
        assert_eq!(step(10, Duration::from_secs(2)), Duration::from_millis(200));
        assert_eq!(step(100_000, Duration::from_secs(2)), MIN_STEP);
        assert_eq!(step(0, Duration::from_secs(2)), Duration::from_secs(2));
    }
}
