//! Template input schemas: `schema/schema.yaml` in AWS Proton's `OpenAPI` 3 subset.
//!
//! This module owns parsing a schema file into a [`Schema`] (checking it thoroughly, so a typo
//! in a keyword or an invalid default is reported when the template is registered rather than
//! when someone deploys it) and validating spec inputs against it: type checks, `enum`,
//! `pattern`, bounds, `required`, unknown inputs, and filling in defaults.
//!
//! Supported keywords: `type` (`string`, `number`, `integer`, `boolean`, `array`, `object`),
//! `default`, `enum`, `pattern`, `minimum`, `maximum`, `minLength`, `maxLength`, `items`,
//! `minItems`, `maxItems`, `required`, `properties`, `title`, `description`, and
//! `$ref: "#/types/Name"` pointing at another entry of `types`. Patterns are not anchored: like
//! ECMAScript's `RegExp.test`, they match anywhere in the string unless they use `^`/`$`.
//!
//! It never does I/O: callers hand it text and JSON values, and get values and messages back.
//! Resource use is bounded: nesting (including through `$ref`) is limited to [`MAX_DEPTH`]
//! levels, reference cycles are rejected, and each pattern is compiled once, at parse time,
//! under a size limit.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use regex::{Regex, RegexBuilder};
use serde_json::{Map, Number, Value};
use serde_yaml::Value as Yaml;

/// Deepest nesting of `properties`/`items` accepted, counting levels reached through `$ref`.
pub const MAX_DEPTH: usize = 32;

/// Longest `pattern` accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 2048;

/// Largest compiled size of one `pattern`, in bytes (passed to the regex engine).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Longest rendering of a value inside a message before it is shortened.
const MAX_SHOWN: usize = 80;

/// Every keyword accepted inside a type or property.
const KEYWORDS: &[&str] = &[
    "type",
    "default",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "items",
    "minItems",
    "maxItems",
    "required",
    "properties",
    "title",
    "description",
    "$ref",
];

/// Which of a template's inputs: the environment's, a service instance's, or the pipeline's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputKind {
    /// `environment_input_type`: inputs of an environment.
    Environment,
    /// `service_input_type`: inputs of each service instance.
    Service,
    /// `pipeline_input_type`: inputs of a service's pipeline.
    Pipeline,
}

impl InputKind {
    /// The lowercase name used in messages: `environment`, `service` or `pipeline`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Service => "service",
            Self::Pipeline => "pipeline",
        }
    }

    /// The key in `schema.yaml` that names this kind's input type, e.g. `service_input_type`.
    #[must_use]
    pub fn schema_key(self) -> &'static str {
        match self {
            Self::Environment => "environment_input_type",
            Self::Service => "service_input_type",
            Self::Pipeline => "pipeline_input_type",
        }
    }
}

impl fmt::Display for InputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A problem in a schema file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{file}: {path}: {message}")]
pub struct SchemaError {
    /// The schema file, as the caller named it.
    pub file: String,
    /// Dotted path into the YAML, e.g. `schema.types.Input.properties.port`, or `.` for the
    /// whole file.
    pub path: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// A problem with the inputs given for a template.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Violation {
    /// Where, e.g. `instances[1].spec.port` or `instances[1].spec.subnets[2]`.
    pub path: String,
    /// What is wrong and how to fix it, e.g. `70000 is above maximum 65535`.
    pub message: String,
}

/// One property of an input type, as listed by [`Schema::properties`].
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyInfo {
    /// Property name (the key under `properties`).
    pub name: String,
    /// Whether it is listed in the type's `required`.
    pub required: bool,
    /// Its default, if it has one (for a `$ref` property, the referenced type's default unless
    /// the property sets its own).
    pub default: Option<Value>,
    /// Its type: `string`, `number`, `integer`, `boolean`, `array` or `object` (a `$ref` is
    /// resolved to the referenced type's).
    pub type_name: String,
    /// Its `title`, if any.
    pub title: Option<String>,
    /// Its `description`, if any.
    pub description: Option<String>,
}

/// A parsed and checked input schema. Cheap to clone; holds compiled patterns.
#[derive(Debug, Clone)]
pub struct Schema {
    environment: Option<String>,
    service: Option<String>,
    pipeline: Option<String>,
    /// Entries of `types`, in file order; `Ty::Ref` indexes into this.
    types: Vec<TypeDef>,
}

#[derive(Debug, Clone)]
struct TypeDef {
    name: String,
    node: Node,
}

/// One type or property.
#[derive(Debug, Clone)]
struct Node {
    ty: Ty,
    default: Option<Value>,
    enum_values: Option<Vec<Value>>,
    title: Option<String>,
    description: Option<String>,
}

#[derive(Debug, Clone)]
enum Ty {
    /// A node that failed to parse (only ever seen while collecting errors): accepts anything.
    Invalid,
    /// `$ref` to an entry of `types`.
    Ref(usize),
    String {
        min_length: Option<u64>,
        max_length: Option<u64>,
        pattern: Option<Pattern>,
    },
    Number {
        integer: bool,
        minimum: Option<Number>,
        maximum: Option<Number>,
    },
    Boolean,
    Array {
        items: Option<Box<Node>>,
        min_items: Option<u64>,
        max_items: Option<u64>,
    },
    Object {
        properties: Vec<(String, Node)>,
        required: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Pattern {
    source: String,
    regex: Regex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Base {
    String,
    Number,
    Integer,
    Boolean,
    Array,
    Object,
}

impl Base {
    const ALL: [Base; 6] = [
        Base::String,
        Base::Number,
        Base::Integer,
        Base::Boolean,
        Base::Array,
        Base::Object,
    ];

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.name() == name)
    }

    fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Number => "number",
            Self::Integer => "integer",
            Self::Boolean => "boolean",
            Self::Array => "array",
            Self::Object => "object",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            Self::String => "a string",
            Self::Number => "a number",
            Self::Integer => "an integer",
            Self::Boolean => "a boolean",
            Self::Array => "an array",
            Self::Object => "an object",
        }
    }

    fn accepts(self, v: &Value) -> bool {
        match (self, v) {
            (Self::String, Value::String(_))
            | (Self::Number, Value::Number(_))
            | (Self::Boolean, Value::Bool(_))
            | (Self::Array, Value::Array(_))
            | (Self::Object, Value::Object(_)) => true,
            (Self::Integer, Value::Number(n)) => is_integer(n),
            _ => false,
        }
    }

    /// The types a keyword applies to; empty means every type.
    fn keyword_applies_to(keyword: &str) -> &'static [Base] {
        match keyword {
            "minLength" | "maxLength" | "pattern" => &[Base::String],
            "minimum" | "maximum" => &[Base::Number, Base::Integer],
            "items" | "minItems" | "maxItems" => &[Base::Array],
            "properties" | "required" => &[Base::Object],
            _ => &[],
        }
    }
}

impl Ty {
    fn base(&self) -> Option<Base> {
        match self {
            Ty::Invalid | Ty::Ref(_) => None,
            Ty::String { .. } => Some(Base::String),
            Ty::Number { integer: true, .. } => Some(Base::Integer),
            Ty::Number { .. } => Some(Base::Number),
            Ty::Boolean => Some(Base::Boolean),
            Ty::Array { .. } => Some(Base::Array),
            Ty::Object { .. } => Some(Base::Object),
        }
    }
}

impl Node {
    fn invalid() -> Self {
        Self {
            ty: Ty::Invalid,
            default: None,
            enum_values: None,
            title: None,
            description: None,
        }
    }
}

