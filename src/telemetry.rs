//! Structured logs with `tracing`: one line per write, nothing per evaluation at the
//! default level.
//!
//! actix-http logs every connection that ends in a protocol failure at ERROR (`stream
//! error: …`): a malformed or over-long request, a client that vanished or never sent
//! its head. Those are the clients' doing, and anyone can send them by the thousand, so
//! they are logged again at DEBUG under `cohort::http` instead ([`ClientFaults`]); the
//! dispatcher's other errors (a failing response body, a bug) stay at ERROR.

use crate::config::{LogFormat, LogSettings};
use std::fmt;
use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber (once; later calls are ignored, which tests rely on).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match settings.format {
        LogFormat::Json => fmt.json().boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let _ = tracing_subscriber::registry().with(filter).with(ClientFaults).with(fmt).try_init();
}

/// The target of actix-http's HTTP/1 connection errors.
const DISPATCHER: &str = "actix_http::h1::dispatcher";

/// The beginnings of the dispatcher's error lines that report a client's doing: a
/// request that cannot be parsed (an over-long URI among them), a connection that
/// failed or timed out. (actix-http's `DispatchError` texts, after `stream error: `.)
const CLIENT_FAULTS: [&str; 4] = [
    "stream error: request parse error",
    "stream error: I/O error",
    "stream error: request did not complete within",
    "stream error: connection shutdown timeout",
];

/// Drops actix-http's ERROR lines about clients' faults and logs each again at DEBUG.
struct ClientFaults;

impl<S: Subscriber> Layer<S> for ClientFaults {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || metadata.target() != DISPATCHER {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        if !CLIENT_FAULTS.iter().any(|fault| message.0.starts_with(fault)) {
            return true;
        }
        // The global subscriber takes events raised while it handles one (only a scoped
        // one drops them), so this line goes through the same filter and output.
        tracing::debug!(target: "cohort::http", error = %message.0, "connection ended by a client fault");
        false
    }
}

/// An event's `message` field as text.
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }
}
