//! The operators' HTTP endpoint (`--metrics-listen`), a listener of its own apart
//! from the WebSocket one: `GET /metrics`, `GET /healthz`, and the publish API
//! `POST /rooms/{room}` ([`publish`]). Keep it internal: without `--auth-key`, anyone
//! who reaches it can publish.

pub(crate) mod publish;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use self::publish::PublishApi;
use crate::metrics::{Metrics, render};
use crate::server::ServerHandle;

/// At most this many scrape connections are served at once; more wait in the
/// listener's backlog. An operator's endpoint must not become unbounded work.
const MAX_SCRAPE_CONNECTIONS: usize = 16;

/// A scrape request must arrive within this time.
const SCRAPE_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the endpoint on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    handle: ServerHandle,
    api: Arc<PublishApi>,
    stop: CancellationToken,
) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(metrics_listen = %addr, "metrics endpoint listening"),
        Err(e) => tracing::info!(error = %e, "metrics endpoint listening"),
    }
    let slots = Arc::new(Semaphore::new(MAX_SCRAPE_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                continue;
            }
        };
        let (metrics, handle, api) = (Arc::clone(&metrics), handle.clone(), Arc::clone(&api));
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                respond(request, Arc::clone(&metrics), handle.clone(), Arc::clone(&api))
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(SCRAPE_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
            }
            drop(permit);
        });
    }
    connections.abort_all();
}

async fn respond(
    request: Request<Incoming>,
    metrics: Arc<Metrics>,
    handle: ServerHandle,
    api: Arc<PublishApi>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let (status, content_type, body) = match (request.method(), path.as_str()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(render(&metrics, &handle)),
        ),
        (&Method::GET, "/healthz") if metrics.healthy() && metrics.degraded() => (
            StatusCode::OK,
            "text/plain",
            Bytes::from_static(b"degraded: redis unavailable; serving local members only\n"),
        ),
        (&Method::GET, "/healthz") if metrics.healthy() => {
            (StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
        }
        (&Method::GET, "/healthz") => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            Bytes::from_static(b"unavailable: the broker is stopped or the server is not accepting\n"),
        ),
        (&Method::POST, path) if path.starts_with("/rooms/") => {
            let rest = path.strip_prefix("/rooms/").unwrap_or_default();
            let (status, reason) = api.publish(rest, request, &handle).await;
            (status, "text/plain", Bytes::from(format!("{reason}\n")))
        }
        (_, path) if path.starts_with("/rooms/") => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"use POST\n")));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
            return Ok(response);
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"not found\n")),
    };
    let mut response = Response::new(Full::new(body));
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer realm=\"wsbroker\""),
        );
    }
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    Ok(response)
}
