//! The deploy files (`deploy/`): the Kubernetes manifests (one replica on `SQLite`, three
//! replicas on `PostgreSQL` in `ha/`, a `StatefulSet` per shard in `sharded/`) parse, validate
//! against the Kubernetes schemas (`kubernetes-validate`, where installed: always in CI),
//! keep the restricted pod settings, and agree with what `protond run` serves and reads
//! (probes, port, `[ha]`, the environment's overrides); the systemd unit is
//! hardened to a `systemd-analyze security` exposure of 2.0 or lower (where systemd-analyze
//! exists); the Containerfile builds from a fixed toolchain with the lock file.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Whether `tool` runs here; in CI (`CI=true`) a missing tool `ci_needs` is a failure.
fn available(tool: &str, probe: &[&str], ci_needs: bool) -> bool {
    let ok = Command::new(tool)
        .args(probe)
        .output()
        .is_ok_and(|o| o.status.success());
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true");
    assert!(
        ok || !ci_needs || !in_ci,
        "{tool} is needed in CI (.ci/run installs it)"
    );
    ok
}

fn yaml(path: &Path) -> serde_yaml::Value {
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("manifest"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Kubernetes manifests parse, their config compiles, their probes and ports match what
/// `protond run` serves, and the pod meets the restricted Pod Security Standard.
#[test]
fn kubernetes_manifests_match_the_daemon_and_are_restricted() {
    let dir = deploy().join("kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut kinds = Vec::new();
    let mut deployment = None;
    let mut account = None;
    for r in kustomization["resources"].as_sequence().expect("resources") {
        let doc = yaml(&dir.join(r.as_str().expect("file name")));
        let kind = doc["kind"].as_str().expect("kind").to_string();
        match kind.as_str() {
            "Deployment" => deployment = Some(doc.clone()),
            "ServiceAccount" => account = Some(doc.clone()),
            _ => {}
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Namespace",
            "PersistentVolumeClaim",
            "Service",
            "ServiceAccount"
        ]
    );
    // The config is generated from proton.toml with a hash in its name: a change rolls the pod.
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["name"], serde_yaml::Value::from("protond-config"));
    assert_eq!(
        generator["files"][0],
        serde_yaml::Value::from("proton.toml")
    );
    let toml_path = dir.join("proton.toml");
    let raw: protond::config::RawConfig =
        toml::from_str(&std::fs::read_to_string(&toml_path).expect("proton.toml")).expect("toml");
    let config = protond::config::Config::compile(raw, "proton.toml", Path::new("/etc/protond"))
        .expect("the ConfigMap's proton.toml compiles");
    assert_eq!(config.state, "sqlite:///var/lib/protond/state.db");
    assert_eq!(config.server.listen.port(), 8080);

    let d = deployment.expect("deployment");
    assert_eq!(d["spec"]["replicas"], serde_yaml::Value::from(1));
    assert_eq!(
        d["spec"]["strategy"]["type"],
        serde_yaml::Value::from("Recreate")
    );
    let pod = &d["spec"]["template"]["spec"];
    assert_restricted(pod);
    assert_eq!(
        account.expect("service account")["automountServiceAccountToken"],
        serde_yaml::Value::from(false)
    );
    // Rendered by kustomize (kubectl's), the Deployment mounts the hashed `ConfigMap`, and
    // every object validates against the Kubernetes schemas.
    render_and_validate(&dir, 6);
}

/// The objects of the kustomization in `dir` by kind (sorted kinds, with their documents),
/// and its `proton.toml` compiled as the pods read it.
fn kustomization(dir: &Path) -> (Vec<String>, Vec<serde_yaml::Value>, protond::config::Config) {
    let k = yaml(&dir.join("kustomization.yaml"));
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["name"], serde_yaml::Value::from("protond-config"));
    assert_eq!(
        generator["files"][0],
        serde_yaml::Value::from("proton.toml")
    );
    let docs: Vec<serde_yaml::Value> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .map(|r| yaml(&dir.join(r.as_str().expect("file name"))))
        .collect();
    let mut kinds: Vec<String> = docs
        .iter()
        .map(|d| d["kind"].as_str().expect("kind").to_string())
        .collect();
    kinds.sort();
    let text = std::fs::read_to_string(dir.join("proton.toml")).expect("proton.toml");
    let raw: protond::config::RawConfig = toml::from_str(&text).expect("toml");
    let config = protond::config::Config::compile(raw, "proton.toml", Path::new("/etc/protond"))
        .unwrap_or_else(|e| panic!("{}: the ConfigMap's proton.toml: {e:?}", dir.display()));
    (kinds, docs, config)
}

/// The one document of `kind`.
fn one<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let doc = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "two of {kind}");
    doc
}

