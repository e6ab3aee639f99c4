"""Two Colang authoring gaps: a Colang 1.0 `else` that does not line up with its `if` (or `when`), which NeMo's
parser accepts and silently attaches elsewhere, is a load error at its line; and a flow that aborts on a variable
nothing sets says which variable, with the closest check variable and the line `validate` warns at."""

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
V1 = "colang_version: '1.0'\nmodels: []\n"
V1_CONFIG = V1 + "rails:\n  output: {flows: [check wire]}\n"
V2_CONFIG = "colang_version: '2.x'\nmodels: []\nrails:\n  output: {flows: [check wire]}\n"
HEAD = "define subflow check wire\n"
WARN = "execute warn(reason=\"w\")"
REQUEST = {"model": "m", "messages": [{"role": "user", "content": "send the money"}]}


def check_body(content: str) -> dict[str, Any]:
    return {"request": REQUEST, "response": {
        "id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}}


def read(body: dict[str, Any]) -> Exchange:
    return read_exchange(body["request"], body.get("response"))


def load_error(tmp_path: Path, source: str) -> PolicyError:
    directory = bundle(tmp_path, "p", V1, rails__co=source)
    with pytest.raises(PolicyError) as caught:
        load_policy(directory)
    assert caught.value.file == str(directory / "rails.co")
    return caught.value


# --- 1. a misaligned Colang 1.0 `else` -------------------------------------------------------------------------

SILENTLY = ": NeMo's parser silently makes it the else of that `if` (the innermost open `if` left of it)"


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        # NeMo: the else of `if $x` (column 3), one column right of it.
        (HEAD + "  if $x\n    stop\n   else\n    " + WARN + "\n", 4,
         "`else` at column 4 does not line up with the `if` at line 2 column 3" + SILENTLY),
        # Left of the inner `if` (column 5): NeMo gives it to the outer one.
        (HEAD + "  if $x\n    if $y\n      stop\n   else\n    " + WARN + "\n", 5,
         "`else` at column 4 does not line up with the `if` at line 2 column 3" + SILENTLY),
        # Between the inner `if` and its block: NeMo gives it to the inner one.
        (HEAD + "  if $x\n    if $y\n      stop\n     else\n      " + WARN + "\n", 5,
         "`else` at column 6 does not line up with the `if` at line 3 column 5" + SILENTLY),
        # At the column of a `while` inside `if $x`: NeMo makes it the else of `if $x`, two blocks out.
        (HEAD + "  if $x\n    while $z\n      if $y\n        stop\n    else\n      " + WARN + "\n", 6,
         "`else` at column 5 does not line up with the `if` at line 2 column 3" + SILENTLY),
        (HEAD + "  if $x\n    stop\n   else if $y\n    " + WARN + "\n", 4,
         "`else if` at column 4 does not line up with the `if` at line 2 column 3"),
    ],
    ids=["one-right", "left-of-inner-if", "inside-inner-if", "at-a-while", "else-if"],
)
def test_a_misaligned_else_nemo_accepts_is_an_error_naming_the_if_nemo_gives_it_to(
    tmp_path: Path, source: str, line: int, message: str
) -> None:
    error = load_error(tmp_path, source)
    assert error.line == line, error
    assert error.message.startswith(f"Colang syntax error: {message}"), error.message
    assert error.message.endswith("; start the `" + message.split("`")[1] + "` at the column of its `if`")


