"""Static checks of everything deployable: cfn-lint (0 errors, 0 warnings) and checkov (0 failures) on every
template, every suppression justified inline and actually used; actionlint on the workflows; shellcheck
on the deploy scripts; plain-YAML loadability (long-form intrinsics only).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TEMPLATES

LINTED_SCRIPTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scripts").glob("*.sh"))
CHECKOV_ENV = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_EXPERIMENTAL_IMAGE_REFERENCING": "false"}


@pytest.fixture(scope="module")
def all_templates(rendered_observability) -> dict[str, Path]:
    return {**TEMPLATES, "observability": rendered_observability}


def test_templates_are_plain_yaml_without_short_form_tags():
    """yaml.safe_load rejects !Ref/!Sub: the Rust and Python tests read the templates as plain data."""
    for path in [*TEMPLATES.values(), ROOT / "infra" / "observability.yaml", ROOT / "alarms" / "alarms.yaml"]:
        with path.open() as handle:
            yaml.safe_load(handle)


def test_cfn_lint_finds_nothing_in_any_template(tool, all_templates):
    paths = [str(p) for p in all_templates.values()]
    result = subprocess.run(
        [tool("cfn-lint"), "--format", "parseable", "--regions", "us-west-2", "us-east-1", "--", *paths],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and not result.stdout.strip(), f"cfn-lint:\n{result.stdout}{result.stderr}"


def test_cfn_lint_suppressions_are_only_the_justified_package_warning(all_templates):
    for name, path in all_templates.items():
        template = yaml.safe_load(path.read_text())
        for logical, resource in template["Resources"].items():
            config = resource.get("Metadata", {}).get("cfn-lint", {}).get("config", {})
            ignored = config.get("ignore_checks", [])
            if ignored:
                assert ignored == ["W3002"], f"{name}.{logical}: only W3002 (local Code for package) may be ignored"
                assert resource["Type"] == "AWS::Lambda::Function" and isinstance(resource["Properties"]["Code"], str)


@pytest.fixture(scope="module")
def checkov_report(tool, all_templates) -> dict:
    args = [tool("checkov"), "--framework", "cloudformation", "--skip-download", "--output", "json"]
    for path in all_templates.values():
        args += ["--file", str(path)]
    result = subprocess.run(args, capture_output=True, text=True, env=CHECKOV_ENV)
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return report[0] if isinstance(report, list) else report


def test_checkov_finds_no_failure(checkov_report):
    results = checkov_report["results"]
    failed = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in results["failed_checks"]]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert not results.get("parsing_errors"), results.get("parsing_errors")
    assert checkov_report["summary"]["passed"] > 50, "checkov ran suspiciously few checks"


def _declared_skips(all_templates) -> list[tuple[str, str, str, str]]:
    skips = []
    for name, path in all_templates.items():
        template = yaml.safe_load(path.read_text())
        for logical, resource in template["Resources"].items():
            for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
                skips.append((name, f"{resource['Type']}.{logical}", skip["id"], skip.get("comment", "")))
    return skips


def test_every_checkov_skip_is_justified_inline(all_templates):
    skips = _declared_skips(all_templates)
    assert skips
    for template, resource, check, comment in skips:
        assert len(comment.split()) >= 8, f"{template} {resource} {check}: the skip needs a real reason, not {comment!r}"


def test_every_checkov_skip_is_used(checkov_report, all_templates):
    """A skip for a check that no longer applies to the resource is stale: remove it."""
    applied = {(c["resource"], c["check_id"]) for c in checkov_report["results"]["skipped_checks"]}
    stale = [f"{t} {r} {c}" for t, r, c, _ in _declared_skips(all_templates) if (r, c) not in applied]
    assert not stale, "checkov skips that skip nothing:\n" + "\n".join(stale)


def test_actionlint_finds_nothing_in_the_workflows(tool):
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    assert len(workflows) >= 3, "expected pre-merge, deploy and scheduled canary workflows"
    # shellcheck on PATH makes actionlint check every `run:` script too.
    env = {**os.environ, "PATH": f"{Path(tool('shellcheck')).parent}:{os.environ['PATH']}"}
    result = subprocess.run([tool("actionlint"), "-no-color", *workflows], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 0, f"actionlint:\n{result.stdout}{result.stderr}"


def test_shellcheck_finds_nothing_in_the_ops_scripts(tool):
    result = subprocess.run([tool("shellcheck"), "-x", *LINTED_SCRIPTS], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"shellcheck:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("script", ["scripts/deploy.sh", "scripts/destroy.sh"])
def test_deploy_scripts_refuse_unknown_environments(script):
    result = subprocess.run(["bash", script, "staging"], capture_output=True, text=True, cwd=ROOT, env={**os.environ, "RELAY_DEPLOY_VENV": "/nonexistent"})
    assert result.returncode != 0 and "unknown environment" in result.stderr
    usage = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, cwd=ROOT)
    assert usage.returncode == 2 and "ENV" in usage.stderr


def test_deploy_refuses_an_environment_that_pages_without_a_page_subscriber():
    """prod pages (PagingEnabled true): without RELAY_PAGE_EMAIL, deploy.sh stops before building or
    calling AWS, saying why."""
    env = {k: v for k, v in os.environ.items() if k != "RELAY_PAGE_EMAIL"}
    env["RELAY_DEPLOY_VENV"] = str(Path(sys.executable).parent.parent)
    result = subprocess.run(["bash", "scripts/deploy.sh", "prod", "--skip-build"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)
    assert result.returncode != 0
    assert "RELAY_PAGE_EMAIL is empty: pages would reach nobody" in result.stderr, result.stderr
    assert "Deploying" not in result.stderr


def _rule_holds(rule: dict, params: dict[str, str]) -> bool:
    """A CloudFormation template rule evaluated over parameter values (the intrinsics these rules use)."""

    def value(node):
        if isinstance(node, dict):
            (fn, arg), = node.items()
            if fn == "Ref":
                return params[arg]
            if fn == "Fn::Equals":
                return value(arg[0]) == value(arg[1])
            if fn == "Fn::Not":
                return not value(arg[0])
            if fn == "Fn::And":
                return all(value(a) for a in arg)
            if fn == "Fn::Or":
                return any(value(a) for a in arg)
            raise AssertionError(f"rule function {fn} not understood here")
        return node

    if "RuleCondition" in rule and not value(rule["RuleCondition"]):
        return True
    return all(value(a["Assert"]) for a in rule["Assertions"])


def test_the_observability_stack_refuses_paging_without_a_subscriber():
    template = yaml.safe_load((ROOT / "infra" / "observability.yaml").read_text())
    rule = template["Rules"]["PagingNeedsASubscriber"]
    base = {name: p.get("Default", "") for name, p in template["Parameters"].items()}
    assert not _rule_holds(rule, {**base, "PagingEnabled": "true", "PageEmail": ""})
    assert _rule_holds(rule, {**base, "PagingEnabled": "true", "PageEmail": "on-call@example.com"})
    assert _rule_holds(rule, {**base, "PagingEnabled": "false", "PageEmail": ""})
