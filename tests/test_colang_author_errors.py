"""What a policy author sees of a broken Colang bundle: an actions.py that does not import is a build error
(validate names it; a reload keeps the last good version), parse errors name the right line in the author's
terms, and a 2.x flow that aborts says why (and validate's warnings name a missing `global`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle, validate

from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry
from guardrails.engine import Engine
from guardrails.exchange import Exchange
from guardrails.findings import Action, Category
from guardrails.policy import PolicyError, PolicyStore, load_policy
from guardrails.service import CheckService

REGISTRY = DetectorRegistry.from_entry_points()
V1_CONFIG = "colang_version: '1.0'\nmodels: []\nrails:\n  output: {flows: [check wire]}\n"
V2_CONFIG = "colang_version: '2.x'\nmodels: []\nrails:\n  output: {flows: [check wire]}\n"
V1_FLOWS = """define subflow check wire
  if "wire" in $bot_message
    $over = execute wire_over_limit()
    if $over
      execute block(reason="wire over the limit")
      stop
"""
V2_FLOWS = """flow check wire
  global $bot_message
  if "wire" in $bot_message
    $over = await WireOverLimitAction()
    if $over
      await BlockAction(reason="wire over the limit")
"""
GOOD_ACTIONS = """from nemoguardrails.actions import action


@action(name="wire_over_limit")
async def wire_over_limit() -> bool:
    return True
"""
# The walkthrough's edit: a dict left open. Python reports the line of the `{`.
UNCLOSED_ACTIONS = """from nemoguardrails.actions import action