@pytest.mark.parametrize(
    ("source", "line", "message"),
    [
        # NeMo nests the `else when` inside the `when`'s block.
        ("define flow check wire\n  user said hi\n  when $x\n    stop\n    else when $y\n      " + WARN + "\n", 5,
         "`else when` at column 5 does not line up with the `when` at line 3 column 3: NeMo's parser silently "
         "reads it as part of that `when`'s block"),
        ("define flow check wire\n  user said hi\n  if $a\n    when $x\n      stop\n  else when $y\n    " + WARN
         + "\n", 6, "`else when` at column 3 does not line up with the `when` at line 4 column 5: NeMo's parser "
                    "silently reads it as a branch of its own, not as an alternative to that `when`"),
        ("define flow check wire\n  user said hi\n  when $x\n    stop\n  execute foo()\n  else when $y\n    " + WARN
         + "\n", 6, "`else when` has no `when` right above it at the same indentation"),
    ],
    ids=["deeper", "shallower", "after-a-statement"],
)
def test_a_misaligned_else_when_is_an_error(tmp_path: Path, source: str, line: int, message: str) -> None:
    error = load_error(tmp_path, source)
    assert (error.line, error.message.startswith(f"Colang syntax error: {message}")) == (line, True), error


def test_an_else_block_indented_less_than_its_if_block_is_an_error(tmp_path: Path) -> None:
    # NeMo ends the (empty) else at the warn, which then runs whatever $x is.
    error = load_error(tmp_path, HEAD + "  if $x\n    stop\n  else\n   " + WARN + "\n")
    assert error.line == 5
    assert error.message == (
        "Colang syntax error: the block under `else` (line 4) is indented 3 spaces, less than the block under its "
        "`if` (line 2, 4 spaces): NeMo's parser leaves the `else` empty and runs this line after it, whatever the "
        "condition; indent both blocks alike")


def test_a_second_else_of_one_if_is_an_error(tmp_path: Path) -> None:
    # NeMo keeps the last `else` and drops the first one's block.
    error = load_error(tmp_path, HEAD + "  if $x\n    stop\n  else\n    " + WARN + "\n  else\n    stop\n")
    assert error.line == 6
    assert error.message.startswith("Colang syntax error: `else` follows the `else` at line 4 of the `if` at line 2: "
                                    "NeMo's parser silently drops the block under line 4")


@pytest.mark.parametrize(
    ("source", "line", "message", "nemo"),
    [
        ("  while $z\n    if $x\n      stop\n  else\n    stop\n", 5,
         "`else` at column 3 does not line up with the `if` at line 3 column 5", "list index out of range"),
        ("  if $x\n    stop\n    else\n      stop\n", 4,
         "`else` at column 5 does not line up with the `if` at line 2 column 3", "Unknown main token 'flow' on line 4"),
    ],
    ids=["left-of-its-if", "in-the-if-block"],
)
def test_a_misaligned_else_nemo_fails_on_is_named_in_colang_terms(
    tmp_path: Path, source: str, line: int, message: str, nemo: str
) -> None:
    # Before: "NeMo's parser cannot read `else`: list index out of range", "`else` has no `if` above it".
    error = load_error(tmp_path, HEAD + source)
    assert error.line == line
    assert error.message == (f"Colang syntax error: {message}; start the `else` at the column of its `if` "
                             f"(NeMo's parser: {nemo})")


@pytest.mark.parametrize(
    "source",
    [
        HEAD + "  if $x:\n    stop\n  else:\n    " + WARN + "\n",
        HEAD + "  if $x\n    if $y\n      stop\n    else\n      stop\n  else\n    " + WARN + "\n",
        HEAD + "  if $x\n    stop\n  else if $y\n    stop\n  else\n    " + WARN + "\n",
        HEAD + "  if $x\n    stop\n  else\n      " + WARN + "\n",
        HEAD + "  while $z\n    if $x\n      stop\n    else\n      stop\n    " + WARN + "\n",
        "define flow check wire\n  user said hi\n  when $x\n    stop\n  else when $y\n    " + WARN + "\n",
    ],
    ids=["colons", "nested", "else-if-chain", "deeper-else-block", "in-a-while", "when"],
)
def test_aligned_elses_load(tmp_path: Path, source: str) -> None:
    assert load_policy(bundle(tmp_path, "p", V1, rails__co=source)).rails.colang_files


