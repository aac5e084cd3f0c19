//! Compares a live stack's template and parameters with the template protond renders for
//! the same resource, semantically: both are parsed (YAML or JSON) into one normal form,
//! so formatting, comments, key order and quoting do not count, and `CloudFormation`'s
//! short-form tags (`!Ref X`, `!GetAtt A.B`, `!Sub ...`) equal their long forms
//! (`{"Ref": "X"}`, `{"Fn::GetAtt": ["A", "B"]}`, `{"Fn::Sub": ...}`). Scalars compare as
//! text, as `CloudFormation` reads them (`80` and `"80"` are one value).
//!
//! The differences come out by path (`Resources.Queue.Properties.MessageRetentionPeriod`),
//! grouped by logical id under `Resources`: a resource only protond renders is *added*, one
//! only the live stack has is *removed*, and anything else is a *changed* property.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

/// Longest value shown in a difference, in characters.
const SHOWN_CHARS: usize = 120;

/// What one difference does, seen from the live stack towards protond's rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only protond's rendering has it: the next update adds it.
    Added,
    /// Only the live stack has it: the next update removes it.
    Removed,
    /// Both have it, with different values.
    Changed,
}

/// One difference between the live stack and protond's rendering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Added, removed or changed.
    pub change: Change,
    /// Where: a template path (`Resources.Topic.Properties.TopicName`, `Outputs.Arn`) or
    /// `Parameters.<name> (value)` for a stack parameter's value.
    pub at: String,
    /// The logical id, for a difference under `Resources`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The live value (compact JSON, shortened), unless added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
    /// protond's value (compact JSON, shortened), unless removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rendered: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.change {
            Change::Added => write!(
                f,
                "+ {} (only in protond's rendering: {})",
                self.at,
                self.rendered.as_deref().unwrap_or("")
            ),
            Change::Removed => write!(
                f,
                "- {} (only in the live stack: {})",
                self.at,
                self.live.as_deref().unwrap_or("")
            ),
            Change::Changed => write!(
                f,
                "~ {}: live {} -> rendered {}",
                self.at,
                self.live.as_deref().unwrap_or(""),
                self.rendered.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Why a template could not be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is neither YAML nor JSON: {reason}")]
pub struct ParseError {
    /// Which template (`the live template of stack X`, `the rendered template`).
    pub what: String,
    /// The parser's message.
    pub reason: String,
}

/// Parses a `CloudFormation` template (YAML, with short-form tags, or JSON) into the normal
/// form the comparison uses.
///
/// # Errors
///
/// [`ParseError`] naming `what` when the text is neither YAML nor JSON.
pub fn parse_template(text: &str, what: &str) -> Result<Value, ParseError> {
    // JSON first: tab-indented JSON is valid JSON but not valid YAML.
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        return Ok(normal(&json_to_yaml(v)));
    }
    crate::catalog::yaml::from_str::<serde_yaml::Value>(text)
        .map(|v| normal(&v))
        .map_err(|e| ParseError {
            what: what.to_string(),
            reason: e.to_string(),
        })
}

fn json_to_yaml(v: Value) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap_or(serde_yaml::Value::Null)
}

/// The normal form: mappings with text keys, scalars as text, short-form intrinsic functions
/// as their long form, `Fn::GetAtt` as a list.
fn normal(v: &serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::String(b.to_string()),
        Y::Number(n) => Value::String(n.to_string()),
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(items.iter().map(normal).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(key_text(k), normal(v));
            }
            long_get_att(out)
        }
        Y::Tagged(t) => {
            let name = t.tag.to_string();
            let name = name.trim_start_matches('!');
            let key = match name {
                "Ref" | "Condition" => name.to_string(),
                _ => format!("Fn::{name}"),
            };
            let mut out = Map::new();
            out.insert(key, normal(&t.value));
            long_get_att(out)
        }
    }
}

/// `{"Fn::GetAtt": "A.B.C"}` (the short form's text) as `{"Fn::GetAtt": ["A", "B.C"]}`.
fn long_get_att(mut m: Map<String, Value>) -> Value {
    if m.len() == 1
        && let Some(Value::String(s)) = m.get("Fn::GetAtt")
        && let Some((resource, attribute)) = s.split_once('.')
    {
        let list = vec![
            Value::String(resource.to_string()),
            Value::String(attribute.to_string()),
        ];
        m.insert("Fn::GetAtt".into(), Value::Array(list));
    }
    Value::Object(m)
}

