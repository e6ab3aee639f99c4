"""An installed (non-editable) package serves one OpenAPI example per format, with its default policy.

samples/ and policies/ are not packages, so they are not installed: setup.py's build step copies samples/*.json
into the built `api` package and the policies/ tree into the built `guardrails` package, and MANIFEST.in keeps
them in the sdist a wheel may be built from. The test builds like pip does (sdist, then the build step that fills
a wheel) into a bare directory outside the repository, and serves /openapi.json from there in a fresh interpreter
started in an empty directory, with the default settings: the repository's samples/ and policies/ are out of reach.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "samples").glob("*.json"))
FORMATS = {"openai.chat", "openai.responses", "anthropic.messages", "gemini.interactions", "gemini"}
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "api", "guardrails", "detectors", "samples",
                "policies")
SERVE_FROM_INSTALL = """
import json
from fastapi.testclient import TestClient
import api.app
from detectors.guard_model import DEFAULT_POLICY_DIR
from guardrails.config import Settings
from guardrails.serve import build_app

settings = Settings.from_env()
client = TestClient(build_app(Settings(policy_dir=settings.policy_dir, audit_url="none", state_url="none")))
doc = client.get("/openapi.json").json()
examples = doc["paths"]["/v1/checks"]["post"]["requestBody"]["content"]["application/json"]["examples"]
values = {name: example["value"] for name, example in examples.items()}
checks = {name: client.post("/v1/checks", json=value).json() for name, value in values.items()}
print(json.dumps({"api_file": api.app.__file__, "policy_dir": str(settings.policy_dir),
                  "guard_model_templates": str(DEFAULT_POLICY_DIR), "ready": client.get("/readyz").json(),
                  "examples": values, "checks": checks}))
"""


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def build_installed_tree(work: Path) -> Path:
    """sdist from a copy of the build inputs, then setup.py's build_py from the unpacked sdist: the tree a wheel
    is packed from (the C extension left out: the logprob reader has a pure-Python path). Not `pip wheel`: offline
    it needs the `wheel` package (--no-build-isolation), which the dev environment does not have."""
    source = work / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        else:
            shutil.copy2(origin, source / name)
    run([sys.executable, "setup.py", "-q", "sdist", "--formats=gztar", "-d", str(work / "dist")], source)
    (sdist,) = (work / "dist").glob("*.tar.gz")
    shutil.unpack_archive(sdist, work / "unpacked")
    (unpacked,) = (work / "unpacked").iterdir()
    installed = work / "site-packages"
    run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(installed)], unpacked)
    return installed


def policy_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*"))
            if path.is_file() and "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build the package")
    work = tmp_path_factory.mktemp("wheel-build")
    installed = build_installed_tree(work)
    elsewhere = tmp_path_factory.mktemp("empty-cwd")  # no ./policies: the default must come from the install
    env = {name: value for name, value in os.environ.items() if not name.startswith("GUARDRAILS_")}
    env["PYTHONPATH"] = str(installed)  # ahead of the editable install's finder
    out = run([sys.executable, "-c", SERVE_FROM_INSTALL], elsewhere, env)
    return {"installed": installed, **json.loads(out.splitlines()[-1])}


def test_the_app_runs_from_the_installed_tree_not_the_repository(served: dict[str, Any]) -> None:
    assert Path(served["api_file"]).is_relative_to(served["installed"])


def test_installed_openapi_has_every_sample_as_an_example_nulls_included(served: dict[str, Any]) -> None:
    examples = served["examples"]
    assert set(examples) == {"minimal"} | {path.stem for path in SAMPLES}
    for path in SAMPLES:
        assert examples[path.stem] == json.loads(path.read_text(encoding="utf-8")), path.name


def test_installed_examples_cover_every_format_and_pass_the_default_policy(served: dict[str, Any]) -> None:
    checks = {name: check for name, check in served["checks"].items() if name != "minimal"}
    assert {check["format"] for check in checks.values()} == FORMATS, checks
    assert {name: check["verdict"] for name, check in checks.items()} == dict.fromkeys(checks, "allow")


def test_installed_tree_carries_every_policy_file(served: dict[str, Any]) -> None:
    packaged = served["installed"] / "guardrails" / "policies"
    assert policy_files(packaged) == policy_files(REPO / "policies")


def test_outside_a_checkout_the_default_policy_dir_is_the_installed_copy(served: dict[str, Any]) -> None:
    packaged = served["installed"] / "guardrails" / "policies"
    assert Path(served["policy_dir"]) == packaged
    assert Path(served["guard_model_templates"]) == packaged / "default"
    assert served["ready"]["ready"] is True, served["ready"]
    assert {check["policy"]["id"] for check in served["checks"].values()} == {"default"}
