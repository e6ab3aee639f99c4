"""Errors a policy author meets, found by a walkthrough: each names the file, the line, the key, the valid values
and the closest one; a policy chosen by the server (routing.yml, the default) that is missing is the server's
error (503), not the body's; `guardrails policy test` refuses expectations no check can meet."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from policy_bundles import bundle, validate

from guardrails.cli import EXIT_CONFIG, main
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry
from guardrails.policy import PolicyError, PolicyStore, load_policy
from guardrails.policy_cli import EXIT_FAILED, EXIT_OK
from guardrails.serve import build_app
from guardrails.service import CheckService

REPO = Path(__file__).resolve().parent.parent
REQUEST = {"model": "Qwen/Qwen3-8B", "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}
ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "Qwen/Qwen3-8B",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "Sunny, 21 degrees."}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
}
MINIMAL = (REPO / "policies" / "minimal" / "config.yml").read_text()


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`guardrails serve/check --policy-dir` writes GUARDRAILS_POLICY_DIR into os.environ: set it here first so
    that monkeypatch restores it; stores go to this test's directory."""
    monkeypatch.setenv("GUARDRAILS_POLICY_DIR", str(tmp_path))
    monkeypatch.setenv("GUARDRAILS_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("GUARDRAILS_DEFAULT_POLICY", raising=False)
    return tmp_path


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """`guardrails serve` gets as far as starting uvicorn, which records its arguments instead."""
    import uvicorn

    with socket.socket() as sock:  # serve tries to bind its port first: a free one, not 8000
        sock.bind(("127.0.0.1", 0))
        monkeypatch.setenv("GUARDRAILS_PORT", str(sock.getsockname()[1]))
    started: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    return started


# --- 1. the default policy -----------------------------------------------------------------------------


def test_serve_without_a_default_bundle_names_the_directory_the_id_the_bundles_and_the_setting(
        isolated_env: Path, no_server: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    root = isolated_env / "mine"
    bundle(root, "support", MINIMAL)
    bundle(root, "ops", MINIMAL)
    assert main(["serve", "--policy-dir", str(root)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"no bundle 'default' in the policy directory {root} (bundles found: ops, support)" in err
    assert "GUARDRAILS_DEFAULT_POLICY=<id>" in err and f"`default: <id>` in {root / 'routing.yml'}" in err
    assert not no_server


def test_serve_with_a_policy_dir_that_does_not_exist_says_so(
        isolated_env: Path, no_server: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    missing = isolated_env / "nope"
    assert main(["serve", "--policy-dir", str(missing)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"the policy directory {missing} does not exist (looked for bundle 'default')" in err
    assert "GUARDRAILS_DEFAULT_POLICY" in err and not no_server


def test_routing_yml_default_is_the_default_policy(
        isolated_env: Path, no_server: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    root = isolated_env / "mine"
    bundle(root, "support", MINIMAL)
    (root / "routing.yml").write_text("agents:\n  ops-bot: support\ndefault: support\n")
    assert main(["serve", "--policy-dir", str(root)]) == 0, capsys.readouterr().err
    assert len(no_server) == 1
    service = CheckService(PolicyStore(root, check_interval_s=0), DetectorRegistry.from_entry_points())
    assert service.default_policy_id() == "support"
    assert service.readiness()["ready"] is True
    result = service_check(service, {"request": REQUEST, "response": ANSWER})
    assert result["policy"]["id"] == "support" and result["verdict"] == "allow"


def test_a_routing_default_that_names_no_bundle_stops_serve_at_its_line(
        isolated_env: Path, no_server: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    root = isolated_env / "mine"
    bundle(root, "default", MINIMAL)
    (root / "routing.yml").write_text("tenants:\n  acme: default\ndefault: suport\n")
    assert main(["serve", "--policy-dir", str(root)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "no bundle 'suport'" in err and f"the rule `default` of {root / 'routing.yml'}:3" in err
    assert "GUARDRAILS_DEFAULT_POLICY" in err and not no_server


def service_check(service: CheckService, body: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    return asyncio.run(service.check(body))


# --- 2. a policy routing names that does not exist -----------------------------------------------------


@pytest.fixture
def routed_to_nowhere(tmp_path: Path) -> TestClient:
    root = tmp_path / "policies"
    bundle(root, "default", MINIMAL)
    (root / "routing.yml").write_text("agents:\n  support-bot: default\n  ops-bot: strict\n")
    settings = Settings(policy_dir=root, data_dir=tmp_path / "var")
    return TestClient(build_app(settings), raise_server_exceptions=False)


def test_a_check_routed_to_a_missing_policy_is_a_503_naming_routing_yml(routed_to_nowhere: TestClient) -> None:
    body = {"request": REQUEST, "response": ANSWER, "context": {"agent_id": "ops-bot"}}
    resp = routed_to_nowhere.post("/v1/checks", json=body)
    assert resp.status_code == 503, resp.text
    error = resp.json()["error"]
    assert error["type"] == "policy_unavailable" and "pointer" not in error
    assert "no bundle 'strict'" in error["message"] and "the rule `agents.ops-bot` of " in error["message"]
    assert "routing.yml:3" in error["message"]
    nemo = routed_to_nowhere.post("/v1/guardrail/checks", json={
        "messages": REQUEST["messages"], "guardrails": {"context": {"agent_id": "ops-bot"}}})
    assert nemo.status_code == 503 and nemo.json()["error"]["type"] == "policy_unavailable"


def test_a_body_naming_a_missing_policy_stays_a_422(routed_to_nowhere: TestClient) -> None:
    resp = routed_to_nowhere.post("/v1/checks", json={"request": REQUEST, "policy": "strict",
                                                      "context": {"agent_id": "ops-bot"}})
    assert resp.status_code == 422
    assert resp.json()["error"]["type"] == "unknown_policy" and resp.json()["error"]["pointer"] == "/policy"
    routed_well = routed_to_nowhere.post("/v1/checks", json={"request": REQUEST,
                                                             "context": {"agent_id": "support-bot"}})
    assert routed_well.status_code == 200 and routed_well.json()["policy"]["id"] == "default"


def test_cli_check_routed_to_a_missing_policy_exits_4_naming_routing_yml(
        isolated_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = isolated_env / "policies"
    bundle(root, "default", MINIMAL)
    (root / "routing.yml").write_text("tenants: {acme: default, bank: strict}\n")
    body = isolated_env / "body.json"
    body.write_text(json.dumps({"request": REQUEST, "context": {"tenant": "bank"}}))
    assert main(["check", str(body), "--policy-dir", str(root)]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert f"the rule `tenants.bank` of {root / 'routing.yml'}:1" in err


def test_validate_names_the_line_of_a_routing_rule_to_a_missing_policy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle(tmp_path, "default", MINIMAL)
    (tmp_path / "routing.yml").write_text("agents:\n  a: default\ntenants:\n  acme: default\n  bank: strict\n")
    code, out = validate(tmp_path, capsys)
    assert code == EXIT_CONFIG
    assert f"error {tmp_path / 'routing.yml'}:5: names policy 'strict', which does not exist" in out


# --- 3. colang: and timeout_ms -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "line", "needle"),
    [
        ("colang_version: '1.0'\ncolang: {timeout: 500}\n", 2,
         "colang: unknown key 'timeout'; did you mean 'timeout_ms'?"),
        ("colang:\n  timeout_ms: 500\n  retries: 2\n", 3, "colang: unknown key 'retries'"),
        ("colang: 500\n", 1, "colang must be a mapping"),
        ("colang:\n  timeout_ms: true\n", 2, "colang.timeout_ms must be a positive number of milliseconds, not True"),
        ("colang: {timeout_ms: 0}\n", 1, "colang.timeout_ms must be a positive number"),
        ("detectors:\n  tool_undeclared:\n    action: block\n    timeout_ms: true\n", 4,
         "detector 'tool_undeclared': timeout_ms must be a positive number of milliseconds, not True"),
        ("detectors:\n  tool_undeclared: {timeout_ms: false}\n", 2, "not False"),
        ("detectors:\n  tool_undeclared:\n    timeout_ms: '250'\n", 3, "not '250'"),
        ("detectors:\n  tool_undeclared:\n    timeout_ms: -5\n", 3, "not -5"),
        ("detectors:\n  tool_undeclared:\n    timeout_ms: .nan\n", 3, "not nan"),
    ],
)
def test_colang_keys_and_timeouts_are_checked(tmp_path: Path, config: str, line: int, needle: str) -> None:
    directory = bundle(tmp_path, "p", config)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert needle in caught.value.message
    assert (caught.value.file, caught.value.line) == (str(directory / "config.yml"), line)


def test_valid_timeouts_still_load(tmp_path: Path) -> None:
    policy = load_policy(bundle(tmp_path, "p", "colang: {timeout_ms: 1500}\ndetectors:\n  tool_undeclared:\n"
                                               "    timeout_ms: 250\n  secret: {timeout_ms: 0.5}\n"))
    assert policy.rails.timeout_s == 1.5
    assert policy.detector("tool_undeclared").timeout_s == 0.25
    assert policy.detector("secret").timeout_s == 0.0005


# --- 4. enums, keys and detector names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "line", "needles"),
    [
        ("detectors:\n  pii:\n    action: blok\n", 3,
         ["detector 'pii': action: 'blok' is not valid", "did you mean 'block'?", "valid: allow, warn, block"]),
        ("on_detector_error: blok\n", 1, ["on_detector_error: 'blok' is not valid", "did you mean 'block'?",
                                          "valid: allow, warn, block"]),
        ("detectors:\n  pii:\n    applies_to: {phases: [reponse]}\n", 3,
         ["detector 'pii': applies_to.phases: 'reponse' is not valid", "did you mean 'response'?",
          "valid: request, response"]),
        ("detectors:\n  pii:\n    applies_to:\n      kinds: [user, answer]\n", 4,
         ["applies_to.kinds: 'answer' is not valid", "did you mean 'assistant'?",
          "valid: system, user, assistant, reasoning, tool_call, tool_result, document"]),
        ("detectors:\n  pii:\n    applies_to:\n      trust: [untrustd]\n", 4,
         ["applies_to.trust: 'untrustd' is not valid", "did you mean 'untrusted'?"]),
        ("detectors:\n  pii:\n    applies_to: {phases: response}\n", 3,
         ["detector 'pii': applies_to.phases must be a list, e.g. [response]"]),
        ("detectors:\n  pii:\n    applies_to:\n      phase: [response]\n", 4,
         ["unknown applies_to key 'phase'", "did you mean 'phases'?", "valid: kinds, trust, phases"]),
        ("detectors:\n  pii:\n    applies_to: [response]\n", 3, ["applies_to must be a mapping"]),
        ("colang_version: '2.x'\nmodles: []\n", 2, ["unknown key 'modles'", "did you mean 'models'?"]),
    ],
)
def test_enum_and_key_errors_name_line_key_values_and_the_closest(
        tmp_path: Path, config: str, line: int, needles: list[str]) -> None:
    directory = bundle(tmp_path, "p", config)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    for needle in needles:
        assert needle in caught.value.message
    assert (caught.value.file, caught.value.line) == (str(directory / "config.yml"), line)


def test_a_valid_scope_still_loads(tmp_path: Path) -> None:
    policy = load_policy(bundle(tmp_path, "p", "detectors:\n  pii:\n    applies_to: {kinds: [assistant], "
                                               "trust: [model], phases: [response]}\n"))
    scope = policy.detector("pii").scope
    assert scope is not None and {k.value for k in scope.kinds} == {"assistant"}
    assert {p.value for p in scope.phases} == {"response"} and {t.value for t in scope.trust} == {"model"}


def test_an_enabled_detector_typo_gets_a_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  tool_undeclared: {}\n  secrets: {}\n")
    code, out = validate(directory, capsys)
    assert code == EXIT_CONFIG
    assert (f"{directory / 'config.yml'}:3: policy enables detector 'secrets', which is unavailable: "
            "not installed; did you mean 'secret'?") in out


def test_routing_yml_unknown_key_gets_a_did_you_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle(tmp_path, "default", MINIMAL)
    (tmp_path / "routing.yml").write_text("agent:\n  a: default\n")
    code, out = validate(tmp_path, capsys)
    assert code == EXIT_CONFIG
    assert f"{tmp_path / 'routing.yml'}:1: unknown key 'agent'; did you mean 'agents'?" in out


# --- 5. guardrails policy test --------------------------------------------------------------------------


def bundle_with_case(tmp_path: Path, expect: dict[str, Any]) -> Path:
    """The minimal policy with one test case: an answer to a declared-tool-free chat, which it allows."""
    policy = bundle(tmp_path, "p", MINIMAL)
    (policy / "tests").mkdir()
    (policy / "tests" / "case.json").write_text(json.dumps(
        {"check": {"request": REQUEST, "response": ANSWER}, "expect": expect}))
    return policy


@pytest.mark.parametrize(
    ("expect", "needle"),
    [
        ({"verdict": "allow", "not_categories": ["secrets"]},
         "expect.not_categories: 'secrets' is not a category; did you mean 'secret'?"),
        ({"verdict": "allowed"}, "expect.verdict: 'allowed' is not a verdict; did you mean 'allow'?"),
        ({"not_categories": "pii"}, 'expect.not_categories must be a list of strings, e.g. ["pii"]'),
        ({"verdict": "allow", "categories": []}, None),
    ],
)
def test_policy_test_refuses_expectations_no_finding_can_meet(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], expect: dict[str, Any], needle: str | None) -> None:
    policy = bundle_with_case(tmp_path, expect)
    code = main(["policy", "test", str(policy)])
    out = capsys.readouterr().out
    if needle is None:  # a valid case still runs and passes
        assert code == EXIT_OK and "1 passed, 0 failed" in out
        return
    assert code == EXIT_FAILED
    assert "FAIL  p/tests/case.json" in out and f"{policy / 'tests' / 'case.json'}: {needle}" in out


def test_policy_test_checks_detector_names_against_installed_detectors_and_listed_flows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(REPO / "policies" / "example-colang1", tmp_path / "c1")
    case = json.loads((tmp_path / "c1" / "tests" / "refund_over_limit.json").read_text())
    case["expect"]["detectors"] = ["check refund limits", "tool_undeclared"]
    (tmp_path / "c1" / "tests" / "refund_over_limit.json").write_text(json.dumps(case))
    assert main(["policy", "test", str(tmp_path / "c1")]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert ("expect.detectors: 'check refund limits' is not a detector or custom flow of this policy; "
            "did you mean 'check refund limit'?") in out
    assert "'tool_undeclared' is not a detector" not in out


@pytest.mark.parametrize("command", [["test", "-v"], ["validate"]])
def test_policy_commands_exit_quietly_when_the_reader_goes_away(command: list[str]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as `| head` does once it has its lines: every write now fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "guardrails.cli", "policy", *command,
                               str(REPO / "policies" / "default")],
                              stdout=write_end, stderr=subprocess.PIPE, cwd=REPO, text=True, check=False)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == EXIT_OK  # the exit code still tells whether every case passed


# --- 6. README tables ---------------------------------------------------------------------------------------


def readme_row(start: str) -> str:
    return next(line for line in (REPO / "README.md").read_text().splitlines() if line.startswith(start))


def test_readme_cli_row_lists_every_check_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", capsys.readouterr().out)) - {"--help"}
    assert "--policy-dir" in options
    row = readme_row("| `guardrails check ")
    assert [option for option in sorted(options) if option not in row] == []


def test_readme_audit_url_default_follows_the_data_dir(tmp_path: Path) -> None:
    row = readme_row("| `GUARDRAILS_AUDIT_URL` ")
    assert "GUARDRAILS_DATA_DIR" in row or "data dir" in row
    assert Settings(data_dir=tmp_path).resolved_audit_url() == f"sqlite:///{tmp_path / 'audit.sqlite3'}"