fn key_text(k: &serde_yaml::Value) -> String {
    match normal(k) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// The differences between the `live` template and the `rendered` one (both in the normal
/// form of [`parse_template`]), in path order.
#[must_use]
pub fn diff_templates(live: &Value, rendered: &Value) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(&mut out, &[], Some(live), Some(rendered));
    out
}

fn walk(
    out: &mut Vec<Difference>,
    path: &[String],
    live: Option<&Value>,
    rendered: Option<&Value>,
) {
    match (live, rendered) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                let mut p = path.to_vec();
                p.push(k.clone());
                walk(out, &p, a.get(k), b.get(k));
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let mut p = path.to_vec();
                p.push(format!("[{i}]"));
                walk(out, &p, Some(x), Some(y));
            }
        }
        (a, b) => {
            let change = match (a, b) {
                (None, _) => Change::Added,
                (_, None) => Change::Removed,
                _ => Change::Changed,
            };
            out.push(Difference {
                change,
                at: path_text(path),
                resource: (path.len() >= 2 && path[0] == "Resources").then(|| path[1].clone()),
                live: a.map(shown),
                rendered: b.map(shown),
            });
        }
    }
}

/// `["Resources", "A", "Tags", "[0]"]` as `Resources.A.Tags[0]`.
fn path_text(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if !s.is_empty() && !p.starts_with('[') {
            s.push('.');
        }
        s.push_str(p);
    }
    if s.is_empty() { "(template)".into() } else { s }
}

