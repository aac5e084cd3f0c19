//! The two text formats `/metrics` serves, chosen by the scraper's `Accept` header:
//! `OpenMetrics` 1.0 (what the metrics library writes) for a scraper that asks for it, and the
//! Prometheus text format 0.0.4 for everything else (`curl`, older scrapers, `promtool check
//! metrics`). Pure text conversion; knows nothing of which metrics exist.

/// `Content-Type` of the `OpenMetrics` text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for `OpenMetrics` (Prometheus sends
/// `application/openmetrics-text;version=1.0.0,…` first when it can parse it).
#[must_use]
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut fields = part.split(';').map(str::trim);
            let media = fields.next().unwrap_or("");
            let refused = fields.any(|f| f.replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// Rewrites `OpenMetrics` text as Prometheus text 0.0.4: counters are declared under their
/// sample name (`_total`), `_created` samples, `# UNIT` and `# EOF` lines are dropped, and
/// info metrics become gauges; samples and their labels are unchanged.
#[must_use]
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // Families declared as counters or infos: their metadata is renamed.
    let mut renamed: std::collections::BTreeMap<&str, (&str, &str)> =
        std::collections::BTreeMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.splitn(2, ' ');
            let (name, kind) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
            match kind {
                "counter" => {
                    renamed.insert(name, ("_total", "counter"));
                }
                "info" => {
                    renamed.insert(name, ("_info", "gauge"));
                }
                _ => {}
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            match renamed.get(name) {
                Some((suffix, kind)) if prefix == "# TYPE " => {
                    out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
                }
                Some((suffix, _)) => {
                    out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
                }
                None => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        if sample.ends_with("_created") {
            continue;
        }
        // (protond records no exemplars, so no sample carries one to remove.)
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_accept_header() {
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0, text/plain"
        )));
    }

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP protond_cycles Reconcile cycles.\n\
                  # TYPE protond_cycles counter\n\
                  protond_cycles_total 3\n\
                  protond_cycles_created 1700000000.0\n\
                  # HELP protond_seconds Cycle time.\n\
                  # TYPE protond_seconds histogram\n\
                  # UNIT protond_seconds seconds\n\
                  protond_seconds_bucket{le=\"+Inf\"} 3\n\
                  protond_seconds_sum 0.3\n\
                  protond_seconds_count 3\n\
                  # HELP protond_build Build.\n\
                  # TYPE protond_build info\n\
                  protond_build_info{version=\"1\"} 1\n\
                  # HELP protond_in_flight Running.\n\
                  # TYPE protond_in_flight gauge\n\
                  protond_in_flight{kind=\"a b\"} 0\n\
                  # EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP protond_cycles_total Reconcile cycles.\n\
             # TYPE protond_cycles_total counter\n\
             protond_cycles_total 3\n\
             # HELP protond_seconds Cycle time.\n\
             # TYPE protond_seconds histogram\n\
             protond_seconds_bucket{le=\"+Inf\"} 3\n\
             protond_seconds_sum 0.3\n\
             protond_seconds_count 3\n\
             # HELP protond_build_info Build.\n\
             # TYPE protond_build_info gauge\n\
             protond_build_info{version=\"1\"} 1\n\
             # HELP protond_in_flight Running.\n\
             # TYPE protond_in_flight gauge\n\
             protond_in_flight{kind=\"a b\"} 0\n"
        );
    }
}