/// The value source of the container's environment variable `name`.
fn env_from<'a>(container: &'a serde_yaml::Value, name: &str) -> &'a serde_yaml::Value {
    &container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the container's env"))["valueFrom"]
}

/// What the replicated setups share: a `PostgreSQL` state without a password in the config,
/// the password from a Secret, the replica id from the pod's name, the restricted pod, no
/// persistent volume (the state is in the database), a disruption budget letting at most
/// one pod go, a Service over every ready pod (readiness is serving, not leading).
fn assert_replicated(
    docs: &[serde_yaml::Value],
    workload: &serde_yaml::Value,
    config: &protond::config::Config,
) {
    assert!(config.state.starts_with("postgres://"), "{}", config.state);
    assert!(
        config.state.contains("sslmode=verify-full"),
        "{}",
        config.state
    );
    assert_eq!(config.ha.lease, std::time::Duration::from_secs(15));
    assert_eq!(config.server.listen.port(), 8080);
    let replicas = workload["spec"]["replicas"].as_u64().expect("replicas");
    assert!(replicas >= 2, "{replicas} replicas");
    let pod = &workload["spec"]["template"]["spec"];
    assert_restricted(pod);
    let c = &pod["containers"][0];
    assert_eq!(
        env_from(c, "PROTOND_REPLICA_ID")["fieldRef"]["fieldPath"],
        serde_yaml::Value::from("metadata.name")
    );
    let password = &env_from(c, "PROTOND_STATE_PASSWORD")["secretKeyRef"];
    assert_eq!(password["name"], serde_yaml::Value::from("protond-db"));
    assert_eq!(password["key"], serde_yaml::Value::from("password"));
    assert!(
        !pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .any(|v| v.get("persistentVolumeClaim").is_some()),
        "the state is in PostgreSQL: no volume claim"
    );
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    assert_eq!(workload["spec"]["selector"]["matchLabels"], *labels);
    let pdb = one(docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    let lets_one_go =
        pdb["spec"]["maxUnavailable"] == 1 || pdb["spec"]["minAvailable"] == replicas - 1;
    assert!(lets_one_go, "{pdb:?}");
    for service in docs.iter().filter(|d| d["kind"] == "Service") {
        assert_eq!(service["spec"]["selector"], *labels, "{service:?}");
    }
}

/// `deploy/kubernetes/ha`: three replicas of a Deployment on `PostgreSQL`, and
/// `deploy/kubernetes/sharded`: a `StatefulSet` whose pods take their shard from their index,
/// as many pods as `[ha] shards`. Both restricted, both valid against the schemas.
#[test]
fn ha_and_sharded_manifests_run_replicas_on_postgres() {
    let dir = deploy().join("kubernetes/ha");
    let (kinds, docs, config) = kustomization(&dir);
    assert_eq!(
        kinds,
        [
            "Deployment",
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount"
        ]
    );
    let d = one(&docs, "Deployment");
    assert_eq!(d["spec"]["replicas"], serde_yaml::Value::from(3));
    assert_eq!(
        d["spec"]["strategy"]["type"],
        serde_yaml::Value::from("RollingUpdate")
    );
    assert_eq!(config.ha.shards, 1);
    assert_replicated(&docs, d, &config);
    assert_eq!(
        one(&docs, "ServiceAccount")["automountServiceAccountToken"],
        serde_yaml::Value::from(false)
    );
    render_and_validate(&dir, 6);

    let dir = deploy().join("kubernetes/sharded");
    let (kinds, docs, config) = kustomization(&dir);
    assert_eq!(
        kinds,
        [
            "Namespace",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount",
            "StatefulSet"
        ]
    );
    let set = one(&docs, "StatefulSet");
    assert_replicated(&docs, set, &config);
    assert_eq!(
        set["spec"]["replicas"],
        serde_yaml::Value::from(config.ha.shards),
        "one pod per shard"
    );
    assert!(config.ha.shards > 1);
    let c = &set["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        env_from(c, "PROTOND_SHARD")["fieldRef"]["fieldPath"],
        serde_yaml::Value::from("metadata.labels['apps.kubernetes.io/pod-index']")
    );
    let governing = docs
        .iter()
        .find(|d| d["kind"] == "Service" && d["metadata"]["name"] == set["spec"]["serviceName"])
        .expect("the StatefulSet's governing Service");
    assert_eq!(
        governing["spec"]["clusterIP"],
        serde_yaml::Value::from("None")
    );
    assert_eq!(
        one(&docs, "ServiceAccount")["automountServiceAccountToken"],
        serde_yaml::Value::from(false)
    );
    let explicit: Vec<Option<u32>> = config.spec_repos.iter().map(|r| r.shard).collect();
    assert!(explicit.iter().flatten().all(|s| *s < config.ha.shards));
    render_and_validate(&dir, 7);
}

/// The `toml` blocks of `text` (a Markdown file), their indentation removed.
fn toml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match &mut current {
            None if trimmed == "```toml" => current = Some((indent, String::new())),
            Some(_) if trimmed == "```" => blocks.extend(current.take().map(|(_, b)| b)),
            Some((cut, block)) => {
                block.push_str(line.get(*cut..).unwrap_or(""));
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// The configs the documentation shows for high availability compile: the README's
/// "High availability" example and the two-host systemd recipe of `deploy/README.md`.
#[test]
fn documented_ha_configs_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README");
    let section = readme
        .split("\n## High availability\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README's High availability section");
    let deploy_readme = std::fs::read_to_string(deploy().join("README.md")).expect("README");
    let recipe = deploy_readme
        .split("\n## Two hosts with systemd on PostgreSQL\n")
        .nth(1)
        .expect("the two-host recipe");
    let blocks: Vec<String> = toml_blocks(section)
        .into_iter()
        .chain(toml_blocks(recipe))
        .collect();
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    for block in blocks {
        let raw: protond::config::RawConfig =
            toml::from_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let config =
            protond::config::Config::compile(raw, "proton.toml", Path::new("/etc/protond"))
                .unwrap_or_else(|e| panic!("{e:?}\n{block}"));
        assert!(config.state.starts_with("postgres://"), "{block}");
        assert_eq!(config.ha.lease, std::time::Duration::from_secs(15));
    }
}

/// The restricted Pod Security Standard on `pod` and its first container: non-root, no
/// escalation, no capabilities, the runtime's seccomp profile, a read-only root, no
/// service-account token, a pinned image; the probes and port `protond run` serves, and the
/// config from the `protond-config` `ConfigMap`.
fn assert_restricted(pod: &serde_yaml::Value) {
    let c = &pod["containers"][0];
    assert_eq!(
        c["ports"][0]["containerPort"],
        serde_yaml::Value::from(8080)
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"],
        serde_yaml::Value::from("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"],
        serde_yaml::Value::from("/readyz")
    );
    // Restricted: non-root, no escalation, no capabilities, the runtime's seccomp profile.
    let runtime_default = serde_yaml::Value::from("RuntimeDefault");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        runtime_default
    );
    assert_eq!(
        c["securityContext"]["seccompProfile"]["type"],
        runtime_default
    );
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"],
        serde_yaml::Value::from(true)
    );
    assert_eq!(
        c["securityContext"]["allowPrivilegeEscalation"],
        serde_yaml::Value::from(false)
    );
    assert_eq!(
        c["securityContext"]["capabilities"]["drop"][0],
        serde_yaml::Value::from("ALL")
    );
    assert_eq!(
        c["securityContext"]["readOnlyRootFilesystem"],
        serde_yaml::Value::from(true)
    );
    // protond never calls the Kubernetes API.
    assert_eq!(
        pod["automountServiceAccountToken"],
        serde_yaml::Value::from(false)
    );
    let image = c["image"].as_str().expect("image");
    assert!(
        !image.ends_with(":latest") && image.contains(':'),
        "the image is pinned: {image}"
    );
    let mount = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "config")
        .expect("the config volume");
    assert_eq!(
        mount["configMap"]["name"],
        serde_yaml::Value::from("protond-config")
    );
}

