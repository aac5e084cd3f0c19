//! One service's planner rows: its instances, their components, and its pipeline.
//!
//! An instance renders once its environment (and its component, if any) is deployed, since it
//! reads their outputs; until then it is blocked on them. The pipeline renders once every
//! instance is deployed. An invalid instance keeps its component declared, so that nothing
//! of it is deleted. Never decides ownership (the verdict comes from `ownership`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::context::{ServiceContext, SpecSource};
use super::memo::Bundle;
use super::ownership::{NameClash, SvcDecl, SvcVerdict};
use super::resolve::{EnvTarget, Placement, PlacementError, Templates, check_instance, violations};
use super::rows::{Builder, Rendered, Row, invalid, render_all_described};
use super::{component_id, environment_id, instance_id, pipeline_id};
use crate::catalog::releases::Release;
use crate::catalog::schema::InputKind;
use crate::catalog::{Infrastructure, TemplateKind};
use crate::plan::{DesiredState, ResourceKind, Version};
use crate::render::InstanceInfo;
use crate::spec::{ComponentRef, InstanceSpec};
use crate::state::Outputs;

/// Where instances may run: environment name → what they need to know of it.
pub(crate) type Targets<'a> = BTreeMap<&'a str, EnvTarget<'a>>;

/// Adds the rows of service `name` as the ownership rules decided.
pub(crate) fn render(
    b: &mut Builder<'_>,
    templates: &Templates<'_>,
    targets: &Targets<'_>,
    name: &str,
    verdict: &SvcVerdict<'_>,
) {
    match verdict {
        SvcVerdict::Withheld => {}
        SvcVerdict::Duplicate { decls, error } => duplicate(b, name, decls, error),
        SvcVerdict::Deploy(d) => deploy(b, templates, targets, name, d),
    }
}

/// Every instance of every clashing declaration is invalid.
fn duplicate(b: &mut Builder<'_>, name: &str, decls: &[SvcDecl<'_>], error: &NameClash) {
    for d in decls {
        let template = d.spec.template.as_ref().map_or("", |t| t.name.as_str());
        for inst in &d.spec.instances {
            let version = Version { major: 0, minor: 0 };
            let row = instance_row(name, d, inst, template, version, &Value::Null);
            b.push(row, Err(invalid(error)));
        }
    }
}

/// A service declaration being rendered, with what all its rows share.
struct Service<'s> {
    name: &'s str,
    decl: &'s SvcDecl<'s>,
    /// The service template's name.
    template: &'s str,
    /// The release the service follows (an instance or the pipeline may be pinned).
    release: &'s Release,
    context: ServiceContext,
    templates: &'s Templates<'s>,
    targets: &'s Targets<'s>,
}

impl Service<'_> {
    /// Whether the spec pins a minor (its resources then run exactly that minor).
    fn spec_minor(&self) -> bool {
        self.decl
            .spec
            .template
            .as_ref()
            .is_some_and(|t| t.minor.is_some())
    }
}

/// The release each instance of service `name` (declared by `d`) and its pipeline run (the
/// one the service follows, unless a pin or a deployed newer minor says otherwise), or why
/// the service resolves to none. All its rendering reads of the catalogue, pins and halts
/// (the one it follows is read only through these): the render cache keys on it.
pub(super) fn releases<'a>(
    templates: &Templates<'a>,
    name: &str,
    d: &SvcDecl<'_>,
) -> Result<Vec<&'a Release>, super::resolve::ResolveError> {
    let template = d.spec.template.as_ref();
    let base = templates.resolve(d.path(), template, TemplateKind::Service, None)?;
    let t = template.map_or("", |t| t.name.as_str());
    let minor = template.is_some_and(|t| t.minor.is_some());
    // The pipeline's release is read only when the spec declares a pipeline: otherwise a new
    // minor held back for every instance would still change the key (the pipeline, never
    // pinned, follows it), and every service would render again at each tag (issue 20).
    let pipeline = d.spec.pipeline.is_some().then(|| pipeline_id(name));
    let ids = d
        .spec
        .instances
        .iter()
        .map(|i| instance_id(name, &i.name))
        .chain(pipeline);
    Ok(ids
        .map(|id| templates.for_resource(&id, t, base, minor))
        .collect())
}