/// A value as a difference shows it: text as is, anything else as compact JSON; shortened.
fn shown(v: &Value) -> String {
    let text = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if text.chars().count() > SHOWN_CHARS {
        let cut: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// What a `NoEcho` parameter's value reads as.
const HIDDEN: &str = "****";

/// The differences between the live stack's parameter values and what a protond deployment
/// gives them: protond passes no parameter values, so each takes its `Default` in the
/// rendered template. A `NoEcho` value (`****`) cannot be compared and is left out.
#[must_use]
pub fn diff_parameters(live: &BTreeMap<String, String>, rendered: &Value) -> Vec<Difference> {
    let declared = rendered
        .get("Parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    let names: BTreeSet<&String> = live.keys().chain(declared.keys()).collect();
    for name in names {
        let default = declared
            .get(name)
            .and_then(|p| p.get("Default"))
            .map(|d| match d {
                Value::String(s) => s.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            });
        let value = live.get(name);
        if value.is_some_and(|v| v == HIDDEN || Some(v) == default.as_ref()) {
            continue;
        }
        let change = match (value, &default) {
            (None, _) => Change::Added,
            (Some(_), None) if !declared.contains_key(name) => Change::Removed,
            _ => Change::Changed,
        };
        out.push(Difference {
            change,
            at: format!("Parameters.{name} (value)"),
            resource: None,
            live: value.map(|v| format!("{v:?}")),
            rendered: Some(default.map_or_else(|| "(no Default)".into(), |d| format!("{d:?}"))),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        parse_template(text, "t").expect("parses")
    }

    #[test]
    fn formatting_order_quoting_and_short_forms_do_not_count() {
        let yaml = "Resources:\n  B:\n    Type: AWS::SQS::Queue\n    Properties:\n      MessageRetentionPeriod: 86400\n      RedrivePolicy: !GetAtt A.Arn\n  A:\n    Type: AWS::SNS::Topic # a comment\n    Properties: {TopicName: !Sub '${AWS::StackName}-t'}\nOutputs:\n  X: {Value: !Ref A}\n";
        let reordered = "Outputs:\n  X:\n    Value:\n      Ref: A\nResources:\n  A:\n    Properties:\n      TopicName:\n        Fn::Sub: \"${AWS::StackName}-t\"\n    Type: 'AWS::SNS::Topic'\n  B:\n    Properties:\n      RedrivePolicy: {\"Fn::GetAtt\": [A, Arn]}\n      MessageRetentionPeriod: '86400'\n    Type: AWS::SQS::Queue\n";
        let json = r#"{"Resources": {"A": {"Type": "AWS::SNS::Topic", "Properties": {"TopicName": {"Fn::Sub": "${AWS::StackName}-t"}}},
            "B": {"Type": "AWS::SQS::Queue", "Properties": {"MessageRetentionPeriod": 86400, "RedrivePolicy": {"Fn::GetAtt": "A.Arn"}}}},
            "Outputs": {"X": {"Value": {"Ref": "A"}}}}"#;
        let a = parse(yaml);
        assert_eq!(diff_templates(&a, &parse(reordered)), vec![]);
        assert_eq!(diff_templates(&a, &parse(json)), vec![]);
        // A short form equals itself, and differs from another function.
        assert_eq!(parse("X: !Ref A"), parse("X: !Ref A"));
        assert_ne!(parse("X: !Ref A"), parse("X: !GetAtt A.Arn"));
        // Tab-indented JSON (not YAML) parses too.
        assert_eq!(parse("{\n\t\"A\": 1\n}"), parse("A: '1'"));
    }

    #[test]
    fn differences_are_reported_by_logical_id_and_path() {
        let live = parse(
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      MessageRetentionPeriod: 60\n      Tags: [{Key: a, Value: b}]\n  Old:\n    Type: AWS::SNS::Topic\nOutputs:\n  A: {Value: x}\n",
        );
        let rendered = parse(
            "Resources:\n  Q:\n    Type: AWS::SQS::Queue\n    Properties:\n      MessageRetentionPeriod: 120\n      Tags: [{Key: a, Value: c}]\n      QueueName: q\n  New:\n    Type: AWS::SNS::Topic\nOutputs:\n  A: {Value: x}\n",
        );
        let d = diff_templates(&live, &rendered);
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "+ Resources.New (only in protond's rendering: {\"Type\":\"AWS::SNS::Topic\"})",
                "- Resources.Old (only in the live stack: {\"Type\":\"AWS::SNS::Topic\"})",
                "~ Resources.Q.Properties.MessageRetentionPeriod: live \"60\" -> rendered \"120\"",
                "+ Resources.Q.Properties.QueueName (only in protond's rendering: \"q\")",
                "~ Resources.Q.Properties.Tags[0].Value: live \"b\" -> rendered \"c\"",
            ]
        );
        assert_eq!(d[0].resource.as_deref(), Some("New"));
        assert!(d.iter().all(|x| x.resource.is_some()));
        // A list of another length is one change.
        let d = diff_templates(&parse("A: [1, 2]"), &parse("A: [1]"));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].change, Change::Changed);
        assert_eq!(d[0].resource, None);
    }

    #[test]
    fn parameters_compare_with_their_defaults() {
        let rendered = parse(
            "Parameters:\n  Size: {Type: Number, Default: 3}\n  Secret: {Type: String, NoEcho: true, Default: s}\n  Subnets: {Type: CommaDelimitedList, Default: [a, b]}\n  New: {Type: String}\n",
        );
        let live: BTreeMap<String, String> = [
            ("Size", "3"),
            ("Secret", "****"),
            ("Subnets", "a,b"),
            ("Gone", "x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let d = diff_parameters(&live, &rendered);
        let at: Vec<(&str, Change)> = d.iter().map(|x| (x.at.as_str(), x.change)).collect();
        assert_eq!(
            at,
            vec![
                ("Parameters.Gone (value)", Change::Removed),
                ("Parameters.New (value)", Change::Added),
            ]
        );
        let mut changed = live.clone();
        changed.insert("Size".into(), "5".into());
        let d = diff_parameters(&changed, &rendered);
        assert!(
            d.iter().any(|x| x.to_string()
                == "~ Parameters.Size (value): live \"5\" -> rendered \"3\""),
            "{d:?}"
        );
    }

    #[test]
    fn long_values_are_shortened_and_bad_text_is_named() {
        let long = "x".repeat(500);
        let d = diff_templates(&parse("A: a"), &parse(&format!("A: {long}")));
        assert!(d[0].rendered.as_deref().is_some_and(|r| r.ends_with('…')));
        let err = parse_template("a: [", "the live template of stack s").expect_err("bad");
        assert!(
            err.to_string()
                .starts_with("the live template of stack s is neither YAML nor JSON")
        );
    }
}
