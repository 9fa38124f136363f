//! The admission rules a handshake request must pass before any WebSocket state
//! exists, and the HTTP answers to those that do not.
//!
//! At most `--max-connections` admitted sockets (beyond: HTTP 503, see [`reject`]),
//! the handshake within `--handshake-timeout`, the path within `--max-room-length`
//! (beyond: HTTP 414), the Origin in `--allowed-origin` when given (otherwise: HTTP
//! 403), and with `--auth-key` a valid token (otherwise: HTTP 401) that covers the
//! room (otherwise: HTTP 403). tungstenite itself rejects a request header larger
//! than 64 KiB.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{self, Denied, Verifier};
use crate::broker::{Delivery, Since};
use crate::config::Config;
use crate::connection::settings::Terms;
use crate::metrics::RejectReason;

/// The admission rules applied to each handshake request.
#[derive(Debug)]
pub(crate) struct Admit {
    max_room_length: usize,
    /// Lower-cased allowed origins; empty means every origin is allowed.
    allowed_origins: Vec<String>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) ws_config: WebSocketConfig,
    /// With `--auth-key`: what checks tokens.
    auth: Option<Verifier>,
}

/// A handshake the rules let in.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The room: the request's path, as sent.
    pub room: Arc<str>,
    /// What the connection may do, and until when.
    pub terms: Terms,
    /// The token's `sub`, for logs.
    pub user: Option<String>,
    /// Sequenced when the client offered the `wsbroker.v1` subprotocol.
    pub delivery: Delivery,
}

/// The subprotocol of the delivery contract (README, "Delivery contract").
pub(crate) const SUBPROTOCOL: &str = "wsbroker.v1";

/// How the request asks to receive messages: sequenced if it offers [`SUBPROTOCOL`]
/// (subprotocol names are case-sensitive, RFC 6455 section 4.1), resuming where
/// its `since` query parameter says; plain otherwise (`since` is then ignored).
fn delivery_of(request: &Request) -> Delivery {
    let offered = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if offered { Delivery::Sequenced(Since::from_query(request.uri().query())) } else { Delivery::Plain }
}

impl Admit {
    pub(crate) fn from_config(config: &Config, auth: Option<Verifier>) -> Self {
        Self {
            max_room_length: usize::from(config.max_room_length),
            allowed_origins: config.allowed_origins.iter().map(|o| normalize_origin(o)).collect(),
            handshake_timeout: config.handshake_timeout,
            ws_config: config.websocket_config(),
            auth,
        }
    }

    /// Decides on one handshake request: what it is admitted to, or why it is rejected.
    pub(crate) fn check(&self, request: &Request) -> Result<Admitted, Rejection> {
        // The room is the path; the query string is ignored.
        let path = request.uri().path();
        if path.len() > self.max_room_length {
            return Err(Rejection::RoomTooLong);
        }
        if !self.allowed_origins.is_empty() {
            // Browsers always send Origin on WebSocket handshakes, and cross-site
            // hijacking needs a browser; a request without Origin comes from a
            // non-browser client, which could forge any Origin anyway.
            if let Some(origin) = request.headers().get("origin") {
                let origin = origin.to_str().map(normalize_origin).unwrap_or_default();
                if !self.allowed_origins.contains(&origin) {
                    return Err(Rejection::Origin);
                }
            }
        }
        let delivery = delivery_of(request);
        let Some(verifier) = &self.auth else {
            return Ok(Admitted { room: Arc::from(path), terms: Terms::OPEN, user: None, delivery });
        };
        let authorization = request.headers().get("authorization").map(|v| v.as_bytes());
        let token = auth::token_of(authorization, request.uri().query())
            .ok_or(Rejection::Unauthorized(Denied::Missing))?;
        let now = SystemTime::now();
        let grant = verifier.verify(token, now).map_err(Rejection::Unauthorized)?;
        if !grant.may_join(path) {
            return Err(Rejection::Forbidden);
        }
        let terms = Terms { expires_in: grant.remaining(now), may_publish: grant.may_publish(path) };
        Ok(Admitted { room: Arc::from(path), terms, user: grant.user, delivery })
    }
}

/// Origins compare case-insensitively and without a trailing slash.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Why a handshake was refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `--max-connections` reached: HTTP 503.
    Limit,
    /// Origin not in `--allowed-origin`: HTTP 403.
    Origin,
    /// Path longer than `--max-room-length`: HTTP 414.
    RoomTooLong,
    /// No token, or one that does not verify: HTTP 401.
    Unauthorized(Denied),
    /// A valid token that does not cover the room: HTTP 403.
    Forbidden,
}

impl std::fmt::Display for Rejection {
    /// The rule that refused, for the log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Limit => f.write_str("connection limit reached"),
            Self::Origin => f.write_str("origin not allowed"),
            Self::RoomTooLong => f.write_str("room name too long"),
            Self::Unauthorized(denied) => write!(f, "token refused: {denied}"),
            Self::Forbidden => f.write_str("token does not cover the room"),
        }
    }
}

impl Rejection {
    /// The `wsbroker_handshake_rejections_total` label.
    pub(crate) fn reason(self) -> RejectReason {
        match self {
            Self::Limit => RejectReason::Limit,
            Self::Origin => RejectReason::Origin,
            Self::RoomTooLong => RejectReason::BadRequest,
            Self::Unauthorized(_) => RejectReason::Unauthorized,
            Self::Forbidden => RejectReason::Forbidden,
        }
    }

    /// The HTTP answer, with a one-line plain-text body.
    pub(crate) fn response(self) -> ErrorResponse {
        let (status, body) = match self {
            Self::Limit => (StatusCode::SERVICE_UNAVAILABLE, "connection limit reached"),
            Self::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Self::RoomTooLong => (StatusCode::URI_TOO_LONG, "room name too long"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "a valid token is required"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "the token does not cover this room"),
        };
        let mut response = ErrorResponse::new(Some(body.to_owned()));
        *response.status_mut() = status;
        if let Self::Unauthorized(_) = self {
            // RFC 6750: tells the client a bearer token is what is missing or wrong.
            response.headers_mut().insert(
                "www-authenticate",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static("Bearer realm=\"wsbroker\""),
            );
        }
        response
    }
}

/// Answers an over-limit connection's handshake with HTTP 503, within the handshake
/// timeout. `_slot` bounds how many of these run at once.
pub(crate) async fn reject(
    stream: TcpStream,
    peer: SocketAddr,
    admit: Arc<Admit>,
    _slot: OwnedSemaphorePermit,
) {
    #[expect(clippy::result_large_err, reason = "the Err type is fixed by tungstenite's Callback trait")]
    let callback =
        |_: &Request, _: Response| -> Result<Response, ErrorResponse> { Err(Rejection::Limit.response()) };
    let handshake = tokio_tungstenite::accept_hdr_async(stream, callback);
    // The callback always refuses, so the handshake never succeeds; its error (the
    // 503 sent, or the peer gone, or the timeout) needs nothing more.
    if let Ok(Ok(_)) = tokio::time::timeout(admit.handshake_timeout, handshake).await {
        tracing::debug!(%peer, "over-limit handshake unexpectedly accepted; dropped");
    }
}
