//! One admitted connection from its TCP stream to its end: the TLS handshake (with
//! `--tls-cert`), the WebSocket handshake under the admission rules, both within
//! `--handshake-timeout`, then the connection itself.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::admission::{Admit, Admitted, Rejection, SUBPROTOCOL};
use crate::broker::ConnId;
use crate::broker::Delivery;
use crate::connection;
use crate::connection::transport::Transport;
use crate::metrics::{Metrics, RejectReason};

/// Upgrades one admitted TCP connection and runs it. Handshake failures end here,
/// logged at debug (rejections by rule at info): a client that cannot or may not
/// speak WebSocket affects nobody else. `permit` is held for the connection's life.
///
/// A plain function returning an `async move` block, with the handshake and the
/// connection's setup boxed apart, so that the task keeps none of their state once
/// the connection runs (see "Task size" in the connection module).
/// `opening` gives the stream the WebSocket handshake runs over: the TCP stream as
/// it is, or the TLS session established over it.
pub(crate) fn serve<T: Transport>(
    opening: impl Future<Output = io::Result<T>> + Send + 'static,
    peer: SocketAddr,
    id: ConnId,
    shared: Arc<connection::Shared>,
    admit: Arc<Admit>,
    permit: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send {
    let setup = Box::pin(async move {
        let (ws, admitted) =
            handshake(opening, peer, Arc::clone(&admit), Arc::clone(&shared.metrics)).await?;
        if let Some(user) = &admitted.user {
            tracing::Span::current().record("user", tracing::field::display(user));
        }
        let admission = (admitted.room, admitted.terms, admitted.delivery);
        connection::open(ws, admit.ws_config, id, admission, peer, &shared)
    });
    async move {
        // Captured by the block and so held for the connection's life; no binding,
        // which would store a second copy in the task.
        let _ = &permit;
        // Awaited in place (an `if let` would store the future twice in this task).
        futures_util::future::OptionFuture::from(setup.await).await;
    }
}

/// The handshakes of an admitted connection, TLS (in `opening`) and WebSocket, within
/// the handshake timeout together: the upgraded stream and what the rules admitted it
/// to, or `None` when it was refused or failed (counted and logged here, never with
/// the token).
async fn handshake<T: Transport>(
    opening: impl Future<Output = io::Result<T>>,
    peer: SocketAddr,
    admit: Arc<Admit>,
    metrics: Arc<Metrics>,
) -> Option<(WebSocketStream<T>, Admitted)> {
    let now = tokio::time::Instant::now();
    // The timeout is validated to at most a day, so this cannot overflow in practice.
    let deadline = now.checked_add(admit.handshake_timeout).unwrap_or(now);
    let stream = match tokio::time::timeout_at(deadline, opening).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            metrics.rejected(RejectReason::Tls);
            tracing::info!(%peer, reason = ?RejectReason::Tls, error = %e, "handshake rejected");
            return None;
        }
        Err(_) => {
            metrics.rejected(RejectReason::Timeout);
            tracing::info!(%peer, reason = ?RejectReason::Timeout, "handshake rejected");
            return None;
        }
    };
    let mut admitted: Option<Admitted> = None;
    let mut refused: Option<Rejection> = None;
    #[expect(clippy::result_large_err, reason = "the Err type is fixed by tungstenite's Callback trait")]
    let callback = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        match admit.check(request) {
            Ok(admission) => {
                if admission.delivery != Delivery::Plain {
                    // The client offered it: the reply names it (RFC 6455 section 4.2.2).
                    response.headers_mut().insert(
                        "sec-websocket-protocol",
                        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
                    );
                }
                admitted = Some(admission);
                Ok(response)
            }
            Err(rejection) => {
                refused = Some(rejection);
                Err(rejection.response())
            }
        }
    };
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(admit.ws_config));
    let ws = match tokio::time::timeout_at(deadline, upgrade).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            // Refused by a rule, or not a valid upgrade at all. A refusal is logged by
            // its rule (a token's by why it was refused), never with the request.
            match refused {
                Some(rejection) => {
                    metrics.rejected(rejection.reason());
                    tracing::info!(%peer, reason = ?rejection.reason(), detail = %rejection, "handshake rejected");
                }
                None => {
                    metrics.rejected(RejectReason::BadRequest);
                    tracing::info!(%peer, reason = ?RejectReason::BadRequest, error = %e, "handshake rejected");
                }
            }
            return None;
        }
        Err(_) => {
            metrics.rejected(RejectReason::Timeout);
            tracing::info!(%peer, reason = ?RejectReason::Timeout, "handshake rejected");
            return None;
        }
    };
    let Some(admitted) = admitted else {
        // The handshake succeeded only if the callback accepted, which sets
        // `admitted`; dropping the connection is the safe answer if that ever changes.
        tracing::debug!(%peer, "handshake completed without a room");
        return None;
    };
    Some((ws, admitted))
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Semaphore, mpsc};
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::connection::settings::Settings;

    /// Every idle connection pays for its two tasks' state, and tokio allocates a task
    /// in 128-byte steps with 104 bytes of its own: this guards the steps measured in
    /// BENCHMARKS.md ("Idle memory"), 768 bytes for the connection's task (its future
    /// at most 664) and 384 for the writer's (at most 280). A change that grows either
    /// past its step costs every idle connection 128 bytes, and fails here first.
    #[tokio::test]
    async fn a_connection_s_tasks_stay_within_their_measured_size() {
        let config =
            crate::config::Cli::try_parse_from(["wsbroker", "--listen", "127.0.0.1:0"]).unwrap().config;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (stream, peer)) = (client.unwrap(), accepted.unwrap());
        let (broker_tx, _broker_rx) = mpsc::channel(1);
        let settings = Arc::new(Settings::from_config(&config, CancellationToken::new()));
        let shared = Arc::new(connection::Shared {
            broker_tx,
            outbox_capacity: config.outbox_capacity,
            settings: Arc::clone(&settings),
            metrics: Arc::new(Metrics::new(false)),
        });
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let connection_task = serve(
            std::future::ready(Ok(stream)),
            peer,
            ConnId(1),
            shared,
            Arc::new(Admit::from_config(&config, None)),
            permit,
        );
        let size = std::mem::size_of_val(&connection_task);
        println!("connection task future: {size} bytes");
        assert!(size <= 664, "the connection task's future grew to {size} bytes (at most 664)");

        let writer_size = connection::writer::future_size_for_tests(settings).await;
        println!("writer task future: {writer_size} bytes");
        assert!(writer_size <= 280, "the writer task's future grew to {writer_size} bytes (at most 280)");
    }
}
