"""`guardrails policy validate` catches misspelled names: detector settings no detector reads, and flows that
no file defines. Bundles are written to tmp_path; the CLI and the service load them as authors' would."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from policy_bundles import bundle, validate

from guardrails.detector import Detector, DetectorRegistry, ScanContext, Services
from guardrails.engine import Engine
from guardrails.exchange import Exchange
from guardrails.findings import Category, Finding, Severity
from guardrails.policy import PolicyStore, load_policy
from guardrails.policy_cli import validate as validate_bundle
from guardrails.service import CheckService

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "please deploy the canary build"}]}
REGISTRY = DetectorRegistry.from_entry_points()


def errors_in(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error ")]


# --- 1. setting names no detector reads ----------------------------------------------------------------


def test_validate_reports_a_misspelled_setting_at_its_detector_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reviewer's case: `builtin_rule` (no s) validated fine and left the built-in rules on.
    directory = bundle(tmp_path, "p", "on_detector_error: warn\ndetectors:\n  secret: {}\n  tool_policy:\n"
                                      "    action: block\n    builtin_rule: false\n")
    code, out = validate(directory, capsys)
    assert code == 4
    assert errors_in(out) == [f"error {directory / 'config.yml'}:4: detector 'tool_policy' has no setting "
                              "'builtin_rule'; did you mean 'builtin_rules'?"]
    assert "ok    p@" not in out


# (detector, a misspelled setting as a YAML line under the detector's entry, the name it should suggest)
TYPOS = [
    ("secret", "min_entopy: 4.0", "min_entropy"),
    ("pii", "entites: [EMAIL_ADDRESS]", "entities"),
    ("jailbreak", "treshold: 0.7", "threshold"),
    ("tool_loop", "max_repeat: 5", "max_repeats"),
    ("unsafe_reasoning", "goal_hijak: false", "goal_hijack"),
    ("low_confidence", "token_logprobs: -3.0", "token_logprob"),
    ("tool_schema", "check_toolchoice: false", "check_tool_choice"),
    ("content", "term: [forbidden]", "terms"),
]


@pytest.mark.parametrize(("detector", "setting", "suggestion"), TYPOS)
def test_each_detector_suggests_the_setting_it_asks_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str, setting: str, suggestion: str
) -> None:
    # The suggested name is absent from config.yml: the detector asked for it, and that is what counts.
    directory = bundle(tmp_path, "p", f"detectors:\n  {detector}:\n    {setting}\n")
    code, out = validate(directory, capsys)
    wrong = setting.split(":")[0]
    assert code == 4
    assert errors_in(out) == [f"error {directory / 'config.yml'}:2: detector {detector!r} has no setting "
                              f"{wrong!r}; did you mean {suggestion!r}?"]


def test_every_unknown_setting_is_reported_and_known_ones_are_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ("detectors:\n  tool_loop:\n    max_repeats: 4\n    windw: 20\n  tool_schema:\n"
              "    max_errors_per_call: 2\n    colour: red\n  jailbreak:\n    action: warn\n    enabled: true\n"
              "    applies_to: {kinds: [user]}\n    timeout_ms: 100\n    threshold: 0.7\n")
    directory = bundle(tmp_path, "p", config)
    code, out = validate(directory, capsys)
    assert code == 4
    assert errors_in(out) == [
        f"error {directory / 'config.yml'}:2: detector 'tool_loop' has no setting 'windw'; did you mean 'window'?",
        # Nothing close: the names the detector reads, so the author sees what is there.
        f"error {directory / 'config.yml'}:5: detector 'tool_schema' has no setting 'colour'; it reads "
        "check_tool_choice, max_errors_per_call",
    ]


class ReadsEveryWay(Detector):
    """Reads one setting through each access path a detector may use."""

    name = "reads_every_way"
    category = Category.CUSTOM

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        self.typed = self.setting("typed", int, 1)
        self.got = self.settings.get("got")
        self.indexed = self.settings["indexed"] if "checked" in self.settings else None

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        return []


class WalksItsSettings(Detector):
    """Takes whatever it is given (a pass-through to another library): every key counts as read."""

    name = "walks_its_settings"
    category = Category.CUSTOM

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        self.options = dict(self.settings.items())

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        return []


def test_every_access_path_counts_as_reading_a_setting(tmp_path: Path) -> None:
    registry = DetectorRegistry([ReadsEveryWay, WalksItsSettings])
    config = ("detectors:\n  reads_every_way:\n    typed: 2\n    got: a\n    indexed: b\n    checked: c\n"
              "    gott: d\n  walks_its_settings:\n    anything: 1\n    at_all: 2\n")
    directory = bundle(tmp_path, "p", config)
    problems = validate_bundle(directory, registry)
    assert problems == [f"{directory / 'config.yml'}:2: detector 'reads_every_way' has no setting 'gott'; "
                        "did you mean 'got'?"]


def test_the_service_loads_a_misspelled_setting_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle(tmp_path, "p", "detectors:\n  tool_policy:\n    builtin_rule: false\n")
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    with caplog.at_level(logging.WARNING):
        result = asyncio.run(service.check({"request": REQUEST}))
    assert result["verdict"] == "allow"
    assert "policy:p" not in service.readiness()["problems"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{tmp_path / 'p' / 'config.yml'}:2: detector 'tool_policy' has no setting 'builtin_rule'; "
               "did you mean 'builtin_rules'?" in message for message in warnings), warnings


class ReadsWhenItScans(Detector):
    """A third-party detector that reads its setting lazily, in `scan`: legitimate, if not recommended."""

    name = "reads_when_it_scans"
    category = Category.CUSTOM
    built: ClassVar[list[ReadsWhenItScans]] = []

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        self.built.append(self)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        word = self.settings.get("word")
        return [Finding(category=Category.CUSTOM, detector=self.name, severity=Severity.HIGH,
                        message=f"found {word!r}", pointer=segment.pointer)
                for segment in ctx.segments if word and word in segment.text]


def test_a_detector_reading_a_setting_when_it_scans_still_loads_and_uses_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = DetectorRegistry([ReadsWhenItScans])
    bundle(tmp_path, "p", "detectors:\n  reads_when_it_scans:\n    word: canary\n")
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), registry, default_policy="p")
    with caplog.at_level(logging.WARNING):
        result = asyncio.run(service.check({"request": REQUEST}))
    assert result["verdict"] == "block"
    assert [f["message"] for f in result["findings"]] == ["found 'canary'"]
    assert any("detector 'reads_when_it_scans' has no setting 'word'; it reads none when built" in r.getMessage()
               for r in caplog.records if r.levelno == logging.WARNING)
    # Checks read the plain mapping, not the recording one handed over while it was built.
    assert ReadsWhenItScans.built[-1].settings == {"word": "canary"}
    assert type(ReadsWhenItScans.built[-1].settings) is dict


def test_shipped_bundles_read_every_setting_they_set() -> None:
    policies = Path(__file__).resolve().parent.parent / "policies"
    for directory in sorted(p for p in policies.iterdir() if (p / "config.yml").is_file()):
        engine = Engine(load_policy(directory), REGISTRY, log_unknown_settings=False)
        assert engine.unknown_settings == [], directory.name


# --- 2. flows that no file defines ---------------------------------------------------------------------

V1_CONFIG = "colang_version: '1.0'\nmodels: []\nrails:\n  output: {flows: [check answer]}\n"
V2_CONFIG = "colang_version: '2.x'\nmodels: []\nrails:\n  output: {flows: [check answer]}\n"


def test_validate_reports_a_mistyped_colang1_flow(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = "define subflow check answer\n  if $bot_message\n    do check secrts\n"
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 4
    assert errors_in(out) == [
        f"error {directory / 'rails.co'}:3: flow 'check answer': calls unknown flow 'check secrts'; did you mean "
        "'check secrets'? not a built-in rail (guardrails/colang/library), a flow of NeMo's library, nor a flow "
        "defined in the bundle's .co files"]


@pytest.mark.parametrize("statement", ["await check secrts", "activate check secrts", "start check secrts as $r",
                                       "match (check secrts).Finished()"])
def test_validate_reports_a_mistyped_colang2_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], statement: str
) -> None:
    flows = f"flow check answer\n  global $bot_message\n  {statement}\n"
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 4
    assert errors_in(out) == [
        f"error {directory / 'rails.co'}:3: flow 'check answer': calls unknown flow 'check secrts'; did you mean "
        "'check secrets'? not a built-in rail (guardrails/colang/library), a library the bundle imports, nor a "
        "flow defined in the bundle's .co files"]


V1_MANY = """define subflow check answer
  do check pi
  $r = execute detect_secrt()
  do detect secret
  do helper
  do self check input

