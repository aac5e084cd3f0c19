//! What a change of rendered `CloudFormation` template does to a stack's resources, predicted
//! offline: [`compare`] takes the template a stack runs and the one it would get, and says per
//! logical resource whether it is added, removed, or modified, and for a modification whether
//! `CloudFormation` updates it in place, with some interruption, may replace it, or replaces it.
//!
//! The prediction reads the update behaviour of each property from `behaviour.tsv`, generated
//! by `scripts/update_behaviour.py` from the resource schemas cfn-lint ships (AWS's registry
//! schemas: `createOnlyProperties` replace, `conditionalCreateOnlyProperties` may replace),
//! plus the per-property behaviours AWS documents that those schemas lack
//! (`scripts/update_behaviour_overrides.tsv`, with their sources). A changed `Type` replaces;
//! a type the table does not cover (custom resources, third-party types) may replace.
//! [`StatefulTypes`] says which resource types hold data (cfn-lint's list of stateful
//! resources, plus ECR repositories), for the change-set gate and the preview.
//!
//! It compares values as written (short-form intrinsics read as their long form, so YAML and
//! JSON compare equal): an intrinsic whose result would not change (a `!Ref` rewritten as an
//! equal `!Sub`) still counts as a change; the prediction errs towards reporting. Pure: no I/O, no rendering; it must never call AWS (`preview --change-sets`
//! confirms with real change sets).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::OnceLock;

use serde::Serialize;
use serde_yaml::Value;

/// The table: `type \t property \t behaviour`, one `*` line per covered type.
const BEHAVIOUR: &str = include_str!("behaviour.tsv");

/// What happens to one logical resource, in `CloudFormation`'s change-set words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// New in the template.
    Add,
    /// Changed.
    Modify,
    /// Gone from the template: `CloudFormation` deletes it (unless its `DeletionPolicy` retains it).
    Remove,
}

/// How `CloudFormation` applies a modification, from the mildest to the most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Updated in place, no interruption.
    NoInterruption,
    /// Updated in place with some interruption (a restart, a failover).
    Interruption,
    /// May be replaced: the property replaces the resource under some conditions, or the
    /// resource type is not in the table.
    MayReplace,
    /// Replaced: a new physical resource is created and the old one deleted.
    Replacement,
}

impl Effect {
    /// Words for people.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::NoInterruption => "updated in place",
            Self::Interruption => "updated with interruption",
            Self::MayReplace => "may be replaced",
            Self::Replacement => "replaced",
        }
    }
}

/// One changed top-level property and its update behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PropertyChange {
    /// The property (`KeySchema`), or a resource attribute (`DeletionPolicy`, `Type`).
    pub name: String,
    /// What changing it does.
    pub effect: Effect,
}

/// What a template change does to one logical resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ResourceChange {
    /// Its logical id.
    pub logical_id: String,
    /// Its type (the new one when the type changed).
    pub resource_type: String,
    /// Added, modified or removed.
    pub action: Action,
    /// For a modification, the most severe effect of its changed properties.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effect: Option<Effect>,
    /// For a modification, the changed properties.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<PropertyChange>,
    /// Whether the type is in the update-behaviour table (else the prediction is a guess).
    pub covered: bool,
    /// Whether its (old) `DeletionPolicy` keeps it (`Retain`, `RetainExceptOnCreate` or
    /// `Snapshot`) when it is removed, and its `UpdateReplacePolicy` when replaced.
    pub retained: bool,
}

impl ResourceChange {
    /// Whether this change destroys the physical resource: a removal not retained, or a
    /// replacement (or a possible one).
    #[must_use]
    pub fn destroys(&self) -> bool {
        match self.action {
            Action::Add => false,
            Action::Remove => !self.retained,
            Action::Modify => matches!(self.effect, Some(Effect::Replacement | Effect::MayReplace)),
        }
    }

    /// A short summary for people: `replaced (KeySchema)`, `added`, `updated in place (Image)`.
    #[must_use]
    pub fn summary(&self) -> String {
        match (self.action, self.effect) {
            (Action::Add, _) => "added".to_string(),
            (Action::Remove, _) if self.retained => {
                "removed (retained by its DeletionPolicy)".to_string()
            }
            (Action::Remove, _) => "removed".to_string(),
            (Action::Modify, effect) => {
                let names: Vec<&str> = self.properties.iter().map(|p| p.name.as_str()).collect();
                format!(
                    "{} ({})",
                    effect.map_or("updated", Effect::describe),
                    names.join(", ")
                )
            }
        }
    }
}

impl fmt::Display for ResourceChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.resource_type,
            self.logical_id,
            self.summary()
        )
    }
}