RAILS = """define subflow check wire
  if "wire" in $bot_message
    if "USD" in $bot_message
      execute block(reason="wire in USD")
      stop
  else
    execute warn(reason="no wire")
"""
# The edit: the `else` moved under the inner `if`'s block, where NeMo makes it the inner `if`'s else.
MISALIGNED = RAILS.replace("\n  else\n    execute", "\n     else\n       execute")


def test_validate_and_a_reload_report_a_misaligned_else_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=RAILS)
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    body = check_body("I will wire 5000 USD now.")
    first = asyncio.run(service.check(body))
    assert [f["message"] for f in first["findings"]] == ["flow 'check wire' blocked: wire in USD"]

    (directory / "rails.co").write_text(MISALIGNED)
    expected = (f"{directory / 'rails.co'}:6: Colang syntax error: `else` at column 6 does not line up with the "
                "`if` at line 3 column 5: NeMo's parser silently makes it the else of that `if`")
    code, out = validate(directory, capsys)
    assert code == 4 and out.startswith(f"error {expected}"), out
    second = asyncio.run(service.check(body))  # before: the edited flow, live, with the else on the inner `if`
    assert second["policy"] == first["policy"] and second["findings"] == first["findings"]
    assert expected in service.readiness()["problems"]["reload:p"]


# --- 2. a flow that aborts on a variable nothing sets -----------------------------------------------------------

TYPO_GLOBAL = """flow check wire
  global $bot_mesage
  if "wire" in $bot_mesage
    await BlockAction(reason="wire")
"""


def test_an_abort_on_an_unset_global_names_it_and_the_line_validate_warns_at(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=TYPO_GLOBAL)
    _, out = validate(directory, capsys)
    assert f"{directory / 'rails.co'}:2: flow 'check wire' declares `global $bot_mesage`" in out, out

    result = asyncio.run(Engine(load_policy(directory), REGISTRY).run(read(check_body("I will wire 5000 USD."))))
    [finding] = [f for f in result.findings if f.category is Category.CUSTOM]
    assert finding.action is Action.BLOCK
    assert finding.message.startswith("flow 'check wire' blocked: the flow aborted on a Colang error: ")
    # Before: NeMo's words only, "argument of type 'NoneType' is not iterable".
    assert finding.message.endswith("; $bot_mesage is never set (did you mean $bot_message?), so it is None: "
                                    "`guardrails policy validate` warns about it at rails.co:2"), finding.message


def test_the_unset_variable_named_is_the_one_in_the_error_even_in_a_called_flow(tmp_path: Path) -> None:
    flows = """flow check wire
  global $bot_message
  await wire limits
  await wire checks

flow wire limits
  global $wire_limt
  $limit = $wire_limt

flow wire checks
  global $bot_mesage
  if "wire" in $bot_mesage
    abort
"""
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    result = asyncio.run(Engine(load_policy(directory), REGISTRY).run(read(check_body("I will wire 5000 USD."))))
    [finding] = [f for f in result.findings if f.category is Category.CUSTOM]
    assert "$bot_mesage is never set (did you mean $bot_message?), so it is None: `guardrails policy validate` " \
           "warns about it at rails.co:11" in finding.message, finding.message
    assert "$wire_limt" not in finding.message  # nothing sets it either, but the error is not about it


def test_a_colang1_runtime_failure_on_an_unset_variable_names_it(tmp_path: Path) -> None:
    flows = HEAD + "  if \"wire\" in $bot_mesage\n    execute block(reason=\"wire\")\n    stop\n"
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=flows)
    result = asyncio.run(Engine(load_policy(directory), REGISTRY).run(read(check_body("I will wire 5000 USD."))))
    [error] = [f for f in result.findings if f.category is Category.DETECTOR_ERROR]
    assert error.message.startswith("the Colang runtime failed: ")
    assert error.message.endswith("; $bot_mesage is never set (did you mean $bot_message?), so it is None: "
                                  "`guardrails policy validate` warns about it at rails.co:2"), error.message