impl Schema {
    /// Parses `schema.yaml` text. `file` is only used in error messages. Reports every problem
    /// at once: unknown keywords, malformed values, undefined or cyclic `$ref`s, invalid
    /// patterns, and defaults that do not satisfy their own property.
    pub fn parse(text: &str, file: &str) -> Result<Schema, Vec<SchemaError>> {
        let root: Yaml = match super::yaml::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Err(vec![SchemaError {
                    file: file.to_string(),
                    path: ".".to_string(),
                    message: format!("not valid YAML: {e}"),
                }]);
            }
        };
        let mut p = Parser {
            file,
            names: BTreeMap::new(),
            errors: Vec::new(),
        };
        let schema = p.document(&root);
        if !p.errors.is_empty() {
            return Err(p.errors);
        }
        Ok(schema)
    }

    /// The input type name for a kind, if the schema declares one.
    #[must_use]
    pub fn input_type(&self, kind: InputKind) -> Option<&str> {
        match kind {
            InputKind::Environment => self.environment.as_deref(),
            InputKind::Service => self.service.as_deref(),
            InputKind::Pipeline => self.pipeline.as_deref(),
        }
    }

    /// Validates `inputs` (a JSON object; `Null` counts as an empty object) for `kind`, applies
    /// defaults recursively, and returns the completed inputs, or every violation at once.
    /// `path` prefixes every violation's path, e.g. `instances[1].spec`.
    ///
    /// If the schema has no input type for `kind`, the inputs must be empty and the result is
    /// `{}`. A missing property takes its default whether or not it is required; a missing
    /// object without a default stays missing (give it `default: {}` to have its own
    /// properties' defaults filled in).
    pub fn validate(
        &self,
        kind: InputKind,
        inputs: &Value,
        path: &str,
    ) -> Result<Value, Vec<Violation>> {
        let empty = Value::Object(Map::new());
        let inputs = if inputs.is_null() { &empty } else { inputs };
        let Some(node) = self.input_node(kind) else {
            return match inputs {
                Value::Object(m) if m.is_empty() => Ok(empty),
                _ => Err(vec![Violation {
                    path: whole(path),
                    message: format!("this template takes no {kind} inputs"),
                }]),
            };
        };
        if !inputs.is_object() {
            return Err(vec![Violation {
                path: whole(path),
                message: format!("expected an object of inputs, found {}", describe(inputs)),
            }]);
        }
        let mut out = Vec::new();
        let value = self.check(node, inputs, path, &mut out);
        if out.is_empty() { Ok(value) } else { Err(out) }
    }

    /// The properties of the kind's input type, in file order, with whether each is required,
    /// its default and its type. Empty if the schema has no input type for `kind`.
    #[must_use]
    pub fn properties(&self, kind: InputKind) -> Vec<PropertyInfo> {
        let Some(node) = self.input_node(kind) else {
            return Vec::new();
        };
        let Ty::Object {
            properties,
            required,
        } = &self.resolve(node).ty
        else {
            return Vec::new();
        };
        properties
            .iter()
            .map(|(name, prop)| {
                let target = self.resolve(prop);
                PropertyInfo {
                    name: name.clone(),
                    required: required.contains(name),
                    default: self.default_of(prop).cloned(),
                    type_name: target.ty.base().map_or("unknown", Base::name).to_string(),
                    title: prop.title.clone().or_else(|| target.title.clone()),
                    description: prop
                        .description
                        .clone()
                        .or_else(|| target.description.clone()),
                }
            })
            .collect()
    }

    fn input_node(&self, kind: InputKind) -> Option<&Node> {
        let name = self.input_type(kind)?;
        self.types.iter().find(|t| t.name == name).map(|t| &t.node)
    }

    /// Follows `$ref`s to the node that carries the constraints. Cycles are rejected at parse
    /// time; the step bound only keeps this total.
    fn resolve<'a>(&'a self, mut node: &'a Node) -> &'a Node {
        for _ in 0..=self.types.len() {
            match node.ty {
                Ty::Ref(i) => match self.types.get(i) {
                    Some(t) => node = &t.node,
                    None => break,
                },
                _ => break,
            }
        }
        node
    }

    /// A node's own default, or, for a `$ref` without one, the referenced type's.
    fn default_of<'a>(&'a self, mut node: &'a Node) -> Option<&'a Value> {
        for _ in 0..=self.types.len() {
            if let Some(d) = &node.default {
                return Some(d);
            }
            match node.ty {
                Ty::Ref(i) => node = &self.types.get(i)?.node,
                _ => return None,
            }
        }
        None
    }

    /// Checks `value` against `node`, pushing violations, and returns it with defaults filled.
    fn check(&self, node: &Node, value: &Value, path: &str, out: &mut Vec<Violation>) -> Value {
        let node = self.resolve(node);
        let Some(base) = node.ty.base() else {
            return value.clone();
        };
        let violation = |out: &mut Vec<Violation>, message: String| {
            out.push(Violation {
                path: whole(path),
                message,
            });
        };
        if !base.accepts(value) {
            violation(
                out,
                format!(
                    "expected {}, found {}",
                    base.with_article(),
                    describe(value)
                ),
            );
            return value.clone();
        }
        if let Some(allowed) = &node.enum_values
            && !allowed.iter().any(|a| json_eq(a, value))
        {
            let list: Vec<String> = allowed.iter().map(show).collect();
            violation(
                out,
                format!("{} is not one of: {}", show(value), list.join(", ")),
            );
        }
        match (&node.ty, value) {
            (
                Ty::String {
                    min_length,
                    max_length,
                    pattern,
                },
                Value::String(s),
            ) => {
                let len = s.chars().count() as u64;
                if let Some(min) = min_length
                    && len < *min
                {
                    violation(out, format!("length {len} is below minLength {min}"));
                }
                if let Some(max) = max_length
                    && len > *max
                {
                    violation(out, format!("length {len} is above maxLength {max}"));
                }
                if let Some(p) = pattern
                    && !p.regex.is_match(s)
                {
                    violation(
                        out,
                        format!("{} does not match pattern {}", show(value), p.source),
                    );
                }
                value.clone()
            }
            (
                Ty::Number {
                    minimum, maximum, ..
                },
                Value::Number(n),
            ) => {
                if let Some(min) = minimum
                    && num_cmp(n, min) == Some(Ordering::Less)
                {
                    violation(out, format!("{n} is below minimum {min}"));
                }
                if let Some(max) = maximum
                    && num_cmp(n, max) == Some(Ordering::Greater)
                {
                    violation(out, format!("{n} is above maximum {max}"));
                }
                value.clone()
            }
            (
                Ty::Array {
                    items,
                    min_items,
                    max_items,
                },
                Value::Array(elems),
            ) => {
                let len = elems.len() as u64;
                if let Some(min) = min_items
                    && len < *min
                {
                    violation(out, format!("{} is below minItems {min}", count_items(len)));
                }
                if let Some(max) = max_items
                    && len > *max
                {
                    violation(out, format!("{} is above maxItems {max}", count_items(len)));
                }
                match items {
                    Some(item) => Value::Array(
                        elems
                            .iter()
                            .enumerate()
                            .map(|(i, e)| self.check(item, e, &format!("{path}[{i}]"), out))
                            .collect(),
                    ),
                    None => value.clone(),
                }
            }
            (
                Ty::Object {
                    properties,
                    required,
                },
                Value::Object(given),
            ) => {
                for key in given.keys() {
                    if !properties.iter().any(|(name, _)| name == key) {
                        out.push(Violation {
                            path: join(path, key),
                            message: unknown_input(key, properties),
                        });
                    }
                }
                let mut done = Map::new();
                for (name, prop) in properties {
                    let prop_path = join(path, name);
                    if let Some(v) = given.get(name) {
                        done.insert(name.clone(), self.check(prop, v, &prop_path, out));
                    } else if let Some(d) = self.default_of(prop) {
                        done.insert(name.clone(), self.check(prop, d, &prop_path, out));
                    } else if required.contains(name) {
                        out.push(Violation {
                            path: prop_path,
                            message: "required input is missing (no default); add it to the spec"
                                .to_string(),
                        });
                    }
                }
                Value::Object(done)
            }
            _ => value.clone(),
        }
    }

    /// Checks every default in the schema against its own property. Needs an acyclic schema
    /// within the depth limit.
    fn check_defaults(&self, file: &str, errors: &mut Vec<SchemaError>) {
        for t in &self.types {
            self.check_node_defaults(&t.node, &format!("schema.types.{}", t.name), file, errors);
        }
    }

    fn check_node_defaults(
        &self,
        node: &Node,
        path: &str,
        file: &str,
        errors: &mut Vec<SchemaError>,
    ) {
        if let Some(d) = &node.default {
            let mut out = Vec::new();
            self.check(node, d, "default", &mut out);
            errors.extend(out.into_iter().map(|v| SchemaError {
                file: file.to_string(),
                path: path.to_string(),
                message: format!("{}: {}", v.path, v.message),
            }));
        }
        match &node.ty {
            Ty::Array {
                items: Some(item), ..
            } => self.check_node_defaults(item, &format!("{path}.items"), file, errors),
            Ty::Object { properties, .. } => {
                for (name, prop) in properties {
                    self.check_node_defaults(
                        prop,
                        &format!("{path}.properties.{name}"),
                        file,
                        errors,
                    );
                }
            }
            _ => {}
        }
    }
}

/// Collects errors while turning YAML into a [`Schema`].
struct Parser<'a> {
    file: &'a str,
    /// Names of `types`, to resolve `$ref`s to indexes.
    names: BTreeMap<String, usize>,
    errors: Vec<SchemaError>,
}

