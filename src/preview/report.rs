//! The preview for people: the terminal table ([`table`]) and the Markdown report for a
//! pull-request comment ([`markdown`]: summary, groups, replacement warnings in bold, each
//! group's diff in a collapsed `<details>` block, bounded in size). Pure text; it must never
//! decide anything the preview did not.

use std::fmt::Write as _;

use super::{Group, Moving, Preview, SchemaImpact, cut};

/// Longest diff shown per group in the Markdown report, in bytes.
pub const MAX_GROUP_DIFF_BYTES: usize = 6_000;

/// Longest resource list shown per group before "and N more".
const MAX_LISTED: usize = 10;

/// The candidate line: `worker-svc v1.1 (bundle folder ./worker-svc/v1)`.
fn headline(p: &Preview) -> String {
    let c = &p.candidate;
    let commit = c
        .commit
        .as_deref()
        .map(|id| format!(", commit {}", &id[..id.len().min(12)]))
        .unwrap_or_default();
    format!(
        "{} v{} ({} {}{commit})",
        c.template, c.version, c.read_as, c.source
    )
}

/// `3 resources would move: 2 updated, 1 created; 1 group replaces or removes resources`.
fn totals(p: &Preview) -> String {
    let creates = p.resources.iter().filter(|r| r.creates()).count();
    let destroying = p.groups.iter().filter(|g| g.destroys).count();
    let mut s = format!(
        "{} resource(s) would move to it: {} updated, {creates} created",
        p.resources.len(),
        p.resources.len() - creates
    );
    if destroying > 0 {
        let _ = write!(s, "; {destroying} group(s) replace or remove resources");
    }
    s
}

/// The resources of a group, the first few and how many more.
fn listed(g: &Group) -> String {
    let names: Vec<&str> = g
        .resources
        .iter()
        .take(MAX_LISTED)
        .map(String::as_str)
        .collect();
    let more = g.resources.len().saturating_sub(MAX_LISTED);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!("{}{more}", names.join(", "))
}

/// `dev 2, prod 1`.
fn stage_line(g: &Group) -> String {
    g.stages
        .iter()
        .map(|s| format!("{} {}", s.stage, s.count))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The schema section's lines (empty when the schema changes nothing).
fn schema_lines(s: &SchemaImpact) -> Vec<String> {
    let mut out = Vec::new();
    for i in &s.invalid {
        out.push(format!(
            "invalid under the candidate: {}: {}",
            i.id, i.error
        ));
    }
    for n in &s.new_required {
        out.push(format!("new required {} input: {}", n.kind, n.input));
    }
    for d in &s.changed_defaults {
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .map_or_else(|| "none".to_string(), ToString::to_string)
        };
        out.push(format!(
            "default of {} input {} changes from {} to {}; {} moving resource(s) do not set it{}",
            d.kind,
            d.input,
            show(&d.old),
            show(&d.new),
            d.resources.len(),
            if d.resources.is_empty() {
                String::new()
            } else {
                format!(" ({})", d.resources.join(", "))
            }
        ));
    }
    out
}

/// The terminal table.
#[must_use]
pub fn table(p: &Preview) -> String {
    let mut s = format!("Preview of {}\n", headline(p));
    if let Some(why) = &p.rejected {
        let _ = writeln!(
            s,
            "REJECTED: the candidate would not register as a release:"
        );
        for line in why.lines() {
            let _ = writeln!(s, "  {line}");
        }
        return s;
    }
    let _ = writeln!(s, "{}\n", totals(p));
    for g in &p.groups {
        let warn = if g.destroys {
            "  !! REPLACES OR REMOVES"
        } else {
            ""
        };
        let verb = if g.creates { "created" } else { "updated" };
        let _ = writeln!(
            s,
            "{} {verb}: {}{warn}\n    stages: {}\n    {}",
            g.count,
            g.summary,
            stage_line(g),
            listed(g)
        );
    }
    if !p.stages.is_empty() {
        let _ = writeln!(s, "\nBy stage (rollout order):");
        for st in &p.stages {
            let _ = writeln!(s, "  {}: {}", st.stage, st.resources.join(", "));
        }
    }
    let schema = schema_lines(&p.schema);
    if !schema.is_empty() {
        let _ = writeln!(s, "\nSchema impact:");
        for l in schema {
            let _ = writeln!(s, "  {l}");
        }
    }
    change_set_lines(p, &mut s, "  ");
    s
}

/// The change sets' verdicts, one line each (and their details).
fn change_set_lines(p: &Preview, s: &mut String, indent: &str) {
    if p.change_sets.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nChange sets (CloudFormation's own answer):");
    for v in &p.change_sets {
        let _ = writeln!(s, "{indent}{}: {}", v.id, v.status);
        for d in &v.details {
            let _ = writeln!(s, "{indent}  {d}");
        }
    }
}

/// The diff of a group's first resource, all its documents, bounded.
fn group_diff(g: &Group, resources: &[Moving]) -> String {
    let Some(first) = resources
        .iter()
        .find(|r| g.resources.first() == Some(&r.id))
    else {
        return String::new();
    };
    let text: String = first.documents.iter().map(|d| d.diff.as_str()).collect();
    cut(&text, MAX_GROUP_DIFF_BYTES)
}

/// A code fence longer than any run of backticks in `text`, so that the text cannot close it.
pub(super) fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// The Markdown report, at most `max_bytes` long (cut with a note past that).
#[must_use]
pub fn markdown(p: &Preview, max_bytes: usize) -> String {
    let mut s = format!("### protond preview: {}\n\n", headline(p));
    if let Some(why) = &p.rejected {
        let _ = writeln!(
            s,
            "**Rejected**: this candidate would not register as a release.\n\n```\n{why}\n```"
        );
        return cut(&s, max_bytes);
    }
    let _ = writeln!(s, "{}.\n", totals(p));
    let _ = writeln!(s, "| resources | stages | impact |\n|---:|---|---|");
    for g in &p.groups {
        let impact = if g.destroys {
            format!("**{}**", g.summary)
        } else {
            g.summary.clone()
        };
        let verb = if g.creates { " (created)" } else { "" };
        let _ = writeln!(s, "| {}{verb} | {} | {impact} |", g.count, stage_line(g));
    }
    for g in p.groups.iter().filter(|g| g.destroys) {
        let _ = writeln!(
            s,
            "\n> **Warning: replaces or removes resources in {} resource(s)**: {}",
            g.count, g.summary
        );
    }
    for (n, g) in p.groups.iter().enumerate() {
        let diff = group_diff(g, &p.resources);
        let fence = fence_for(&diff);
        let _ = write!(
            s,
            "\n<details><summary>Group {}: {} resource(s): {}</summary>\n\n{}\n\n{fence}diff\n{diff}{fence}\n</details>\n",
            n + 1,
            g.count,
            g.summary,
            listed(g),
        );
    }
    let schema = schema_lines(&p.schema);
    if !schema.is_empty() {
        let _ = writeln!(s, "\n#### Schema impact\n");
        for l in schema {
            let _ = writeln!(s, "- {l}");
        }
    }
    change_set_lines(p, &mut s, "- ");
    cut(&s, max_bytes)
}
