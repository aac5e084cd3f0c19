//! The domain vocabulary: resource kinds and ids, template versions, and the statuses and
//! outcomes the rest of the crate matches on.
//!
//! Every other module speaks these types. Text appears only at the boundaries: the state
//! store converts with `as_str`/`parse` when it writes and reads SQL, serde converts for
//! JSON, and `Display` gives the text operators see (the same text the store holds). A
//! resource id is split on `/` in one place, [`ResourceId::parse`].
//!
//! This module is a leaf: it imports nothing from the crate, performs no I/O and holds no
//! policy (what a status means for scheduling belongs to `plan` and `daemon`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The four kinds of Proton resources, in deployment order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceKind {
    /// An environment.
    Environment,
    /// A directly defined component attached to a service instance.
    Component,
    /// A service instance.
    ServiceInstance,
    /// A service pipeline.
    Pipeline,
}

impl ResourceKind {
    /// Stable name used in ids, state and output.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Environment => "environment",
            Self::Component => "component",
            Self::ServiceInstance => "service_instance",
            Self::Pipeline => "pipeline",
        }
    }

    /// Parses [`ResourceKind::as_str`] output.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "environment" => Self::Environment,
            "component" => Self::Component,
            "service_instance" => Self::ServiceInstance,
            "pipeline" => Self::Pipeline,
            _ => return None,
        })
    }
}

impl fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A template version `major.minor`; a newer minor is a compatible upgrade, a newer major
/// is proposed by pull request and never deployed by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Version {
    /// Major: a breaking change of the template's inputs or outputs.
    pub major: u32,
    /// Minor: a compatible change within the major.
    pub minor: u32,
}

impl Version {
    /// Parses `major.minor` (the [`Display`](fmt::Display) form), e.g. `1.2`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        let (a, b) = s.split_once('.')?;
        Some(Self {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The id of a managed resource: its kind and the names that make it unique. Displayed as
/// `environment/<env>`, `service_instance/<service>/<instance>`,
/// `component/<service>/<instance>` or `pipeline/<service>`, the text the state store,
/// stack tags and the API hold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResourceId {
    /// `environment/<name>`.
    Environment {
        /// The environment's name.
        name: String,
    },
    /// `service_instance/<service>/<instance>`.
    ServiceInstance {
        /// The service's name.
        service: String,
        /// The instance's name.
        instance: String,
    },
    /// `component/<service>/<instance>`: the directly defined component of an instance.
    Component {
        /// The service's name.
        service: String,
        /// The instance the component is attached to.
        instance: String,
    },
    /// `pipeline/<service>`.
    Pipeline {
        /// The service's name.
        service: String,
    },
}

/// Why a text is not a [`ResourceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{id:?} is not a resource id (environment/<env>, service_instance/<service>/<instance>, component/<service>/<instance> or pipeline/<service>)"
)]
pub struct ParseResourceIdError {
    /// The text given.
    pub id: String,
}

impl ResourceId {
    /// The id of environment `name`.
    #[must_use]
    pub fn environment(name: &str) -> Self {
        Self::Environment { name: name.into() }
    }

    /// The id of instance `instance` of service `service`.
    #[must_use]
    pub fn service_instance(service: &str, instance: &str) -> Self {
        Self::ServiceInstance {
            service: service.into(),
            instance: instance.into(),
        }
    }

    /// The id of the component attached to instance `instance` of service `service`.
    #[must_use]
    pub fn component(service: &str, instance: &str) -> Self {
        Self::Component {
            service: service.into(),
            instance: instance.into(),
        }
    }

    /// The id of the pipeline of service `service`.
    #[must_use]
    pub fn pipeline(service: &str) -> Self {
        Self::Pipeline {
            service: service.into(),
        }
    }

