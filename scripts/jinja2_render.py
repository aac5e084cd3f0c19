#!/usr/bin/env python3
"""Renders what `protond render --context-json DIR` rendered, with Python Jinja2: the engine
AWS Proton rendered CloudFormation bundles with.

    python3 scripts/jinja2_render.py BUNDLE CONTEXT-DIR OUT-DIR

CONTEXT-DIR holds one JSON file per rendered file, as protond writes them:
`{"file": PATH-IN-BUNDLE, "out": OUTPUT-PATH, "engine": "jinja"|"handlebars"|"hcl",
"context": {...}}`. Each Jinja file of BUNDLE is rendered with its context into
OUT-DIR/OUTPUT-PATH, so OUT-DIR can be compared byte for byte with protond's `--out-dir`.
Terraform (hcl) files are copied as they are (neither engine renders them); Handlebars files
are not Jinja and are skipped (printed as `skipped`).

The environment is configured as protond configures minijinja: no HTML escaping, the
trailing newline kept, and undefined values that fail when used but are false in `if`.
Proton's filters are reimplemented below as protond implements them (src/render/filters.rs).
Prints one line per file; exits 1 when any file failed to render.

    python3 scripts/jinja2_render.py --bench ROUNDS BUNDLE CONTEXT-DIR [BUNDLE CONTEXT-DIR ...]

times the Jinja files of the pairs instead (for `protond bench render`): every template is
compiled once, then each round renders every file with its context (Proton's indent blocks
applied, as protond does); prints one JSON line, `{"documents": N, "seconds": S}`, the
documents rendered and the time the rounds took.
"""
import json
import os
import re
import sys

import jinja2

INDENT_OPEN = "\ue002"
INDENT_CLOSE = "\ue003"
SAFE_VALUE = re.compile(r"^[a-zA-Z0-9_-]*$")
POLICY_ARN = re.compile(r"^arn:[a-zA-Z-]+:iam::\d{12}:policy/")
ARN = re.compile(
    r"^arn:(aws|aws-cn|aws-us-gov):[a-zA-Z0-9-]+:[a-zA-Z0-9-]*:\d{12}:([\w+=,.@-]+[/:])*[\w+=,.@-]+$"
)


class SemiStrictUndefined(jinja2.StrictUndefined):
    """Fails on every use but truth testing, like minijinja's SemiStrict."""

    def __bool__(self):
        return False


def _quoted(s):
    return json.dumps(s, ensure_ascii=False)


def _pairs(value, name):
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    if value is None:
        return []
    if not isinstance(value, dict):
        raise jinja2.TemplateRuntimeError(f"{name} expects a mapping of outputs")
    return [(str(k), v if isinstance(v, str) else str(v)) for k, v in value.items()]


def _check_raw(pairs, raw, name):
    if raw:
        return
    for k, v in pairs:
        if not SAFE_VALUE.match(v):
            raise jinja2.TemplateRuntimeError(f"{name}: value of output {k!r} is not safe")


def _block(lines):
    if not lines:
        return ""
    return INDENT_OPEN + "\n".join(lines) + INDENT_CLOSE


def proton_cfn_sanitize(value):
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    s = value if isinstance(value, str) else str(value)
    if SAFE_VALUE.match(s) or ARN.match(s):
        return s
    raise jinja2.TemplateRuntimeError(f"Illegal character(s) detected in {s!r}")


def proton_cfn_ecs_task_definition_formatted_env_vars(value, raw=True):
    name = "proton_cfn_ecs_task_definition_formatted_env_vars"
    pairs = _pairs(value, name)
    _check_raw(pairs, raw, name)
    return _block([f"- Name: {_quoted(k)}\n  Value: {_quoted(v)}" for k, v in pairs])


def proton_cfn_lambda_function_formatted_env_vars(value, raw=True):
    name = "proton_cfn_lambda_function_formatted_env_vars"
    pairs = _pairs(value, name)
    _check_raw(pairs, raw, name)
    return _block([f"{_quoted(k)}: {_quoted(v)}" for k, v in pairs])


