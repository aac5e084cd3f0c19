//! Planner rows as [`super::compute_pinned`] builds them: one [`Resource`] per resource,
//! with its hashes, and the deployed outputs rendering reads. Never decides ownership.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::memo::{Bundle, Memo, render_key};
use super::{DesiredSet, Resource, hash_documents, hash_json, hash_parsed_documents};
use crate::catalog::{Infrastructure, Language};
use crate::plan::{self, DesiredState, ResourceKind, Version};
use crate::provision::Provisioning;
use crate::render;
use crate::state::{Outputs, ResourceRecord};

/// Rendered documents (path, text), how they are provisioned (from the manifest's
/// `template_language`) and their rendered hash when the render already computed it (from
/// the guard's parse), or why there are none.
pub(crate) type Rendered =
    Result<(Vec<(String, String)>, Provisioning, Option<String>), DesiredState>;

/// One planner row to add, apart from its state.
pub(crate) struct Row<'a> {
    /// Resource id.
    pub id: String,
    /// Resource kind.
    pub kind: ResourceKind,
    /// The spec repo that declares it.
    pub repo: &'a str,
    /// Template name (empty when the spec names none).
    pub template: &'a str,
    /// Template version chosen.
    pub version: Version,
    /// The inputs whose hash the row carries (validated where they could be).
    pub inputs: &'a Value,
    /// Environment the resource lives in.
    pub environment: Option<String>,
    /// Commit of the declaring spec repo.
    pub spec_commit: Option<&'a String>,
}

impl Row<'_> {
    /// The planner's row for it, in `state` (moves its id out: the rest is copied).
    fn desired(&mut self, state: DesiredState) -> plan::Desired {
        plan::Desired {
            id: std::mem::take(&mut self.id),
            kind: self.kind,
            repo: self.repo.to_string(),
            template: self.template.to_string(),
            version: self.version,
            input_hash: hash_json(self.inputs),
            state,
        }
    }
}

/// Collects rows; knows what is deployed (for outputs) and the default account.
pub(crate) struct Builder<'a> {
    /// The result so far.
    pub out: DesiredSet,
    /// Deployed records by id (shared with the builder's forks).
    deployed: Arc<BTreeMap<&'a str, &'a ResourceRecord>>,
    /// The account environments live in unless their spec says otherwise.
    pub account_id: String,
    /// Customer-managed environments' stack outputs, by environment name (from the snapshot).
    pub customer_stacks: &'a BTreeMap<String, Result<BTreeMap<String, String>, String>>,
    /// Customer-managed environments' outputs, by environment id.
    customer_outputs: BTreeMap<String, Outputs>,
    /// The renderings the declaration being rendered may reuse, and the keys of its rows.
    pub(super) memo: Memo,
}

/// No customer-managed stacks.
static NO_STACKS: BTreeMap<String, Result<BTreeMap<String, String>, String>> = BTreeMap::new();

impl<'a> Builder<'a> {
    /// An empty result over the `deployed` records.
    pub fn new(deployed: &'a [ResourceRecord], account_id: &str) -> Self {
        Self {
            out: DesiredSet::default(),
            deployed: Arc::new(deployed.iter().map(|r| (r.id.as_str(), r)).collect()),
            account_id: account_id.to_string(),
            customer_stacks: &NO_STACKS,
            customer_outputs: BTreeMap::new(),
            memo: Memo::default(),
        }
    }

    /// A builder with an empty result over what this one knows (records, account,
    /// customer-managed environments): rows are rendered into forks on other threads and
    /// gathered back in order.
    pub fn fork(&self) -> Self {
        Self {
            out: DesiredSet::default(),
            deployed: Arc::clone(&self.deployed),
            account_id: self.account_id.clone(),
            customer_stacks: self.customer_stacks,
            customer_outputs: self.customer_outputs.clone(),
            memo: Memo::default(),
        }
    }

    /// Adds a row rendered from `bundle` with context `ctx` by `render`, or, when an
    /// earlier rendering of the declaration read the same ([`Memo`]), with that rendering's
    /// documents and state.
    pub fn push_rendering(
        &mut self,
        row: Row<'_>,
        bundle: &Bundle<'_>,
        ctx: &Value,
        render: impl FnOnce(&Value) -> Rendered,
    ) {
        if !self.memo.on {
            return self.push(row, render(ctx));
        }
        let key = render_key(&row.id, bundle, ctx);
        let index = u32::try_from(self.out.resources.len()).unwrap_or(u32::MAX);
        let earlier = self
            .memo
            .earlier
            .iter()
            .find(|(k, r)| *k == key && r.desired.id == row.id)
            .map(|(_, r)| r);
        if let Some(earlier) = earlier {
            let resource = reused(row, earlier);
            self.out.resources.push(resource);
            self.memo.hits += 1;
            self.memo.made.push((index, key));
            return;
        }
        let state = render(ctx);
        let ready = state.is_ok();
        self.push(row, state);
        if ready {
            self.memo.made.push((index, key));
        }
    }

