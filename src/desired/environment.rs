//! One environment's planner row: its release resolved, inputs validated, files rendered.
//! Never decides ownership (the verdict comes from `ownership`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::context::environment_context;
use super::environment_id;
use super::ownership::{EnvDecl, EnvVerdict};
use super::resolve::{ResolveError, Templates, violations};
use super::rows::{Builder, Rendered, Row, invalid, render_all};
use crate::catalog::TemplateKind;
use crate::catalog::releases::Release;
use crate::catalog::schema::InputKind;
use crate::plan::{ResourceKind, Version};

/// Adds the row of environment `name`.
pub(crate) fn render(
    b: &mut Builder<'_>,
    templates: &Templates<'_>,
    name: &str,
    verdict: &EnvVerdict<'_>,
) {
    match verdict {
        EnvVerdict::Duplicate { carrier, error } => {
            let template = carrier
                .spec
                .template
                .as_ref()
                .map_or("", |t| t.name.as_str());
            let row = row(
                name,
                carrier,
                template,
                Version { major: 0, minor: 0 },
                &Value::Null,
            );
            b.push(row, Err(invalid(error)));
        }
        EnvVerdict::Deploy(d) => deploy(b, templates, name, d),
    }
}

/// The release environment `name` (declared by `d`) runs: all its rendering reads of the
/// catalogue, pins and halts (the render cache keys on it).
pub(super) fn release<'a>(
    templates: &Templates<'a>,
    name: &str,
    d: &EnvDecl<'_>,
) -> Result<&'a Release, ResolveError> {
    let template = d.spec.template.as_ref();
    let id = environment_id(name);
    let pinned = template.and_then(|t| templates.pinned(&id, &t.name));
    let r = templates.resolve(d.path(), template, TemplateKind::Environment, pinned)?;
    Ok(template.map_or(r, |t| {
        templates.for_resource(&id, &t.name, r, t.minor.is_some())
    }))
}

/// The row of an environment declared once.
fn deploy(b: &mut Builder<'_>, templates: &Templates<'_>, name: &str, d: &EnvDecl<'_>) {
    if let Some(c) = &d.spec.customer_managed {
        if let Err(e) = super::customer::environment(b, name, d, c) {
            let t = d.spec.template.as_ref();
            let version = t.map_or(Version { major: 0, minor: 0 }, |t| Version {
                major: t.major,
                minor: t.minor.unwrap_or(0),
            });
            let template = t.map_or("", |t| t.name.as_str());
            b.push(
                row(name, d, template, version, &Value::Null),
                Err(invalid(e)),
            );
        }
        return;
    }
    let template = d.spec.template.as_ref();
    let release = match release(templates, name, d) {
        Ok(r) => r,
        Err(e) => {
            // A spec naming no template has no inputs to speak of yet.
            let inputs = match e {
                ResolveError::Missing { .. } => Value::Null,
                _ => d.spec.inputs.value(),
            };
            b.push(
                row(name, d, e.template(), e.version(), &inputs),
                Err(invalid(&e)),
            );
            return;
        }
    };
    let template = template.map_or("", |t| t.name.as_str());
    let spec_inputs = d.spec.inputs.value();
    let (inputs, state): (Value, Rendered) =
        match release
            .bundle
            .schema
            .validate(InputKind::Environment, &spec_inputs, "spec")
        {
            Err(vs) => (spec_inputs, Err(invalid(violations(d.path(), &vs)))),
            Ok(inputs) => {
                let ctx =
                    environment_context(d.spec, inputs.clone(), BTreeMap::default(), &b.account_id);
                (inputs, render_all(&release.bundle.infrastructure, &ctx))
            }
        };
    b.push(row(name, d, template, release.version, &inputs), state);
}

fn row<'a>(
    name: &str,
    d: &EnvDecl<'a>,
    template: &'a str,
    version: Version,
    inputs: &'a Value,
) -> Row<'a> {
    Row {
        id: environment_id(name),
        kind: ResourceKind::Environment,
        repo: d.repo_name(),
        template,
        version,
        inputs,
        environment: Some(name.to_string()),
        spec_commit: d.commit(),
    }
}
