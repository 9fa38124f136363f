//! Support for the panic audit (`cargo xtask audit`); built only with `no-panic`.
//!
//! `no_panic` checks a function only where it is linked, so [`link_all`] drives the
//! broker through every kind of step (each operation, a hook, the end of the inbox)
//! through `black_box` (which stops the optimiser from deleting the calls), and
//! `examples/no_panic_audit.rs` links it into a binary. The audit then checks, with a
//! panic planted in each annotated function in turn, that each one's proof is live
//! in that binary. With the `no-panic-negative-control` feature, [`negative_control`]
//! joins them: it can panic, so that build must fail.

use std::hint::black_box;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Command, ConnId, Delivery, HistoryLimits, Hook, Op, Origin, Settings, Since};
use crate::config::SlowConsumer;
use crate::connection::frame::Frame;

/// Runs the broker through every kind of step once, so that every annotated function
/// is linked.
pub fn link_all() {
    let history = HistoryLimits {
        size: black_box(4),
        ttl: black_box(Some(std::time::Duration::from_secs(1))),
        memory: black_box(1 << 20),
    };
    let settings =
        Settings { echo: black_box(true), slow_consumer: black_box(SlowConsumer::Disconnect), history };
    let mut broker = Broker::new(settings, Arc::new(crate::metrics::Metrics::default()), None);
    let room: Arc<str> = Arc::from(black_box("/audit"));
    let (outbox_tx, mut outbox_rx) = mpsc::channel::<Frame>(black_box(4));
    let (stats_tx, stats_rx) = oneshot::channel();
    let (shed_tx, shed_rx) = oneshot::channel();
    let (_release_tx, release_rx) = oneshot::channel();
    let frame: Frame = Arc::new(b"\x81\x05audit".to_vec());
    let run = [Arc::clone(&frame), Arc::clone(&frame)];
    for received in [
        Some(Command::Op(Op::Join {
            id: ConnId(1),
            room: Arc::clone(&room),
            outbox_tx: outbox_tx.clone(),
            kick: CancellationToken::new(),
            delivery: black_box(Delivery::Plain),
        })),
        Some(Command::Op(Op::Join {
            id: ConnId(2),
            room: Arc::clone(&room),
            outbox_tx: outbox_tx.clone(),
            kick: CancellationToken::new(),
            delivery: black_box(Delivery::Sequenced(Since::Start)),
        })),
        Some(Command::Op(Op::Publish {
            origin: Origin::Member(ConnId(1)),
            room: Arc::clone(&room),
            frame: Arc::clone(&frame),
        })),
        Some(Command::Op(Op::Publish { origin: Origin::Remote, room: Arc::clone(&room), frame })),
        Some(Command::Op(Op::Join {
            id: ConnId(3),
            room: Arc::clone(&room),
            outbox_tx,
            kick: CancellationToken::new(),
            delivery: black_box(Delivery::Sequenced(Since::After { epoch: black_box(1), seq: black_box(1) })),
        })),
        Some(Command::Op(Op::Leave { id: ConnId(2), room: Arc::clone(&room) })),
        Some(Command::Op(Op::Stats { reply_tx: stats_tx })),
        Some(Command::Op(Op::Shed { count: black_box(1), reply_tx: shed_tx })),
        Some(Command::Hook(Hook::Pause { release_rx })),
        None,
    ] {
        black_box(black_box(&mut broker).step(black_box(received)));
    }
    // A run of publishes, to a plain and a sequenced member, as the broker's loop
    // hands it over (see `broker::run`).
    let (run_tx, mut run_rx) = mpsc::channel::<Frame>(black_box(8));
    for (id, delivery) in [(4, Delivery::Plain), (5, Delivery::Sequenced(Since::Start))] {
        black_box(black_box(&mut broker).step(black_box(Some(Command::Op(Op::Join {
            id: ConnId(id),
            room: Arc::clone(&room),
            outbox_tx: run_tx.clone(),
            kick: CancellationToken::new(),
            delivery: black_box(delivery),
        })))));
    }
    let joins = black_box(&broker).extends_run(
        Origin::Member(ConnId(4)),
        &room,
        black_box(5),
        black_box(Origin::Member(ConnId(4))),
        &room,
        &run[0],
    );
    let runs = black_box(black_box(&run).as_slice());
    black_box(&mut broker).publish_run(black_box(Origin::Member(ConnId(4))), &room, runs);
    let delivered = outbox_rx.try_recv().is_ok() && run_rx.try_recv().is_ok() && joins;

    #[cfg(feature = "no-panic-negative-control")]
    black_box(negative_control(black_box(&[1, 2, 3]), black_box(7)));

    black_box((delivered, stats_rx, shed_rx));
}

/// The negative control: indexes out of bounds for `i >= xs.len()`, so `no_panic`
/// must reject it and the audit build must fail.
#[cfg(feature = "no-panic-negative-control")]
#[no_panic::no_panic]
#[expect(clippy::indexing_slicing, reason = "the negative control must be able to panic")]
pub fn negative_control(xs: &[u8], i: usize) -> u8 {
    xs[i]
}
