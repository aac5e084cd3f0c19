//! Jinja rendering with minijinja, configured to behave like Proton's Jinja (Python
//! Jinja2): Proton's filters, Jinja2's builtins where minijinja's differ ([`super::jinja2`]),
//! undefined values that fail when printed or filtered (but are false in `if`), no HTML
//! escaping, and every printed value marked for the injection guard. Every render runs
//! within the bounds of [`bounds`] (fuel, output size, amplifying filters) and the time
//! budget of [`deadline`].
//!
//! Compiled templates are cached ([`compiled`]): a release's files are compiled once, not
//! on every render. The cache is keyed by the file's name and its full source (compared, not
//! only hashed) and bounded by the total bytes of the sources it holds ([`CACHE_BYTES`]):
//! sources are attacker-controlled, so past the bound the cache starts afresh.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use minijinja::value::Value as JValue;
use minijinja::{AutoEscape, Environment, Error, ErrorKind, UndefinedBehavior};

use super::{RenderError, bounds, deadline, filters, guard};

fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_fuel(Some(bounds::FUEL));
        env.set_recursion_limit(64);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .keep_trailing_newline(true)
                .build()
                .unwrap_or_default(),
        );
        // Printed values are streamed into the (bounded, fuel-charged) output between their
        // markers: a huge value is never copied whole first.
        env.set_formatter(|out, state, value| {
            if value.is_safe() || value.is_undefined() || value.is_none() {
                return minijinja::escape_formatter(out, state, value);
            }
            let least = bounds::min_print_len(value, bounds::MAX_OUTPUT_BYTES as u64);
            if least > bounds::MAX_OUTPUT_BYTES as u64 {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "{}: a printed value is larger than {} bytes",
                        bounds::MARK,
                        bounds::MAX_OUTPUT_BYTES
                    ),
                ));
            }
            out.write_char(guard::OPEN).map_err(Error::from)?;
            match value.as_str() {
                Some(s) => out.write_str(s),
                // Floats as Python prints them (`1e+20`, not minijinja's `100000000000000000000.0`).
                None if value.kind() == minijinja::value::ValueKind::Number
                    && !value.is_integer() =>
                {
                    out.write_str(&super::jinja2::text_of(value))
                }
                // Lists and mappings as Python prints them, item by item.
                None if matches!(
                    value.kind(),
                    minijinja::value::ValueKind::Seq | minijinja::value::ValueKind::Map
                ) && value.as_object().is_some_and(|o| {
                    matches!(
                        o.repr(),
                        minijinja::value::ObjectRepr::Seq | minijinja::value::ObjectRepr::Map
                    )
                }) =>
                {
                    super::jinja2::text::write_repr(out, value)
                }
                None => write!(out, "{value}"),
            }
            .map_err(Error::from)?;
            out.write_char(guard::CLOSE).map_err(Error::from)
        });
        minijinja_contrib::add_to_environment(&mut env);
        bounds::register(&mut env);
        filters::register_jinja(&mut env);
        super::jinja2::register(&mut env);
        env
    })
}

/// Total bytes of template source the compiled-template cache may hold (names included).
pub const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// One cached template: an environment holding only it, compiled once.
struct Cached {
    name: Arc<str>,
    source: Arc<str>,
    env: Arc<Environment<'static>>,
    /// [`deadline::can_build_lazy_sequences`] of the source, found once.
    lazy: bool,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u64, Vec<Cached>>,
    bytes: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn cache_key(file: &str, source: &str) -> u64 {
    // Seeded once per process: equal names and sources, equal keys; entries are still
    // compared whole.
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(Default::default).hash_one((file, source))
}

fn cached(key: u64, file: &str, source: &str) -> Option<Arc<Environment<'static>>> {
    cached_entry(key, file, source).map(|(env, _)| env)
}

/// The cached environment of `source` compiled as `file`, and whether the source can build
/// lazy sequences.
fn cached_entry(key: u64, file: &str, source: &str) -> Option<(Arc<Environment<'static>>, bool)> {
    let guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    guard
        .as_ref()?
        .entries
        .get(&key)?
        .iter()
        .find(|c| &*c.name == file && &*c.source == source)
        .map(|c| (Arc::clone(&c.env), c.lazy))
}