    /// Parses the [`Display`](fmt::Display) form. Every name must be non-empty and the
    /// number of names must fit the kind.
    ///
    /// # Errors
    ///
    /// [`ParseResourceIdError`] for an unknown kind, a missing, empty or extra name.
    pub fn parse(s: &str) -> Result<Self, ParseResourceIdError> {
        let err = || ParseResourceIdError { id: s.to_string() };
        let mut parts = s.split('/');
        let kind = parts.next().and_then(ResourceKind::parse).ok_or_else(err)?;
        let names: Vec<&str> = parts.collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(err());
        }
        match (kind, names.as_slice()) {
            (ResourceKind::Environment, [name]) => Ok(Self::environment(name)),
            (ResourceKind::ServiceInstance, [service, instance]) => {
                Ok(Self::service_instance(service, instance))
            }
            (ResourceKind::Component, [service, instance]) => {
                Ok(Self::component(service, instance))
            }
            (ResourceKind::Pipeline, [service]) => Ok(Self::pipeline(service)),
            _ => Err(err()),
        }
    }

    /// The resource's kind.
    #[must_use]
    pub fn kind(&self) -> ResourceKind {
        match self {
            Self::Environment { .. } => ResourceKind::Environment,
            Self::ServiceInstance { .. } => ResourceKind::ServiceInstance,
            Self::Component { .. } => ResourceKind::Component,
            Self::Pipeline { .. } => ResourceKind::Pipeline,
        }
    }

    /// The service it belongs to (none for an environment).
    #[must_use]
    pub fn service(&self) -> Option<&str> {
        match self {
            Self::Environment { .. } => None,
            Self::ServiceInstance { service, .. }
            | Self::Component { service, .. }
            | Self::Pipeline { service } => Some(service),
        }
    }

    /// The service instance it is or belongs to (instances and components).
    #[must_use]
    pub fn instance(&self) -> Option<&str> {
        match self {
            Self::ServiceInstance { instance, .. } | Self::Component { instance, .. } => {
                Some(instance)
            }
            Self::Environment { .. } | Self::Pipeline { .. } => None,
        }
    }

    /// The environment's name, for an environment id. (Which environment an instance lives
    /// in is not part of its id: the spec says, and the state records it.)
    #[must_use]
    pub fn environment_name(&self) -> Option<&str> {
        match self {
            Self::Environment { name } => Some(name),
            _ => None,
        }
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind();
        match self {
            Self::Environment { name } => write!(f, "{kind}/{name}"),
            Self::ServiceInstance { service, instance } | Self::Component { service, instance } => {
                write!(f, "{kind}/{service}/{instance}")
            }
            Self::Pipeline { service } => write!(f, "{kind}/{service}"),
        }
    }
}

impl FromStr for ResourceId {
    type Err = ParseResourceIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ResourceId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Declares a status enum whose variants map one-to-one to stored text: `as_str` and
/// `parse` for SQL, serde (the same text) for JSON, `Display` for people, and a comparison
/// with the stored text for tests and scripts that read the store.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// The stored text.
            #[must_use]
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $text, )+
                }
            }

            /// Parses [`Self::as_str`] output.
            #[must_use]
            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some(Self::$variant), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}

text_enum! {
    /// Where a managed resource stands, as the state store records it.
    pub enum ResourceStatus {
        /// Its last deployment succeeded: what is recorded is what runs.
        Deployed => "deployed",
        /// Its last deployment failed; what was deployed before stays recorded.
        Failed => "failed",
        /// The stack under its name is not provably this installation's: protond leaves it
        /// alone until a person resolves it.
        Conflict => "conflict",
    }
}

text_enum! {
    /// Where a resource stands in the operator views (`protond status`, the JSON API, the
    /// status page, `protond_resources{kind,status}`): its record's status when it has one,
    /// otherwise what its deployment history says, and what the daemon's last cycle found.
    /// The stored text is the JSON and metric value; [`ViewStatus::label`] is for people.
    pub enum ViewStatus {
        /// Its last deployment succeeded: what is recorded is what runs.
        Deployed => "deployed",
        /// An update or delete failed; what was deployed before stays recorded.
        Failed => "failed",
        /// The stack under its name is not provably this installation's: protond leaves it
        /// alone until a person resolves it.
        Conflict => "conflict",
        /// Never deployed yet: its first deployment is in flight.
        Creating => "creating",
        /// Never deployed: its first deployment failed (the error says why).
        CreateFailed => "create_failed",
        /// Self-managed and never deployed yet: submitted to the infrastructure repo, waiting
        /// for `protond notify` to report the outcome.
        WaitingForNotify => "waiting_for_notify",
        /// The daemon's last cycle found its desired state invalid (bad spec, inputs or
        /// template): nothing is deployed for it until that is fixed.
        SpecInvalid => "spec_invalid",
        /// Its repo could not be read (or is no longer configured): what is deployed is kept
        /// as is and nothing is known about what should be.
        Unknown => "unknown",
        /// A customer-managed environment: run by its owners, never deployed by protond; its
        /// outputs are what its instances see.
        CustomerManaged => "customer_managed",
    }
}

impl ViewStatus {
    /// Every view status, in the order the views explain them.
    pub const ALL: [Self; 9] = [
        Self::Deployed,
        Self::Failed,
        Self::Conflict,
        Self::Creating,
        Self::CreateFailed,
        Self::WaitingForNotify,
        Self::SpecInvalid,
        Self::Unknown,
        Self::CustomerManaged,
    ];

