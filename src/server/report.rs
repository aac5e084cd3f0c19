//! `GET /api/v1/report` (the fleet report as JSON, the document `protond report --output
//! json` prints) and the status page's "Versions" section, both from `crate::report`'s one
//! builder. Reads the store; never writes it.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::page::esc;
use super::{App, store_error};
use crate::report::Report;

/// `GET /api/v1/report`: the fleet report.
pub(super) async fn report(State(app): State<App>) -> Response {
    match crate::report::read(&app.ctx.store).await {
        Ok(inputs) => Json(crate::report::build(&inputs)).into_response(),
        Err(e) => store_error(&e),
    }
}

/// The status page's versions table: template, version, resources, how far behind.
#[must_use]
pub(super) fn versions_section(report: &Report) -> String {
    let mut out = String::from("<h2>Versions</h2>\n");
    if report.templates.is_empty() {
        out.push_str("<p class=\"muted\">No versioned resources recorded.</p>\n");
        return out;
    }
    out.push_str(
        "<table><thead><tr><th>Template</th><th>Version</th><th>Resources</th><th>Behind</th></tr></thead><tbody>\n",
    );
    for t in &report.templates {
        for g in &t.versions {
            let (class, behind) = match (g.majors_behind, g.minors_behind) {
                (0, 0) => ("ok", "up to date".to_string()),
                (0, m) => ("warn", format!("{m} minor{}", plural(m))),
                (n, 0) => ("warn", format!("{n} major{}", plural(n))),
                (n, m) => (
                    "warn",
                    format!("{n} major{}, {m} minor{}", plural(n), plural(m)),
                ),
            };
            let _ = writeln!(
                out,
                "<tr><td>{} <span class=\"muted\">{}</span></td><td>{}</td><td>{}</td><td class=\"{class}\">{behind}</td></tr>",
                esc(&t.template),
                esc(&t.kind),
                g.version,
                g.resources,
            );
        }
    }
    out.push_str("</tbody></table>\n");
    out
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Version;
    use crate::report::{TemplateReport, VersionGroup};

    #[test]
    fn the_versions_table_has_a_row_per_template_version() {
        let group = |minor, resources, minors_behind, majors_behind| VersionGroup {
            version: Version { major: 1, minor },
            resources,
            registered: true,
            newest_minor: Some(Version { major: 1, minor: 1 }),
            minors_behind,
            majors_behind,
        };
        let report = Report {
            templates: vec![TemplateReport {
                template: "env<x>".into(),
                kind: "environment".into(),
                resources: 3,
                newest: Some(Version { major: 2, minor: 0 }),
                newest_major: Some(2),
                versions: vec![group(1, 2, 0, 1), group(0, 1, 1, 1)],
                oldest: None,
                max_minors_behind: 1,
                max_majors_behind: 1,
                pull_requests_waiting: 0,
            }],
            ..Report::default()
        };
        let html = versions_section(&report);
        assert!(html.contains("env&lt;x&gt;"), "{html}");
        assert!(
            html.contains("<td>1.1</td><td>2</td><td class=\"warn\">1 major</td>"),
            "{html}"
        );
        assert!(
            html.contains("<td>1.0</td><td>1</td><td class=\"warn\">1 major, 1 minor</td>"),
            "{html}"
        );
        assert!(versions_section(&Report::default()).contains("No versioned resources"));
    }
}
