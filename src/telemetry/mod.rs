//! Telemetry: logs (`tracing`), Prometheus metrics and their HTTP listener.
//!
//! Logs go to stderr, as text or one JSON object per line (`--log-json`), or to the journal
//! when the daemon's stderr is connected to it (systemd sets `JOURNAL_STREAM` to the device and
//! inode of that stream; a mere inherited variable whose stream is elsewhere does not count).
//! Every line logged during an invocation carries its `request_id`: the gate runs each
//! invocation inside an `invocation` span that holds it, and both the JSON and the journal
//! output include the fields of the spans around an event. The filter is `RUST_LOG`
//! (default `info`).

pub mod metrics;
pub mod metrics_server;

use std::os::unix::fs::MetadataExt;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use metrics::Metrics;

/// Where log lines go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Human-readable lines on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal, with structured fields.
    Journal,
}

/// Chooses the output: the journal when stderr is the journal stream systemd set up, else
/// JSON or text as asked.
pub fn choose_output(json: bool) -> Output {
    if stderr_is_journal() {
        Output::Journal
    } else if json {
        Output::Json
    } else {
        Output::Text
    }
}

/// Whether stderr is the stream named by `JOURNAL_STREAM` (`DEVICE:INODE`).
fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/2").is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Installs the global subscriber; `json` selects one JSON object per line when the journal
/// is not in use.
pub fn init(json: bool) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let mut output = choose_output(json);
    if output == Output::Journal {
        match tracing_journald::layer() {
            Ok(layer) => {
                tracing_subscriber::registry()
                    .with(filter())
                    .with(layer.with_syslog_identifier("toolgate".to_owned()))
                    .init();
                return;
            }
            Err(e) => {
                // Fall back to stderr, which systemd also forwards to the journal.
                eprintln!("toolgate: cannot log to the journal ({e}); logging to stderr");
                output = if json { Output::Json } else { Output::Text };
            }
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr);
    if output == Output::Text {
        builder.init();
    } else {
        // The current span (with request_id) and the list of spans go with every event.
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    }
}
