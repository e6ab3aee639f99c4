"""Every sample gives its documented verdict through HTTP and the CLI, and every finding resolves."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import assert_findings_resolve
from fastapi.testclient import TestClient

from guardrails.cli import EXIT_BY_VERDICT, main

REPO = Path(__file__).resolve().parent.parent
SAMPLES = sorted((REPO / "samples").glob("*.json")) + sorted((REPO / "samples" / "attacks").glob("*.json"))
EXPECTED_CATEGORIES = {
    "openai_chat_exfiltration": {"secret", "prompt_injection", "unsafe_reasoning", "tool_taint"},
}


def expected_verdict(path: Path) -> str:
    return "block" if path.parent.name == "attacks" else "allow"


def test_every_format_has_a_sample_and_a_stream_sample() -> None:
    names = {p.stem for p in SAMPLES}
    for stem in ("openai_chat", "openai_responses", "anthropic_messages", "gemini_interactions",
                 "gemini_generate_content"):
        assert stem in names and f"{stem}_stream" in names


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_verdict_over_http(client: TestClient, path: Path) -> None:
    body = json.loads(path.read_text())
    resp = client.post("/v1/checks", json=body)
    assert resp.status_code == 200, resp.text
    result = resp.json()
    assert result["verdict"] == expected_verdict(path), result["findings"]
    categories = {f["category"] for f in result["findings"]}
    assert EXPECTED_CATEGORIES.get(path.stem, set()) <= categories
    assert_findings_resolve(body, result["findings"])


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_verdict_through_the_cli(path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["check", str(path), "--policy-dir", str(REPO / "policies")])
    assert code == EXIT_BY_VERDICT[expected_verdict(path)]
    assert capsys.readouterr().out.startswith(f"verdict: {expected_verdict(path).upper()}")
