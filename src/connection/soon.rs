//! [`Soon`]: an operation that nearly always completes at once, and [`to_broker`],
//! the connection's way of handing the broker a command with it.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::broker::Command;

/// An operation that nearly always completes at once: done, with whether it
/// succeeded, or the boxed rest of it. A plain enum rather than an `async fn`, so
/// that a task awaiting it holds these 16 bytes instead of the whole state of the
/// operation (see "Task size" in the connection module); and, unlike
/// `future::Ready`, polling it again after it completed cannot panic.
pub(crate) enum Soon<'a> {
    /// Finished without waiting: `true` if it succeeded.
    Done(bool),
    /// Still waiting (for room in a channel, for a socket); resolves to whether it
    /// succeeded.
    Waiting(Pin<Box<dyn Future<Output = bool> + Send + 'a>>),
}

impl Future for Soon<'_> {
    type Output = bool;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        match self.get_mut() {
            Soon::Done(ok) => Poll::Ready(*ok),
            Soon::Waiting(rest) => rest.as_mut().poll(cx),
        }
    }
}

/// Sends `command` to the broker's inbox: at once when it has room, or else in a
/// boxed wait, whose state (tokio's `send` future) would otherwise be part of every
/// connection's task for the connection's whole life. Resolves to `false` when the
/// broker is gone.
pub(crate) fn to_broker(broker_tx: &mpsc::Sender<Command>, command: Command) -> Soon<'_> {
    match broker_tx.try_send(command) {
        Ok(()) => Soon::Done(true),
        Err(TrySendError::Closed(_)) => Soon::Done(false),
        Err(TrySendError::Full(command)) => {
            Soon::Waiting(Box::pin(async move { broker_tx.send(command).await.is_ok() }))
        }
    }
}