    /// The status as the tables and the status page show it (`create failed`).
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Deployed => "deployed",
            Self::Failed => "failed",
            Self::Conflict => "conflict",
            Self::Creating => "creating",
            Self::CreateFailed => "create failed",
            Self::WaitingForNotify => "waiting for notify",
            Self::SpecInvalid => "spec invalid",
            Self::Unknown => "unknown",
            Self::CustomerManaged => "customer managed",
        }
    }

    /// Whether it needs a person: a failure, a conflict or an invalid spec.
    #[must_use]
    pub fn is_problem(self) -> bool {
        matches!(
            self,
            Self::Failed | Self::Conflict | Self::CreateFailed | Self::SpecInvalid
        )
    }
}

impl From<ResourceStatus> for ViewStatus {
    fn from(s: ResourceStatus) -> Self {
        match s {
            ResourceStatus::Deployed => Self::Deployed,
            ResourceStatus::Failed => Self::Failed,
            ResourceStatus::Conflict => Self::Conflict,
        }
    }
}

/// Where a resource's stack lives: the recorded stack, addressed with the recorded identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Placement {
    /// The stack's name; empty when not recorded (a record written before names were
    /// recorded: its stack has the legacy name derived from the resource id).
    pub stack_name: String,
    /// The stack's id (its ARN, which names the account and region), once known.
    pub stack_id: Option<String>,
    /// The region its calls go to; `None` when not recorded (the configured region).
    pub region: Option<String>,
    /// The role assumed for its calls (the environment's `role_arn`), if any.
    pub role_arn: Option<String>,
}

text_enum! {
    /// Where one deployment (a history row) stands. A row only moves from `InProgress` to a
    /// final status.
    pub enum DeploymentStatus {
        /// Started and not finished; at most one per resource.
        InProgress => "in_progress",
        /// Applied (or deleted).
        Succeeded => "succeeded",
        /// Failed or interrupted; the error says which.
        Failed => "failed",
    }
}

text_enum! {
    /// What a deployment does to its resource.
    pub enum DeploymentAction {
        /// Deploys a resource for the first time.
        Create => "create",
        /// Deploys a change to a deployed resource.
        Update => "update",
        /// Removes a resource no spec declares any more.
        Delete => "delete",
        /// Takes over a stack deployed before protond (by AWS Proton): `protond import` records
        /// it and adds ownership tags, without deploying anything.
        Import => "import",
    }
}

text_enum! {
    /// Where an upgrade pull request stands.
    pub enum ProposalState {
        /// Open: protond keeps it up to date.
        Open => "open",
        /// Merged: the spec change deploys by the ordinary path.
        Merged => "merged",
        /// Closed by protond (superseded, or no longer needed).
        Closed => "closed",
        /// Closed unmerged by someone else: not proposed again until a newer major.
        Declined => "declined",
    }
}

text_enum! {
    /// How far the newest minor of a template major has rolled out.
    pub enum RolloutState {
        /// Every resource on the major runs the newest minor.
        Complete => "complete",
        /// Some resources still run an older minor.
        InProgress => "in_progress",
        /// Halted (by an operator or a failed deployment): no more upgrades start.
        Halted => "halted",
    }
}

text_enum! {
    /// Which kind of repo a fetch read.
    pub enum SourceKind {
        /// A template repo (the catalogue).
        Template => "template",
        /// A spec repo (what to deploy).
        Spec => "spec",
    }
}

