"""`guardrails policy validate` and `guardrails policy test`: exit codes and messages authors can act on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from guardrails.cli import main

REPO = Path(__file__).resolve().parent.parent


def test_validate_every_shipped_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "validate", str(REPO / "policies")]) == 0
    out = capsys.readouterr().out
    for name in ("default", "example-colang1", "example-colang2"):
        assert f"ok    {name}@" in out
    assert "check refund limit" in out


def test_validate_reports_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.yml").write_text("rails:\n  output:\n    flows: [check pii, check spelling]\n")
    assert main(["policy", "validate", str(tmp_path)]) == 4
    assert (
        f"{tmp_path / 'config.yml'}:3: rails.output: unknown flow 'check spelling'" in capsys.readouterr().out
    )


def test_policy_test_runs_the_shipped_cases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "test", str(REPO / "policies")]) == 0
    out = capsys.readouterr().out
    passed = int(out.strip().splitlines()[-1].split()[0])
    assert passed >= 15 and "0 failed" in out


def test_policy_test_reports_a_failing_case(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "p"
    shutil.copytree(REPO / "policies" / "default", policy, ignore=shutil.ignore_patterns("tests"))
    (policy / "tests").mkdir()
    case = {
        "check": {"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}},
        "expect": {"verdict": "block", "categories": ["secret"]},
    }
    (policy / "tests" / "wrong.json").write_text(json.dumps(case))
    assert main(["policy", "test", str(policy)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  p/tests/wrong.json" in out and "verdict 'allow', expected 'block'" in out
    assert "no 'secret' finding" in out