/// Renders the kustomization in `dir` with `kubectl kustomize` (where installed): the
/// workload mounts the hashed `ConfigMap`, and each of the `objects` validates against the
/// Kubernetes schemas (`kubernetes-validate`, needed in CI). Returns the rendered text.
fn render_and_validate(dir: &Path, objects: usize) -> Option<String> {
    if !available("kubectl", &["version", "--client"], false) {
        eprintln!("deploy files: kubectl not installed, the kustomize rendering is not checked");
        return None;
    }
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(dir)
        .output()
        .expect("kubectl kustomize");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout).expect("utf8");
    let hashed: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("name: protond-config-"))
        .collect();
    assert_eq!(
        hashed.len(),
        2,
        "the ConfigMap and the workload's reference:\n{rendered}"
    );
    assert_eq!(hashed[0], hashed[1], "{rendered}");
    if available("kubernetes-validate", &["--version"], true) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("rendered.yaml");
        std::fs::write(&file, &rendered).expect("write");
        let out = Command::new("kubernetes-validate")
            .arg("--strict")
            .arg(&file)
            .output()
            .expect("kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            objects,
            "{text}"
        );
    }
    Some(rendered)
}

/// The systemd unit needs no user created by hand, and is hardened to an exposure of 2.0 or
/// lower by `systemd-analyze security`.
#[test]
fn systemd_unit_is_hardened() {
    let unit_path = deploy().join("protond.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit");
    let directives: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(directives.contains(&"DynamicUser=yes"), "{unit}");
    assert!(directives.contains(&"StateDirectory=protond"), "{unit}");
    assert!(
        !directives.iter().any(|l| l.starts_with("User=")),
        "a User= nothing creates: {unit}"
    );
    if !available("systemd-analyze", &["--version"], false) {
        eprintln!("deploy files: systemd-analyze not installed, the exposure is not measured");
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit_path)
        .output()
        .expect("systemd-analyze");
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for protond.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no exposure in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("deploy files: systemd-analyze security exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

/// The Containerfile builds the locked dependencies with a fixed toolchain, and runs the
/// daemon as a non-root user on the port the manifests use.
#[test]
fn containerfile_is_pinned_and_matches_the_manifests() {
    let text = std::fs::read_to_string(deploy().join("Containerfile")).expect("Containerfile");
    assert!(text.contains("EXPOSE 8080"));
    assert!(text.contains("--config\", \"/etc/protond/proton.toml\""));
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("USER 10001"));
    let build = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG BUILD_IMAGE="))
        .expect("ARG BUILD_IMAGE");
    let version = build
        .strip_prefix("rust:")
        .and_then(|t| t.split('-').next())
        .expect("a rust image");
    assert_eq!(
        version.split('.').count(),
        3,
        "the toolchain is a fixed release: {build}"
    );
}
