//! How a connection ends: the Close frames the server sends ([`Reason`]) and what the
//! reader tells the writer before it ends ([`Stop`]).

use std::sync::atomic::Ordering;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::settings::Settings;

/// Why the server closes a connection: the code and the reason text of its Close
/// frame. One byte rather than a code and a string: the writer keeps it while it
/// decides how to end (see "Task size" in the connection module).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// 1001: nothing arrived for `--idle-timeout`.
    IdleTimeout,
    /// 1001: the server is shutting down.
    ShuttingDown,
    /// 1012: the server is draining before a restart (`--drain-duration`); the
    /// client should reconnect, after a randomised delay.
    ServiceRestart,
    /// 1008: disconnected as a slow consumer (`--slow-consumer disconnect`).
    SlowConsumer,
    /// 1011: location ①, the broker is gone.
    BrokerUnavailable,
    /// 1011: location ⑤, the broker no longer tracks this connection.
    Deregistered,
    /// 1011: the reader ended without a word (only a panic can do that).
    InternalError,
    /// 1009: a message or frame over the size limits.
    TooBig,
    /// 1007: a text message that is not UTF-8.
    InvalidUtf8,
    /// 1002: any other protocol violation.
    ProtocolError,
    /// 1008: a data message from a connection whose token does not let it publish.
    PublishNotPermitted,
    /// 4001: the connection's token expired; the client should fetch a new one and
    /// reconnect.
    TokenExpired,
}

/// The Close code for an expired token: in the range RFC 6455 leaves to applications.
pub(crate) const TOKEN_EXPIRED: u16 = 4001;

impl Reason {
    /// The Close frame's status code.
    pub(crate) fn code(self) -> CloseCode {
        match self {
            Self::IdleTimeout | Self::ShuttingDown => CloseCode::Away,
            Self::ServiceRestart => CloseCode::Restart,
            Self::SlowConsumer | Self::PublishNotPermitted => CloseCode::Policy,
            Self::TokenExpired => CloseCode::from(TOKEN_EXPIRED),
            Self::BrokerUnavailable | Self::Deregistered | Self::InternalError => CloseCode::Error,
            Self::TooBig => CloseCode::Size,
            Self::InvalidUtf8 => CloseCode::Invalid,
            Self::ProtocolError => CloseCode::Protocol,
        }
    }

    /// The Close frame's reason text.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::IdleTimeout => "idle timeout",
            Self::ShuttingDown => "server shutting down",
            Self::ServiceRestart => "service restart",
            Self::SlowConsumer => "slow consumer",
            Self::BrokerUnavailable => "broker unavailable",
            Self::Deregistered => "deregistered by the broker",
            Self::InternalError => "internal error",
            Self::TooBig => "message too big",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::ProtocolError => "protocol error",
            Self::PublishNotPermitted => "publish not permitted",
            Self::TokenExpired => "token expired",
        }
    }

    /// The Close owed to a connection whose `kick` token was cancelled: 1012 while
    /// the server drains (the broker sheds members by kicking them, and the drain
    /// ends by shutting down), 1001 when it is shutting down (which cancels every
    /// `kick`), else 1008 for a slow consumer the broker disconnected.
    pub(crate) fn for_kick(settings: &Settings) -> Self {
        if settings.draining.load(Ordering::Acquire) {
            Self::ServiceRestart
        } else if settings.shutdown.is_cancelled() {
            Self::ShuttingDown
        } else {
            tracing::debug!("disconnected as a slow consumer; closing with 1008");
            Self::SlowConsumer
        }
    }
}

/// What the reader asks the writer to do before ending (through their oneshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The peer closed (its Close frame is answered by the protocol layer) or
    /// vanished: there is nothing left for the writer to send.
    PeerGone,
    /// Send this Close frame now, then end.
    Close(Reason),
    /// First deliver what the broker already queued for this connection (until the
    /// broker, handling the reader's deregistration, closes the outbox), then send
    /// this Close frame. Used for protocol errors, so that messages the client sent
    /// before its bad frame are still echoed to it, in order (RFC 6455 strictness).
    CloseAfterDrain(Reason),
}

/// The reader's end of its stop oneshot. The writer always hears a word, however
/// the reader ends: dropped unsent (the reader ended on an error path that left it,
/// or a panic unwound its task), it sends `Close(InternalError)`, which is what the
/// writer made of a dropped sender before. A dropped sender completes the channel
/// without a value, which `oneshot::Receiver::is_empty` does not tell from "nothing
/// yet"; with a value always sent, that one load of the channel's state tells the
/// writer whether to poll it (see `writer::Waits::stop_waiting`).
pub(crate) struct StopTx(Option<oneshot::Sender<Stop>>);

impl StopTx {
    pub(crate) fn new(tx: oneshot::Sender<Stop>) -> Self {
        Self(Some(tx))
    }

    /// Whether the stop has been sent (or given up with the sender).
    pub(crate) fn is_sent(&self) -> bool {
        self.0.is_none()
    }

    /// Sends the writer its stop instruction, once; later calls do nothing. A failed
    /// send means the writer has already ended, which is what any stop asks for.
    pub(crate) fn send(&mut self, stop: Stop) {
        if let Some(tx) = self.0.take()
            && tx.send(stop).is_err()
        {
            tracing::debug!("writer already ended");
        }
    }

    /// Gives up the say left unsent, if any: a writer still waiting for a word
    /// hears `Close(InternalError)` (1011). Quiet when the writer has ended: that is
    /// why a reader leaves its stop unsent.
    pub(crate) fn abandon(&mut self) {
        if let Some(tx) = self.0.take() {
            // Err: the writer has ended; nobody is left to tell.
            drop(tx.send(Stop::Close(Reason::InternalError)));
        }
    }
}

impl Drop for StopTx {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// How a writer task ended: the code of the Close frame it sent, if it sent one
/// (none when the peer had gone, or a write failed or stalled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterEnd {
    pub close_sent: Option<CloseCode>,
}
