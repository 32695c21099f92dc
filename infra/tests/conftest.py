"""Shared fixtures of the ops checks: the repository's templates, dashboards and alarms as data, the
relay's and canary's metric catalogs read from the built binaries, and the local AWS-API server.

Run through scripts/ops-checks.sh, which installs the pinned tools into .venv-ops and needs
AWS_ENDPOINT_URL (a loopback moto server). Without it every test fails at once: these checks never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402

TEMPLATES = {
    "data": ROOT / "infra" / "data.yaml",
    "relay": ROOT / "infra" / "relay.yaml",
    "canary": ROOT / "infra" / "canary.yaml",
    "bootstrap": ROOT / "infra" / "bootstrap.yaml",
}
ENVIRONMENTS = {"dev": "us-west-2", "prod": "us-east-1"}
RELAY_BIN = ROOT / "target" / "debug" / "relay"
HEALTHCHECK_BIN = ROOT / "target" / "debug" / "healthcheck"
VENV_BIN = Path(sys.executable).parent


def pytest_configure(config: pytest.Config) -> None:
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if not endpoint:
        raise pytest.UsageError(
            "AWS_ENDPOINT_URL is unset: these checks deploy into a local AWS-API server. Start one with\n"
            '  ./scripts/aws-local.sh install && eval "$(./scripts/aws-local.sh start)"\n'
            "then run bash scripts/ops-checks.sh (scripts/test.sh does both)."
        )
    host = urlparse(endpoint).hostname or ""
    if not (host == "localhost" or host.startswith("127.") or host == "::1"):
        raise pytest.UsageError(f"AWS_ENDPOINT_URL={endpoint} is not a loopback address; refusing to touch it")


def load_yaml(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def templates() -> dict[str, dict]:
    """Every stack template as data; `observability` is the rendered one scripts/deploy.sh deploys."""
    loaded = {name: load_yaml(path) for name, path in TEMPLATES.items()}
    loaded["observability"] = render.render()
    return loaded


@pytest.fixture(scope="session")
def rendered_observability(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rendered observability template on disk, written by infra/render.py's own CLI."""
    out = tmp_path_factory.mktemp("rendered") / "observability.yaml"
    subprocess.run([sys.executable, str(ROOT / "infra" / "render.py"), "--out", str(out)], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def alarms_doc() -> dict:
    return render.load_alarms()


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict]:
    return {render.dashboard_name(path): render.load_dashboard(path) for path in render.dashboard_files()}


@pytest.fixture(scope="session")
def environments() -> dict[str, dict]:
    return {env: json.loads((ROOT / "infra" / "environments" / f"{env}.json").read_text()) for env in ENVIRONMENTS}


def _run_catalog(binary: Path) -> dict:
    if not binary.exists():
        pytest.fail(f"{binary} is missing: scripts/ops-checks.sh builds it (cargo build -p relay -p healthcheck)")
    out = subprocess.run([str(binary), "metrics-catalog", "--format", "json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def relay_catalog() -> dict[str, dict]:
    """name -> spec, from `target/debug/relay metrics-catalog --format json`."""
    return {spec["name"]: spec for spec in _run_catalog(RELAY_BIN)}


@pytest.fixture(scope="session")
def canary_catalog() -> dict:
    """`target/debug/healthcheck metrics-catalog --format json`."""
    return _run_catalog(HEALTHCHECK_BIN)


@pytest.fixture(scope="session")
def tool():
    """The path of a tool installed in this venv (cfn-lint, checkov, actionlint, shellcheck, aws)."""

    def find(name: str) -> str:
        path = VENV_BIN / name
        if not path.exists():
            pytest.fail(f"{name} is not installed in {VENV_BIN}: run scripts/ops-checks.sh")
        return str(path)

    return find


def debian_tool(name: str) -> str:
    """A tool of Debian's prometheus package on PATH (promtool, prometheus), or a failure saying so."""
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing: scripts/ops-checks.sh installs Debian's prometheus package")
    return found
