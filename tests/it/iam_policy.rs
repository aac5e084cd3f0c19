//! `deploy/iam-policy.json` grants exactly what the code calls: every AWS SDK operation named
//! in `src/` (the operation list is read from the SDK crates this build resolved, so a new
//! call cannot be missed) must be allowed by the policy, and every action the policy grants
//! must be called or listed below with its reason (least privilege).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The SDK crates protond calls, with their IAM service prefix.
const SERVICES: &[(&str, &str)] = &[
    ("aws-sdk-cloudformation", "cloudformation"),
    ("aws-sdk-codepipeline", "codepipeline"),
    ("aws-sdk-s3", "s3"),
    ("aws-sdk-codebuild", "codebuild"),
];

/// Actions granted that no SDK operation of `src/` names, each with why it is needed.
const GRANTED_WITHOUT_A_CALL: &[(&str, &str)] = &[
    (
        "sts:AssumeRole",
        "environments' roles: aws_config::sts::AssumeRoleProvider",
    ),
    (
        "iam:PassRole",
        "CodeBuild runs its project with the configured service role",
    ),
    (
        "s3:ListBucket",
        "GetObject of a missing key answers 404 rather than 403 only with ListBucket",
    ),
];

/// SDK operations whose IAM action is not their own name.
fn action_for(prefix: &str, op: &str) -> String {
    let pascal: String = op
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect();
    match (prefix, pascal.as_str()) {
        ("s3", "HeadObject") => "s3:GetObject".into(),
        ("s3", "ListObjectsV2") => "s3:ListBucket".into(),
        _ => format!("{prefix}:{pascal}"),
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Each SDK crate's operations (its `src/operation/<op>/` folders), from `cargo metadata`.
fn sdk_operations() -> BTreeMap<String, (String, &'static str)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Only this platform's packages: the others' sources need not be downloaded.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let info = Command::new(rustc).arg("-vV").output().expect("rustc -vV");
    let host = String::from_utf8_lossy(&info.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .expect("rustc names its host");
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut ops = BTreeMap::new();
    for (krate, prefix) in SERVICES {
        let pkg = meta["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .find(|p| p["name"] == *krate)
            .unwrap_or_else(|| panic!("{krate} is not resolved"));
        let manifest = PathBuf::from(pkg["manifest_path"].as_str().expect("manifest path"));
        let dir = manifest.parent().expect("crate dir").join("src/operation");
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let e = e.expect("dir entry");
            if e.file_type().expect("file type").is_dir() {
                let op = e.file_name().to_string_lossy().into_owned();
                ops.insert(op.clone(), (action_for(prefix, &op), *krate));
            }
        }
    }
    ops
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read src") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The IAM actions of the SDK operations `src/` calls, with where each is first called.
fn called_actions() -> BTreeMap<String, String> {
    let ops = sdk_operations();
    let call = regex::Regex::new(r"\.\s*([a-z][a-z0-9_]*)\s*\(\s*\)").expect("regex");
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut called = BTreeMap::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read source");
        let text = text.split("\n#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for c in call.captures_iter(line) {
                if let Some((action, _)) = ops.get(&c[1]) {
                    called.entry(action.clone()).or_insert_with(|| {
                        format!(
                            "{}:{}",
                            f.strip_prefix(root()).unwrap_or(&f).display(),
                            n + 1
                        )
                    });
                }
            }
        }
    }
    called
}

fn granted_actions() -> BTreeSet<String> {
    let path = root().join("deploy/iam-policy.json");
    let text = std::fs::read_to_string(&path).expect("read the policy");
    let policy: serde_json::Value = serde_json::from_str(&text).expect("policy JSON");
    let mut out = BTreeSet::new();
    for s in policy["Statement"].as_array().expect("statements") {
        assert_eq!(s["Effect"], "Allow", "only Allow statements: {s}");
        match &s["Action"] {
            serde_json::Value::String(a) => {
                out.insert(a.clone());
            }
            serde_json::Value::Array(a) => {
                out.extend(a.iter().map(|x| x.as_str().expect("action").to_string()));
            }
            other => panic!("Action must be a string or list: {other}"),
        }
    }
    out
}

#[test]
fn the_policy_grants_every_sdk_operation_the_code_calls_and_nothing_else() {
    let called = called_actions();
    let granted = granted_actions();
    // A sanity floor: the scan must see the calls every deployment makes.
    for must in [
        "cloudformation:CreateStack",
        "cloudformation:DescribeStacks",
        "codepipeline:StartPipelineExecution",
    ] {
        assert!(
            called.contains_key(must),
            "the scan missed {must}: {called:?}"
        );
    }
    assert!(
        granted.iter().all(|a| !a.contains('*')),
        "the policy names each action (no wildcards): {granted:?}"
    );
    let missing: Vec<String> = called
        .iter()
        .filter(|(a, _)| !granted.contains(*a))
        .map(|(a, at)| format!("{a} (called at {at})"))
        .collect();
    assert!(
        missing.is_empty(),
        "deploy/iam-policy.json does not grant:\n  {}\nadd each to the statement of its feature",
        missing.join("\n  ")
    );
    let justified: BTreeSet<&str> = GRANTED_WITHOUT_A_CALL.iter().map(|(a, _)| *a).collect();
    let unused: Vec<&String> = granted
        .iter()
        .filter(|a| !called.contains_key(*a) && !justified.contains(a.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "deploy/iam-policy.json grants actions no code calls (least privilege): {unused:?}"
    );
    println!("iam policy: {} actions called and granted", called.len());
}