/// The rows of the service declaration that deploys.
fn deploy(
    b: &mut Builder<'_>,
    templates: &Templates<'_>,
    targets: &Targets<'_>,
    name: &str,
    d: &SvcDecl<'_>,
) {
    let template = d.spec.template.as_ref();
    let release = match templates.resolve(d.path(), template, TemplateKind::Service, None) {
        Ok(r) => r,
        Err(e) => {
            for inst in &d.spec.instances {
                let inputs = inst.inputs.value();
                let row = instance_row(name, d, inst, e.template(), e.version(), &inputs);
                b.push(row, Err(invalid(&e)));
            }
            return;
        }
    };
    let svc = Service {
        name,
        decl: d,
        template: template.map_or("", |t| t.name.as_str()),
        release,
        context: ServiceContext::new(name, &SpecSource::of_spec(d.spec), &b.account_id),
        templates,
        targets,
    };
    let mut infos = Vec::new();
    let mut all_deployed = true;
    for (index, inst) in d.spec.instances.iter().enumerate() {
        match instance(b, &svc, index, inst) {
            Some(info) => {
                all_deployed &= b.outputs_of(&instance_id(name, &inst.name)).is_some();
                infos.push(info);
            }
            None => all_deployed = false,
        }
    }
    pipeline(b, &svc, &infos, all_deployed);
}

/// Adds an instance's row (and its component's, first); returns what its pipeline sees of
/// it, or `None` when the instance is invalid.
fn instance(
    b: &mut Builder<'_>,
    svc: &Service<'_>,
    index: usize,
    inst: &InstanceSpec,
) -> Option<InstanceInfo> {
    let id = instance_id(svc.name, &inst.name);
    let release = svc
        .templates
        .for_resource(&id, svc.template, svc.release, svc.spec_minor());
    let placement = Placement {
        path: svc.decl.path(),
        repo: svc.decl.repo_name(),
        index,
        instance: inst,
        template: svc.template,
        release,
    };
    let inputs = match check_instance(&placement, svc.targets) {
        Ok(inputs) => inputs,
        Err(e) => {
            invalid_instance(b, svc, inst, release.version, &e);
            return None;
        }
    };
    let env_id = environment_id(&inst.environment);
    let env_outputs = b.outputs_of(&env_id).map(Outputs::to_map);
    let environment = svc
        .context
        .instance_environment(&inst.environment, env_outputs.clone().unwrap_or_default());
    let mut info = InstanceInfo {
        name: inst.name.clone(),
        inputs: inputs.clone(),
        outputs: b.outputs_of(&id).map(Outputs::to_map).unwrap_or_default(),
        environment,
        component_outputs: BTreeMap::new(),
    };
    // Component first: it needs the environment, and the instance needs its outputs.
    let mut blocked_on = Vec::new();
    if env_outputs.is_none() {
        blocked_on.push(env_id);
    }
    if let Some(c) = &inst.component {
        blocked_on.extend(component(b, svc, inst, c, &mut info, env_outputs.is_some()));
    }
    let row = instance_row(
        svc.name,
        svc.decl,
        inst,
        svc.template,
        release.version,
        &inputs,
    );
    if blocked_on.is_empty() {
        b.push_rendering(
            row,
            &Bundle::Release(release),
            &svc.context.instance(&info),
            |ctx| {
                render_all_described(&release.bundle.infrastructure, ctx, &|e| {
                    svc.context.describe(svc.decl.path(), e)
                })
            },
        );
    } else {
        b.push(row, Err(DesiredState::Blocked { on: blocked_on }));
    }
    Some(info)
}

/// An invalid instance's row. Its component stays declared (and so is never deleted) while
/// the instance is invalid.
fn invalid_instance(
    b: &mut Builder<'_>,
    svc: &Service<'_>,
    inst: &InstanceSpec,
    version: Version,
    error: &PlacementError,
) {
    if let Some(c) = &inst.component {
        let id = instance_id(svc.name, &inst.name);
        let state = Err(invalid(format!("its instance {id} is invalid: {error}")));
        push_component(b, svc, inst, c, Err(state));
    }
    let inputs = inst.inputs.value();
    let row = instance_row(svc.name, svc.decl, inst, svc.template, version, &inputs);
    b.push(row, Err(invalid(error)));
}

