//! Proton's Jinja parameter filters.
//!
//! * `proton_cfn_sanitize`: fails the render unless the value matches `^[a-zA-Z0-9_-]*$` or
//!   is an ARN; returns it unchanged.
//! * `proton_cfn_ecs_task_definition_formatted_env_vars(raw=True)`: outputs (a dict) as an
//!   ECS `Environment` list of `Name`/`Value` pairs.
//! * `proton_cfn_lambda_function_formatted_env_vars(raw=True)`: outputs as a Lambda
//!   `Variables` mapping.
//! * `proton_cfn_iam_policy_arns`: the outputs whose values are IAM managed policy ARNs, as a
//!   list.
//!
//! The structured filters return YAML blocks whose continuation lines are indented to the
//! column where the expression stands, so they can be dropped into any block position, as
//! in Proton's documentation. Values are emitted as double-quoted scalars (Proton wrote them
//! unquoted; quoted is the same YAML string for ordinary values), so an output value can
//! never add structure. With `raw=False`, values must match `^[a-zA-Z0-9_-]*$`, as in Proton.

use std::sync::LazyLock;

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind};
use regex::Regex;

use super::guard::{INDENT_CLOSE, INDENT_OPEN};

static SAFE_VALUE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new("^[a-zA-Z0-9_-]*$").ok());
/// Proton's documented policy-ARN test (a prefix match).
static POLICY_ARN: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"^arn:[a-zA-Z-]+:iam::\d{12}:policy/").ok());
/// An ARN as the Proton API shapes define it (the region may be empty).
static ARN: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"^arn:(aws|aws-cn|aws-us-gov):[a-zA-Z0-9-]+:[a-zA-Z0-9-]*:\d{12}:([\w+=,.@-]+[/:])*[\w+=,.@-]+$",
    )
    .ok()
});

/// Registers the four Proton filters.
pub fn register_jinja(env: &mut Environment<'static>) {
    env.add_filter("proton_cfn_sanitize", sanitize_filter);
    env.add_filter(
        "proton_cfn_ecs_task_definition_formatted_env_vars",
        ecs_env_vars,
    );
    env.add_filter(
        "proton_cfn_lambda_function_formatted_env_vars",
        lambda_env_vars,
    );
    env.add_filter("proton_cfn_iam_policy_arns", iam_policy_arns);
}

/// A value [`sanitize`] refused. The message is Proton's own text, quoting the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Illegal character(s) detected in {value:?}. Must match regex ^[a-zA-Z0-9_-]*$ or be a valid ARN"
)]
pub struct SanitizeError {
    /// The value as given to the filter.
    pub value: String,
}

/// Proton's `proton_cfn_sanitize`: the value unchanged when it matches `^[a-zA-Z0-9_-]*$`
/// or is an ARN.
///
/// # Errors
///
/// A [`SanitizeError`] naming the value otherwise.
pub fn sanitize(s: &str) -> Result<String, SanitizeError> {
    let ok = SAFE_VALUE.as_ref().is_some_and(|re| re.is_match(s))
        || ARN.as_ref().is_some_and(|re| re.is_match(s));
    if ok {
        Ok(s.to_string())
    } else {
        Err(SanitizeError {
            value: s.to_string(),
        })
    }
}

fn sanitize_filter(value: &Value) -> Result<String, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    let s = value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_string);
    sanitize(&s).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))
}

/// A string as a YAML double-quoted scalar (JSON escaping is valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn pairs(value: &Value, filter: &str) -> Result<Vec<(String, String)>, Error> {
    if value.is_undefined() {
        return Err(Error::from(ErrorKind::UndefinedError));
    }
    if value.is_none() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    let keys = value.try_iter().map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter} expects a mapping of outputs, e.g. service_instance.components.default.outputs"),
        )
    })?;
    for key in keys {
        let item = value.get_item(&key)?;
        let text = match item.as_str() {
            Some(s) => s.to_string(),
            None => item.to_string(),
        };
        out.push((key.to_string(), text));
    }
    Ok(out)
}

fn validate_raw(pairs: &[(String, String)], kwargs: &Kwargs, filter: &str) -> Result<(), Error> {
    let raw: Option<bool> = kwargs.get("raw")?;
    kwargs.assert_all_used()?;
    if raw.unwrap_or(true) {
        return Ok(());
    }
    for (k, v) in pairs {
        if !SAFE_VALUE.as_ref().is_some_and(|re| re.is_match(v)) {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "{filter}: value of output {k:?} does not match ^[a-zA-Z0-9_-]*$ (raw=False)"
                ),
            ));
        }
    }
    Ok(())
}

// Callers build the lines for this call only; taking them by value moves, not copies.
#[allow(clippy::needless_pass_by_value)]
fn block(lines: Vec<String>) -> Value {
    if lines.is_empty() {
        return Value::from_safe_string(String::new());
    }
    Value::from_safe_string(format!("{INDENT_OPEN}{}{INDENT_CLOSE}", lines.join("\n")))
}

// minijinja hands filters their keyword arguments by value.
#[allow(clippy::needless_pass_by_value)]
fn ecs_env_vars(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let filter = "proton_cfn_ecs_task_definition_formatted_env_vars";
    let pairs = pairs(value, filter)?;
    validate_raw(&pairs, &kwargs, filter)?;
    Ok(block(
        pairs
            .iter()
            .map(|(k, v)| format!("- Name: {}\n  Value: {}", quoted(k), quoted(v)))
            .collect(),
    ))
}

// minijinja hands filters their keyword arguments by value.
#[allow(clippy::needless_pass_by_value)]
fn lambda_env_vars(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let filter = "proton_cfn_lambda_function_formatted_env_vars";
    let pairs = pairs(value, filter)?;
    validate_raw(&pairs, &kwargs, filter)?;
    Ok(block(
        pairs
            .iter()
            .map(|(k, v)| format!("{}: {}", quoted(k), quoted(v)))
            .collect(),
    ))
}

fn iam_policy_arns(value: &Value) -> Result<Value, Error> {
    let pairs = pairs(value, "proton_cfn_iam_policy_arns")?;
    Ok(block(
        pairs
            .iter()
            .filter(|(_, v)| POLICY_ARN.as_ref().is_some_and(|re| re.is_match(v)))
            .map(|(_, v)| format!("- {}", quoted(v)))
            .collect(),
    ))
}
