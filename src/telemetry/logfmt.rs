//! The log line formats (`--log-format json` and `pretty`): one JSON object or one text line
//! per event, in which every field appears once. An event's own fields are printed whole;
//! the fields of the spans around it (the deployment, the cycle) follow, less those the
//! event already carries, so `resource=...` is never printed twice. Span fields are kept as
//! JSON by the subscriber (`JsonFields`) and read back here.
//!
//! The lines are built by pure functions ([`json_line`], [`text_line`], table-tested); it
//! must never decide what is logged, or drop an event's own field.

use std::fmt;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// An event's or span's fields, by name.
pub type Fields = Map<String, Value>;

/// Collects an event's fields as JSON values.
#[derive(Default)]
struct Collect(Fields);

impl Visit for Collect {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            Value::String(format!("{value:?}")),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_string(), Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_string(), Value::from(value));
    }
}

/// A span around an event: its name and its fields.
pub type Span = (String, Fields);

/// `span`'s fields less those `event` has.
fn without(span: &Fields, event: &Fields) -> Fields {
    span.iter()
        .filter(|(k, _)| !event.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The JSON line: `timestamp`, `level`, `fields` (the message first), `target`, and `span`,
/// the innermost span's name and the fields the event does not carry itself.
#[must_use]
pub fn json_line(
    timestamp: &str,
    level: Level,
    target: &str,
    fields: &Fields,
    span: Option<&Span>,
) -> String {
    let text = |v: &str| Value::String(v.to_string()).to_string();
    let mut out = format!(
        "{{\"timestamp\":{},\"level\":{},\"fields\":{{",
        text(timestamp),
        text(level.as_str())
    );
    let ordered = fields
        .get_key_value("message")
        .into_iter()
        .chain(fields.iter().filter(|(k, _)| *k != "message"));
    for (i, (k, v)) in ordered.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{}:{v}", text(k)));
    }
    out.push_str(&format!("}},\"target\":{}", text(target)));
    if let Some((name, span_fields)) = span {
        let mut shown = without(span_fields, fields);
        shown.remove("name");
        let mut object = format!("{{\"name\":{}", text(name));
        for (k, v) in &shown {
            object.push_str(&format!(",{}:{v}", text(k)));
        }
        object.push('}');
        out.push_str(&format!(",\"span\":{object}"));
    }
    out.push('}');
    out
}

/// A value as text: strings bare unless they hold a space, a quote or `=` (then quoted).
fn show(v: &Value) -> String {
    match v {
        Value::String(s) if s.is_empty() || s.contains([' ', '"', '=', '\t']) => v.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The text line: time, level, the spans' names, target, message, the event's fields, then
/// the spans' fields (innermost first) not printed yet.
#[must_use]
pub fn text_line(
    timestamp: &str,
    level: &str,
    target: &str,
    fields: &Fields,
    spans: &[Span],
) -> String {
    let mut out = format!("{timestamp} {level:>5} ");
    if !spans.is_empty() {
        let names: Vec<&str> = spans.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&names.join(":"));
        out.push_str(": ");
    }
    out.push_str(target);
    out.push(':');
    if let Some(m) = fields.get("message") {
        out.push(' ');
        out.push_str(
            m.as_str()
                .map_or_else(|| m.to_string(), str::to_string)
                .as_str(),
        );
    }
    let mut printed: Fields = Map::new();
    for (k, v) in fields.iter().filter(|(k, _)| *k != "message") {
        out.push_str(&format!(" {k}={}", show(v)));
        printed.insert(k.clone(), Value::Null);
    }
    for (_, span_fields) in spans.iter().rev() {
        for (k, v) in without(span_fields, &printed) {
            out.push_str(&format!(" {k}={}", show(&v)));
            printed.insert(k, Value::Null);
        }
    }
    out
}

/// The event formatter: JSON objects or text lines, every field once. Needs the
/// subscriber's span fields as JSON (`fmt_fields(JsonFields::new())`).
#[derive(Debug, Clone, Copy)]
pub struct Lines {
    /// JSON objects rather than text.
    pub json: bool,
}

fn span_fields<S, N>(span: &tracing_subscriber::registry::SpanRef<'_, S>) -> Fields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: 'static,
{
    span.extensions()
        .get::<FormattedFields<N>>()
        .and_then(|f| serde_json::from_str::<Fields>(&f.fields).ok())
        .unwrap_or_default()
}

impl<S, N> FormatEvent<S, N> for Lines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut collect = Collect::default();
        event.record(&mut collect);
        let spans: Vec<Span> = ctx
            .event_scope()
            .into_iter()
            .flat_map(tracing_subscriber::registry::Scope::from_root)
            .map(|s| (s.name().to_string(), span_fields::<S, N>(&s)))
            .collect();
        let meta = event.metadata();
        let now = chrono::Utc::now()
            .format("%Y-%m-%dT%H:%M:%S%.6fZ")
            .to_string();
        let line = if self.json {
            json_line(&now, *meta.level(), meta.target(), &collect.0, spans.last())
        } else {
            let level = if writer.has_ansi_escapes() {
                let colour = match *meta.level() {
                    Level::ERROR => "31",
                    Level::WARN => "33",
                    Level::INFO => "32",
                    _ => "34",
                };
                format!("\u{1b}[{colour}m{:>5}\u{1b}[0m", meta.level().as_str())
            } else {
                meta.level().as_str().to_string()
            };
            text_line(&now, &level, meta.target(), &collect.0, &spans)
        };
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Fields {
        match v {
            Value::Object(m) => m,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn a_field_the_event_carries_is_not_repeated_from_its_spans() {
        let fields = map(json!({"message": "Deployment started.", "resource": "environment/dev"}));
        let spans = vec![
            (
                "cycle".to_string(),
                map(json!({"changes": 2, "started": 2})),
            ),
            (
                "deployment".to_string(),
                map(json!({"resource": "environment/dev", "deployment": 1, "version": "1.0"})),
            ),
        ];
        let line = json_line(
            "2026-11-30T08:00:00.000000Z",
            Level::INFO,
            "protond::telemetry::events",
            &fields,
            spans.last(),
        );
        let v: Value = serde_json::from_str(&line).expect("one JSON object");
        assert_eq!(v["fields"]["message"], "Deployment started.");
        assert_eq!(v["fields"]["resource"], "environment/dev");
        assert_eq!(
            v["span"],
            json!({"name": "deployment", "deployment": 1, "version": "1.0"})
        );
        assert_eq!(line.matches("\"resource\"").count(), 1, "{line}");
        assert!(line.starts_with("{\"timestamp\":\"2026-11-30T08:00:00.000000Z\",\"level\":\"INFO\",\"fields\":{\"message\":"), "{line}");

        let text = text_line(
            "2026-11-30T08:00:00.000000Z",
            "INFO",
            "protond::telemetry::events",
            &fields,
            &spans,
        );
        assert_eq!(
            text,
            "2026-11-30T08:00:00.000000Z  INFO cycle:deployment: protond::telemetry::events: Deployment started. resource=environment/dev deployment=1 version=1.0 changes=2 started=2"
        );
        // A field both spans carry is printed once, the innermost span's.
        let spans = vec![
            ("cycle".to_string(), map(json!({"started": 1}))),
            ("inner".to_string(), map(json!({"started": 3}))),
        ];
        let text = text_line(
            "t",
            "WARN",
            "x",
            &map(json!({"message": "m", "error": "a b"})),
            &spans,
        );
        assert_eq!(text, "t  WARN cycle:inner: x: m error=\"a b\" started=3");
    }

    #[test]
    fn no_span_no_span_object() {
        let line = json_line("t", Level::WARN, "x", &map(json!({"message": "m"})), None);
        assert_eq!(
            line,
            "{\"timestamp\":\"t\",\"level\":\"WARN\",\"fields\":{\"message\":\"m\"},\"target\":\"x\"}"
        );
        assert_eq!(
            text_line("t", "INFO", "x", &map(json!({"message": "m"})), &[]),
            "t  INFO x: m"
        );
    }
}