/// Adds the row of the component attached to `inst` and gives the instance its outputs;
/// returns the component's id while it is not deployed (the instance waits for it).
fn component(
    b: &mut Builder<'_>,
    svc: &Service<'_>,
    inst: &InstanceSpec,
    c: &ComponentRef,
    info: &mut InstanceInfo,
    environment_deployed: bool,
) -> Option<String> {
    let state = match svc.decl.file.components.get(&c.path) {
        None => Err(Err(invalid(format!(
            "{}: component folder {} was not read",
            svc.decl.path(),
            c.path
        )))),
        Some(Err(es)) => Err(Err(invalid(es.join("\n")))),
        Some(Ok(_)) if !environment_deployed => Err(Err(DesiredState::Blocked {
            on: vec![environment_id(&inst.environment)],
        })),
        Some(Ok(component)) => Ok((
            &component.infrastructure,
            svc.context.component(info, &c.name),
        )),
    };
    push_component(b, svc, inst, c, state);
    let id = component_id(svc.name, &inst.name);
    match b.outputs_of(&id) {
        Some(outputs) => {
            info.component_outputs = outputs.to_map();
            None
        }
        None => Some(id),
    }
}

/// Adds a directly defined component's row: rendered from its folder with its context, or
/// with a state that is not rendered.
fn push_component(
    b: &mut Builder<'_>,
    svc: &Service<'_>,
    inst: &InstanceSpec,
    c: &ComponentRef,
    state: Result<(&Infrastructure, Value), Rendered>,
) {
    let template = format!("component:{}", c.name);
    let inputs = Value::String(c.path.clone());
    let row = Row {
        id: component_id(svc.name, &inst.name),
        kind: ResourceKind::Component,
        repo: svc.decl.repo_name(),
        template: &template,
        version: Version { major: 0, minor: 0 },
        inputs: &inputs,
        environment: Some(inst.environment.clone()),
        spec_commit: svc.decl.commit(),
    };
    match state {
        Ok((infra, ctx)) => b.push_rendering(row, &Bundle::Component(infra), &ctx, |ctx| {
            render_all_described(infra, ctx, &|e| svc.context.describe(svc.decl.path(), e))
        }),
        Err(state) => b.push(row, state),
    }
}

/// Adds the pipeline's row when both the template and the spec have one; a spec pipeline
/// the template cannot deploy is a problem.
fn pipeline(b: &mut Builder<'_>, svc: &Service<'_>, infos: &[InstanceInfo], all_deployed: bool) {
    let id = pipeline_id(svc.name);
    let release = svc
        .templates
        .for_resource(&id, svc.template, svc.release, svc.spec_minor());
    let d = svc.decl;
    let (infra, given) = match (&release.bundle.pipeline, &d.spec.pipeline) {
        (Some(infra), Some(given)) => (infra, given),
        (None, Some(_)) => {
            b.out.problems.push(format!(
                "{}: pipeline: {} v{} has no pipeline_infrastructure; the pipeline block is ignored",
                d.path(),
                svc.template,
                release.version.major
            ));
            return;
        }
        (_, None) => return,
    };
    let (inputs, state): (Value, Result<Value, Rendered>) =
        match release
            .bundle
            .schema
            .validate(InputKind::Pipeline, given, "pipeline")
        {
            Err(vs) => (given.clone(), Err(Err(invalid(violations(d.path(), &vs))))),
            Ok(inputs) if !all_deployed => {
                let on = d
                    .spec
                    .instances
                    .iter()
                    .map(|i| instance_id(svc.name, &i.name))
                    .collect();
                (inputs, Err(Err(DesiredState::Blocked { on })))
            }
            Ok(inputs) => {
                let ctx = svc.context.pipeline(&inputs, infos);
                (inputs, Ok(ctx))
            }
        };
    let row = Row {
        id,
        kind: ResourceKind::Pipeline,
        repo: d.repo_name(),
        template: svc.template,
        version: release.version,
        inputs: &inputs,
        environment: None,
        spec_commit: d.commit(),
    };
    match state {
        Ok(ctx) => b.push_rendering(row, &Bundle::Release(release), &ctx, |ctx| {
            render_all_described(infra, ctx, &|e| svc.context.describe(d.path(), e))
        }),
        Err(state) => b.push(row, state),
    }
}

/// An instance's row, apart from its state.
fn instance_row<'a>(
    service: &str,
    d: &SvcDecl<'a>,
    inst: &'a InstanceSpec,
    template: &'a str,
    version: Version,
    inputs: &'a Value,
) -> Row<'a> {
    Row {
        id: instance_id(service, &inst.name),
        kind: ResourceKind::ServiceInstance,
        repo: d.repo_name(),
        template,
        version,
        inputs,
        environment: Some(inst.environment.clone()),
        spec_commit: d.commit(),
    }
}
