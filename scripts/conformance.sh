#!/usr/bin/env bash
# Conformance check: every AWS Proton sample bundle (when ../shared/proton-samples exists) and
# every bundle and spec of example-repos/ is validated with `protond validate`, rendered with
# `protond render`, and each rendered document is parsed as YAML and linted with cfn-lint.
# Each render is repeated with Python Jinja2 (scripts/jinja2_render.py, the engine AWS Proton
# rendered with, Proton's filters reimplemented) on the very context protond rendered with
# (`protond render --context-json`), and the two outputs must be byte-identical.
#
# Environment outputs, instance outputs (pipelines) and component outputs a template reads are
# found by grepping the template and supplied with plausible values; nothing else is patched.
#
#   PROTOND  the protond binary            (default: target/debug/protond)
#   SHARED   folder holding proton-samples (default: ../shared, beside the repo)
#   SAMPLE_IGNORED_RULES  cfn-lint rules not counted for the samples (default: E2533, see below)
#
#   KEEP_CONTEXTS         a folder to keep each sample render's contexts in, for
#                         `protond bench render` (see scripts/render_bench)
#   CI                    when "true", a missing Python jinja2 is an error (otherwise those
#                         checks are skipped with a note)
#
# Prints one line per check (validate, render, cfn-lint, jinja2), the totals per kind and,
# last, exactly `N passed, M failed`. Exits 1 on any failure.
set -euo pipefail

orig_pwd=$PWD
cd "$(dirname "$0")/.."