impl Parser<'_> {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(SchemaError {
            file: self.file.to_string(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// Reports keys of `map` not in `allowed`; returns the string-keyed entries.
    fn keys<'y>(
        &mut self,
        map: &'y serde_yaml::Mapping,
        path: &str,
        allowed: &[&str],
        what: &str,
    ) -> Vec<(&'y str, &'y Yaml)> {
        let mut entries = Vec::new();
        for (k, v) in map {
            let Some(key) = k.as_str() else {
                self.err(
                    path,
                    format!("keys must be strings, found {}", yaml_kind(k)),
                );
                continue;
            };
            if allowed.contains(&key) {
                entries.push((key, v));
            } else {
                let hint = match closest(key, allowed.iter().copied()) {
                    Some(s) => format!("did you mean \"{s}\"?"),
                    None => format!("supported: {}", allowed.join(", ")),
                };
                self.err(path, format!("unknown {what} \"{key}\"; {hint}"));
            }
        }
        entries
    }

    fn document(&mut self, root: &Yaml) -> Schema {
        let mut schema = Schema {
            environment: None,
            service: None,
            pipeline: None,
            types: Vec::new(),
        };
        let root_map = match root {
            Yaml::Mapping(m) => m,
            Yaml::Null => {
                self.err(
                    ".",
                    "the file is empty; it needs a top-level `schema:` mapping",
                );
                return schema;
            }
            other => {
                self.err(
                    ".",
                    format!(
                        "expected a mapping with a top-level `schema:` key, found {}",
                        yaml_kind(other)
                    ),
                );
                return schema;
            }
        };
        let top = self.keys(root_map, ".", &["schema"], "key");
        let Some((_, body)) = top.into_iter().next() else {
            self.err(".", "missing the top-level `schema:` key");
            return schema;
        };
        let Some(body) = body.as_mapping() else {
            self.err(
                "schema",
                format!("expected a mapping, found {}", yaml_kind(body)),
            );
            return schema;
        };
        let entries = self.keys(
            body,
            "schema",
            &[
                "format",
                "environment_input_type",
                "service_input_type",
                "pipeline_input_type",
                "types",
            ],
            "key",
        );
        let get = |name: &str| entries.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);

        match get("format") {
            None => self.err(
                "schema",
                "missing `format:`; add `format: {openapi: \"3.0.0\"}`",
            ),
            Some(f) => self.format(f),
        }

        // Types: names first, so `$ref`s can point forwards.
        let mut raw_types: Vec<(String, &Yaml)> = Vec::new();
        match get("types") {
            None | Some(Yaml::Null) => {}
            Some(Yaml::Mapping(m)) => {
                for (k, v) in m {
                    match k.as_str() {
                        Some(name) => {
                            self.names.insert(name.to_string(), raw_types.len());
                            raw_types.push((name.to_string(), v));
                        }
                        None => self.err(
                            "schema.types",
                            format!("type names must be strings, found {}", yaml_kind(k)),
                        ),
                    }
                }
            }
            Some(other) => self.err(
                "schema.types",
                format!(
                    "expected a mapping of type names to types, found {}",
                    yaml_kind(other)
                ),
            ),
        }
        for (name, v) in &raw_types {
            let node = self.node(v, &format!("schema.types.{name}"), 1);
            schema.types.push(TypeDef {
                name: name.clone(),
                node,
            });
        }

        for kind in [
            InputKind::Environment,
            InputKind::Service,
            InputKind::Pipeline,
        ] {
            let key = kind.schema_key();
            let Some(v) = get(key) else { continue };
            let path = format!("schema.{key}");
            let Some(name) = v.as_str() else {
                self.err(
                    &path,
                    format!(
                        "expected the name of an entry of `types`, found {}",
                        yaml_kind(v)
                    ),
                );
                continue;
            };
            if !self.names.contains_key(name) {
                let msg = format!("type \"{name}\" is not defined under schema.types");
                let defined: Vec<&str> = self.names.keys().map(String::as_str).collect();
                let hint = match closest(name, defined.iter().copied()) {
                    Some(s) => format!("; did you mean \"{s}\"?"),
                    None if defined.is_empty() => "; add it there".to_string(),
                    None => format!("; defined: {}", defined.join(", ")),
                };
                self.err(&path, format!("{msg}{hint}"));
                continue;
            }
            let slot = match kind {
                InputKind::Environment => &mut schema.environment,
                InputKind::Service => &mut schema.service,
                InputKind::Pipeline => &mut schema.pipeline,
            };
            *slot = Some(name.to_string());
        }

        let acyclic = self.check_references(&schema);
        if acyclic {
            for kind in [
                InputKind::Environment,
                InputKind::Service,
                InputKind::Pipeline,
            ] {
                if let Some(node) = schema.input_node(kind) {
                    let base = schema.resolve(node).ty.base();
                    if let Some(b) = base.filter(|b| *b != Base::Object) {
                        self.err(
                            &format!("schema.{}", kind.schema_key()),
                            format!(
                                "type \"{}\" is {}; input types must be `type: object`",
                                schema.input_type(kind).unwrap_or_default(),
                                b.with_article()
                            ),
                        );
                    }
                }
            }
            schema.check_defaults(self.file, &mut self.errors);
        }
        schema
    }

    fn format(&mut self, f: &Yaml) {
        let Some(m) = f.as_mapping() else {
            self.err(
                "schema.format",
                format!(
                    "expected a mapping like `{{openapi: \"3.0.0\"}}`, found {}",
                    yaml_kind(f)
                ),
            );
            return;
        };
        let entries = self.keys(m, "schema.format", &["openapi"], "key");
        match entries.first().map(|(_, v)| *v) {
            None => self.err("schema.format", "missing `openapi: \"3.0.0\"`"),
            Some(Yaml::String(s)) if s.starts_with("3.") => {}
            Some(other) => self.err(
                "schema.format.openapi",
                format!(
                    "unsupported OpenAPI version {}; use \"3.0.0\"",
                    show_yaml(other)
                ),
            ),
        }
    }

    /// Rejects `$ref` cycles and nesting deeper than [`MAX_DEPTH`] through `$ref`s. Returns
    /// whether the schema is safe to walk recursively.
    fn check_references(&mut self, schema: &Schema) -> bool {
        let n = schema.types.len();
        let edges: Vec<Vec<usize>> = schema
            .types
            .iter()
            .map(|t| {
                let mut e = Vec::new();
                refs_of(&t.node, &mut e);
                e.sort_unstable();
                e.dedup();
                e
            })
            .collect();
        // Iterative depth-first search: white 0, grey 1, black 2.
        let mut state = vec![0u8; n];
        let mut post = Vec::with_capacity(n);
        let mut cycles = Vec::new();
        for start in 0..n {
            if state[start] != 0 {
                continue;
            }
            state[start] = 1;
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            while let Some(top) = stack.last_mut() {
                let (u, i) = *top;
                if let Some(&v) = edges[u].get(i) {
                    top.1 += 1;
                    match state[v] {
                        0 => {
                            state[v] = 1;
                            stack.push((v, 0));
                        }
                        1 => {
                            let from = stack.iter().position(|(w, _)| *w == v).unwrap_or(0);
                            let mut names: Vec<&str> = stack[from..]
                                .iter()
                                .map(|(w, _)| schema.types[*w].name.as_str())
                                .collect();
                            names.push(schema.types[v].name.as_str());
                            cycles.push((v, names.join(" -> ")));
                        }
                        _ => {}
                    }
                } else {
                    state[u] = 2;
                    post.push(u);
                    stack.pop();
                }
            }
        }
        for (t, chain) in &cycles {
            self.err(
                &format!("schema.types.{}", schema.types[*t].name),
                format!(
                    "$ref cycle: {chain}; a type cannot contain itself, directly or through other types"
                ),
            );
        }
        if !cycles.is_empty() {
            return false;
        }
        // Post-order visits referenced types first, so their depths are known.
        let mut depth = vec![0usize; n];
        let mut ok = true;
        for &t in &post {
            depth[t] = node_depth(&schema.types[t].node, &depth);
            if depth[t] > MAX_DEPTH && edges[t].iter().all(|&r| depth[r] <= MAX_DEPTH) {
                ok = false;
                self.err(
                    &format!("schema.types.{}", schema.types[t].name),
                    format!(
                        "nested {} levels deep through $ref, above the limit of {MAX_DEPTH}; flatten the schema",
                        depth[t]
                    ),
                );
            }
        }
        ok
    }

    fn node(&mut self, v: &Yaml, path: &str, depth: usize) -> Node {
        let Some(map) = v.as_mapping() else {
            self.err(
                path,
                format!(
                    "expected a mapping of keywords such as `type: string`, found {}",
                    yaml_kind(v)
                ),
            );
            return Node::invalid();
        };
        if depth > MAX_DEPTH {
            self.err(
                path,
                format!("nested more than {MAX_DEPTH} levels deep; flatten the schema"),
            );
            return Node::invalid();
        }
        let kws = self.keys(map, path, KEYWORDS, "keyword");
        let get = |name: &str| kws.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let sub = |k: &str| format!("{path}.{k}");

        let title = get("title").and_then(|v| self.text(v, &sub("title")));
        let description = get("description").and_then(|v| self.text(v, &sub("description")));
        let default = get("default").and_then(|v| self.json(v, &sub("default")));

        if let Some(r) = get("$ref") {
            for (k, _) in &kws {
                if !matches!(*k, "$ref" | "title" | "description" | "default") {
                    self.err(
                        path,
                        format!(
                            "\"{k}\" cannot be combined with $ref (only title, description and default can); put it in the referenced type"
                        ),
                    );
                }
            }
            let ty = self.reference(r, &sub("$ref")).map_or(Ty::Invalid, Ty::Ref);
            return Node {
                ty,
                default,
                enum_values: None,
                title,
                description,
            };
        }

        let supported = || {
            Base::ALL
                .iter()
                .map(|b| b.name())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let base = match get("type") {
            None => {
                self.err(
                    path,
                    format!(
                        "missing `type`; use one of: {} (or `$ref: \"#/types/Name\"`)",
                        supported()
                    ),
                );
                None
            }
            Some(t) => {
                if let Some(b) = t.as_str().and_then(Base::from_name) {
                    Some(b)
                } else {
                    self.err(
                        &sub("type"),
                        format!(
                            "unsupported type {}; use one of: {}",
                            show_yaml(t),
                            supported()
                        ),
                    );
                    None
                }
            }
        };
        let Some(base) = base else {
            return Node {
                ty: Ty::Invalid,
                default,
                enum_values: None,
                title,
                description,
            };
        };
        for (k, _) in &kws {
            let applies = Base::keyword_applies_to(k);
            if !applies.is_empty() && !applies.contains(&base) {
                let names: Vec<&str> = applies.iter().map(|b| b.name()).collect();
                self.err(
                    path,
                    format!(
                        "\"{k}\" applies only to type {}, not {}",
                        names.join(" or "),
                        base.name()
                    ),
                );
            }
        }

        let enum_values = get("enum").and_then(|v| self.enumeration(v, &sub("enum"), base));
        let ty = match base {
            Base::String => {
                let min_length = get("minLength").and_then(|v| self.count(v, &sub("minLength")));
                let max_length = get("maxLength").and_then(|v| self.count(v, &sub("maxLength")));
                self.order(path, "minLength", min_length, "maxLength", max_length);
                let pattern = get("pattern").and_then(|v| self.pattern(v, &sub("pattern")));
                Ty::String {
                    min_length,
                    max_length,
                    pattern,
                }
            }
            Base::Number | Base::Integer => {
                let minimum = get("minimum").and_then(|v| self.number(v, &sub("minimum")));
                let maximum = get("maximum").and_then(|v| self.number(v, &sub("maximum")));
                if let (Some(lo), Some(hi)) = (&minimum, &maximum)
                    && num_cmp(lo, hi) == Some(Ordering::Greater)
                {
                    self.err(
                        path,
                        format!("minimum {lo} is above maximum {hi}; no value can satisfy both"),
                    );
                }
                Ty::Number {
                    integer: base == Base::Integer,
                    minimum,
                    maximum,
                }
            }
            Base::Boolean => Ty::Boolean,
            Base::Array => {
                let items = get("items").map(|v| Box::new(self.node(v, &sub("items"), depth + 1)));
                let min_items = get("minItems").and_then(|v| self.count(v, &sub("minItems")));
                let max_items = get("maxItems").and_then(|v| self.count(v, &sub("maxItems")));
                self.order(path, "minItems", min_items, "maxItems", max_items);
                Ty::Array {
                    items,
                    min_items,
                    max_items,
                }
            }
            Base::Object => {
                let properties = match get("properties") {
                    None | Some(Yaml::Null) => Vec::new(),
                    Some(Yaml::Mapping(m)) => {
                        let mut props = Vec::new();
                        for (k, pv) in m {
                            match k.as_str() {
                                Some(name) => {
                                    let node = self.node(
                                        pv,
                                        &format!("{path}.properties.{name}"),
                                        depth + 1,
                                    );
                                    props.push((name.to_string(), node));
                                }
                                None => self.err(
                                    &sub("properties"),
                                    format!(
                                        "property names must be strings, found {}",
                                        yaml_kind(k)
                                    ),
                                ),
                            }
                        }
                        props
                    }
                    Some(other) => {
                        self.err(
                            &sub("properties"),
                            format!(
                                "expected a mapping of property names to properties, found {}",
                                yaml_kind(other)
                            ),
                        );
                        Vec::new()
                    }
                };
                let required = get("required")
                    .map(|v| self.required(v, &sub("required"), &properties))
                    .unwrap_or_default();
                Ty::Object {
                    properties,
                    required,
                }
            }
        };
        Node {
            ty,
            default,
            enum_values,
            title,
            description,
        }
    }

    fn text(&mut self, v: &Yaml, path: &str) -> Option<String> {
        if let Some(s) = v.as_str() {
            Some(s.to_string())
        } else {
            self.err(path, format!("expected a string, found {}", yaml_kind(v)));
            None
        }
    }

    fn count(&mut self, v: &Yaml, path: &str) -> Option<u64> {
        if let Some(n) = v.as_u64() {
            Some(n)
        } else {
            self.err(
                path,
                format!("expected a whole number >= 0, found {}", yaml_kind(v)),
            );
            None
        }
    }

    fn number(&mut self, v: &Yaml, path: &str) -> Option<Number> {
        if let Value::Number(n) = self.json(v, path)? {
            Some(n)
        } else {
            self.err(path, format!("expected a number, found {}", yaml_kind(v)));
            None
        }
    }

    fn order(
        &mut self,
        path: &str,
        lo_name: &str,
        lo: Option<u64>,
        hi_name: &str,
        hi: Option<u64>,
    ) {
        if let (Some(lo), Some(hi)) = (lo, hi)
            && lo > hi
        {
            self.err(
                path,
                format!("{lo_name} {lo} is above {hi_name} {hi}; no value can satisfy both"),
            );
        }
    }

    fn pattern(&mut self, v: &Yaml, path: &str) -> Option<Pattern> {
        let source = self.text(v, path)?;
        if source.len() > MAX_PATTERN_LEN {
            self.err(
                path,
                format!(
                    "pattern is {} bytes long, above the limit of {MAX_PATTERN_LEN}; simplify it",
                    source.len()
                ),
            );
            return None;
        }
        match RegexBuilder::new(&source)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
        {
            Ok(regex) => Some(Pattern { source, regex }),
            Err(regex::Error::CompiledTooBig(limit)) => {
                self.err(
                    path,
                    format!(
                        "pattern {source} is too large once compiled (limit {limit} bytes); simplify it"
                    ),
                );
                None
            }
            Err(e) => {
                let detail = e.to_string();
                let reason = detail
                    .lines()
                    .rev()
                    .find_map(|l| l.trim().strip_prefix("error: "))
                    .unwrap_or(detail.trim())
                    .to_string();
                let note = if reason.contains("look-around") || reason.contains("backreference") {
                    ""
                } else {
                    " (note: look-around and backreferences are not supported)"
                };
                self.err(
                    path,
                    format!("invalid regular expression {source}: {reason}{note}"),
                );
                None
            }
        }
    }

    fn enumeration(&mut self, v: &Yaml, path: &str, base: Base) -> Option<Vec<Value>> {
        let Some(seq) = v.as_sequence() else {
            self.err(
                path,
                format!("expected a list of allowed values, found {}", yaml_kind(v)),
            );
            return None;
        };
        if seq.is_empty() {
            self.err(
                path,
                "empty enum: no value could be valid; list at least one",
            );
            return None;
        }
        let mut values = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            if let Some(value) = self.json(item, &item_path) {
                if base.accepts(&value) {
                    values.push(value);
                } else {
                    self.err(
                        &item_path,
                        format!(
                            "expected {} (the property's type), found {}",
                            base.with_article(),
                            describe(&value)
                        ),
                    );
                }
            }
        }
        Some(values)
    }

    fn required(&mut self, v: &Yaml, path: &str, properties: &[(String, Node)]) -> Vec<String> {
        let Some(seq) = v.as_sequence() else {
            self.err(
                path,
                format!(
                    "expected a list of property names, found {}; to require a property, list its name in its parent's `required`",
                    yaml_kind(v)
                ),
            );
            return Vec::new();
        };
        let mut names = Vec::new();
        for (i, item) in seq.iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let Some(name) = item.as_str() else {
                self.err(
                    &item_path,
                    format!("expected a property name, found {}", yaml_kind(item)),
                );
                continue;
            };
            if !properties.iter().any(|(p, _)| p == name) {
                let hint = match closest(name, properties.iter().map(|(p, _)| p.as_str())) {
                    Some(s) => format!("; did you mean \"{s}\"?"),
                    None => "; add it under `properties`".to_string(),
                };
                self.err(
                    &item_path,
                    format!("\"{name}\" is required but not defined in properties{hint}"),
                );
                continue;
            }
            names.push(name.to_string());
        }
        names
    }

    fn reference(&mut self, v: &Yaml, path: &str) -> Option<usize> {
        let s = self.text(v, path)?;
        let Some(name) = s.strip_prefix("#/types/") else {
            self.err(
                path,
                format!("unsupported $ref \"{s}\"; refer to another type as \"#/types/Name\""),
            );
            return None;
        };
        if let Some(&i) = self.names.get(name) {
            return Some(i);
        }
        let hint = match closest(name, self.names.keys().map(String::as_str)) {
            Some(c) => format!("; did you mean \"#/types/{c}\"?"),
            None => String::new(),
        };
        self.err(
            path,
            format!("$ref \"{s}\": no type \"{name}\" under schema.types{hint}"),
        );
        None
    }

    /// Converts YAML to JSON, reporting what JSON cannot hold.
    fn json(&mut self, v: &Yaml, path: &str) -> Option<Value> {
        match v {
            Yaml::Null => Some(Value::Null),
            Yaml::Bool(b) => Some(Value::Bool(*b)),
            Yaml::Number(n) => {
                let num = if let Some(i) = n.as_i64() {
                    Some(Number::from(i))
                } else if let Some(u) = n.as_u64() {
                    Some(Number::from(u))
                } else {
                    n.as_f64().and_then(Number::from_f64)
                };
                if num.is_none() {
                    self.err(path, format!("{n} is not a finite number"));
                }
                num.map(Value::Number)
            }
            Yaml::String(s) => Some(Value::String(s.clone())),
            Yaml::Sequence(seq) => {
                let mut out = Vec::with_capacity(seq.len());
                let mut ok = true;
                for (i, item) in seq.iter().enumerate() {
                    match self.json(item, &format!("{path}[{i}]")) {
                        Some(j) => out.push(j),
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Array(out))
            }
            Yaml::Mapping(m) => {
                let mut out = Map::new();
                let mut ok = true;
                for (k, item) in m {
                    let Some(key) = k.as_str() else {
                        self.err(
                            path,
                            format!("keys must be strings, found {}", yaml_kind(k)),
                        );
                        ok = false;
                        continue;
                    };
                    match self.json(item, &format!("{path}.{key}")) {
                        Some(j) => {
                            out.insert(key.to_string(), j);
                        }
                        None => ok = false,
                    }
                }
                ok.then_some(Value::Object(out))
            }
            Yaml::Tagged(t) => {
                self.err(
                    path,
                    format!("YAML tags such as {} are not supported", t.tag),
                );
                None
            }
        }
    }
}