/// The environment holding `source` compiled under the name `file`: from the cache, or
/// compiled now and cached (compile errors are not cached). The caller holds no lock while
/// compiling.
fn compiled(file: &str, source: &str) -> Result<Arc<Environment<'static>>, Error> {
    let key = cache_key(file, source);
    if let Some(env) = cached(key, file, source) {
        return Ok(env);
    }
    let mut fresh = env().clone();
    fresh.add_template_owned(file.to_owned(), source.to_owned())?;
    let fresh = Arc::new(fresh);
    let mut guard = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    insert(
        guard.get_or_insert_with(Cache::default),
        key,
        file,
        source,
        &fresh,
        CACHE_BYTES,
    );
    Ok(fresh)
}

/// Caches `env` (holding `source` compiled as `file`) unless it is there; a source larger
/// than `cap` is not cached, and a cache that would grow past `cap` starts afresh.
fn insert(
    cache: &mut Cache,
    key: u64,
    file: &str,
    source: &str,
    env: &Arc<Environment<'static>>,
    cap: usize,
) {
    let size = file.len() + source.len();
    let present = |cache: &Cache| {
        cache.entries.get(&key).is_some_and(|slot| {
            slot.iter()
                .any(|c| &*c.name == file && &*c.source == source)
        })
    };
    if size > cap || present(cache) {
        return;
    }
    if cache.bytes + size > cap {
        *cache = Cache::default();
    }
    cache.entries.entry(key).or_default().push(Cached {
        name: file.into(),
        source: source.into(),
        env: Arc::clone(env),
        lazy: deadline::can_build_lazy_sequences(source),
    });
    cache.bytes += size;
}

