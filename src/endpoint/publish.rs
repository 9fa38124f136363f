//! The publish API: `POST /rooms/{room}` publishes its body to the room, for backends
//! that do not hold a WebSocket.
//!
//! `{room}` is the room's name without its leading slash (`POST /rooms/lobby`
//! publishes to `/lobby`, `POST /rooms/game/42` to `/game/42`). A `Content-Type` of
//! `text/*` makes a text message (the body must be UTF-8), anything else a binary
//! one. The message goes to every member of the room on this node and, with
//! `--redis-url`, on every node, exactly once per member, as a member's message would.
//! With `--auth-key` the request needs a token whose `rooms.pub` covers the room.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};

use crate::auth::{self, Verifier};
use crate::connection::frame::{self, Frame};
use crate::server::ServerHandle;

/// What the publish API needs from the configuration.
#[derive(Debug)]
pub(crate) struct PublishApi {
    /// With `--auth-key`: what checks the request's token.
    pub verifier: Option<Verifier>,
    /// `--max-message-size`: the largest body.
    pub max_message_size: usize,
    /// `--max-room-length`: the longest room name.
    pub max_room_length: usize,
}

/// The answer to one publish request: a status and a one-line reason.
pub(crate) type Answer = (StatusCode, &'static str);

impl PublishApi {
    /// Handles `POST /rooms/{rest}`: `202` once the broker has the message.
    pub(crate) async fn publish(
        &self,
        rest: &str,
        request: Request<Incoming>,
        server: &ServerHandle,
    ) -> Answer {
        if rest.is_empty() {
            return (StatusCode::NOT_FOUND, "no room named");
        }
        let room = format!("/{rest}");
        if room.len() > self.max_room_length {
            return (StatusCode::URI_TOO_LONG, "room name too long");
        }
        if let Some(verifier) = &self.verifier {
            let authorization = request.headers().get(hyper::header::AUTHORIZATION).map(|v| v.as_bytes());
            let Some(token) = auth::token_of(authorization, request.uri().query()) else {
                return (StatusCode::UNAUTHORIZED, "a valid token is required");
            };
            match verifier.verify(token, SystemTime::now()) {
                Ok(grant) if grant.may_publish(&room) => {}
                Ok(_) => return (StatusCode::FORBIDDEN, "the token does not cover publishing to this room"),
                Err(denied) => {
                    tracing::info!(reason = %denied, "publish API: token refused");
                    return (StatusCode::UNAUTHORIZED, "a valid token is required");
                }
            }
        }
        if !server.healthy() {
            return (StatusCode::SERVICE_UNAVAILABLE, "the server is not accepting messages");
        }
        let text = request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().to_ascii_lowercase().starts_with("text/"));
        let declared = request
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > u64::try_from(self.max_message_size).unwrap_or(u64::MAX)) {
            return (StatusCode::PAYLOAD_TOO_LARGE, "larger than --max-message-size");
        }
        let body: Bytes = match Limited::new(request.into_body(), self.max_message_size).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return (StatusCode::PAYLOAD_TOO_LARGE, "larger than --max-message-size");
            }
            Err(_) => return (StatusCode::BAD_REQUEST, "the body could not be read"),
        };
        let frame: Frame = if text {
            if std::str::from_utf8(&body).is_err() {
                return (StatusCode::BAD_REQUEST, "a text/* body must be UTF-8");
            }
            frame::build(frame::TEXT, &body)
        } else {
            frame::build(frame::BINARY, &body)
        };
        if server.publish(Arc::from(room), frame) {
            (StatusCode::ACCEPTED, "accepted")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "the broker is busy or stopped; try again")
        }
    }
}
