"""`guardrails check`: readable output, --json, stdin, and documented exit codes."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from guardrails.cli import EXIT_BAD_INPUT, EXIT_BY_VERDICT, EXIT_CONFIG, EXIT_INTERNAL, EXIT_USAGE, main

BLOCKED = {
    "request": {"messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "get_weather"}}]},
    "response": {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "wipe_disk", "arguments": "{}"}}]}}]},
}
WARNED = {"request": {"messages": [{"role": "user", "content": "Who do I contact?"}]},
          "response": {"choices": [{"index": 0, "message": {"role": "assistant",
                                                            "content": "Write to jane.doe@example.com."}}]}}
ALLOWED = {"request": {"messages": [{"role": "user", "content": "hi"}]},
           "response": {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}]}}


def write(tmp_path: Path, body: object, name: str = "body.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(body) if not isinstance(body, str) else body)
    return str(path)


def test_block_prints_finding_with_snippet_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", write(tmp_path, BLOCKED)]) == 2
    out = capsys.readouterr().out
    assert out.startswith("verdict: BLOCK")
    assert "tool_undeclared" in out and '"wipe_disk"' in out
    assert "/response/choices/0/message/tool_calls/0/function/name [0:9]" in out


def test_allow_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", write(tmp_path, ALLOWED)]) == 0
    assert capsys.readouterr().out.startswith("verdict: ALLOW")


def test_json_output_is_the_http_response(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", "--json", write(tmp_path, BLOCKED)]) == 2
    payload = json.loads(capsys.readouterr().out)
    assert payload["verdict"] == "block" and payload["findings"][0]["category"] == "tool_undeclared"


def test_reads_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(ALLOWED)))
    assert main(["check", "-"]) == 0


def test_bad_inputs_exit_3_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", write(tmp_path, "{not json")]) == EXIT_BAD_INPUT
    assert "not valid JSON" in capsys.readouterr().err
    assert main(["check", write(tmp_path, {"request": 1})]) == EXIT_BAD_INPUT
    assert "invalid_body" in capsys.readouterr().err
    assert main(["check", str(tmp_path / "missing.json")]) == EXIT_BAD_INPUT


def test_usage_error_exits_64() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check"])
    assert exc.value.code == EXIT_USAGE


def test_warn_exits_1_and_names_the_finding(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", write(tmp_path, WARNED)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("verdict: WARN")
    assert "/response/choices/0/message/content [9:29]" in out and '"jane.doe@example.com"' not in out
    assert '"….com"' in out  # masked as the evidence masks it: a report is pasted into tickets


def test_help_lists_the_exit_codes(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["check", "--help"])
    assert exc.value.code == 0
    lines = {line.split(maxsplit=1)[0]: line.split(maxsplit=1)[1] for line in
             capsys.readouterr().out.split("exit codes:", 1)[1].strip().splitlines()}
    assert lines == {str(EXIT_BY_VERDICT["allow"]): "allow", str(EXIT_BY_VERDICT["warn"]): "warn",
                     str(EXIT_BY_VERDICT["block"]): "block",
                     str(EXIT_BAD_INPUT): "the body cannot be read (not JSON, not a check body, unknown format)",
                     str(EXIT_CONFIG): "the policy does not load or is unknown", str(EXIT_USAGE): "wrong arguments",
                     str(EXIT_INTERNAL): "internal error (a bug: the traceback is printed)"}


def test_an_internal_error_is_not_read_as_a_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    async def broken(self: object, body: object, policy: object = None) -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr("guardrails.service.CheckService.check", broken)
    assert main(["check", write(tmp_path, ALLOWED)]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert "RuntimeError: a bug" in err and "internal error" in err
