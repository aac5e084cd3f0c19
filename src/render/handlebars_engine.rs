//! Handlebars rendering with the same context as Jinja: strict mode (undefined variables
//! are errors naming the variable), no HTML escaping, and every `{{value}}` marked for the
//! injection guard. Triple-stash `{{{value}}}` output is unmarked, like Jinja's `safe`.
//! Handlebars has no fuel: a render is bounded by its output ([`bounds::MAX_OUTPUT_BYTES`]);
//! its loops only walk the context's own lists. No partials are registered, so the only
//! recursion is an inline partial (`{{#*inline}}`) calling a partial: Handlebars has no depth
//! limit (the process would overflow its stack), so such a template is refused.

use handlebars::template::{Template, TemplateElement};
use handlebars::{Handlebars, RenderErrorReason};

use super::{RenderError, bounds, guard};

fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(|s| {
        let mut out = String::with_capacity(s.len() + 6);
        guard::mark(&mut out, s);
        out
    });
    hb
}

fn convert(file: &str, e: &handlebars::RenderError) -> RenderError {
    let line = e.line_no.unwrap_or(0);
    match e.reason() {
        RenderErrorReason::MissingVariable(path) => RenderError::Undefined {
            file: file.to_string(),
            line,
            variable: path.clone().unwrap_or_else(|| "unknown".into()),
        },
        RenderErrorReason::TemplateError(t) => RenderError::Template {
            file: file.to_string(),
            line: t.pos().map_or(line, |(l, _)| l),
            message: t.reason().to_string(),
        },
        other => RenderError::Template {
            file: file.to_string(),
            line,
            message: other.to_string(),
        },
    }
}

/// Whether a partial is called inside an inline partial's definition (`inside`: within one).
fn recursive_partial(t: &Template, inside: bool) -> bool {
    t.elements.iter().any(|e| match e {
        TemplateElement::PartialExpression(d) | TemplateElement::PartialBlock(d) => {
            inside
                || d.template
                    .as_ref()
                    .is_some_and(|b| recursive_partial(b, inside))
        }
        TemplateElement::DecoratorBlock(d) => d
            .template
            .as_ref()
            .is_some_and(|b| recursive_partial(b, true)),
        TemplateElement::HelperBlock(h) => [&h.template, &h.inverse]
            .into_iter()
            .flatten()
            .any(|b| recursive_partial(b, inside)),
        _ => false,
    })
}

/// Compiles a template to check its syntax, and refuses partials called inside inline
/// partials.
pub fn check(file: &str, source: &str) -> Result<(), RenderError> {
    let template = handlebars::Template::compile(source).map_err(|t| RenderError::Template {
        file: file.to_string(),
        line: t.pos().map_or(0, |(l, _)| l),
        message: t.reason().to_string(),
    })?;
    if recursive_partial(&template, false) {
        return Err(RenderError::Template {
            file: file.to_string(),
            line: 0,
            message: "a partial is called inside an inline partial (`{{#*inline}}`), which can recurse without end; call partials only outside inline partial definitions".into(),
        });
    }
    Ok(())
}

/// Renders with every printed value marked (see [`guard`]).
pub fn render(file: &str, source: &str, ctx: &serde_json::Value) -> Result<String, RenderError> {
    check(file, source)?;
    let mut hb = registry();
    hb.register_template_string(file, source)
        .map_err(|t| RenderError::Template {
            file: file.to_string(),
            line: t.pos().map_or(0, |(l, _)| l),
            message: t.reason().to_string(),
        })?;
    let mut out = bounds::BoundedOutput::new(bounds::MAX_OUTPUT_BYTES);
    let rendered = hb.render_to_write(file, ctx, &mut out);
    if out.exceeded {
        return Err(RenderError::Bound {
            file: file.to_string(),
            line: 0,
            message: format!(
                "the rendered file is larger than {} bytes",
                bounds::MAX_OUTPUT_BYTES
            ),
        });
    }
    rendered.map_err(|e| convert(file, &e))?;
    String::from_utf8(out.buf).map_err(|_| RenderError::Template {
        file: file.to_string(),
        line: 0,
        message: "the rendered text is not UTF-8".into(),
    })
}
