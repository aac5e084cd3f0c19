#!/usr/bin/env bash
# Conformance check: every AWS Proton sample bundle (when ../shared/proton-samples exists) and
# every bundle and spec of example-repos/ is validated with `protond validate`, rendered with
# `protond render`, and each rendered document is parsed as YAML and linted with cfn-lint.
#
# Environment outputs, instance outputs (pipelines) and component outputs a template reads are
# found by grepping the template and supplied with plausible values; nothing else is patched.
#
#   PROTOND  the protond binary            (default: target/debug/protond)
#   SHARED   folder holding proton-samples (default: ../shared, beside the repo)
#
# Prints one line per check and, last, exactly `N passed, M failed`. Exits 1 on any failure.
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

work=$(mktemp -d "${TMPDIR:-/tmp}/protond-conformance.XXXXXX")
trap 'rm -rf "$work"' EXIT

passed=0
failed=0

# pass LABEL / fail LABEL DETAILS-FILE: one line per check; details indented below failures.
pass() {
  printf 'PASS  %s\n' "$1"
  passed=$((passed + 1))
}
fail() {
  printf 'FAIL  %s\n' "$1"
  if [[ -n "${2:-}" && -s "$2" ]]; then
    head -n 40 "$2" | sed 's/^/      /'
  fi
  failed=$((failed + 1))
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

# lint DIR: YAML and cfn-lint on every file below DIR; details to stdout. Errors fail; warnings
# and informational findings do not. cfn-lint's exit code is a bit mask: 2 errors, 4 warnings,
# 8 informational; 1 means it could not run (bad arguments or configuration).
lint() {
  local dir=$1 files=() f rc=0 status=0
  while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$dir" -type f -print0 | sort -z)
  if [[ ${#files[@]} -eq 0 ]]; then
    echo "nothing was rendered"
    return 1
  fi
  python3 -c "$check_yaml_py" "${files[@]}" || status=1
  for f in "${files[@]}"; do
    rc=0
    cfn-lint --format parseable -- "$f" >"$work/lint.out" 2>&1 || rc=$?
    if ((rc & 3)) || ((rc > 15)); then
      grep -E ':E[0-9]+:' "$work/lint.out" || cat "$work/lint.out"
      status=1
    fi
  done
  return "$status"
}

# check_render LABEL RENDER-ARGS...: renders into a fresh folder, then lints the result.
check_render() {
  local label=$1 out
  shift
  out=$(mktemp -d "$work/render.XXXXXX")
  if ! "$protond" render "$@" --out-dir "$out" >"$work/render.log" 2>&1; then
    fail "render $label" "$work/render.log"
    return 0
  fi
  if lint "$out" >"$work/lint.log" 2>&1; then
    pass "render $label"
  else
    fail "render $label" "$work/lint.log"
  fi
  last_render=$out
}

# check_validate BUNDLE: `protond validate`; returns non-zero when the bundle is invalid.
check_validate() {
  if "$protond" validate "$1" >"$work/validate.log" 2>&1; then
    pass "validate $1"
  else
    fail "validate $1" "$work/validate.log"
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
    render_service "$bundle" "$spec" "$(dirname "$spec")" --name "$template"
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
      echo "$spec names template $tname v$tmajor; no bundle at $bundle" >"$work/missing.log"
      fail "render $spec" "$work/missing.log"
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
        echo "$spec: not an EnvironmentSpec or ServiceSpec" >"$work/kind.log"
        fail "render $spec" "$work/kind.log"
        ;;
    esac
  done
else
  echo "example repos not present ($examples)"
fi

echo "$passed passed, $failed failed"
if ((failed > 0)); then
  exit 1
fi
