//! Telling systemd what the server is doing (`Type=notify`, see
//! `contrib/wsbroker.service`): `READY=1` once it listens, `RELOADING=1` and
//! `READY=1` around a reload, `STOPPING=1` when it begins to stop (or to drain).
//!
//! Only when `NOTIFY_SOCKET` is set, that is, under a service manager; otherwise
//! every call does nothing. A message that cannot be sent is logged and otherwise
//! ignored: the server runs the same whether systemd hears it or not.

use sd_notify::NotifyState;

/// `READY=1`: the server accepts connections.
pub(crate) fn ready() {
    notify(&[NotifyState::Ready]);
}

/// `RELOADING=1` with the monotonic time systemd asks to accompany it.
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// `READY=1` after a reload, with a status line saying how it went.
pub(crate) fn reloaded(ok: bool) {
    let status = if ok { "reloaded" } else { "reload failed; the previous configuration stays in force" };
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`, with a status line (draining, or shutting down).
pub(crate) fn stopping(status: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