LIMITS = {
    "usd": 1000,
    "eur": 900,


@action(name="wire_over_limit")
async def wire_over_limit() -> bool:
    return True
"""
RAISING_ACTIONS = """import os

from nemoguardrails.actions import action

LIMIT = int(os.environ["GUARDRAILS_TEST_WIRE_LIMIT_UNSET"])


@action(name="wire_over_limit")
async def wire_over_limit() -> bool:
    return True
"""
MISSING_MODULE_ACTIONS = "from nemoguardrails.actions import action\nimport wire_limits_client_not_installed\n"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "send the money"}]}


def answer(content: str) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}


WIRE = {"request": REQUEST, "response": answer("I will wire 5000 USD now.")}


def read(body: dict[str, Any]) -> Exchange:
    return read_exchange(body["request"], body.get("response"))


# --- 1. an actions.py that does not import --------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "line", "needle"),
    [
        (UNCLOSED_ACTIONS, 3, "SyntaxError: '{' was never closed"),
        (RAISING_ACTIONS, 5, "KeyError: 'GUARDRAILS_TEST_WIRE_LIMIT_UNSET'"),
        (MISSING_MODULE_ACTIONS, 2, "ModuleNotFoundError: No module named 'wire_limits_client_not_installed'"),
    ],
    ids=["syntax-error", "raises", "missing-module"],
)
@pytest.mark.parametrize(("config", "flows"), [(V1_CONFIG, V1_FLOWS), (V2_CONFIG, V2_FLOWS)],
                         ids=["colang1", "colang2"])
def test_validate_reports_the_import_error_of_actions_py_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, flows: str, source: str, line: int,
    needle: str
) -> None:
    directory = bundle(tmp_path, "p", config, rails__co=flows, actions__py=source)
    code, out = validate(directory, capsys)
    errors = [text for text in out.splitlines() if text.startswith("error ")]
    assert code == 4
    assert errors == [f"error {directory / 'actions.py'}:{line}: does not import, so none of its actions "
                      f"would exist: {needle}"], out  # not "calls unknown action 'wire_over_limit'"


def test_a_module_of_the_actions_folder_that_does_not_import_is_reported_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=V1_FLOWS)
    (directory / "actions").mkdir()
    (directory / "actions" / "wire.py").write_text(UNCLOSED_ACTIONS)
    code, out = validate(directory, capsys)
    assert code == 4
    assert f"error {directory / 'actions' / 'wire.py'}:3: does not import" in out, out


def test_a_reload_whose_actions_py_does_not_import_keeps_the_last_good_version(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=V2_FLOWS,
                       actions__py=GOOD_ACTIONS.replace('"wire_over_limit"', '"WireOverLimitAction"'))
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    first = asyncio.run(service.check(WIRE))
    assert [f["message"] for f in first["findings"]] == ["flow 'check wire' blocked: wire over the limit"]

    (directory / "actions.py").write_text(UNCLOSED_ACTIONS.replace('"wire_over_limit"', '"WireOverLimitAction"'))
    second = asyncio.run(service.check(WIRE))
    # Was the broken version, live: a detector_error "called unknown action 'WireOverLimitAction'".
    assert second["policy"] == first["policy"]
    assert second["findings"] == first["findings"]
    problem = service.readiness()["problems"]["reload:p"]
    assert f"kept version {first['policy']['version']}" in problem
    assert f"{directory / 'actions.py'}:3: does not import" in problem and "'{' was never closed" in problem


def test_the_service_refuses_a_first_version_whose_actions_py_does_not_import(tmp_path: Path) -> None:
    bundle(tmp_path, "p", V1_CONFIG, rails__co=V1_FLOWS, actions__py=RAISING_ACTIONS)
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    with pytest.raises(PolicyError) as caught:
        asyncio.run(service.check(WIRE))
    assert (caught.value.file, caught.value.line) == (str(tmp_path / "p" / "actions.py"), 5)
    assert "KeyError" in service.readiness()["problems"]["policy:p"]


def test_actions_py_is_imported_once_from_the_bundle_and_its_actions_run(tmp_path: Path) -> None:
    # Each import appends the module's path: one line, the bundle's own file (tracebacks name it too).
    record = tmp_path / "imports.txt"
    source = f"from pathlib import Path\nwith open({str(record)!r}, 'a') as f:\n    f.write(__file__ + '\\n')\n"
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=V1_FLOWS, actions__py=source + GOOD_ACTIONS)
    engine = Engine(load_policy(directory), REGISTRY)
    assert record.read_text().splitlines() == [str(directory / "actions.py")]
    result = asyncio.run(engine.run(read(WIRE)))
    assert [f.message for f in result.findings] == ["flow 'check wire' blocked: wire over the limit"]


# --- 2. parse errors: the right line, in the author's terms ----------------------------------------------


@pytest.mark.parametrize(
    ("version", "source", "line", "needle"),
    [
        # lark's DedentError carries no line
        ("2.x", "flow check codename\n    global $bot_message\n    if \"x\" in $bot_message\n      abort\n"
                "  await WarnAction(reason=\"w\")\n", 5,
         "inconsistent indentation: this line is indented 2 spaces, which lines up with no block above it "
         "(those are indented 0, 4 or 6 spaces)"),
        # lark points at the end of line 2, with "Unexpected token Token('_INDENT', '    ')"
        ("2.x", "flow check codename\n  global $bot_message\n\n  # why\n      abort\n", 5,
         "unexpected indentation: this line is indented deeper than line 2 (`global $bot_message`), "
         "which does not open a block"),
        ("2.x", "flow check codename\n  global $bot_message\n  if \"x\" in $bot_message\n  abort\n", 4,
         "expected an indented block under `if \"x\" in $bot_message` (line 3)"),
        ("2.x", "flow check codename\n  global $bot_message\n  await BlockAction(reason='x)\n", 3,
         "unterminated string: the quote at column 28 is never closed"),
        ("2.x", "flow check codename\n  $r = await DetectPiiAction(\n  abort\n", 2,
         "'(' at column 29 is never closed"),
        # NeMo's 1.0 parser: "Error parsing line 3 in rails.co: 'list' object has no attribute 'keys'"
        ("1.0", "define subflow check answer\n  if $bot_message\n    execute block(reason=\"x\")\n     stop\n", 4,
         "unexpected indentation: this line is indented deeper than line 3 (`execute block(reason=\"x\")`), "
         "which does not open a block"),
        # Python's parser on the expression alone: "unterminated string literal (detected at line 1)"
        ("1.0", "define subflow ok\n  stop\n\ndefine subflow check answer\n  if $bot_message\n"
                "    execute block(reason=\"over the limit)\n    stop\n", 6,
         "unterminated string: the quote at column 26 is never closed"),
        ("1.0", "define subflow check answer\n  $r = execute detect_pii()\n   if $r[\"count\"] > 0\n    stop\n", 3,
         "unexpected indentation: this line is indented deeper than line 2 (`$r = execute detect_pii()`)"),
    ],
    ids=["v2-dedent", "v2-indent", "v2-empty-block", "v2-string", "v2-bracket", "v1-indent", "v1-string",
         "v1-indent-expression"],
)
def test_colang_syntax_errors_name_the_line_and_what_is_wrong(
    tmp_path: Path, version: str, source: str, line: int, needle: str
) -> None:
    directory = bundle(tmp_path, "p", f"colang_version: '{version}'\nmodels: []\n", rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert (caught.value.file, caught.value.line) == (str(directory / "rails.co"), line), caught.value
    assert caught.value.message.startswith("Colang syntax error: ")
    assert needle in caught.value.message
    assert "Token(" not in caught.value.message and "object has no attribute" not in caught.value.message


def test_a_colang2_flow_main_is_refused_at_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = "flow check wire\n  await WarnAction(reason='x')\n\n# mine\n@active\nflow main\n  await check wire\n"
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 4
    assert f"error {directory / 'rails.co'}:6: a Colang 2.x policy must not define `flow main`" in out, out


# --- 3. a 2.x flow that aborts says why; validate can warn of a missing `global` --------------------------

CODENAME = """flow check wire
  $bot_message = $bot_message.lower()
  if "bluebird" in $bot_message
    await BlockAction(reason="codename")

flow check reads
  if "bluebird" in $user_message
    await WarnAction(reason="codename asked")

flow check declared $tool_name
  global $bot_message
  $tool_name = "x"
  if $bot_message == $tool_name
    abort
"""


def test_a_flow_that_aborts_on_a_runtime_error_carries_the_error_and_its_likely_cause(tmp_path: Path) -> None:
    engine = Engine(load_policy(bundle(tmp_path, "p", V2_CONFIG, rails__co=CODENAME)), REGISTRY)
    result = asyncio.run(engine.run(read({"request": REQUEST, "response": answer("Project Bluebird ships.")})))
    [finding] = [f for f in result.findings if f.category is Category.CUSTOM]
    assert finding.action is Action.BLOCK
    assert finding.message.startswith("flow 'check wire' blocked: the flow aborted on a Colang error: ")
    assert "Error evaluating '$bot_message.lower()'" in finding.evidence["colang_error"]
    assert finding.evidence["colang_error"] in finding.message
    assert ("$bot_message is not declared `global $bot_message` in flow 'check wire' (rails.co:2)"
            in finding.message)


def test_a_flow_that_aborts_on_purpose_still_reads_as_before(tmp_path: Path) -> None:
    flows = "flow check wire\n  global $bot_message\n  if \"wire\" in $bot_message\n    abort\n"
    engine = Engine(load_policy(bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)), REGISTRY)
    result = asyncio.run(engine.run(read(WIRE)))
    [finding] = [f for f in result.findings if f.category is Category.CUSTOM]
    assert finding.message == "flow 'check wire' blocked: the flow aborted"
    assert "colang_error" not in finding.evidence


def test_global_warnings_name_each_check_variable_used_before_its_global(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=CODENAME)
    warnings = Engine(load_policy(directory), REGISTRY).colang.global_warnings()
    assert [(w.file, w.line) for w in warnings] == [(str(directory / "rails.co"), 2), (str(directory / "rails.co"), 7)]
    assert warnings[0].message.startswith("flow 'check wire' assigns $bot_message without declaring "
                                          "`global $bot_message` first")
    assert warnings[1].message.startswith("flow 'check reads' reads $user_message without declaring "
                                          "`global $user_message` first")
    # `check declared` declares $bot_message and takes $tool_name as a parameter: nothing to say.


def test_colang1_flows_have_no_global_warnings(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=V1_FLOWS, actions__py=GOOD_ACTIONS)
    assert Engine(load_policy(directory), REGISTRY).colang.global_warnings() == []


def test_validate_prints_the_global_warnings_and_still_passes(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=CODENAME)
    code, out = validate(directory, capsys)
    assert code == 0 and "ok    p@" in out
    warnings = [line.strip() for line in out.splitlines()
                if line.strip().startswith("warning:") and "without declaring" in line]  # not: unlisted flows
    assert len(warnings) == 2
    assert f"{directory / 'rails.co'}:2" in warnings[0] and "assigns $bot_message" in warnings[0]