/// Collects the type indexes a node refers to (not following them).
fn refs_of(node: &Node, out: &mut Vec<usize>) {
    match &node.ty {
        Ty::Ref(i) => out.push(*i),
        Ty::Array {
            items: Some(item), ..
        } => refs_of(item, out),
        Ty::Object { properties, .. } => {
            for (_, p) in properties {
                refs_of(p, out);
            }
        }
        _ => {}
    }
}

/// Nesting levels of a node, with referenced types' depths taken from `types_depth`.
fn node_depth(node: &Node, types_depth: &[usize]) -> usize {
    match &node.ty {
        Ty::Ref(i) => types_depth.get(*i).copied().unwrap_or(1),
        Ty::Array { items, .. } => 1 + items.as_ref().map_or(0, |i| node_depth(i, types_depth)),
        Ty::Object { properties, .. } => {
            1 + properties
                .iter()
                .map(|(_, p)| node_depth(p, types_depth))
                .max()
                .unwrap_or(0)
        }
        // A node cut off at the depth limit is already reported; do not count it again.
        Ty::Invalid => 0,
        _ => 1,
    }
}

fn is_integer(n: &Number) -> bool {
    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
}

/// Compares two JSON numbers exactly when both are integers, else as floats.
fn num_cmp(a: &Number, b: &Number) -> Option<Ordering> {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// JSON equality where `80` equals `80.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `prefix.name`, or just `name` when there is no prefix.
fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The path for the whole input, `.` when the caller gave none.
fn whole(path: &str) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.to_string()
    }
}

fn count_items(n: u64) -> String {
    if n == 1 {
        "1 item".to_string()
    } else {
        format!("{n} items")
    }
}

fn unknown_input(key: &str, properties: &[(String, Node)]) -> String {
    if properties.is_empty() {
        return "unknown input; the schema defines no inputs here".to_string();
    }
    let names: Vec<&str> = properties.iter().map(|(n, _)| n.as_str()).collect();
    let mut msg = format!("unknown input; the schema defines: {}", names.join(", "));
    if let Some(c) = closest(key, names.iter().copied()) {
        msg.push_str(&format!("; did you mean \"{c}\"?"));
    }
    msg
}