    /// Adds a row; ready documents are hashed into its state.
    pub fn push(&mut self, mut row: Row<'_>, state: Rendered) {
        let (state, documents, provisioning) = match state {
            Ok((docs, provisioning, hash)) => (
                DesiredState::Ready {
                    rendered_hash: hash.unwrap_or_else(|| hash_documents(&docs)),
                },
                docs,
                provisioning,
            ),
            Err(s) => (s, Vec::new(), Provisioning::CloudFormation),
        };
        self.out.resources.push(Resource {
            desired: row.desired(state).into(),
            environment: row.environment,
            documents: documents.into(),
            provisioning,
            spec_commit: row.spec_commit.cloned(),
            start_pipeline: false,
        });
    }

    /// The outputs of a deployed resource (or a customer-managed environment); `None` while
    /// it is not deployed.
    pub fn outputs_of(&self, id: &str) -> Option<&Outputs> {
        self.deployed
            .get(id)
            .map(|r| &r.outputs)
            .or_else(|| self.customer_outputs.get(id))
    }

    /// The record of resource `id`, when protond deployed it.
    pub fn record(&self, id: &str) -> Option<&'a ResourceRecord> {
        self.deployed.get(id).copied()
    }

    /// Whether a resource `id` has a record (protond deployed it).
    pub fn is_deployed(&self, id: &str) -> bool {
        self.deployed.contains_key(id)
    }

    /// Makes environment `id` customer-managed, with `outputs`, described by `how`.
    pub fn customer_managed(&mut self, id: &str, outputs: BTreeMap<String, String>, how: String) {
        self.customer_outputs.insert(id.to_string(), outputs.into());
        self.out.customer_managed.insert(id.to_string(), how);
    }
}

/// `row` with the documents and state of `earlier`, an earlier rendering of the same
/// bundle and context; its planner row is shared when nothing of it changed.
fn reused(mut row: Row<'_>, earlier: &Resource) -> Resource {
    let desired = row.desired(earlier.desired.state.clone());
    Resource {
        desired: if desired == *earlier.desired {
            Arc::clone(&earlier.desired)
        } else {
            desired.into()
        },
        environment: row.environment,
        documents: earlier.documents.clone(),
        provisioning: earlier.provisioning,
        spec_commit: row.spec_commit.cloned(),
        start_pipeline: false,
    }
}

/// Renders every file of `infra` with `ctx`; the first failure makes the row invalid.
pub(crate) fn render_all(infra: &Infrastructure, ctx: &Value) -> Rendered {
    render_all_described(infra, ctx, &render::RenderError::to_string)
}

/// [`render_all`], with `describe` wording a failure (e.g. naming the spec field to add).
pub(crate) fn render_all_described(
    infra: &Infrastructure,
    ctx: &Value,
    describe: &dyn Fn(&render::RenderError) -> String,
) -> Rendered {
    if let Some(bundle) = &infra.codebuild {
        // CodeBuild provisioning: not rendered; the files and proton-inputs.json travel.
        let docs = crate::provision::codebuild::documents(bundle, ctx);
        return Ok((docs, Provisioning::CodeBuild, None));
    }
    let rendered = infra
        .files
        .iter()
        .map(|f| {
            render::render_file_parsed(f, ctx)
                .map(|(text, parsed)| (f.path.clone(), text, parsed))
                .map_err(|e| invalid(describe(&e)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if infra.language() == Language::Terraform {
        let mut docs = documents(rendered);
        // Proton's generated inputs travel with the files (and count in the rendered hash,
        // so new environment outputs redeploy dependants).
        docs.extend(crate::provision::terraform::generated_files(ctx));
        return Ok((docs, Provisioning::SelfManaged, None));
    }
    // The guard parsed each document once: the rendered hash reuses that parse.
    let hash = hash_parsed_documents(
        rendered
            .iter()
            .map(|(p, t, parsed)| (p.as_str(), t.as_str(), parsed.as_ref())),
    );
    Ok((
        documents(rendered),
        Provisioning::CloudFormation,
        Some(hash),
    ))
}

/// The documents (path, text) of `rendered`, in a vector of their own size: the render
/// cache keeps them, and collecting in place would keep the larger vector of the triples.
fn documents<P>(rendered: Vec<(String, String, P)>) -> Vec<(String, String)> {
    let mut docs = Vec::with_capacity(rendered.len());
    docs.extend(rendered.into_iter().map(|(p, t, _)| (p, t)));
    docs
}

/// An invalid state with `error` as its reason.
// Callers hand over temporaries (messages, errors); borrowing would only add `&` at each.
#[allow(clippy::needless_pass_by_value)]
pub(crate) fn invalid(error: impl ToString) -> DesiredState {
    DesiredState::Invalid {
        error: error.to_string(),
    }
}
