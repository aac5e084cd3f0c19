//! Handlebars rendering with the same context as Jinja: strict mode (undefined variables
//! are errors naming the variable), no HTML escaping, and every `{{value}}` marked for the
//! injection guard. Triple-stash `{{{value}}}` output is unmarked, like Jinja's `safe`.
//! Handlebars has no fuel: a render is bounded by its output ([`bounds::MAX_OUTPUT_BYTES`]);
//! its loops only walk the context's own lists.

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

/// Compiles a template to check its syntax.
pub fn check(file: &str, source: &str) -> Result<(), RenderError> {
    handlebars::Template::compile(source)
        .map(|_| ())
        .map_err(|t| RenderError::Template {
            file: file.to_string(),
            line: t.pos().map_or(0, |(l, _)| l),
            message: t.reason().to_string(),
        })
}

/// Renders with every printed value marked (see [`guard`]).
pub fn render(file: &str, source: &str, ctx: &serde_json::Value) -> Result<String, RenderError> {
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