/// A value as JSON, shortened if long.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() <= MAX_SHOWN {
        s
    } else {
        let cut: String = s.chars().take(MAX_SHOWN).collect();
        format!("{cut}...")
    }
}

/// A value's type and, for scalars, the value: `string "80"`, `number 1.5`, `null`.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => format!("string {}", show(v)),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn yaml_kind(v: &Yaml) -> String {
    match v {
        Yaml::Null => "nothing (null)".to_string(),
        Yaml::Bool(b) => format!("boolean {b}"),
        Yaml::Number(n) => format!("number {n}"),
        Yaml::String(s) => format!("string {}", show(&Value::String(s.clone()))),
        Yaml::Sequence(_) => "a list".to_string(),
        Yaml::Mapping(_) => "a mapping".to_string(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn show_yaml(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => show(&Value::String(s.clone())),
        Yaml::Number(n) => n.to_string(),
        other => yaml_kind(other),
    }
}

/// The candidate closest to `word` by edit distance, if close enough to be a likely typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = (len / 3).clamp(1, 3);
    candidates
        .filter(|c| c.chars().count().abs_diff(len) <= limit)
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), ignoring
/// case.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        for j in 0..=b.len() {
            d[i * width + j] = if i == 0 || j == 0 {
                i + j
            } else {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                let mut best = (d[(i - 1) * width + j] + 1)
                    .min(d[i * width + j - 1] + 1)
                    .min(d[(i - 1) * width + j - 1] + cost);
                if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                    best = best.min(d[(i - 2) * width + j - 2] + 1);
                }
                best
            };
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Copy of proton-samples service-templates/load-balanced-fargate-svc/v1/schema/schema.yaml.
    const LOAD_BALANCED_FARGATE_SVC: &str = r#"schema:
  format:
    openapi: "3.0.0"
  service_input_type: "LoadBalancedFargateServiceInput"
  pipeline_input_type: "PipelineInputs"

  types:
    LoadBalancedFargateServiceInput:
      type: object
      description: "Input properties for a loadbalanced Fargate service"
      properties:
        port:
          title: "Port"
          type: number
          description: "The port to route traffic to"
          default: 80
          minimum: 0
          maximum: 65535
        desired_count:
          title: "Desired count"
          type: number
          description: "The default number of Fargate tasks you want running"
          default: 1
          minimum: 1
        task_size:
          title: "Task size"
          type: string
          description: "The size of the task you want to run"
          enum: ["x-small", "small", "medium", "large", "x-large"]
          default: "x-small"
        subnet_type:
          title: "Subnet Type"
          type: string
          description: "Subnet type for your service"
          enum: ["public", "private"]
          default: "public"
        loadbalancer_type:
          title: "Load Balancer Type"
          type: string
          description: "Type of loadbalancer to front your service"
          enum: ["application", "network"]
          default: "application"
        image:
          title: "Image"
          type: string
          description: "The name/url of the container image"
          default: "public.ecr.aws/nginx/nginx:1.21"
          minLength: 1
          maxLength: 200
        backendurl:
          title: "Backend URL"
          type: string
          description: "Service discovery url of the backend service"
          default: "backend-svc-inst.backend-svc.fargate-env.local:80"
          minLength: 1
          maxLength: 200

    PipelineInputs:
      type: object
      description: "Pipeline input properties"
      properties:
        service_dir:
          title: "Application Code Directory"
          type: string
          description: "Source directory for the service"
          default: "ecs-static-website"
          minLength: 1
          maxLength: 100
        dockerfile:
          title: "Dockerfile"
          type: string
          description: "The location of the Dockerfile to build"
          default: "Dockerfile"
          minLength: 1
          maxLength: 100
        unit_test_command:
          title: "Unit test command"
          type: string
          description: "The command to run to unit test the application code"
          default: "echo 'add your unit test command here'"
          minLength: 1
          maxLength: 200
