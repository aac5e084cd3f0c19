//! Jinja rendering with minijinja, configured to behave like Proton's Jinja: Proton's
//! filters, undefined values that fail when printed (but are false in `if`), no HTML
//! escaping, and every printed value marked for the injection guard.

use std::sync::OnceLock;

use minijinja::value::Value as JValue;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::{RenderError, filters, guard};

/// Work budget of one render (instructions and bytes / 64): bounds time and memory.
const FUEL: u64 = 20_000_000;

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(64);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .unwrap_or_default(),
        );
        env.set_formatter(|out, state, value| {
            if value.is_safe() || value.is_undefined() || value.is_none() {
                return minijinja::escape_formatter(out, state, value);
            }
            let mut marked = String::new();
            guard::mark(&mut marked, &value.to_string());
            out.write_str(&marked).map_err(Error::from)
        });
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        filters::register_jinja(&mut env);
        env
    })
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

fn convert(file: &str, source: &str, e: &Error) -> RenderError {
    let line = e
        .range()
        .map(|r| line_of(source, r.start))
        .or(e.line())
        .unwrap_or(0);
    if e.kind() == ErrorKind::UndefinedError {
        let variable = e
            .range()
            .and_then(|r| source.get(r))
            .map(|s| {
                s.trim()
                    .trim_start_matches("{{")
                    .trim_end_matches("}}")
                    .trim()
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| e.detail().unwrap_or("unknown").to_string());
        return RenderError::Undefined {
            file: file.to_string(),
            line,
            variable,
        };
    }
    let message = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    RenderError::Template {
        file: file.to_string(),
        line,
        message,
    }
}

/// Compiles a template to check its syntax.
pub fn check(file: &str, source: &str) -> Result<(), RenderError> {
    env()
        .template_from_named_str(file, source)
        .map(|_| ())
        .map_err(|e| convert(file, source, &e))
}

/// Renders with every printed value marked (see [`guard`]).
pub fn render(file: &str, source: &str, ctx: &serde_json::Value) -> Result<String, RenderError> {
    let ctx = JValue::from(minijinja::value::Serde(ctx));
    env()
        .render_named_str(file, source, ctx)
        .map_err(|e| convert(file, source, &e))
}