/// Why two templates could not be compared.
#[derive(Debug, thiserror::Error)]
pub enum ImpactError {
    /// A template is not YAML or JSON.
    #[error("the {which} template does not parse: {source}")]
    Parse {
        /// "deployed" or "new".
        which: &'static str,
        /// The parser's error.
        source: crate::catalog::yaml::YamlError,
    },
}

/// The per-logical-resource changes from the `old` rendered template to the `new` one (YAML
/// or JSON), in logical-id order; unchanged resources are left out.
///
/// # Errors
///
/// When either template does not parse.
pub fn compare(old: &str, new: &str) -> Result<Vec<ResourceChange>, ImpactError> {
    let old_doc: Value =
        crate::catalog::yaml::from_str(old).map_err(|source| ImpactError::Parse {
            which: "deployed",
            source,
        })?;
    let new_doc: Value =
        crate::catalog::yaml::from_str(new).map_err(|source| ImpactError::Parse {
            which: "new",
            source,
        })?;
    Ok(compare_values(&long_form(old_doc), &long_form(new_doc)))
}

/// Rewrites `CloudFormation`'s short-form intrinsics (`!Ref x`, `!GetAtt a.b`, `!Sub s`) to
/// their long form, so that the same template written in YAML or JSON compares equal.
fn long_form(v: Value) -> Value {
    match v {
        Value::Tagged(t) => {
            let tag = t.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(t.value);
            let (key, value) = match (name, value) {
                ("Ref", v) => ("Ref".to_string(), v),
                ("GetAtt", Value::String(s)) => {
                    let parts: Vec<Value> = s
                        .splitn(2, '.')
                        .map(|p| Value::String(p.to_string()))
                        .collect();
                    ("Fn::GetAtt".to_string(), Value::Sequence(parts))
                }
                (other, v) => (format!("Fn::{other}"), v),
            };
            let mut m = serde_yaml::Mapping::new();
            m.insert(Value::String(key), value);
            Value::Mapping(m)
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(long_form).collect()),
        Value::Mapping(m) => {
            Value::Mapping(m.into_iter().map(|(k, v)| (k, long_form(v))).collect())
        }
        other => other,
    }
}

/// [`compare`] on parsed documents.
#[must_use]
pub fn compare_values(old: &Value, new: &Value) -> Vec<ResourceChange> {
    let old_res = resources(old);
    let new_res = resources(new);
    let ids: BTreeSet<&str> = old_res.keys().chain(new_res.keys()).copied().collect();
    let table = Table::get();
    ids.into_iter()
        .filter_map(|id| match (old_res.get(id), new_res.get(id)) {
            (None, Some(n)) => Some(ResourceChange {
                logical_id: id.to_string(),
                resource_type: type_of(n).to_string(),
                action: Action::Add,
                effect: None,
                properties: Vec::new(),
                covered: table.covers(type_of(n)),
                retained: false,
            }),
            (Some(o), None) => Some(ResourceChange {
                logical_id: id.to_string(),
                resource_type: type_of(o).to_string(),
                action: Action::Remove,
                effect: None,
                properties: Vec::new(),
                covered: table.covers(type_of(o)),
                retained: retains(o, "DeletionPolicy"),
            }),
            (Some(o), Some(n)) => modification(id, o, n, table),
            (None, None) => None,
        })
        .collect()
}

fn modification(id: &str, old: &Value, new: &Value, table: &Table) -> Option<ResourceChange> {
    if old == new {
        return None;
    }
    let ty = type_of(new);
    let covered = table.covers(ty);
    let mut properties = Vec::new();
    if type_of(old) != ty {
        properties.push(PropertyChange {
            name: "Type".to_string(),
            effect: Effect::Replacement,
        });
    }
    let (op, np) = (
        field(Some(old), "Properties"),
        field(Some(new), "Properties"),
    );
    let names: BTreeSet<&str> = keys(op).chain(keys(np)).collect();
    for name in names {
        if field(op, name) != field(np, name) {
            let effect = if covered {
                table.effect(ty, name)
            } else {
                Effect::MayReplace
            };
            properties.push(PropertyChange {
                name: name.to_string(),
                effect,
            });
        }
    }
    // Resource attributes other than Properties and Type change no physical resource.
    for attr in [
        "DeletionPolicy",
        "UpdateReplacePolicy",
        "DependsOn",
        "Metadata",
        "Condition",
        "UpdatePolicy",
        "CreationPolicy",
    ] {
        if field(Some(old), attr) != field(Some(new), attr) {
            properties.push(PropertyChange {
                name: attr.to_string(),
                effect: Effect::NoInterruption,
            });
        }
    }
    let effect = properties.iter().map(|p| p.effect).max();
    Some(ResourceChange {
        logical_id: id.to_string(),
        resource_type: ty.to_string(),
        action: Action::Modify,
        effect,
        properties,
        covered,
        retained: retains(old, "UpdateReplacePolicy"),
    })
}