"#;

    /// Copy of proton-samples environment-templates/fargate-env/v1/schema/schema.yaml (which
    /// has no trailing newline).
    const FARGATE_ENV: &str = r#"schema:
  format:
    openapi: "3.0.0"
  environment_input_type: "FargateEnvironmentInput"
  types:
    FargateEnvironmentInput:
      type: object
      description: "Input properties for my environment"
      properties:
        vpc_cidr:
          type: string
          description: "The CIDR range for your VPC"
          default: 10.0.0.0/16
          pattern: ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))
        public_subnet_one_cidr:
          type: string
          description: "The CIDR range for public subnet one"
          default: 10.0.0.0/18
          pattern: ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))
        public_subnet_two_cidr:
          type: string
          description: "The CIDR range for public subnet two"
          default: 10.0.64.0/18
          pattern: ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))
        private_subnet_one_cidr:
          type: string
          description: "The CIDR range for private subnet one"
          default: 10.0.128.0/18
          pattern: ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))
        private_subnet_two_cidr:
          type: string
          description: "The CIDR range for private subnet two"
          default: 10.0.192.0/18
          pattern: ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))"#;

    /// A service schema whose `types` is the given flow-mapping body; the input type is `Input`.
    fn doc(types: &str) -> String {
        format!(
            "schema:\n  format:\n    openapi: \"3.0.0\"\n  service_input_type: Input\n  types: {{{types}}}\n"
        )
    }

    /// `Input` with one property `x`.
    fn one(prop: &str) -> String {
        format!("Input: {{type: object, properties: {{x: {prop}}}}}")
    }

    fn parse_ok(text: &str) -> Schema {
        match Schema::parse(text, "schema.yaml") {
            Ok(s) => s,
            Err(es) => panic!("schema should parse: {es:#?}\n{text}"),
        }
    }

    fn parse_errors(text: &str) -> Vec<String> {
        match Schema::parse(text, "schema.yaml") {
            Ok(_) => panic!("schema should not parse:\n{text}"),
            Err(es) => es.iter().map(ToString::to_string).collect(),
        }
    }

    fn violations(r: Result<Value, Vec<Violation>>) -> Vec<String> {
        match r {
            Ok(v) => panic!("expected violations, got {v}"),
            Err(vs) => vs.iter().map(ToString::to_string).collect(),
        }
    }

    /// One keyword case: `types` body, the inputs, and either the completed inputs or the
    /// rendered violations (inputs are validated under the prefix `spec`).
    struct Case {
        name: &'static str,
        types: String,
        input: Value,
        want: Result<Value, Vec<&'static str>>,
    }

    fn case(
        name: &'static str,
        types: String,
        input: Value,
        want: Result<Value, Vec<&'static str>>,
    ) -> Case {
        Case {
            name,
            types,
            input,
            want,
        }
    }

    #[test]
    fn keywords() {
        let cases = vec![
            // type: string
            case(
                "string ok",
                one("{type: string}"),
                json!({"x": "a"}),
                Ok(json!({"x": "a"})),
            ),
            case(
                "string rejects number",
                one("{type: string}"),
                json!({"x": 5}),
                Err(vec!["spec.x: expected a string, found number 5"]),
            ),
            // type: number
            case(
                "number int",
                one("{type: number}"),
                json!({"x": 80}),
                Ok(json!({"x": 80})),
            ),
            case(
                "number float",
                one("{type: number}"),
                json!({"x": 1.5}),
                Ok(json!({"x": 1.5})),
            ),
            case(
                "number rejects string",
                one("{type: number}"),
                json!({"x": "80"}),
                Err(vec![r#"spec.x: expected a number, found string "80""#]),
            ),
            case(
                "number rejects boolean",
                one("{type: number}"),
                json!({"x": true}),
                Err(vec!["spec.x: expected a number, found boolean true"]),
            ),
            case(
                "number rejects null",
                one("{type: number}"),
                json!({"x": null}),
                Err(vec!["spec.x: expected a number, found null"]),
            ),
            // type: integer
            case(
                "integer ok",
                one("{type: integer}"),
                json!({"x": -3}),
                Ok(json!({"x": -3})),
            ),
            case(
                "integer accepts 2.0",
                one("{type: integer}"),
                json!({"x": 2.0}),
                Ok(json!({"x": 2.0})),
            ),
            case(
                "integer rejects 1.5",
                one("{type: integer}"),
                json!({"x": 1.5}),
                Err(vec!["spec.x: expected an integer, found number 1.5"]),
            ),
            // type: boolean
            case(
                "boolean ok",
                one("{type: boolean}"),
                json!({"x": false}),
                Ok(json!({"x": false})),
            ),
            case(
                "boolean rejects string",
                one("{type: boolean}"),
                json!({"x": "true"}),
                Err(vec![r#"spec.x: expected a boolean, found string "true""#]),
            ),
            case(
                "boolean rejects number",
                one("{type: boolean}"),
                json!({"x": 1}),
                Err(vec!["spec.x: expected a boolean, found number 1"]),
            ),
            // type: array
            case(
                "array ok",
                one("{type: array}"),
                json!({"x": [1, "a"]}),
                Ok(json!({"x": [1, "a"]})),
            ),
            case(
                "array rejects string",
                one("{type: array}"),
                json!({"x": "a,b"}),
                Err(vec![r#"spec.x: expected an array, found string "a,b""#]),
            ),
            // type: object
            case(
                "object ok",
                one("{type: object, properties: {a: {type: string}}}"),
                json!({"x": {"a": "b"}}),
                Ok(json!({"x": {"a": "b"}})),
            ),
            case(
                "object rejects array",
                one("{type: object, properties: {a: {type: string}}}"),
                json!({"x": []}),
                Err(vec!["spec.x: expected an object, found an array"]),
            ),
            case(
                "object checks its properties",
                one("{type: object, properties: {a: {type: string}}}"),
                json!({"x": {"a": 1}}),
                Err(vec!["spec.x.a: expected a string, found number 1"]),
            ),
            // default
            case(
                "default fills a missing input",
                one("{type: number, default: 80}"),
                json!({}),
                Ok(json!({"x": 80})),
            ),
            case(
                "default does not override a given input",
                one("{type: number, default: 80}"),
                json!({"x": 81}),
                Ok(json!({"x": 81})),
            ),
            case(
                "no default leaves an optional input missing",
                one("{type: number}"),
                json!({}),
                Ok(json!({})),
            ),
            // enum
            case(
                "enum ok",
                one("{type: string, enum: [x-small, small]}"),
                json!({"x": "small"}),
                Ok(json!({"x": "small"})),
            ),
            case(
                "enum rejects",
                one("{type: string, enum: [x-small, small]}"),
                json!({"x": "huge"}),
                Err(vec![r#"spec.x: "huge" is not one of: "x-small", "small""#]),
            ),
            case(
                "numeric enum compares by value",
                one("{type: number, enum: [80, 443]}"),
                json!({"x": 443.0}),
                Ok(json!({"x": 443.0})),
            ),
            case(
                "numeric enum rejects",
                one("{type: number, enum: [80, 443]}"),
                json!({"x": 8080}),
                Err(vec!["spec.x: 8080 is not one of: 80, 443"]),
            ),
            // pattern
            case(
                "pattern ok",
                one(r"{type: string, pattern: '^[0-9]+$'}"),
                json!({"x": "123"}),
                Ok(json!({"x": "123"})),
            ),
            case(
                "pattern rejects",
                one(r"{type: string, pattern: '^[0-9]+$'}"),
                json!({"x": "abc"}),
                Err(vec![r#"spec.x: "abc" does not match pattern ^[0-9]+$"#]),
            ),
            case(
                "pattern is not anchored",
                one(r"{type: string, pattern: '[0-9]'}"),
                json!({"x": "ab1c"}),
                Ok(json!({"x": "ab1c"})),
            ),
            case(
                "unanchored pattern still needs a match",
                one(r"{type: string, pattern: '\d'}"),
                json!({"x": "abc"}),
                Err(vec![r#"spec.x: "abc" does not match pattern \d"#]),
            ),
            // minimum
            case(
                "minimum is inclusive",
                one("{type: number, minimum: 0}"),
                json!({"x": 0}),
                Ok(json!({"x": 0})),
            ),
            case(
                "minimum rejects",
                one("{type: number, minimum: 0}"),
                json!({"x": -1}),
                Err(vec!["spec.x: -1 is below minimum 0"]),
            ),
            case(
                "minimum on integers",
                one("{type: integer, minimum: 1}"),
                json!({"x": 0}),
                Err(vec!["spec.x: 0 is below minimum 1"]),
            ),
            // maximum
            case(
                "maximum is inclusive",
                one("{type: number, maximum: 65535}"),
                json!({"x": 65535}),
                Ok(json!({"x": 65535})),
            ),
            case(
                "maximum rejects",
                one("{type: number, maximum: 65535}"),
                json!({"x": 70000}),
                Err(vec!["spec.x: 70000 is above maximum 65535"]),
            ),
            case(
                "maximum rejects a float just above",
                one("{type: number, maximum: 65535}"),
                json!({"x": 65535.5}),
                Err(vec!["spec.x: 65535.5 is above maximum 65535"]),
            ),
            // minLength
            case(
                "minLength rejects empty",
                one("{type: string, minLength: 1}"),
                json!({"x": ""}),
                Err(vec!["spec.x: length 0 is below minLength 1"]),
            ),
            case(
                "minLength counts characters, not bytes",
                one("{type: string, minLength: 2, maxLength: 2}"),
                json!({"x": "éé"}),
                Ok(json!({"x": "éé"})),
            ),
            // maxLength
            case(
                "maxLength rejects",
                one("{type: string, maxLength: 3}"),
                json!({"x": "abcd"}),
                Err(vec!["spec.x: length 4 is above maxLength 3"]),
            ),
            // items
            case(
                "items checks every element",
                one("{type: array, items: {type: string, pattern: '^subnet-'}}"),
                json!({"x": ["subnet-1", 2, "x"]}),
                Err(vec![
                    "spec.x[1]: expected a string, found number 2",
                    r#"spec.x[2]: "x" does not match pattern ^subnet-"#,
                ]),
            ),
            case(
                "items fills defaults inside elements",
                one(
                    "{type: array, items: {type: object, properties: {a: {type: number, default: 1}}}}",
                ),
                json!({"x": [{}, {"a": 2}]}),
                Ok(json!({"x": [{"a": 1}, {"a": 2}]})),
            ),
            // minItems
            case(
                "minItems rejects",
                one("{type: array, items: {type: string}, minItems: 1}"),
                json!({"x": []}),
                Err(vec!["spec.x: 0 items is below minItems 1"]),
            ),
            // maxItems
            case(
                "maxItems rejects",
                one("{type: array, items: {type: string}, maxItems: 2}"),
                json!({"x": ["a", "b", "c"]}),
                Err(vec!["spec.x: 3 items is above maxItems 2"]),
            ),
            case(
                "maxItems is inclusive",
                one("{type: array, maxItems: 2}"),
                json!({"x": ["a", "b"]}),
                Ok(json!({"x": ["a", "b"]})),
            ),
            // required
            case(
                "required missing",
                "Input: {type: object, required: [x], properties: {x: {type: string}}}".into(),
                json!({}),
                Err(vec![
                    "spec.x: required input is missing (no default); add it to the spec",
                ]),
            ),
            case(
                "required satisfied by its default",
                "Input: {type: object, required: [x], properties: {x: {type: string, default: a}}}"
                    .into(),
                json!({}),
                Ok(json!({"x": "a"})),
            ),
            case(
                "required inside a nested object",
                one("{type: object, required: [a], properties: {a: {type: string}}}"),
                json!({"x": {}}),
                Err(vec![
                    "spec.x.a: required input is missing (no default); add it to the spec",
                ]),
            ),
            // $ref
            case(
                "$ref applies the referenced type",
                format!(
                    "{}, Port: {{type: integer, maximum: 10}}",
                    one("{$ref: '#/types/Port'}")
                ),
                json!({"x": 11}),
                Err(vec!["spec.x: 11 is above maximum 10"]),
            ),
            case(
                "$ref takes the referenced type's default",
                format!(
                    "{}, Port: {{type: integer, default: 5}}",
                    one("{$ref: '#/types/Port'}")
                ),
                json!({}),
                Ok(json!({"x": 5})),
            ),
            case(
                "$ref's own default wins",
                format!(
                    "{}, Port: {{type: integer, default: 5}}",
                    one("{$ref: '#/types/Port', default: 6}")
                ),
                json!({}),
                Ok(json!({"x": 6})),
            ),
            case(
                "$ref in items, defined before use",
                format!(
                    "Net: {{type: object, properties: {{cidr: {{type: string, default: 10.0.0.0/16}}}}}}, {}",
                    one("{type: array, items: {$ref: '#/types/Net'}}")
                ),
                json!({"x": [{}]}),
                Ok(json!({"x": [{"cidr": "10.0.0.0/16"}]})),
            ),
        ];
        let mut failures = Vec::new();
        for c in cases {
            let schema = match Schema::parse(&doc(&c.types), "schema.yaml") {
                Ok(s) => s,
                Err(es) => {
                    failures.push(format!("{}: schema did not parse: {es:?}", c.name));
                    continue;
                }
            };
            let got = schema
                .validate(InputKind::Service, &c.input, "spec")
                .map_err(|vs| vs.iter().map(ToString::to_string).collect::<Vec<_>>());
            let want = c
                .want
                .map_err(|vs| vs.iter().map(ToString::to_string).collect::<Vec<_>>());
            if got != want {
                failures.push(format!("{}:\n  got  {got:?}\n  want {want:?}", c.name));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn sample_schemas_parse() {
        let svc = parse_ok(LOAD_BALANCED_FARGATE_SVC);
        assert_eq!(
            svc.input_type(InputKind::Service),
            Some("LoadBalancedFargateServiceInput")
        );
        assert_eq!(svc.input_type(InputKind::Pipeline), Some("PipelineInputs"));
        assert_eq!(svc.input_type(InputKind::Environment), None);
        let env = parse_ok(FARGATE_ENV);
        assert_eq!(
            env.input_type(InputKind::Environment),
            Some("FargateEnvironmentInput")
        );
        assert_eq!(env.input_type(InputKind::Service), None);
        assert_eq!(env.input_type(InputKind::Pipeline), None);
    }

    #[test]
    fn sample_defaults_are_filled() {
        let svc = parse_ok(LOAD_BALANCED_FARGATE_SVC);
        let got = svc
            .validate(
                InputKind::Service,
                &json!({"port": 8080}),
                "instances[0].spec",
            )
            .unwrap();
        assert_eq!(
            got,
            json!({
                "port": 8080,
                "desired_count": 1,
                "task_size": "x-small",
                "subnet_type": "public",
                "loadbalancer_type": "application",
                "image": "public.ecr.aws/nginx/nginx:1.21",
                "backendurl": "backend-svc-inst.backend-svc.fargate-env.local:80",
            })
        );
        let env = parse_ok(FARGATE_ENV);
        let got = env
            .validate(InputKind::Environment, &Value::Null, "spec")
            .unwrap();
        assert_eq!(got["vpc_cidr"], json!("10.0.0.0/16"));
        assert_eq!(got.as_object().map(Map::len), Some(5));
        let bad = env.validate(
            InputKind::Environment,
            &json!({"vpc_cidr": "10.0.0/16"}),
            "spec",
        );
        assert_eq!(
            violations(bad),
            [
                r#"spec.vpc_cidr: "10.0.0/16" does not match pattern ([0-9]{1,3}\.){3}[0-9]{1,3}($|/(16|18|24))"#
            ]
        );
    }

    #[test]
    fn every_violation_is_reported_at_once_with_exact_paths() {
        let svc = parse_ok(LOAD_BALANCED_FARGATE_SVC);
        let got = svc.validate(
            InputKind::Service,
            &json!({
                "port": 70000,
                "prot": 80,
                "desired_count": "2",
                "task_size": "huge",
                "image": "",
            }),
            "instances[1].spec",
        );
        assert_eq!(
            violations(got),
            [
                "instances[1].spec.prot: unknown input; the schema defines: port, desired_count, task_size, subnet_type, loadbalancer_type, image, backendurl; did you mean \"port\"?",
                "instances[1].spec.port: 70000 is above maximum 65535",
                "instances[1].spec.desired_count: expected a number, found string \"2\"",
                "instances[1].spec.task_size: \"huge\" is not one of: \"x-small\", \"small\", \"medium\", \"large\", \"x-large\"",
                "instances[1].spec.image: length 0 is below minLength 1",
            ]
        );
    }

    #[test]
    fn one_value_can_break_several_rules() {
        let s = parse_ok(&doc(&one(
            "{type: string, minLength: 5, pattern: '^[0-9]+$', enum: ['12345']}",
        )));
        assert_eq!(
            violations(s.validate(InputKind::Service, &json!({"x": "ab"}), "spec")),
            [
                r#"spec.x: "ab" is not one of: "12345""#,
                "spec.x: length 2 is below minLength 5",
                r#"spec.x: "ab" does not match pattern ^[0-9]+$"#,
            ]
        );
    }

    #[test]
    fn nested_defaults_are_filled() {
        let s = parse_ok(&doc(
            "Input: {type: object, properties: {
                network: {type: object, default: {}, properties: {
                    cidr: {type: string, default: 10.0.0.0/16},
                    dns: {type: object, default: {}, properties: {enabled: {type: boolean, default: true}}},
                    flow_logs: {type: object, properties: {bucket: {type: string, default: logs}}}}},
                name: {type: string}}}",
        ));
        assert_eq!(
            s.validate(InputKind::Service, &json!({}), "spec").unwrap(),
            json!({"network": {"cidr": "10.0.0.0/16", "dns": {"enabled": true}}})
        );
        assert_eq!(
            s.validate(
                InputKind::Service,
                &json!({"network": {"dns": {}, "flow_logs": {}}, "name": "n"}),
                "spec"
            )
            .unwrap(),
            json!({
                "network": {"cidr": "10.0.0.0/16", "dns": {"enabled": true}, "flow_logs": {"bucket": "logs"}},
                "name": "n",
            })
        );
        assert_eq!(
            violations(s.validate(
                InputKind::Service,
                &json!({"network": {"dns": {"enabled": "yes", "extra": 1}}}),
                "spec"
            )),
            [
                "spec.network.dns.extra: unknown input; the schema defines: enabled",
                r#"spec.network.dns.enabled: expected a boolean, found string "yes""#,
            ]
        );
    }

    #[test]
    fn unknown_inputs_are_violations() {
        let s = parse_ok(&doc(&one("{type: string}")));
        assert_eq!(
            violations(s.validate(InputKind::Service, &json!({"x": "a", "zzz_top": 1}), "spec")),
            ["spec.zzz_top: unknown input; the schema defines: x"]
        );
        let s = parse_ok(&doc("Input: {type: object}"));
        assert_eq!(
            violations(s.validate(InputKind::Service, &json!({"a": 1}), "")),
            ["a: unknown input; the schema defines no inputs here"]
        );
    }

    #[test]
    fn inputs_must_be_an_object() {
        let s = parse_ok(&doc(&one("{type: string}")));
        assert_eq!(
            violations(s.validate(InputKind::Service, &json!(["x"]), "instances[0].spec")),
            ["instances[0].spec: expected an object of inputs, found an array"]
        );
        assert_eq!(
            violations(s.validate(InputKind::Service, &json!("x"), "")),
            [r#".: expected an object of inputs, found string "x""#]
        );
        assert_eq!(
            s.validate(InputKind::Service, &Value::Null, "spec")
                .unwrap(),
            json!({})
        );
    }

    #[test]
    fn no_input_type_takes_no_inputs() {
        let env = parse_ok(FARGATE_ENV);
        for empty in [Value::Null, json!({})] {
            assert_eq!(
                env.validate(InputKind::Service, &empty, "spec").unwrap(),
                json!({})
            );
        }
        assert_eq!(
            violations(env.validate(InputKind::Pipeline, &json!({"a": 1}), "pipeline")),
            ["pipeline: this template takes no pipeline inputs"]
        );
        assert_eq!(
            violations(env.validate(InputKind::Service, &json!([]), "spec")),
            ["spec: this template takes no service inputs"]
        );
        assert!(env.properties(InputKind::Service).is_empty());
    }

    #[test]
    fn properties_lists_the_input_type() {
        let s = parse_ok(&doc(
            "Input: {type: object, required: [port, name], properties: {
                port: {type: integer, default: 80, title: Port},
                name: {type: string, description: The name},
                tags: {type: array, items: {type: string}},
                net: {$ref: '#/types/Net'}},},
             Net: {type: object, default: {}, title: Network, properties: {}}",
        ));
        let props = s.properties(InputKind::Service);
        let summary: Vec<(&str, bool, Option<&Value>, &str)> = props
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.required,
                    p.default.as_ref(),
                    p.type_name.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("port", true, Some(&json!(80)), "integer"),
                ("name", true, None, "string"),
                ("tags", false, None, "array"),
                ("net", false, Some(&json!({})), "object"),
            ]
        );
        assert_eq!(props[0].title.as_deref(), Some("Port"));
        assert_eq!(props[1].description.as_deref(), Some("The name"));
        assert_eq!(props[3].title.as_deref(), Some("Network"));
        assert!(s.properties(InputKind::Pipeline).is_empty());
    }

    /// Schema-error cases: `types` body and the rendered errors expected.
    #[test]
    fn schema_errors() {
        let p = "schema.yaml: schema.types.Input.properties.x";
        let cases: Vec<(&str, String, Vec<String>)> = vec![
            (
                "unknown keyword",
                one("{type: number, maximun: 10}"),
                vec![format!(r#"{p}: unknown keyword "maximun"; did you mean "maximum"?"#)],
            ),
            (
                "unknown keyword far from any",
                one("{type: number, additionalProperties: false}"),
                vec![format!(
                    r#"{p}: unknown keyword "additionalProperties"; supported: {}"#,
                    KEYWORDS.join(", ")
                )],
            ),
            (
                "pattern compiles too big",
                one(r"{type: string, pattern: '\w{1000}\w{1000}'}"),
                vec![format!(
                    r"{p}.pattern: pattern \w{{1000}}\w{{1000}} is too large once compiled (limit {REGEX_SIZE_LIMIT} bytes); simplify it"
                )],
            ),
            (
                "pattern too long",
                one(&format!("{{type: string, pattern: '{}'}}", "a".repeat(MAX_PATTERN_LEN + 1))),
                vec![format!(
                    "{p}.pattern: pattern is {} bytes long, above the limit of {MAX_PATTERN_LEN}; simplify it",
                    MAX_PATTERN_LEN + 1
                )],
            ),
            (
                "default above maximum",
                one("{type: number, maximum: 10, default: 11}"),
                vec![format!("{p}: default: 11 is above maximum 10")],
            ),
            (
                "default of the wrong type",
                one("{type: number, default: '80'}"),
                vec![format!(r#"{p}: default: expected a number, found string "80""#)],
            ),
            (
                "default not in enum",
                one("{type: string, enum: [a, b], default: c}"),
                vec![format!(r#"{p}: default: "c" is not one of: "a", "b""#)],
            ),
            (
                "default not matching pattern",
                one("{type: string, pattern: '^[a-z]+$', default: A1}"),
                vec![format!(r#"{p}: default: "A1" does not match pattern ^[a-z]+$"#)],
            ),
            (
                "array default with a bad element",
                one("{type: array, items: {type: string}, default: [a, 1]}"),
                vec![format!("{p}: default[1]: expected a string, found number 1")],
            ),
            (
                "object default missing a required property",
                one("{type: object, required: [a], properties: {a: {type: string}}, default: {}}"),
                vec![format!(
                    "{p}: default.a: required input is missing (no default); add it to the spec"
                )],
            ),
            (
                "enum entry of the wrong type",
                one("{type: number, enum: [1, two]}"),
                vec![format!(
                    r#"{p}.enum[1]: expected a number (the property's type), found string "two""#
                )],
            ),
            (
                "empty enum",
                one("{type: string, enum: []}"),
                vec![format!("{p}.enum: empty enum: no value could be valid; list at least one")],
            ),
            (
                "keyword for another type",
                one("{type: number, minLength: 1}"),
                vec![format!(r#"{p}: "minLength" applies only to type string, not number"#)],
            ),
            (
                "missing type",
                one("{default: 1}"),
                vec![format!(
                    r##"{p}: missing `type`; use one of: string, number, integer, boolean, array, object (or `$ref: "#/types/Name"`)"##
                )],
            ),
            (
                "unsupported type",
                one("{type: float}"),
                vec![format!(
                    r#"{p}.type: unsupported type "float"; use one of: string, number, integer, boolean, array, object"#
                )],
            ),
            (
                "minimum above maximum",
                one("{type: number, minimum: 5, maximum: 1}"),
                vec![format!("{p}: minimum 5 is above maximum 1; no value can satisfy both")],
            ),
            (
                "negative minLength",
                one("{type: string, minLength: -1}"),
                vec![format!("{p}.minLength: expected a whole number >= 0, found number -1")],
            ),
            (
                "required naming an undefined property",
                "Input: {type: object, required: [prot], properties: {port: {type: number}}}"
                    .into(),
                vec![
                    r#"schema.yaml: schema.types.Input.required[0]: "prot" is required but not defined in properties; did you mean "port"?"#
                        .into(),
                ],
            ),
            (
                "required as a boolean",
                one("{type: object, required: true}"),
                vec![format!(
                    "{p}.required: expected a list of property names, found boolean true; to require a property, list its name in its parent's `required`"
                )],
            ),
            (
                "$ref to an undefined type",
                one("{$ref: '#/types/Prot'}") + ", Port: {type: number}",
                vec![format!(
                    r##"{p}.$ref: $ref "#/types/Prot": no type "Prot" under schema.types; did you mean "#/types/Port"?"##
                )],
            ),
            (
                "$ref in another form",
                one("{$ref: '#/components/schemas/Port'}"),
                vec![format!(
                    r##"{p}.$ref: unsupported $ref "#/components/schemas/Port"; refer to another type as "#/types/Name""##
                )],
            ),
            (
                "$ref with constraints beside it",
                one("{$ref: '#/types/Port', maximum: 3}") + ", Port: {type: number}",
                vec![format!(
                    r#"{p}: "maximum" cannot be combined with $ref (only title, description and default can); put it in the referenced type"#
                )],
            ),
            (
                "$ref default checked against the referenced type",
                one("{$ref: '#/types/Port', default: 99}") + ", Port: {type: number, maximum: 10}",
                vec![format!("{p}: default: 99 is above maximum 10")],
            ),
            (
                "$ref cycle",
                "Input: {type: object, properties: {a: {$ref: '#/types/A'}}},
                 A: {type: object, properties: {b: {type: array, items: {$ref: '#/types/B'}}}},
                 B: {type: object, properties: {a: {$ref: '#/types/A'}}}"
                    .into(),
                vec![
                    "schema.yaml: schema.types.A: $ref cycle: A -> B -> A; a type cannot contain itself, directly or through other types"
                        .into(),
                ],
            ),
            (
                "$ref to itself",
                "Input: {type: object, properties: {me: {$ref: '#/types/Input'}}}".into(),
                vec![
                    "schema.yaml: schema.types.Input: $ref cycle: Input -> Input; a type cannot contain itself, directly or through other types"
                        .into(),
                ],
            ),
            (
                "input type that is not an object",
                "Input: {type: string}".into(),
                vec![
                    r#"schema.yaml: schema.service_input_type: type "Input" is a string; input types must be `type: object`"#
                        .into(),
                ],
            ),
            (
                "property that is not a mapping",
                one("string"),
                vec![format!(
                    r#"{p}: expected a mapping of keywords such as `type: string`, found string "string""#
                )],
            ),
        ];
        let mut failures = Vec::new();
        for (name, types, want) in cases {
            let got = match Schema::parse(&doc(&types), "schema.yaml") {
                Ok(_) => vec!["<parsed>".to_string()],
                Err(es) => es.iter().map(ToString::to_string).collect(),
            };
            if got != want {
                failures.push(format!("{name}:\n  got  {got:#?}\n  want {want:#?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn bad_regex_is_a_schema_error_naming_the_property() {
        // The regex engine's own wording may change between versions; pin only our part.
        for (pattern, reason) in [("([0-9]", "unclosed group"), ("^(?!admin)", "look-around")] {
            let Err(errors) = Schema::parse(
                &doc(&one(&format!("{{type: string, pattern: '{pattern}'}}"))),
                "schema.yaml",
            ) else {
                panic!("{pattern} should be rejected")
            };
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert_eq!(errors[0].path, "schema.types.Input.properties.x.pattern");
            let m = &errors[0].message;
            assert!(
                m.starts_with(&format!("invalid regular expression {pattern}: ")),
                "{m}"
            );
            assert!(m.contains(reason), "{m}");
            assert!(!m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn every_schema_problem_is_reported_at_once() {
        let text = r#"schema:
  format:
    openapi: "2.0"
  service_input_type: Missing
  pipeline_input_type: Pipe
  colour: blue
  types:
    Pipe:
      type: object
      required: [dir]
      properties:
        dir: {type: string, minLenght: 1}
        port: {type: number, default: 70000, maximum: 65535}
        size: {type: string, pattern: "(", enum: [small]}
"#;
        let Err(errors) = Schema::parse(text, "t/v1/schema/schema.yaml") else {
            panic!("should not parse")
        };
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "schema",
                "schema.format.openapi",
                "schema.types.Pipe.properties.dir",
                "schema.types.Pipe.properties.size.pattern",
                "schema.service_input_type",
                "schema.types.Pipe.properties.port",
            ],
            "{errors:#?}"
        );
        assert!(errors.iter().all(|e| e.file == "t/v1/schema/schema.yaml"));
        assert_eq!(
            errors[0].to_string(),
            r#"t/v1/schema/schema.yaml: schema: unknown key "colour"; supported: format, environment_input_type, service_input_type, pipeline_input_type, types"#
        );
        assert_eq!(
            errors[1].message,
            r#"unsupported OpenAPI version "2.0"; use "3.0.0""#
        );
        assert_eq!(
            errors[2].message,
            r#"unknown keyword "minLenght"; did you mean "minLength"?"#
        );
        assert_eq!(
            errors[4].message,
            r#"type "Missing" is not defined under schema.types; defined: Pipe"#
        );
        assert_eq!(errors[5].message, "default: 70000 is above maximum 65535");
    }

    #[test]
    fn malformed_files() {
        let cases: Vec<(&str, &str, &str)> = vec![
            (
                "empty",
                "",
                ".: the file is empty; it needs a top-level `schema:` mapping",
            ),
            (
                "not a mapping",
                "- a\n",
                ".: expected a mapping with a top-level `schema:` key, found a list",
            ),
            (
                "no schema key",
                "other: 1\n",
                r#".: unknown key "other"; supported: schema"#,
            ),
            (
                "schema not a mapping",
                "schema: 3\n",
                "schema: expected a mapping, found number 3",
            ),
            (
                "missing format",
                "schema: {service_input_type: I, types: {I: {type: object}}}\n",
                r#"schema: missing `format:`; add `format: {openapi: "3.0.0"}`"#,
            ),
            (
                "types not a mapping",
                "schema: {format: {openapi: 3.0.0}, types: [a]}\n",
                "schema.types: expected a mapping of type names to types, found a list",
            ),
            (
                "input type not a string",
                "schema: {format: {openapi: 3.0.0}, service_input_type: [I], types: {}}\n",
                "schema.service_input_type: expected the name of an entry of `types`, found a list",
            ),
            (
                "input type with no types",
                "schema: {format: {openapi: 3.0.0}, service_input_type: I}\n",
                r#"schema.service_input_type: type "I" is not defined under schema.types; add it there"#,
            ),
        ];
        let mut failures = Vec::new();
        for (name, text, want) in cases {
            let got = parse_errors(text);
            let want = format!("schema.yaml: {want}");
            if got.first() != Some(&want) {
                failures.push(format!("{name}:\n  got  {got:#?}\n  want {want}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let yaml = parse_errors("schema: [unclosed\n");
        assert_eq!(yaml.len(), 1);
        assert!(
            yaml[0].starts_with("schema.yaml: .: not valid YAML: "),
            "{yaml:?}"
        );
    }

    #[test]
    fn nesting_depth_is_limited() {
        let mut prop = "{type: string}".to_string();
        for _ in 0..40 {
            prop = format!("{{type: object, properties: {{a: {prop}}}}}");
        }
        let errors = parse_errors(&doc(&one(&prop)));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].ends_with(&format!(
                "nested more than {MAX_DEPTH} levels deep; flatten the schema"
            )),
            "{errors:#?}"
        );

        // Each type is shallow, but the chain of $refs nests 40 levels.
        let mut types =
            vec!["Input: {type: object, properties: {a: {$ref: '#/types/T0'}}}".to_string()];
        for i in 0..40 {
            types.push(format!(
                "T{i}: {{type: object, properties: {{a: {{$ref: '#/types/T{}'}}}}}}",
                i + 1
            ));
        }
        types.push("T40: {type: string}".to_string());
        let errors = parse_errors(&doc(&types.join(", ")));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(
            errors[0].contains("levels deep through $ref, above the limit of 32"),
            "{errors:#?}"
        );

        // Thirty levels in one schema are fine.
        let mut prop = "{type: string, default: deep}".to_string();
        for _ in 0..29 {
            prop = format!("{{type: object, default: {{}}, properties: {{a: {prop}}}}}");
        }
        let s = parse_ok(&doc(&one(&prop)));
        let mut v = s.validate(InputKind::Service, &json!({}), "spec").unwrap();
        let mut levels = 0;
        v = v["x"].take();
        while let Some(inner) = v.get_mut("a") {
            v = inner.take();
            levels += 1;
        }
        assert_eq!((levels, v), (29, json!("deep")));
    }

    #[test]
    fn pipeline_inputs() {
        let svc = parse_ok(LOAD_BALANCED_FARGATE_SVC);
        let got = svc
            .validate(
                InputKind::Pipeline,
                &json!({"dockerfile": "Dockerfile.prod"}),
                "pipeline",
            )
            .unwrap();
        assert_eq!(
            got,
            json!({
                "service_dir": "ecs-static-website",
                "dockerfile": "Dockerfile.prod",
                "unit_test_command": "echo 'add your unit test command here'",
            })
        );
    }

    #[test]
    fn display_formats() {
        let e = SchemaError {
            file: "f.yaml".into(),
            path: "schema.types.A".into(),
            message: "m".into(),
        };
        assert_eq!(e.to_string(), "f.yaml: schema.types.A: m");
        let v = Violation {
            path: "instances[1].spec.port".into(),
            message: "70000 is above maximum 65535".into(),
        };
        assert_eq!(
            v.to_string(),
            "instances[1].spec.port: 70000 is above maximum 65535"
        );
        assert_eq!(InputKind::Environment.to_string(), "environment");
        assert_eq!(InputKind::Pipeline.schema_key(), "pipeline_input_type");
    }

    #[test]
    fn long_values_are_shortened_in_messages() {
        let s = parse_ok(&doc(&one("{type: string, maxLength: 3}")));
        let long = "y".repeat(500);
        let got = violations(s.validate(InputKind::Service, &json!({"x": 5, "z": long}), ""));
        assert_eq!(got.len(), 2);
        let s = parse_ok(&doc(&one("{type: number}")));
        let got = violations(s.validate(InputKind::Service, &json!({"x": long}), ""));
        assert_eq!(
            got,
            [format!(
                "x: expected a number, found string \"{}...",
                "y".repeat(MAX_SHOWN - 1)
            )]
        );
    }
}
