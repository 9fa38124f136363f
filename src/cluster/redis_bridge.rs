//! The Redis side of the bridge (feature `redis`): connection, subscriptions,
//! publishing, reconnection with backoff, and hand-over of remote messages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    BACKOFF, BridgeRx, HEALTH_INTERVAL, INBOUND_QUEUE, Membership, PUBLISH_BATCH, REDIS_TIMEOUT,
    RedisMetrics, RedisSettings, decode, encode, node_id,
};
use crate::broker::{Command, Op, Origin};

/// Runs the bridge until `stop` is cancelled. `broker_tx` is weak so the bridge never
/// keeps the broker alive; remote messages are handed to it as `Op::Publish` from `Origin::Remote`.
pub(crate) async fn run(
    settings: RedisSettings,
    mut queues: BridgeRx,
    broker_tx: mpsc::WeakSender<Command>,
    metrics: Arc<RedisMetrics>,
    stop: CancellationToken,
) {
    let node = node_id();
    // Push messages (and SUBSCRIBE on a multiplexed connection) need RESP3, which
    // Redis 6 and later speak; the URL need not say so.
    let info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str()).map(|info| {
        let resp3 = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        info.set_redis_settings(resp3)
    });
    let client = match info.and_then(redis::Client::open) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "invalid --redis-url; multi-node delivery disabled");
            return;
        }
    };
    let (sub, unsub, publish) = if settings.sharded {
        ("SSUBSCRIBE", "SUNSUBSCRIBE", "SPUBLISH")
    } else {
        ("SUBSCRIBE", "UNSUBSCRIBE", "PUBLISH")
    };
    let channel = |room: &str| format!("{}{room}", settings.prefix);
    // Rooms with local members: what must be subscribed whenever we are connected.
    let mut wanted: HashSet<Arc<str>> = HashSet::new();
    let mut backoff = BACKOFF.0;
    let mut logged_down = false;

    'reconnect: loop {
        // Messages from Redis go through a bounded queue; the redis crate's reader
        // must never wait on us, so a full queue drops (and counts).
        let (inbound_tx, mut inbound_rx) = mpsc::channel::<PushInfo>(INBOUND_QUEUE);
        let inbound_metrics = Arc::clone(&metrics);
        let push_sender = move |info: PushInfo| -> Result<(), ()> {
            if inbound_tx.try_send(info).is_err() {
                inbound_metrics.dropped_inbound.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        };
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_push_sender(push_sender);
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = client.get_multiplexed_async_connection_with_config(&config) => c,
        };
        let mut con = match connected {
            Ok(con) => con,
            Err(e) => {
                if !logged_down {
                    tracing::warn!(error = %e, "redis unavailable; local delivery continues; retrying with backoff");
                    logged_down = true;
                }
                metrics.up.store(false, Ordering::Relaxed);
                if !wait_out(&mut queues, &mut wanted, backoff, &metrics, &stop).await {
                    return;
                }
                backoff = backoff.saturating_mul(2).min(BACKOFF.1);
                continue 'reconnect;
            }
        };
        // Resubscribe every room that still has local members.
        if !wanted.is_empty() {
            let mut cmd = redis::cmd(sub);
            for room in &wanted {
                cmd.arg(channel(room));
            }
            if let Err(e) = cmd.exec_async(&mut con).await {
                tracing::debug!(error = %e, "resubscribe failed");
                continue 'reconnect;
            }
        }
        if logged_down {
            tracing::info!(rooms = wanted.len(), "redis connection restored; rooms resubscribed");
            metrics.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        backoff = BACKOFF.0;
        metrics.up.store(true, Ordering::Relaxed);

        let mut health = tokio::time::interval(HEALTH_INTERVAL);
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        let lost = loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                change = queues.membership_rx.recv() => {
                    let Some(change) = change else { return };
                    let (cmd_name, changed, room) = match change {
                        Membership::Subscribe(room) => (sub, wanted.insert(Arc::clone(&room)), room),
                        Membership::Unsubscribe(room) => (unsub, wanted.remove(&room), room),
                    };
                    if changed
                        && let Err(e) = redis::cmd(cmd_name).arg(channel(&room)).exec_async(&mut con).await {
                            break e;
                        }
                }
                () = queues.resync_notify.notified() => {
                    if let Err(e) = resync(&mut queues, &mut wanted, &broker_tx, &mut con, sub, unsub, &channel).await {
                        break e;
                    }
                }
                n = queues.publish_rx.recv_many(&mut batch, PUBLISH_BATCH) => {
                    if n == 0 {
                        return;
                    }
                    let mut pipe = redis::pipe();
                    for (room, frame) in batch.drain(..) {
                        if let Some(bytes) = encode(node, &frame) {
                            pipe.cmd(publish).arg(channel(&room)).arg(bytes).ignore();
                        }
                    }
                    if let Err(e) = pipe.exec_async(&mut con).await {
                        metrics.dropped_unavailable.fetch_add(n as u64, Ordering::Relaxed);
                        break e;
                    }
                    metrics.published.fetch_add(n as u64, Ordering::Relaxed);
                }
                info = inbound_rx.recv() => {
                    let Some(info) = info else { break redis::RedisError::from((redis::ErrorKind::Io, "push channel closed")) };
                    match info.kind {
                        PushKind::Disconnection => {
                            break redis::RedisError::from((redis::ErrorKind::Io, "disconnected"));
                        }
                        PushKind::Message | PushKind::SMessage => {
                            deliver(node, &settings.prefix, info.data, &broker_tx, &metrics).await;
                        }
                        _ => {}
                    }
                }
                _ = health.tick() => {
                    if queues.resync.load(Ordering::Relaxed)
                        && let Err(e) = resync(&mut queues, &mut wanted, &broker_tx, &mut con, sub, unsub, &channel).await {
                            break e;
                        }
                    if let Err(e) = redis::cmd("PING").exec_async(&mut con).await {
                        break e;
                    }
                }
            }
        };
        tracing::warn!(error = %lost, "redis connection lost; local delivery continues; reconnecting");
        logged_down = true;
        metrics.up.store(false, Ordering::Relaxed);
    }
}