define subflow helper
  do check pii

define subflow never listed
  do chek answer
"""
V2_MANY = """flow check answer
  when check jailbrek
    await helper $text="a"
  or when bot said something
    await check tool polcy
  $r = await DetectSecrtAction()
  await detect secret

flow helper $text
  await check pii
"""


@pytest.mark.parametrize(
    ("config", "flows", "expected"),
    [
        (V1_CONFIG, V1_MANY, [
            (2, "check answer", "unknown flow 'check pi'; did you mean 'check pii'?"),
            (3, "check answer", "unknown action 'detect_secrt'; did you mean 'detect_secret'?"),
            (4, "check answer", "unknown flow 'detect secret'; did you mean the action 'detect_secret' "
                                "(`execute detect_secret()`)?"),
            (12, "never listed", "unknown flow 'chek answer'; did you mean 'check answer'?"),
        ]),
        (V2_CONFIG, V2_MANY, [
            (2, "check answer", "unknown flow 'check jailbrek'; did you mean 'check jailbreak'?"),
            (4, "check answer", "unknown flow 'bot said something'; NeMo's library defines it in `core`: "
                                "add `import core` to a .co file"),
            (5, "check answer", "unknown flow 'check tool polcy'; did you mean 'check tool policy'?"),
            (6, "check answer", "unknown action 'DetectSecrtAction'; did you mean 'DetectSecretAction'?"),
            (7, "check answer", "unknown flow 'detect secret'; did you mean the action 'DetectSecretAction' "
                                "(`await DetectSecretAction()`)?"),
        ]),
    ],
    ids=["colang1", "colang2"],
)
def test_validate_reports_every_unknown_flow_with_file_and_line_in_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, flows: str,
    expected: list[tuple[int, str, str]]
) -> None:
    # Known ones pass: the bundle's flows (with parameters in 2.x), built-in rails, NeMo's 1.0 library.
    directory = bundle(tmp_path, "p", config, rails__co=flows)
    code, out = validate(directory, capsys)
    errors = errors_in(out)
    assert code == 4
    assert len(errors) == len(expected), out
    for error, (line, flow, needle) in zip(errors, expected, strict=True):
        assert error.startswith(f"error {directory / 'rails.co'}:{line}: flow {flow!r}: calls "), error
        assert needle in error, error


def test_flows_from_another_file_and_an_imported_library_validate_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", V2_CONFIG,
                       rails__co="import core\n\nflow check answer\n  await helper \"x\"\n  await bot say \"hi\"\n",
                       helpers__co="flow helper $text\n  await check secrets\n")
    code, out = validate(directory, capsys)
    assert (code, errors_in(out)) == (0, []), out
    assert "ok    p@" in out


def test_a_rails_entry_naming_no_flow_is_an_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Already refused when the policy loads (guardrails/policy.py), with file and line.
    directory = bundle(tmp_path, "p", "rails:\n  input:\n    flows:\n      - check jailbreak\n      - check secrts\n")
    code, out = validate(directory, capsys)
    [error] = errors_in(out)
    assert code == 4
    assert error.startswith(f"error {directory / 'config.yml'}:5: rails.input: unknown flow 'check secrts'; "), error
    assert error.endswith("not a built-in rail (see guardrails/colang/library) and not defined in the policy's "
                          ".co files"), error


def test_a_rails_entry_naming_no_flow_gets_a_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", "rails:\n  input:\n    flows: [check secrts]\n")
    code, out = validate(directory, capsys)
    assert code == 4
    assert "did you mean 'check secrets'?" in out
