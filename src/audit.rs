//! Support for the panic audit (`cargo xtask audit`); built only with `no-panic`.
//!
//! `no_panic` checks a function only where it is linked, so [`link_all`] calls every
//! annotated function through `black_box` (which stops the optimiser from deleting
//! the calls), and `examples/no_panic_audit.rs` links it into a binary. With the
//! `no-panic-negative-control` feature, [`negative_control`] joins them: it can
//! panic, so that build must fail, which shows the proofs are live.

use std::hint::black_box;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::rooms::{Member, Rooms};
use crate::broker::{Broker, ConnId, Op, Settings};
use crate::config::SlowConsumer;

/// Links (and runs once) every `no_panic`-annotated function.
pub fn link_all() {
    let settings = Settings { echo: black_box(true), slow_consumer: black_box(SlowConsumer::Disconnect) };
    let mut broker = Broker::new(settings, std::sync::Arc::new(crate::metrics::Metrics::default()), None);
    let room: Arc<str> = Arc::from(black_box("/audit"));
    let (outbox_tx, mut outbox_rx) = mpsc::channel::<crate::connection::frame::Frame>(black_box(4));
    let (stats_tx, stats_rx) = oneshot::channel();
    for op in [
        Op::Join {
            id: ConnId(1),
            room: Arc::clone(&room),
            outbox_tx: outbox_tx.clone(),
            kick: CancellationToken::new(),
        },
        Op::Join { id: ConnId(2), room: Arc::clone(&room), outbox_tx, kick: CancellationToken::new() },
        Op::Publish {
            from: ConnId(1),
            room: Arc::clone(&room),
            frame: std::sync::Arc::new(b"\x81\x05audit".to_vec()),
        },
        Op::Leave { id: ConnId(2), room: Arc::clone(&room) },
        Op::Stats { reply_tx: stats_tx },
    ] {
        black_box(&mut broker).handle(black_box(op));
    }
    let delivered = outbox_rx.try_recv().is_ok();

    let mut rooms = Rooms::new(settings, None);
    let (tx, _rx) = mpsc::channel::<crate::connection::frame::Frame>(black_box(1));
    let member = Member::new(ConnId(3), tx, CancellationToken::new());
    let joined = black_box(&mut rooms).try_join(member, black_box("/r"));
    black_box(&joined);
    black_box(black_box(&mut rooms).leave(ConnId(3), black_box("/r")));
    black_box(black_box(&mut rooms).remove_room(black_box("/r")));

    #[cfg(feature = "no-panic-negative-control")]
    black_box(negative_control(black_box(&[1, 2, 3]), black_box(7)));

    black_box((delivered, stats_rx));
}

/// The negative control: indexes out of bounds for `i >= xs.len()`, so `no_panic`
/// must reject it and the audit build must fail.
#[cfg(feature = "no-panic-negative-control")]
#[no_panic::no_panic]
#[expect(clippy::indexing_slicing, reason = "the negative control must be able to panic")]
pub fn negative_control(xs: &[u8], i: usize) -> u8 {
    xs[i]
}