# Paths given by the caller are relative to where the caller stands; defaults to the repo.
absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$orig_pwd" "$1" ;;
  esac
}
if [[ -n "${PROTOND:-}" ]]; then
  if [[ "$PROTOND" == */* ]]; then protond=$(absolute "$PROTOND"); else protond=$PROTOND; fi
else
  protond=target/debug/protond
fi
if [[ -n "${SHARED:-}" ]]; then shared=$(absolute "$SHARED"); else shared=../shared; fi
samples="$shared/proton-samples"
# cfn-lint rules ignored for the Proton samples only. E2533 (deprecated Lambda runtime): the
# samples date from 2021 and only offer Lambda runtimes AWS has retired since (their default is
# nodejs12.x); that is the age of the sample, not a rendering fault.
sample_ignored_rules=${SAMPLE_IGNORED_RULES-E2533}
examples=example-repos

if ! command -v "$protond" >/dev/null 2>&1; then
  echo "error: protond binary $protond not found; run cargo build or set PROTOND" >&2
  exit 2
fi
for tool in python3 cfn-lint; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: $tool is required (pip install cfn-lint)" >&2
    exit 2
  fi
done

have_jinja2=0
if python3 -c 'import jinja2' >/dev/null 2>&1; then
  have_jinja2=1
elif [[ "${CI:-}" == true ]]; then
  echo "error: Python jinja2 is required in CI (pip install jinja2)" >&2
  exit 2
else
  echo "note: Python jinja2 is not installed: the Jinja2-identical checks are skipped (pip install jinja2)"
fi
jinja2_render=$PWD/scripts/jinja2_render.py

work=$(mktemp -d "${TMPDIR:-/tmp}/protond-conformance.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=0

# Every check is recorded first and judged at the end, so that cfn-lint (slow to start) runs
# once over all rendered files. Per check: a label, a state (pass, fail, or lint: rendered and
# waiting for the lint), a details file, the render folder, and whether cfn-lint's dated
# deprecation rules apply (see SAMPLE_IGNORED_RULES).
labels=()
states=()
logs=()
dirs=()
sample=()
in_samples=0

record() {
  labels+=("$1")
  states+=("$2")
  logs+=("${3:-}")
  dirs+=("${4:-}")
  sample+=("$in_samples")
}

# Passed and total checks per kind (the label's first word: validate, render, cfn-lint,
# jinja2).
declare -A kind_passed=() kind_total=()
count_kind() {
  local kind=${1%% *}
  kind_total[$kind]=$((${kind_total[$kind]:-0} + 1))
  if [[ "$2" == pass ]]; then
    kind_passed[$kind]=$((${kind_passed[$kind]:-0} + 1))
  fi
}

# pass LABEL / fail LABEL DETAILS-FILE: one line per check; details indented below failures.
pass() {
  printf 'PASS  %s\n' "$1"
  passed=$((passed + 1))
  count_kind "$1" pass
}
fail() {
  printf 'FAIL  %s\n' "$1"
  if [[ -n "${2:-}" && -s "$2" ]]; then
    head -n 40 "$2" | sed 's/^/      /'
  fi
  failed=$((failed + 1))
  count_kind "$1" fail
}

# A new details file.
new_log() {
  mktemp "$work/log.XXXXXX"
}

# A plausible value for an output, judged by its name.
plausible() {
  local k=$1 n
  n=$(printf '%s' "$k" | tr -cd '0-9' | tail -c 1)
  n=${n:-0}
  case "$k" in
    *Runtime) echo "nodejs12.x" ;;
    *PolicyArn | *PolicyARN) echo "arn:aws:iam::123456789012:policy/conformance-$k" ;;
    *RoleArn | *RoleARN) echo "arn:aws:iam::123456789012:role/conformance-$k" ;;
    *TopicArn | *TopicARN) echo "arn:aws:sns:us-east-1:123456789012:conformance-topic" ;;
    *QueueArn | *QueueARN) echo "arn:aws:sqs:us-east-1:123456789012:conformance-queue" ;;
    *ClusterArn | *ClusterARN) echo "arn:aws:ecs:us-east-1:123456789012:cluster/conformance" ;;
    *BucketArn | *BucketARN) echo "arn:aws:s3:::conformance-bucket" ;;
    *Arn | *ARN) echo "arn:aws:iam::123456789012:role/conformance-$k" ;;
    *Subnet*) echo "subnet-0123456789abcdef$n" ;;
    VPC | Vpc | *VpcId | *VPCId | *VPCID) echo "vpc-0123456789abcdef0" ;;
    *SecurityGroup*) echo "sg-0123456789abcdef0" ;;
    *NamespaceId) echo "ns-abcdefghij012345" ;;
    *Region) echo "us-east-1" ;;
    *TopicName) echo "conformance-topic" ;;
    *QueueUrl | *QueueURL) echo "https://sqs.us-east-1.amazonaws.com/123456789012/conformance-queue" ;;
    *Parameter*) echo "/conformance/$k" ;;
    *Bucket | *BucketName) echo "conformance-bucket" ;;
    Cluster | *ClusterName) echo "conformance-cluster" ;;
    *Url | *URL | *Endpoint) echo "https://conformance.example.com" ;;
    *Port) echo "8080" ;;
    *) echo "conformance-$k" ;;
  esac
}

# Names read as `<prefix>.X` (or `<prefix>[N].X`) in the IaC files below a folder.
names_read() {
  local regex=$1
  shift
  { grep -rhoE "$regex" "$@" 2>/dev/null || true; } | sed -E 's/.*\.//' | sort -u
}

# Options supplying the outputs the IaC files below the given folders read.
output_args() {
  local k
  for k in $(names_read 'environment\.outputs\.[A-Za-z0-9_]+' "$@"); do
    printf '%s\n' --env-output "$k=$(plausible "$k")"
  done
  for k in $(names_read 'service_instances?(\[[0-9]+\])?\.outputs\.[A-Za-z0-9_]+' "$@"); do
    printf '%s\n' --instance-output "$k=$(plausible "$k")"
  done
  for k in $(names_read 'components\.default\.outputs\.[A-Za-z0-9_]+' "$@"); do
    printf '%s\n' --component-output "$k=$(plausible "$k")"
  done
}

# Whether the IaC files read the component outputs as a whole (e.g. through a Proton filter).
reads_component_outputs() {
  grep -rqE 'components\.default\.outputs[^.A-Za-z0-9_]' "$@" 2>/dev/null
}

# Parses every rendered file as YAML (CloudFormation tags such as !Ref accepted) and checks it
# is a template with Resources. Prints one line per problem.
check_yaml_py='
import sys, yaml

class Loader(yaml.SafeLoader):
    pass

def any_tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)

Loader.add_multi_constructor("!", any_tag)
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=Loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        print(f"{path}: not YAML: {e}".replace("\n", " "))
        bad += 1
        continue
    if not isinstance(doc, dict) or not isinstance(doc.get("Resources"), dict):
        print(f"{path}: not a CloudFormation template (no Resources mapping)")
        bad += 1
sys.exit(1 if bad else 0)
'

# Facts about a spec file, one per line:
#   kind environment|service
#   template NAME MAJOR            (or "template - -" for Proton's header-less form)
#   instance NAME COMPONENT-PATH   (or "-" without a component)
spec_info_py='
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.safe_load(f) or {}
kind = {"EnvironmentSpec": "environment", "ServiceSpec": "service"}.get(doc.get("proton"), "unknown")
print("kind", kind)
t = doc.get("template") or {}
print("template", t.get("name", "-"), t.get("major", "-"))
for inst in doc.get("instances") or []:
    comp = (inst.get("component") or {}).get("path", "-")
    print("instance", inst.get("name", "-"), comp)
'

# Output keys declared by a rendered CloudFormation file, one per line.
output_keys_py='
import sys, yaml
class Loader(yaml.SafeLoader):
    pass
Loader.add_multi_constructor("!", lambda l, s, n: None)
with open(sys.argv[1], encoding="utf-8") as f:
    doc = yaml.load(f, Loader=Loader) or {}
for key in (doc.get("Outputs") or {}):
    print(key)
'

# check_jinja2 LABEL BUNDLE CONTEXT-DIR OUT-DIR: renders the files protond rendered (their
# contexts in CONTEXT-DIR) with Python Jinja2 and requires each to be byte-identical with
# protond's (in OUT-DIR).
check_jinja2() {
  local label=$1 bundle=$2 contexts=$3 out=$4 theirs log f
  ((have_jinja2)) || return 0
  if [[ -z "$(find "$contexts" -type f -print -quit)" ]]; then
    return 0
  fi
  theirs=$(mktemp -d "$work/jinja2.XXXXXX")
  log=$(new_log)
  if ! python3 "$jinja2_render" "$bundle" "$contexts" "$theirs" >"$log" 2>&1; then
    record "jinja2 $label" fail "$log"
    return 0
  fi
  : >"$log"
  while IFS= read -r -d '' f; do
    f=${f#"$theirs"/}
    if ! cmp -s "$out/$f" "$theirs/$f"; then
      echo "$f differs from Jinja2's rendering (- protond, + Jinja2):" >>"$log"
      diff -u "$out/$f" "$theirs/$f" | tail -n +3 | head -n 20 >>"$log" || true
    fi
  done < <(find "$theirs" -type f -print0 | sort -z)
  if [[ -s "$log" ]]; then
    record "jinja2 $label" fail "$log"
  else
    record "jinja2 $label" pass
  fi
}

# check_render LABEL RENDER-ARGS...: renders into a fresh folder (linted at the end), then
# with Jinja2. The bundle is the first render argument. Sets last_render to the folder when
# the render succeeded.
check_render() {
  local label=$1 out log contexts
  shift
  out=$(mktemp -d "$work/render.XXXXXX")
  contexts=$(mktemp -d "$work/contexts.XXXXXX")
  log=$(new_log)
  last_render=""
  local rc=0
  "$protond" render "$@" --out-dir "$out" --context-json "$contexts" >"$log" 2>&1 || rc=$?
  if ((rc == 0)); then
    record "render $label" pass
    record "cfn-lint $label" lint "$log" "$out"
    check_jinja2 "$label" "$1" "$contexts" "$out"
    last_render=$out
    # KEEP_CONTEXTS=DIR keeps each sample render's contexts and bundle for `protond bench
    # render` (DIR/NNN/bundle: the bundle's path; DIR/NNN/contexts: the context files).
    if [[ -n "${KEEP_CONTEXTS:-}" ]] && ((in_samples)); then
      local keep
      keep=$KEEP_CONTEXTS/$(printf '%03d' "${#labels[@]}")
      mkdir -p "$keep"
      cp -r "$contexts" "$keep/contexts"
      realpath "$1" >"$keep/bundle"
    fi
  else
    # The exit status too: a render killed from outside (e.g. out of memory) prints nothing.
    echo "protond render exited with status $rc" >>"$log"
    record "render $label" fail "$log"
  fi
}

# check_validate BUNDLE: `protond validate`; returns non-zero when the bundle is invalid.
check_validate() {
  local log
  log=$(new_log)
  if "$protond" validate "$1" >"$log" 2>&1; then
    record "validate $1" pass
  else
    record "validate $1" fail "$log"
    return 1
  fi
}

# Renders a service bundle for every instance of a spec and its pipeline. Extra arguments
# (e.g. --name) go to every render. Instances with a component get its outputs, read from the
# component's rendered Outputs.
render_service() {
  local bundle=$1 spec=$2 spec_root=$3
  shift 3
  local infra=("$bundle/instance_infrastructure") args=() inst comp key
  mapfile -t args < <(output_args "${infra[@]}")
  while read -r _ inst comp; do
    local comp_args=()
    if [[ "$comp" != "-" ]]; then
      last_render=""
      local comp_dir="$spec_root/$comp"
      local comp_env=()
      mapfile -t comp_env < <(output_args "$comp_dir")
      check_render "$comp_dir for $inst ($spec)" "$comp_dir" --spec "$spec" --instance "$inst" \
        "${comp_env[@]}" "$@"
      if [[ -n "$last_render" ]]; then
        while IFS= read -r -d '' f; do
          while IFS= read -r key; do
            comp_args+=(--component-output "$key=$(plausible "$key")")
          done < <(python3 -c "$output_keys_py" "$f" 2>/dev/null || true)
        done < <(find "$last_render" -type f -print0)
      fi
    fi
    check_render "$bundle --instance $inst ($spec)" "$bundle" --spec "$spec" --instance "$inst" \
      "${args[@]}" "${comp_args[@]}" "$@"
  done < <(python3 -c "$spec_info_py" "$spec" | grep '^instance ')
  if [[ -d "$bundle/pipeline_infrastructure" ]]; then
    local pargs=()
    mapfile -t pargs < <(output_args "$bundle/pipeline_infrastructure")
    check_render "$bundle --pipeline ($spec)" "$bundle" --spec "$spec" --pipeline \
      "${pargs[@]}" "$@"
  fi
}

# ---------------------------------------------------------------------------------------------
# AWS Proton's samples.

if [[ -d "$samples" ]]; then
  in_samples=1
  # The sample component's outputs, for rendering sample services with a component attached.
  sample_component_args=()
  for key_file in "$samples"/component-templates/*/cloudformation.yaml; do
    [[ -f "$key_file" ]] || continue
    while IFS= read -r key; do
      sample_component_args+=(--component-output "$key=$(plausible "$key")")
    done < <(python3 -c "$output_keys_py" "$key_file" 2>/dev/null || true)
  done

  for bundle in "$samples"/environment-templates/*/v[0-9]*; do
    [[ -d "$bundle" ]] || continue
    template=$(basename "$(dirname "$bundle")")
    spec="$(dirname "$bundle")/spec/spec.yaml"
    check_validate "$bundle" || continue
    mapfile -t args < <(output_args "$bundle/infrastructure")
    check_render "$bundle ($spec)" "$bundle" --spec "$spec" --name "$template-prod" "${args[@]}"
  done

  for bundle in "$samples"/service-templates/*/v[0-9]*; do
    [[ -d "$bundle" ]] || continue
    template=$(basename "$(dirname "$bundle")")
    spec="$(dirname "$bundle")/spec/spec.yaml"
    check_validate "$bundle" || continue
    # Proton's sample specs are header-less: the source repository Proton took in
    # CreateService is given as flags (protond's header carries it in the daemon).
    render_service "$bundle" "$spec" "$(dirname "$spec")" --name "$template" \
      --repository-id "acme/$template" --branch main \
      --repository-connection-arn "arn:aws:codestar-connections:us-east-1:123456789012:connection/conformance"
    # Templates that hand the component's outputs to a Proton filter: render once more with
    # the sample component attached.
    if reads_component_outputs "$bundle/instance_infrastructure" && [[ ${#sample_component_args[@]} -gt 0 ]]; then
      mapfile -t args < <(output_args "$bundle/instance_infrastructure")
      while read -r _ inst _; do
        check_render "$bundle --instance $inst with component outputs ($spec)" "$bundle" \
          --spec "$spec" --instance "$inst" --name "$template" "${args[@]}" \
          "${sample_component_args[@]}"
      done < <(python3 -c "$spec_info_py" "$spec" | grep '^instance ')
    fi
  done

  for bundle in "$samples"/component-templates/*; do
    [[ -f "$bundle/manifest.yaml" ]] || continue
    check_validate "$bundle" || continue
    name=$(basename "$bundle")
    spec="$work/$name-service.yaml"
    cat >"$spec" <<EOF
proton: ServiceSpec
name: conformance
instances:
  - name: conformance-dev
    environment: dev
    component: {name: $name, path: components/$name}
EOF
    mapfile -t args < <(output_args "$bundle")
    check_render "$bundle (attached to conformance-dev)" "$bundle" --spec "$spec" \
      --instance conformance-dev "${args[@]}"
  done
  in_samples=0
else
  echo "shared samples not present, skipping ($samples)"
fi

# ---------------------------------------------------------------------------------------------
# The example repos: every bundle, every environment and service spec, every component.

if [[ -d "$examples" ]]; then
  for bundle in "$examples"/platform-templates/*/v[0-9]*; do
    [[ -d "$bundle" ]] || continue
    check_validate "$bundle" || true
  done

  for spec in "$examples"/*/proton/environments/*.yaml "$examples"/*/proton/services/*.yaml; do
    [[ -f "$spec" ]] || continue
    spec_root=$(dirname "$(dirname "$(dirname "$spec")")")
    read -r _ kind < <(python3 -c "$spec_info_py" "$spec" | grep '^kind ')
    read -r _ tname tmajor < <(python3 -c "$spec_info_py" "$spec" | grep '^template ')
    bundle="$examples/platform-templates/$tname/v$tmajor"
    if [[ ! -d "$bundle" ]]; then
      log=$(new_log)
      echo "$spec names template $tname v$tmajor; no bundle at $bundle" >"$log"
      record "render $spec" fail "$log"
      continue
    fi
    case "$kind" in
      environment)
        mapfile -t args < <(output_args "$bundle/infrastructure")
        check_render "$bundle ($spec)" "$bundle" --spec "$spec" "${args[@]}"
        ;;
      service)
        render_service "$bundle" "$spec" "$spec_root"
        ;;
      *)
        log=$(new_log)
        echo "$spec: not an EnvironmentSpec or ServiceSpec" >"$log"
        record "render $spec" fail "$log"
        ;;
    esac
  done
else
  echo "example repos not present ($examples)"
fi

# ---------------------------------------------------------------------------------------------
# Lint everything that rendered, in one cfn-lint run, then report every check in order.

all_files=()
for i in "${!states[@]}"; do
  [[ "${states[$i]}" == lint ]] || continue
  while IFS= read -r -d '' f; do all_files+=("$f"); done < <(find "${dirs[$i]}" -type f -print0 | sort -z)
done
yaml_out="$work/yaml.out"
lint_out="$work/lint.out"
: >"$yaml_out"
: >"$lint_out"
lint_rc=0
if [[ ${#all_files[@]} -gt 0 ]]; then
  python3 -c "$check_yaml_py" "${all_files[@]}" >"$yaml_out" 2>&1 || true
  cfn-lint --format parseable -- "${all_files[@]}" >"$lint_out" 2>&1 || lint_rc=$?
fi
# cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational findings. 1 (or
# anything above 15) means it could not run at all: then no rendered file counts as checked.
lint_broken=0
if ((lint_rc & 1)) || ((lint_rc > 15)); then
  lint_broken=1
fi

# Errors (E rules) cfn-lint reported for the files below a folder, minus ignored rules.
lint_errors() {
  local dir=$1 ignored=$2
  awk -F: -v dir="$dir/" -v ignored=" $ignored " '
    index($0, dir) == 1 && $6 ~ /^E[0-9]+$/ && index(ignored, " " $6 " ") == 0 { print }
  ' "$lint_out"
}

# Ignored errors (reported on the PASS line, not counted).
lint_ignored() {
  local dir=$1 ignored=$2
  awk -F: -v dir="$dir/" -v ignored=" $ignored " '
    index($0, dir) == 1 && $6 ~ /^E[0-9]+$/ && index(ignored, " " $6 " ") > 0 { print $6 }
  ' "$lint_out" | sort -u | tr '\n' ' ' | sed 's/ $//'
}

for i in "${!states[@]}"; do
  label=${labels[$i]}
  case "${states[$i]}" in
    pass)
      pass "$label"
      ;;
    fail)
      fail "$label" "${logs[$i]}"
      ;;
    lint)
      dir=${dirs[$i]}
      ignored=""
      if [[ "${sample[$i]}" == 1 ]]; then ignored=$sample_ignored_rules; fi
      problems=$(new_log)
      if [[ -z "$(find "$dir" -type f -print -quit)" ]]; then
        echo "nothing was rendered" >>"$problems"
      fi
      grep -F "$dir/" "$yaml_out" >>"$problems" || true
      lint_errors "$dir" "$ignored" >>"$problems"
      if ((lint_broken)); then
        echo "cfn-lint could not run (exit code $lint_rc):" >>"$problems"
        head -n 20 "$lint_out" >>"$problems"
      fi
      if [[ -s "$problems" ]]; then
        sed "s|$dir/||" "$problems" >"$problems.short"
        fail "$label" "$problems.short"
      else
        skipped=$(lint_ignored "$dir" "$ignored")
        if [[ -n "$skipped" ]]; then
          pass "$label (cfn-lint $skipped ignored)"
        else
          pass "$label"
        fi
      fi
      ;;
  esac
done

# The update-behaviour table protond predicts replacements from (src/impact/behaviour.tsv)
# must reproduce from the installed cfn-lint's resource schemas (it fails only when the same
# cfn-lint version gives another table; a newer cfn-lint is reported).
if python3 -c 'import cfnlint' 2>/dev/null; then
  behaviour_log=$(new_log)
  if python3 scripts/update_behaviour.py --check >"$behaviour_log" 2>&1; then
    pass "update-behaviour table: $(cat "$behaviour_log")"
  else
    fail "update-behaviour table" "$behaviour_log"
  fi
fi

for kind in validate render cfn-lint jinja2; do
  printf '%-9s %d of %d passed\n' "$kind:" "${kind_passed[$kind]:-0}" "${kind_total[$kind]:-0}"
done
echo "$passed passed, $failed failed"
if ((failed > 0)); then
  exit 1
fi