text_enum! {
    /// Where a release's tag stands against the commit protond recorded for the release.
    pub enum TagState {
        /// The tag names the recorded commit.
        Current => "current",
        /// The tag was moved to another commit: refused until `protond release accept`.
        Moved => "moved",
        /// The tag was deleted: the release stays for the resources running it.
        Withdrawn => "withdrawn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_round_trip_through_their_text() {
        let cases = [
            (ResourceId::environment("dev"), "environment/dev"),
            (
                ResourceId::service_instance("payments", "payments-dev"),
                "service_instance/payments/payments-dev",
            ),
            (
                ResourceId::component("payments", "payments-dev"),
                "component/payments/payments-dev",
            ),
            (ResourceId::pipeline("payments"), "pipeline/payments"),
        ];
        for (id, text) in cases {
            assert_eq!(id.to_string(), text);
            assert_eq!(ResourceId::parse(text), Ok(id.clone()));
            assert_eq!(text.parse::<ResourceId>(), Ok(id.clone()));
            assert_eq!(
                serde_json::to_value(&id).expect("serialize"),
                serde_json::json!(text)
            );
            let back: ResourceId = serde_json::from_value(serde_json::json!(text)).expect("json");
            assert_eq!(back, id);
            assert_eq!(
                ResourceKind::parse(text.split_once('/').expect("kind").0),
                Some(id.kind())
            );
        }
    }

    #[test]
    fn resource_id_accessors() {
        let i = ResourceId::service_instance("payments", "payments-dev");
        assert_eq!(i.kind(), ResourceKind::ServiceInstance);
        assert_eq!(i.service(), Some("payments"));
        assert_eq!(i.instance(), Some("payments-dev"));
        assert_eq!(i.environment_name(), None);
        let c = ResourceId::component("payments", "payments-dev");
        assert_eq!(
            (c.service(), c.instance()),
            (Some("payments"), Some("payments-dev"))
        );
        let p = ResourceId::pipeline("payments");
        assert_eq!((p.service(), p.instance()), (Some("payments"), None));
        let e = ResourceId::environment("dev");
        assert_eq!((e.service(), e.environment_name()), (None, Some("dev")));
    }

    #[test]
    fn malformed_resource_ids_are_refused() {
        for bad in [
            "",
            "dev",
            "environment",
            "environment/",
            "environment/dev/extra",
            "service_instance/payments",
            "service_instance/payments/",
            "service_instance//payments-dev",
            "component/a/b/c",
            "pipeline/a/b",
            "stack/x",
        ] {
            let err = ResourceId::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("is not a resource id"), "{err}");
            assert!(serde_json::from_value::<ResourceId>(serde_json::json!(bad)).is_err());
        }
    }

    #[test]
    fn statuses_keep_their_stored_text() {
        for s in [ResourceStatus::Deployed, ResourceStatus::Failed] {
            assert_eq!(ResourceStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).expect("json"),
                serde_json::json!(s.as_str())
            );
        }
        for s in [
            DeploymentStatus::InProgress,
            DeploymentStatus::Succeeded,
            DeploymentStatus::Failed,
        ] {
            assert_eq!(DeploymentStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).expect("json"),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(DeploymentStatus::InProgress.as_str(), "in_progress");
        assert_eq!(
            ProposalState::parse("declined"),
            Some(ProposalState::Declined)
        );
        assert_eq!(ResourceStatus::parse("deleting"), None);
        assert!(DeploymentStatus::Failed == "failed");
        assert_eq!(DeploymentAction::Delete.to_string(), "delete");
    }

    #[test]
    fn view_statuses_keep_record_texts_and_have_labels() {
        for s in [
            ResourceStatus::Deployed,
            ResourceStatus::Failed,
            ResourceStatus::Conflict,
        ] {
            assert_eq!(ViewStatus::from(s).as_str(), s.as_str());
        }
        for s in ViewStatus::ALL {
            assert_eq!(ViewStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.label().replace(' ', "_"), s.as_str());
            assert_eq!(
                serde_json::to_value(s).expect("json"),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(ViewStatus::CreateFailed.label(), "create failed");
        assert!(ViewStatus::CreateFailed.is_problem() && !ViewStatus::Creating.is_problem());
    }

    #[test]
    fn versions_parse_their_display_form() {
        let v = Version {
            major: 1,
            minor: 12,
        };
        assert_eq!(Version::parse(&v.to_string()), Some(v));
        assert_eq!(Version::parse("1"), None);
        assert_eq!(Version::parse("v1.2"), None);
    }
}

text_enum! {
    /// How a recorded stack differs from live AWS (a drift check's finding; the
    /// `protond_drift{kind}` label).
    pub enum DriftKind {
        /// The stack is gone: not found by its recorded `StackId`, or `DELETE_COMPLETE`.
        Missing => "missing",
        /// Its status does not match the record (e.g. an update nobody recorded).
        Status => "status",
        /// Its template is not the one protond deployed.
        Template => "template",
        /// Parameter values were set out of band.
        Parameters => "parameters",
        /// protond's tags (ownership, template) were changed or removed.
        Tags => "tags",
        /// `CloudFormation`'s own resource drift detection found drifted resources.
        Resources => "resources",
    }
}

impl DriftKind {
    /// Every kind, in the order the views list them.
    pub const ALL: [Self; 6] = [
        Self::Missing,
        Self::Status,
        Self::Template,
        Self::Parameters,
        Self::Tags,
        Self::Resources,
    ];
}
