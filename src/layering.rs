//! Checks the crate's layering from its source: no two modules may import each other, even
//! through others (a module cycle), and `ARCHITECTURE.md` names only modules that exist.
//!
//! Edges are read from the text of each file: every `crate::a` path makes the file's
//! top-level module depend on `a`, and every `super::x` or `crate::m::x` path inside module
//! `m` makes the file's child of `m` depend on its sibling `x`. Test code (`tests.rs` files
//! and everything after a `#[cfg(test)]` line) is left out: tests may reach anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module, as its path from the crate root (`["daemon", "reconcile"]`).
type ModPath = Vec<String>;

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn module_of(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts
}

/// The file's text without test code and without line comments.
fn code_of(text: &str) -> String {
    let end = text.find("#[cfg(test)]").unwrap_or(text.len());
    text[..end]
        .lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths after each `prefix` in `code` (`crate::a::b` gives `["a", "b"]`), including
/// those in a `use crate::{a, b::c}` group.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                out.push(ident_path(item.trim()));
            }
        } else {
            out.push(ident_path(rest));
        }
    }
    out.retain(|p| !p.is_empty());
    out
}

/// The comma-separated items of a `{...}` group whose opening brace was just passed,
/// nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

fn ident_path(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        parts.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    parts
}

/// Dependency edges between modules of the crate under `src`.
fn edges(src: &Path) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut files = Vec::new();
    source_files(src, &mut files);
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for file in &files {
        let me = module_of(src, file);
        if me.is_empty() || me.last().is_some_and(|m| m == "tests") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap_or_default());
        let mut targets: Vec<ModPath> = paths_after(&code, "crate::");
        // `super::x` from a child of `m` (a file `m/child.rs`) names `m::x`.
        let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
        for p in paths_after(&code, "super::") {
            let mut full = parent.clone();
            full.extend(p);
            targets.push(full);
        }
        for target in targets {
            // Across top-level modules.
            if target[0] != me[0] && modules.contains(&target[..1]) {
                graph
                    .entry(me[..1].to_vec())
                    .or_default()
                    .insert(target[..1].to_vec());
            }
            // Between siblings inside one top-level module.
            if me.len() >= 2 && target.len() >= 2 && target[0] == me[0] && target[1] != me[1] {
                let sibling = target[..2].to_vec();
                if modules.contains(&sibling) {
                    graph.entry(me[..2].to_vec()).or_default().insert(sibling);
                }
            }
        }
    }
    graph
}

/// Functions longer than `max` lines in the non-test code of the files under `dir`, as
/// `file:line name (N lines)`. Counts from the `fn` line to its closing brace.
fn long_functions(dir: &Path, max: usize) -> Vec<String> {
    let mut files = Vec::new();
    source_files(dir, &mut files);
    let mut out = Vec::new();
    for file in files {
        if file.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let code = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
        let lines: Vec<&str> = code.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let t = lines[i].trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
                "pub(crate) async fn ",
                "pub(super) fn ",
                "pub(super) async fn ",
                "const fn ",
                "pub const fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn {
                i += 1;
                continue;
            }
            let name = t.split("fn ").nth(1).unwrap_or_default();
            let name: String = name
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            // Find the body's opening brace (a declaration without a body ends in ';').
            let mut j = i;
            let mut depth = 0usize;
            let mut opened = false;
            'scan: while j < lines.len() {
                for c in lines[j].split("//").next().unwrap_or_default().chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => {
                            depth = depth.saturating_sub(1);
                            if opened && depth == 0 {
                                break 'scan;
                            }
                        }
                        ';' if !opened => break 'scan,
                        _ => {}
                    }
                }
                j += 1;
            }
            let len = j + 1 - i;
            if opened && len > max {
                out.push(format!("{}:{} {name} ({len} lines)", file.display(), i + 1));
            }
            i += 1;
        }
    }
    out
}

/// The module cycles of `graph`, each as the modules on it.
fn cycles(graph: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in graph.keys() {
        // Paths from `start` back to itself, breadth first, shortest first.
        let mut queue = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = (!queue.is_empty()).then(|| queue.remove(0)) {
            let last = path.last().cloned().unwrap_or_default();
            for next in graph.get(&last).into_iter().flatten() {
                if next == start {
                    let mut names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    let min = names
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| (*n).clone())
                        .map_or(0, |(i, _)| i);
                    names.rotate_left(min);
                    found.insert(names);
                } else if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    queue.push(p);
                }
            }
        }
    }
    found.into_iter().collect()
}

mod tests {
    use super::*;

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    #[test]
    fn no_module_imports_itself_through_others() {
        let graph = edges(&src());
        assert!(
            graph.contains_key(&vec!["daemon".to_string()]),
            "the scan found no edges: {graph:?}"
        );
        let cycles = cycles(&graph);
        assert!(
            cycles.is_empty(),
            "module cycles (each module imports the next, the last the first):\n{}",
            cycles
                .iter()
                .map(|c| format!("  {}", c.join(" -> ")))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    #[test]
    fn no_function_in_the_policy_core_is_over_100_lines() {
        let mut long = Vec::new();
        for dir in [
            "cli",
            "desired",
            "daemon",
            "plan",
            "plan.rs",
            "provision",
            "evaluate.rs",
        ] {
            long.extend(long_functions(&src().join(dir), 100));
        }
        assert!(
            long.is_empty(),
            "split these functions:\n  {}",
            long.join("\n  ")
        );
    }

    #[test]
    fn the_checker_sees_a_cycle() {
        let m = |s: &str| s.split("::").map(str::to_string).collect::<ModPath>();
        let graph = BTreeMap::from([
            (m("a"), BTreeSet::from([m("b")])),
            (m("b"), BTreeSet::from([m("c")])),
            (m("c"), BTreeSet::from([m("a")])),
            (m("d"), BTreeSet::from([m("a")])),
        ]);
        assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
        assert_eq!(
            paths_after("use crate::{plan::{self}, state};", "crate::"),
            vec![vec!["plan".to_string()], vec!["state".to_string()]]
        );
    }

    #[test]
    fn architecture_md_names_only_modules_that_exist() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md at the project root");
        let mut missing = Vec::new();
        // Module paths are written as `src/...` in the code map.
        for (i, _) in text.match_indices("`src/") {
            let rest = &text[i + 1..];
            let path = rest.split('`').next().unwrap_or_default();
            if !root.join(path).exists() {
                missing.push(path.to_string());
            }
        }
        assert!(
            missing.is_empty(),
            "ARCHITECTURE.md names missing files: {missing:?}"
        );
        assert!(text.contains("`src/"), "ARCHITECTURE.md has no code map");
    }
}