/// Whether `source` is cached compiled as `file` (tests).
#[cfg(test)]
pub(crate) fn is_cached(file: &str, source: &str) -> bool {
    cached(cache_key(file, source), file, source).is_some()
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The span of the value a filter is applied to when `span` is a filter's name after `|`
/// (an undefined value given to a filter fails at the filter), else `span`.
fn filtered_value(source: &str, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
    let Some(before) = source.get(..span.start) else {
        return span;
    };
    let Some(value) = before.trim_end().strip_suffix('|') else {
        return span;
    };
    let value = value.trim_end();
    let start = value
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_alphanumeric() || "_.[]'\"".contains(*c))
        .last()
        .map_or(value.len(), |(i, _)| i);
    start..value.len()
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
            .map(|r| filtered_value(source, r))
            .and_then(|r| source.get(r))
            .map(|s| {
                let s = s.trim().trim_start_matches("{{").trim_end_matches("}}");
                // A filter applied to an undefined value: the value, not the filter call.
                s.split('|').next().unwrap_or(s).trim().to_string()
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
    if bounds::is_bound(e) {
        let message = if e.kind() == ErrorKind::OutOfFuel {
            format!(
                "it used up its fuel ({} units: one per instruction, one per 64 bytes produced)",
                bounds::FUEL
            )
        } else {
            message
        };
        return RenderError::Bound {
            file: file.to_string(),
            line,
            message,
        };
    }
    RenderError::Template {
        file: file.to_string(),
        line,
        message,
    }
}

/// Compiles a template to check its syntax, within the time budget of [`deadline`]:
/// minijinja folds constant expressions while compiling, without fuel, so a compile can take
/// as long as a render.
pub fn check(file: &str, source: &str) -> Result<(), RenderError> {
    if !deadline::can_build_lazy_sequences(source) {
        return compiled(file, source)
            .map(|_| ())
            .map_err(|e| convert(file, source, &e));
    }
    let (owned_file, owned_source) = (file.to_owned(), source.to_owned());
    deadline::run(source, deadline::TIME_BUDGET, move || {
        compiled(&owned_file, &owned_source)
            .map(|_| ())
            .map_err(|e| convert(&owned_file, &owned_source, &e))
    })
    .unwrap_or_else(|overrun| {
        Err(RenderError::Bound {
            file: file.to_string(),
            line: 0,
            message: overrun.to_string(),
        })
    })
}

/// Renders with every printed value marked (see [`guard`]), within [`bounds`] and within the
/// time budget of [`deadline`].
pub fn render(file: &str, source: &str, ctx: &serde_json::Value) -> Result<String, RenderError> {
    render_within(file, source, ctx, deadline::TIME_BUDGET)
}

/// [`render`] with a time budget of `budget`.
pub fn render_within(
    file: &str,
    source: &str,
    ctx: &serde_json::Value,
    budget: std::time::Duration,
) -> Result<String, RenderError> {
    let ctx = JValue::from(minijinja::value::Serde(ctx));
    // A cached template: one cache look-up, and the source is not scanned again.
    if let Some((env, lazy)) = cached_entry(cache_key(file, source), file, source) {
        if !lazy {
            return render_compiled(file, source, &env, ctx);
        }
        let (owned_file, owned_source) = (file.to_owned(), source.to_owned());
        return deadline::run(source, budget, move || {
            render_compiled(&owned_file, &owned_source, &env, ctx)
        })
        .unwrap_or_else(|overrun| {
            Err(RenderError::Bound {
                file: file.to_string(),
                line: 0,
                message: overrun.to_string(),
            })
        });
    }
    if !deadline::can_build_lazy_sequences(source) {
        // Fuel alone bounds its time: no hand-off to a worker (half the render's cost).
        return render_bounded(file, source, ctx);
    }
    let (owned_file, owned_source) = (file.to_owned(), source.to_owned());
    deadline::run(source, budget, move || {
        render_bounded(&owned_file, &owned_source, ctx)
    })
    .unwrap_or_else(|overrun| {
        Err(RenderError::Bound {
            file: file.to_string(),
            line: 0,
            message: overrun.to_string(),
        })
    })
}

/// One render on the current thread, within [`bounds`].
fn render_bounded(file: &str, source: &str, ctx: JValue) -> Result<String, RenderError> {
    let env = compiled(file, source).map_err(|e| convert(file, source, &e))?;
    render_compiled(file, source, &env, ctx)
}

/// One render with the environment holding `source` compiled as `file`, within [`bounds`].
fn render_compiled(
    file: &str,
    source: &str,
    env: &Environment<'static>,
    ctx: JValue,
) -> Result<String, RenderError> {
    let template = env
        .get_template(file)
        .map_err(|e| convert(file, source, &e))?;
    let mut out = bounds::BoundedOutput::new(bounds::MAX_OUTPUT_BYTES);
    let rendered = template.render_captured_to(ctx, &mut out);
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
    if let Err(e) = rendered {
        return Err(convert(file, source, &e));
    }
    String::from_utf8(out.buf).map_err(|_| RenderError::Template {
        file: file.to_string(),
        line: 0,
        message: "the rendered text is not UTF-8".into(),
    })
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_by_source_bytes() {
        let env = Arc::new(env().clone());
        let mut cache = Cache::default();
        // 10 + 20 bytes fit in 40; a third entry of 15 would pass it: the cache starts afresh.
        insert(&mut cache, 1, "a", "123456789", &env, 40);
        insert(&mut cache, 2, "b", "1234567890123456789", &env, 40);
        assert_eq!((cache.entries.len(), cache.bytes), (2, 30));
        // The same entry again is not counted twice.
        insert(&mut cache, 2, "b", "1234567890123456789", &env, 40);
        assert_eq!(cache.bytes, 30);
        insert(&mut cache, 3, "c", "12345678901234", &env, 40);
        assert_eq!((cache.entries.len(), cache.bytes), (1, 15));
        // A source larger than the bound is never cached.
        insert(&mut cache, 4, "d", &"x".repeat(64), &env, 40);
        assert_eq!((cache.entries.len(), cache.bytes), (1, 15));
        // Colliding keys keep both entries, told apart by name and source.
        insert(&mut cache, 3, "e", "other", &env, 40);
        assert_eq!(cache.entries[&3].len(), 2);
    }
}