fn resources(doc: &Value) -> BTreeMap<&str, &Value> {
    field(Some(doc), "Resources")
        .and_then(Value::as_mapping)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?, v)))
                .collect()
        })
        .unwrap_or_default()
}

fn field<'a>(v: Option<&'a Value>, key: &str) -> Option<&'a Value> {
    v?.as_mapping()?.get(key)
}

fn keys(v: Option<&Value>) -> impl Iterator<Item = &str> {
    v.and_then(Value::as_mapping)
        .into_iter()
        .flat_map(|m| m.keys().filter_map(Value::as_str))
}

fn type_of(resource: &Value) -> &str {
    field(Some(resource), "Type")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn retains(resource: &Value, policy: &str) -> bool {
    matches!(
        field(Some(resource), policy).and_then(Value::as_str),
        Some("Retain" | "RetainExceptOnCreate" | "Snapshot")
    )
}

/// The update-behaviour table, parsed once.
struct Table {
    covered: BTreeSet<&'static str>,
    special: BTreeMap<(&'static str, &'static str), Effect>,
}

impl Table {
    fn get() -> &'static Self {
        static TABLE: OnceLock<Table> = OnceLock::new();
        TABLE.get_or_init(|| Self::parse(BEHAVIOUR))
    }

    fn parse(text: &'static str) -> Self {
        let mut covered = BTreeSet::new();
        let mut special = BTreeMap::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let mut cols = line.split('\t');
            let (Some(ty), Some(prop), Some(b)) = (cols.next(), cols.next(), cols.next()) else {
                continue;
            };
            covered.insert(ty);
            let effect = match b {
                "replacement" => Effect::Replacement,
                "conditional" => Effect::MayReplace,
                "interruption" => Effect::Interruption,
                _ => continue,
            };
            special.insert((ty, prop), effect);
        }
        Self { covered, special }
    }

    fn covers(&self, ty: &str) -> bool {
        self.covered.contains(ty)
    }

    fn effect(&self, ty: &str, property: &str) -> Effect {
        self.special
            .get(&(ty, property))
            .copied()
            .unwrap_or(Effect::NoInterruption)
    }
}

/// The resource types the table covers, in order.
pub fn covered_types() -> impl Iterator<Item = &'static str> {
    Table::get().covered.iter().copied()
}

/// The default stateful resource types: cfn-lint's list of resources that hold data
/// (`StatefulResources.json`), plus ECR repositories.
pub const DEFAULT_STATEFUL: &[&str] = &[
    "AWS::Backup::BackupVault",
    "AWS::CloudFormation::Stack",
    "AWS::Cognito::UserPool",
    "AWS::DocDB::DBCluster",
    "AWS::DocDB::DBInstance",
    "AWS::DynamoDB::GlobalTable",
    "AWS::DynamoDB::Table",
    "AWS::EC2::Volume",
    "AWS::ECR::Repository",
    "AWS::EFS::FileSystem",
    "AWS::EMR::Cluster",
    "AWS::ElastiCache::CacheCluster",
    "AWS::ElastiCache::ReplicationGroup",
    "AWS::Elasticsearch::Domain",
    "AWS::FSx::FileSystem",
    "AWS::KMS::Key",
    "AWS::Kinesis::Stream",
    "AWS::Logs::LogGroup",
    "AWS::Neptune::DBCluster",
    "AWS::Neptune::DBInstance",
    "AWS::OpenSearchService::Domain",
    "AWS::Organizations::Account",
    "AWS::QLDB::Ledger",
    "AWS::RDS::DBCluster",
    "AWS::RDS::DBInstance",
    "AWS::Redshift::Cluster",
    "AWS::S3::Bucket",
    "AWS::SDB::Domain",
    "AWS::SQS::Queue",
    "AWS::SecretsManager::Secret",
];

/// Which resource types hold data: a change that replaces or removes one of them needs a
/// person's approval before an automatic minor applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatefulTypes(BTreeSet<String>);

impl Default for StatefulTypes {
    fn default() -> Self {
        Self(DEFAULT_STATEFUL.iter().map(|s| (*s).to_string()).collect())
    }
}

impl StatefulTypes {
    /// Exactly these types (patterns ending in `::*` match a whole service: `AWS::RDS::*`).
    #[must_use]
    pub fn new(types: impl IntoIterator<Item = String>) -> Self {
        Self(types.into_iter().collect())
    }

    /// Whether `ty` holds data.
    #[must_use]
    pub fn contains(&self, ty: &str) -> bool {
        self.0.contains(ty)
            || self.0.iter().any(|p| {
                p.strip_suffix('*')
                    .is_some_and(|prefix| prefix.ends_with("::") && ty.starts_with(prefix))
            })
    }

    /// The types, in order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests;