def proton_cfn_iam_policy_arns(value):
    pairs = _pairs(value, "proton_cfn_iam_policy_arns")
    return _block([f"- {_quoted(v)}" for _, v in pairs if POLICY_ARN.match(v)])


def apply_indent_blocks(text):
    """Indents the continuation lines of each marked block to the column it starts at."""
    if INDENT_OPEN not in text:
        return text
    out = []
    column = 0
    indent = None
    for c in text:
        if c == INDENT_OPEN:
            indent = column
        elif c == INDENT_CLOSE:
            indent = None
        elif c == "\n":
            out.append("\n")
            column = 0
            if indent is not None:
                out.append(" " * indent)
                column = indent
        else:
            out.append(c)
            column += 1
    return "".join(out)


def environment():
    env = jinja2.Environment(
        autoescape=False,
        keep_trailing_newline=True,
        undefined=SemiStrictUndefined,
    )
    env.filters.update(
        proton_cfn_sanitize=proton_cfn_sanitize,
        proton_cfn_ecs_task_definition_formatted_env_vars=proton_cfn_ecs_task_definition_formatted_env_vars,
        proton_cfn_lambda_function_formatted_env_vars=proton_cfn_lambda_function_formatted_env_vars,
        proton_cfn_iam_policy_arns=proton_cfn_iam_policy_arns,
    )
    return env


# The context of the unit cases in src/render/jinja2_cases.rs (keys in sorted order, as
# protond's maps iterate).
CONTEXT_FOR_CASES = {
    "d": {"C": 3, "a": 1, "b": 2},
    "empty": [],
    "f": 1.23456,
    "html": "<p>Hi &amp; bye</p>",
    "long": "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor",
    "n": -7,
    "none": None,
    "nums": [3, 1, 2, 5, 4],
    "s": "  Hello World  ",
    "strs": ["b", "A", "a", "C"],
    "users": [
        {"active": True, "age": 30, "city": "Paris", "name": "alice"},
        {"active": False, "age": 25, "city": "berlin", "name": "Bob"},
        {"active": True, "age": 35, "city": "Paris", "name": "carol"},
    ],
    "words": "the quick brown fox",
}


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    bundle, contexts, out_dir = argv[1:]
    env = environment()
    failed = 0
    for root, _, names in sorted(os.walk(contexts)):
        for name in sorted(names):
            with open(os.path.join(root, name), encoding="utf-8") as f:
                job = json.load(f)
            src = os.path.join(bundle, job["file"])
            dest = os.path.join(out_dir, job["out"])
            if job["engine"] == "handlebars":
                print(f"skipped {job['out']} (Handlebars)")
                continue
            with open(src, encoding="utf-8") as f:
                source = f.read()
            if job["engine"] == "jinja":
                try:
                    text = apply_indent_blocks(env.from_string(source).render(job["context"]))
                except Exception as e:  # noqa: BLE001 - every failure is reported
                    print(f"failed {job['out']}: {type(e).__name__}: {e}")
                    failed += 1
                    continue
            else:
                text = source
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            with open(dest, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            print(f"rendered {job['out']}")
    return 1 if failed else 0


def bench(argv):
    """`--bench ROUNDS BUNDLE CONTEXT-DIR ...`: see the module's doc."""
    import time

    rounds = int(argv[2])
    pairs = argv[3:]
    env = environment()
    jobs = []
    for bundle, contexts in zip(pairs[::2], pairs[1::2]):
        for root, _, names in sorted(os.walk(contexts)):
            for name in sorted(names):
                with open(os.path.join(root, name), encoding="utf-8") as f:
                    job = json.load(f)
                if job["engine"] != "jinja":
                    continue
                with open(os.path.join(bundle, job["file"]), encoding="utf-8") as f:
                    template = env.from_string(f.read())
                jobs.append((template, job["context"]))
    start = time.perf_counter()
    for _ in range(rounds):
        for template, context in jobs:
            apply_indent_blocks(template.render(context))
    seconds = time.perf_counter() - start
    print(json.dumps({"documents": rounds * len(jobs), "seconds": seconds}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--bench":
        sys.exit(bench(sys.argv))
    sys.exit(main(sys.argv))
