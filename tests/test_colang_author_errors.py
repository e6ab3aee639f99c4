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
from guardrails.colang.parse import flows_in
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
    said = caught.value.message.split(" (NeMo's parser: ")[0]  # NeMo's own words only as a trailing detail
    assert "Token(" not in said and "object has no attribute" not in said


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


# --- 4. Colang 1.0 mistakes NeMo's parser reports in its own terms ------------------------------------------

V1_HEAD = "define subflow check answer\n"


@pytest.mark.parametrize(
    ("source", "line", "needle", "nemo"),
    [
        # The review's repro: an `if` that ends the file.
        (V1_HEAD + "  $over = execute wire_over_limit()\n  if $over\n    stop\n\n  if $x\n", 6,
         "expected an indented block under `if $x` (line 6): the flow ends there",
         "'NoneType' object is not subscriptable"),
        (V1_HEAD + "  while $x\n", 2, "expected an indented block under `while $x` (line 2): the flow ends there",
         "'NoneType' object is not subscriptable"),
        # Raised with no line, by the step after the line-by-line parse.
        (V1_HEAD + "  if $bot_message\n    execute block(reason=\"x\"\n    stop\n", 3,
         "the arguments of `execute block(reason=\"x\"` are never closed: '(' at column 18 has no ')'",
         "Incorrect params str: reason=\"x\""),
        (V1_HEAD + "  stop\n  execute block(reason=\"x\") now\n", 3,
         "unexpected `now` after the arguments of `execute block(reason=\"x\")`",
         "Incorrect params str: reason=\"x\") now"),
        (V1_HEAD + "  execute block(reason=\"x\"))\n", 2,
         "the arguments of `execute block(reason=\"x\"))` close a bracket never opened: an unexpected ')'",
         "Invalid syntax for string: reason=\"x\"); unexpected closing ')'"),
        (V1_HEAD + "  stop\n  execute block(reason=over)\n", 3,
         "the argument `reason=over` of `execute block(reason=over)` is not a value: quote a string "
         "(`reason=\"over\"`) or write a variable with `$` (`reason=$over`)",
         "malformed node or string on line 1: <ast.Name object>"),
        (V1_HEAD + "  exectue block(reason=\"x\")\n", 2,
         "`exectue` is not a Colang 1.0 statement; did you mean `execute`?",
         "Unknown main token 'exectue' on line 2"),
        ("define subflw check answer\n  stop\n", 1,
         "unknown definition `define subflw`: a top-level block is `define flow`, `define subflow`, `define user` "
         "or `define bot`; did you mean `define subflow`?", "Unknown token: \"subflw\""),
        (V1_HEAD + "  execute\n", 2, "`execute` names no action: write `execute <action>(...)`",
         "Unknown main token 'execute' on line 2"),
        (V1_HEAD + "  $x =\n", 2, "`$x =` assigns nothing: a value or `execute <action>(...)` must follow the `=`",
         "Unknown main token '$x' on line 2"),
        (V1_HEAD + "  $x=1\n", 2, "`$x=1`: Colang 1.0 needs a space on each side of the `=`",
         "Unknown main token '$x=1' on line 2"),
        (V1_HEAD + "  do\n", 2, "`do` needs the name of the flow to run", "list index out of range"),
        (V1_HEAD + "  if\n    stop\n", 2, "`if` needs a condition", "list index out of range"),
        (V1_HEAD + "  else\n    stop\n", 2, "`else` has no `if` above it at the same indentation",
         "Unknown main token 'flow' on line 2"),
        ("define subflow empty\ndefine subflow check answer\n  stop\n", 1,
         "expected an indented block under `define subflow empty` (line 1): the flow has no statements",
         "Expected indented block after define statement."),
        (V1_HEAD + "\tstop\n", 2, "this line is indented with a tab, which NeMo's Colang 1.0 parser does not count",
         "Expected indented block after define statement."),
        (V1_HEAD + "  stop\nif $bot_message\n  stop\n", 3,
         "`if $bot_message` starts at column 1, outside any flow: indent it under its flow's `define`",
         "list index out of range"),
    ],
    ids=["if-at-end", "while-at-end", "unclosed-arguments", "after-arguments", "extra-bracket", "not-a-value",
         "unknown-statement", "unknown-definition", "bare-execute", "empty-assignment", "assignment-spacing",
         "bare-do", "bare-if", "stray-else", "empty-define", "tab", "outside-flow"],
)
def test_colang1_parser_failures_read_in_colang_terms_with_nemos_words_as_a_detail(
    tmp_path: Path, source: str, line: int, needle: str, nemo: str
) -> None:
    # Before: "rails.co:6: Colang syntax error: 'NoneType' object is not subscriptable", or NeMo's
    # "Incorrect params str: reason="x"" at the flow's first line.
    directory = bundle(tmp_path, "p", "colang_version: '1.0'\nmodels: []\n", rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert (caught.value.file, caught.value.line) == (str(directory / "rails.co"), line), caught.value
    assert caught.value.message.startswith("Colang syntax error: " + needle), caught.value.message
    assert caught.value.message.endswith(f" (NeMo's parser: {nemo})"), caught.value.message


def test_the_review_repro_names_the_empty_if_through_validate(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    flows = V1_FLOWS + "\n  if $x\n"
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=flows, actions__py=GOOD_ACTIONS)
    code, out = validate(directory, capsys)
    assert code == 4
    assert out.strip() == (f"error {directory / 'rails.co'}:8: Colang syntax error: expected an indented block "
                           "under `if $x` (line 8): the flow ends there (NeMo's parser: 'NoneType' object is not "
                           "subscriptable)"), out


@pytest.mark.parametrize(
    ("source", "line", "needle"),
    [
        # NeMo takes `stop` as the if's block: the flow would stop only when $x is true.
        (V1_HEAD + "  if $x\n  stop\n", 3, "expected an indented block under `if $x` (line 2)"),
        # NeMo reads an `if` with nothing under it, before the next flow, as an if that does nothing.
        (V1_HEAD + "  if $x\n\ndefine subflow other\n  stop\n", 2,
         "expected an indented block under `if $x` (line 2): the flow ends there"),
        (V1_HEAD + "  if $x\n    stop\n  else\n", 4,
         "expected an indented block under `else` (line 4): the flow ends there"),
    ],
    ids=["same-depth", "before-next-flow", "else-at-end"],
)
def test_a_colang1_block_statement_with_nothing_under_it_is_an_error_though_nemo_accepts_it(
    tmp_path: Path, source: str, line: int, needle: str
) -> None:
    directory = bundle(tmp_path, "p", "colang_version: '1.0'\nmodels: []\n", rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert (caught.value.line, caught.value.message) == (line, f"Colang syntax error: {needle}")


def test_a_colang1_multiline_string_is_not_read_as_statements(tmp_path: Path) -> None:
    # Its second line starts with `if`: part of the string, which NeMo reads up to the line ending in `"`.
    source = ('define bot explain\n  "We can help.\n  if you need more, ask."\n\n'
              + V1_HEAD + "  bot explain\n")
    directory = bundle(tmp_path, "p", "colang_version: '1.0'\nmodels: []\n", rails__co=source)
    assert load_policy(directory).rails.colang_files == (directory / "rails.co",)
    assert set(flows_in([directory / "rails.co"], "1.0")) == {"check answer"}


def test_an_unexplained_colang1_parser_error_keeps_a_line_and_a_colang_lead(tmp_path: Path) -> None:
    # Parameters under `meta` are YAML; NeMo's words are YAML's.
    source = V1_HEAD + "  stop\n  meta\n    - bad\n    key: value\n"
    directory = bundle(tmp_path, "p", "colang_version: '1.0'\nmodels: []\n", rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert caught.value.line == 3
    assert caught.value.message.startswith("Colang 1.0 syntax error: NeMo's parser cannot read `meta`: ")


def test_a_colang1_error_the_explanation_fails_on_still_has_a_line_and_a_colang_lead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import guardrails.colang.parse as parse

    def broken(*args: object) -> None:
        raise RuntimeError("explaining failed")

    monkeypatch.setattr(parse, "v1_problem", broken)
    directory = bundle(tmp_path, "p", "colang_version: '1.0'\nmodels: []\n",
                       rails__co=V1_HEAD + "  stop\n\n  if $x\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert (caught.value.line, caught.value.message) == (
        4, "Colang 1.0 syntax error: NeMo's parser failed: 'NoneType' object is not subscriptable")


# --- 5. Colang 2.x: a `global` nothing sets ------------------------------------------------------------------

TYPO_GLOBAL = """flow check wire
  global $bot_mesage
  if "wire" in $bot_mesage
    await BlockAction(reason="wire")
"""


def unset_global_warnings(out: str) -> list[str]:
    return [line.strip().removeprefix("warning: ") for line in out.splitlines() if "declares `global $" in line]


def test_a_misspelt_global_is_a_validate_warning_with_the_variable_it_probably_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: "ok" and no word; at check time $bot_mesage is None and the flow aborts or judges nothing.
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=TYPO_GLOBAL)
    code, out = validate(directory, capsys)
    assert code == 0 and "ok    p@" in out
    [warning] = unset_global_warnings(out)
    assert warning.startswith(f"{directory / 'rails.co'}:2: flow 'check wire' declares `global $bot_mesage`, "
                              "which nothing sets (not a check variable, no flow assigns it as a global, no action "
                              "returns it in context_updates): it is empty (None) at check time")
    assert warning.endswith("; did you mean $bot_message?")


def test_a_global_another_flow_sets_or_the_service_sets_is_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = """flow check wire
  global $wire_limit
  global $bot_message
  global $guardrails_rail
  await set limit
  if "wire" in $bot_message and $wire_limit < 5000
    await BlockAction(reason=$guardrails_rail)

flow set limit
  global $wire_limit
  $wire_limit = 1000
"""
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 0 and unset_global_warnings(out) == [], out


def test_a_global_a_flow_assigns_without_declaring_it_names_that_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flows = """flow check wire
  global $wire_limit
  await set limit
  if $wire_limit < 5000
    await BlockAction(reason="wire")

flow set limit
  $wire_limit = 1000
"""
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    _, out = validate(directory, capsys)
    [warning] = unset_global_warnings(out)
    assert f"{directory / 'rails.co'}:2: flow 'check wire' declares `global $wire_limit`" in warning
    assert ("flow 'set limit' assigns $wire_limit without declaring `global $wire_limit`, so that value stays in "
            "flow 'set limit'") in warning


ACTION_SETS_LIMIT = """from nemoguardrails.actions import action
from nemoguardrails.actions.actions import ActionResult


@action(name="LoadLimitsAction")
async def load_limits() -> ActionResult:
    return ActionResult(return_value=True, context_updates={"wire_limit": 1000})
"""
ACTION_SETS_ANY = ACTION_SETS_LIMIT.replace('{"wire_limit": 1000}', "load()").replace(
    "@action", "def load() -> dict:\n    return {}\n\n\n@action")


@pytest.mark.parametrize(("actions", "flows", "expected"), [
    (ACTION_SETS_LIMIT, "wire_limit", []),
    (ACTION_SETS_LIMIT, "wire_limt", ["$wire_limt", "did you mean $wire_limit?"]),
    # Names it cannot read: an action may set any global, so only a near miss of a known name is reported.
    (ACTION_SETS_ANY, "wire_limit", []),
    (ACTION_SETS_ANY, "bot_mesage", ["$bot_mesage", "did you mean $bot_message?"]),
], ids=["literal", "literal-typo", "dynamic", "dynamic-typo"])
def test_a_global_a_bundle_action_returns_in_context_updates_is_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], actions: str, flows: str, expected: list[str]
) -> None:
    source = (f"flow check wire\n  global ${flows}\n  await LoadLimitsAction()\n  if ${flows} < 5000\n"
              "    await BlockAction(reason=\"wire\")\n")
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=source, actions__py=actions)
    code, out = validate(directory, capsys)
    assert code == 0, out
    warnings = unset_global_warnings(out)
    assert len(warnings) == (1 if expected else 0), out
    assert all(part in warnings[0] for part in expected)