/// While Redis is down: wait `delay`, keeping subscription changes (for the
/// resubscribe) and dropping publishes (at most once), counted. `false` on stop.
async fn wait_out(
    queues: &mut BridgeRx,
    wanted: &mut HashSet<Arc<str>>,
    delay: Duration,
    metrics: &RedisMetrics,
    stop: &CancellationToken,
) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = stop.cancelled() => return false,
            () = &mut sleep => return true,
            change = queues.membership_rx.recv() => match change {
                Some(Membership::Subscribe(room)) => { wanted.insert(room); }
                Some(Membership::Unsubscribe(room)) => { wanted.remove(&room); }
                None => return false,
            },
            dropped = queues.publish_rx.recv() => match dropped {
                Some(_) => { metrics.dropped_unavailable.fetch_add(1, Ordering::Relaxed); }
                None => return false,
            },
        }
    }
}

/// Reconciles subscriptions with the broker's room list (after a membership change
/// could not be queued).
async fn resync(
    queues: &mut BridgeRx,
    wanted: &mut HashSet<Arc<str>>,
    broker_tx: &mpsc::WeakSender<Command>,
    con: &mut redis::aio::MultiplexedConnection,
    sub: &str,
    unsub: &str,
    channel: &impl Fn(&str) -> String,
) -> Result<(), redis::RedisError> {
    queues.resync.store(false, Ordering::Relaxed);
    // Apply what is queued first, then ask the broker for the truth.
    while let Ok(change) = queues.membership_rx.try_recv() {
        match change {
            Membership::Subscribe(room) => wanted.insert(room),
            Membership::Unsubscribe(room) => wanted.remove(&room),
        };
    }
    let Some(tx) = broker_tx.upgrade() else { return Ok(()) };
    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
    if tx.send(Command::Op(Op::Stats { reply_tx })).await.is_err() {
        return Ok(());
    }
    drop(tx);
    let Ok(stats) = reply_rx.await else { return Ok(()) };
    let truth: HashSet<Arc<str>> = stats.rooms.iter().map(|r| Arc::from(r.name.as_str())).collect();
    for room in truth.difference(wanted) {
        redis::cmd(sub).arg(channel(room)).exec_async(&mut *con).await?;
    }
    for room in wanted.difference(&truth) {
        redis::cmd(unsub).arg(channel(room)).exec_async(&mut *con).await?;
    }
    *wanted = truth;
    Ok(())
}

/// Hands a message from Redis to the broker for local delivery.
async fn deliver(
    node: u64,
    prefix: &str,
    data: Vec<Value>,
    broker_tx: &mpsc::WeakSender<Command>,
    metrics: &RedisMetrics,
) {
    let mut fields = data.into_iter();
    let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) = (fields.next(), fields.next())
    else {
        return;
    };
    let Some(room) = channel.strip_prefix(prefix.as_bytes()).and_then(|r| std::str::from_utf8(r).ok()) else {
        return;
    };
    let Some(frame) = decode(node, &payload) else { return };
    metrics.received.fetch_add(1, Ordering::Relaxed);
    let Some(tx) = broker_tx.upgrade() else { return };
    let remote = Command::Op(Op::Publish { origin: Origin::Remote, room: Arc::from(room), frame });
    if tx.send(remote).await.is_err() {
        tracing::debug!("broker gone; remote message dropped");
    }
}
