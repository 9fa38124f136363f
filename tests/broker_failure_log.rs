//! When the broker stops while the server runs, exactly one line is logged at ERROR,
//! and it names the cause. A counting tracing layer observes every event in this
//! test binary, which holds this one test so that the count is its own.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers: a failed expectation must fail the test, as in #[test] fns (clippy.toml)"
)]

mod common;

use std::sync::{Arc, Mutex};

use common::{TestServer, expect_close};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use wsbroker::broker::Hook;
use wsbroker::{BrokerStop, Error};

/// Every ERROR event, rendered as "message | field=value ...".
struct Errors(Arc<Mutex<Vec<String>>>);

struct Render(String);

impl Visit for Render {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl<S: Subscriber> Layer<S> for Errors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() == Level::ERROR {
            let mut line = Render(String::new());
            event.record(&mut line);
            self.0.lock().unwrap().push(line.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_broker_is_logged_once_at_error_with_its_cause() {
    let errors = Arc::new(Mutex::new(Vec::new()));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Errors(Arc::clone(&errors))))
        .unwrap();
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

    let errors = errors.lock().unwrap().clone();
    assert_eq!(errors.len(), 1, "exactly one ERROR line, got: {errors:#?}");
    assert!(errors[0].contains("broker task stopped"), "{errors:?}");
    assert!(errors[0].contains("cause="), "the line names the cause: {errors:?}");
}
