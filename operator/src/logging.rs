//! The operator's log lines: text for a terminal, or one flat JSON object per line for a log
//! pipeline (`--log-json`).
//!
//! tracing-subscriber's own JSON format nests an event's fields under `fields` and the fields
//! of the spans it happened in under `span`/`spans`, so a query for the pipeline of a line
//! needs to know which span recorded it. Here every line is flat: `ts`, `level`, `msg`,
//! `target`, then the fields of the enclosing spans from the outermost in (the reconcile
//! span gives `namespace`, `pipeline` and `reconcile_id`), then the event's own fields, a
//! later key replacing an earlier one.

use std::fmt;
use std::io;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The filter when `RUST_LOG` is not set.
const DEFAULT_FILTER: &str = "info,kube=warn";

/// Installs the process-wide subscriber: flat JSON lines when `json`, text otherwise, filtered
/// by `RUST_LOG` (default `info,kube=warn`).
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .with_writer(io::stdout)
            .init();
    } else {
        builder.init();
    }
}

/// A subscriber writing flat JSON lines to `writer`, for tests that read the lines back.
#[cfg(test)]
fn json_subscriber<W>(writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("info"))
        .fmt_fields(JsonFields::new())
        .event_format(FlatJson)
        .with_writer(writer)
        .finish()
}

/// One JSON object per event, with span and event fields as top-level keys.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(Timestamp::now().to_string()));
        line.insert("level".into(), Value::String(meta.level().as_str().into()));
        line.insert("msg".into(), Value::String(String::new()));
        line.insert("target".into(), Value::String(meta.target().into()));
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // With `JsonFields` a span's recorded fields are kept as one JSON object.
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(fields)
                {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut Fields(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Collects an event's fields into the line; `message` becomes `msg`.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.insert(key.to_string(), value);
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// Lines written by the subscriber, shared with the test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Ok(mut b) = self.0.lock() {
                b.extend_from_slice(buf);
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Self::Writer {
            self.clone()
        }
    }

    #[test]
    fn a_reconcile_log_line_is_one_flat_json_object() {
        let out = Captured::default();
        tracing::subscriber::with_default(json_subscriber(out.clone()), || {
            let span = tracing::info_span!(
                "reconcile",
                namespace = tracing::field::Empty,
                pipeline = tracing::field::Empty,
                reconcile_id = "00000000000000a1"
            );
            span.record("namespace", "ml").record("pipeline", "wine");
            let _entered = span.enter();
            tracing::warn!(
                category = "apply_job",
                retry_in_seconds = 5u64,
                "reconcile failed"
            );
        });
        let text = String::from_utf8(out.0.lock().map(|b| b.clone()).unwrap_or_default())
            .expect("utf-8 log");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let line: Value = serde_json::from_str(lines[0]).expect("the line is JSON");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["msg"], "reconcile failed", "{line}");
        assert_eq!(line["namespace"], "ml", "{line}");
        assert_eq!(line["pipeline"], "wine", "{line}");
        assert_eq!(line["reconcile_id"], "00000000000000a1", "{line}");
        assert_eq!(line["category"], "apply_job", "{line}");
        assert_eq!(line["retry_in_seconds"], 5, "{line}");
        assert!(
            line["ts"]
                .as_str()
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some(),
            "ts is an RFC 3339 time: {line}"
        );
        for nested in ["fields", "span", "spans"] {
            assert!(line.get(nested).is_none(), "no nested {nested}: {line}");
        }
    }
}
