//! When the broker stops while the server runs, exactly one line is logged at ERROR,
//! and it names the cause. This binary holds this one test, so that every line its
//! process-wide log capture sees is this test's.

mod common;

use common::logs::Logs;
use common::{TestServer, expect_close};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::Level;
use wsbroker::broker::Hook;
use wsbroker::{BrokerStop, Error};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_is_logged_once_at_error_with_its_cause() {
    let logs = Logs::capture(Level::ERROR);
    let server = TestServer::start().await;
    let mut ws = server.join("/r").await;

    let (closed_tx, closed_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel();
    assert!(server.handle.inject(Hook::CloseInbox { closed_tx, release_rx }).await);
    closed_rx.await.unwrap();
    release_tx.send(()).unwrap();
    assert_eq!(expect_close(&mut ws).await, CloseCode::Error);
    let result = server.finished().await;
    assert!(matches!(result, Err(Error::BrokerStopped(BrokerStop::InboxClosed))), "{result:?}");

    let errors = logs.at(Level::ERROR);
    assert_eq!(errors.len(), 1, "exactly one ERROR line, got: {errors:#?}");
    assert!(errors[0].contains("broker task stopped"), "{errors:?}");
    assert!(errors[0].contains("cause="), "the line names the cause: {errors:?}");
}
