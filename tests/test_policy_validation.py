"""`guardrails policy validate` catches typos: detector settings of the wrong type, and Colang flows calling
actions nobody defined. Bundles are written to tmp_path; the CLI and the service load them as authors' would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle, validate

from guardrails.detector import DetectorRegistry, SettingError, read_setting
from guardrails.engine import Engine
from guardrails.policy import PolicyError, PolicyStore, load_policy
from guardrails.policy_cli import flow_problems
from guardrails.service import CheckService

REQUEST = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
REGISTRY = DetectorRegistry.from_entry_points()


# --- 1. detector settings of the wrong type ------------------------------------------------------------


def test_validate_rejects_a_number_for_a_bool_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The reviewer's case: bool(12) turned the built-in shell/SQL/path/URL rules on without a word.
    directory = bundle(tmp_path, "p", "on_detector_error: warn\ndetectors:\n  secret: {}\n  tool_policy:\n"
                                      "    builtin_rules: 12\n")
    code, out = validate(directory, capsys)
    assert code == 4
    assert (f"error {directory / 'config.yml'}:4: detector 'tool_policy' rejected its settings: "
            "setting builtin_rules must be true or false, not 12") in out
    assert "ok    p@" not in out


# (detector, its settings as YAML lines under the detector's entry, what the message must say)
WRONG_TYPES = [
    ("tool_policy", "builtin_rules: 1", "builtin_rules must be true or false, not 1"),
    ("tool_schema", "check_tool_choice: 0", "check_tool_choice must be true or false, not 0"),
    ("tool_undeclared", "flag_when_no_tools_declared: 'no'", "flag_when_no_tools_declared must be true or false"),
    ("unsafe_reasoning", "goal_hijack: 'off'", "goal_hijack must be true or false"),
    ("jailbreak", "threshold: true", "threshold must be a number, not True"),
    ("low_confidence", "pull: yes_please", "pull must be true or false"),
    ("tool_loop", "max_repeats: 2.5", "max_repeats must be a whole number, not 2.5"),
    ("tool_taint", "min_length: false", "min_length must be a whole number, not False"),
    ("secret", "disabled_rules: generic_api_key", "disabled_rules must be a list, not 'generic_api_key'"),
    ("pii", "entities: [EMAIL_ADDRESS, 12]", "entities must be a list of strings, but holds 12"),
    ("tool_call_leak", "dangerous_names: 12", "dangerous_names must be a string, not 12"),
    ("low_confidence", "vllm: http://127.0.0.1:8000", "vllm must be a mapping"),
    ("low_confidence", "relative: {token_zz: 1.0}", "relative: unknown keys ['token_zz']"),
    ("content", "topics: {weapons: guns}", "topics.weapons must be a list of terms or a mapping"),
    ("tool_policy", "agents: [support-bot]", "agents must be a mapping"),
    ("tool_policy", "tools:\n      read_file:\n        arguments:\n          path: {type: path, sensitive: 'no'}",
     "tools.read_file.arguments.path: setting sensitive must be true or false, not 'no'"),
]


@pytest.mark.parametrize(("detector", "settings", "needle"), WRONG_TYPES)
def test_a_setting_of_the_wrong_type_stops_the_policy_at_its_detector_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str, settings: str, needle: str
) -> None:
    directory = bundle(tmp_path, "p", f"on_detector_error: warn\ndetectors:\n  {detector}:\n    {settings}\n")
    code, out = validate(directory, capsys)
    assert code == 4
    assert f"error {directory / 'config.yml'}:3: detector '{detector}' rejected its settings: " in out
    assert needle in out


def test_the_service_refuses_to_load_such_a_policy(tmp_path: Path) -> None:
    bundle(tmp_path, "p", "detectors:\n  tool_loop:\n    max_repeats: '3'\n")
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    with pytest.raises(PolicyError) as caught:
        asyncio.run(service.check({"request": REQUEST}))
    assert caught.value.file == str(tmp_path / "p" / "config.yml") and caught.value.line == 2
    assert "detector 'tool_loop'" in caught.value.message and "max_repeats must be a whole number" in str(caught.value)
    assert "max_repeats" in service.readiness()["problems"]["policy:p"]


def test_a_reload_with_a_wrong_type_keeps_the_last_good_version(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  tool_policy:\n    builtin_rules: false\n")
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    good = asyncio.run(service.check({"request": REQUEST}))["policy"]["version"]
    (directory / "config.yml").write_text("detectors:\n  tool_policy:\n    builtin_rules: 0\n")
    assert asyncio.run(service.check({"request": REQUEST}))["policy"]["version"] == good
    problem = service.readiness()["problems"]["reload:p"]
    assert "config.yml:2" in problem and "builtin_rules must be true or false, not 0" in problem


def test_settings_of_the_right_type_still_load_and_take_effect(tmp_path: Path) -> None:
    config = ("detectors:\n  tool_policy:\n    builtin_rules: false\n  jailbreak:\n    threshold: 2\n"
              "  tool_loop:\n    max_repeats:\n  pii:\n    countries: [us]\n    allow_list: [5551234567]\n")
    engine = Engine(load_policy(bundle(tmp_path, "p", config)), REGISTRY)
    detectors: dict[str, Any] = {slot.detector.name: slot.detector for slot in engine.slots}
    assert detectors["tool_policy"].builtin is False
    assert detectors["jailbreak"].threshold == 2.0 and isinstance(detectors["jailbreak"].threshold, float)
    assert detectors["tool_loop"].max_repeats == 3  # left empty: the default
    assert detectors["pii"].allow_list == ["5551234567"]


@pytest.mark.parametrize(
    ("kind", "value", "default", "expected"),
    [(bool, False, True, False), (int, 7, 3, 7), (float, 2, 0.5, 2.0), (float, -1.5, 0.5, -1.5),
     (str, "auto", "x", "auto"), (list, ("a", "b"), [], ["a", "b"]), (dict, {"k": 1}, {}, {"k": 1}),
     (bool, None, True, True), (int, None, 3, 3)],
)
def test_read_setting_accepts_its_type(kind: type, value: Any, default: Any, expected: Any) -> None:
    assert read_setting({"key": value}, "key", kind, default) == expected
    assert read_setting({}, "key", kind, default) == default


@pytest.mark.parametrize(
    ("kind", "value"),
    [(bool, 0), (bool, 1), (bool, "true"), (int, True), (int, 1.0), (int, "3"), (float, False), (float, "0.5"),
     (str, 12), (str, ["a"]), (list, "a"), (list, {"a": 1}), (dict, ["a"]), (dict, "a")],
)
def test_read_setting_refuses_a_neighbouring_type(kind: type, value: Any) -> None:
    with pytest.raises(SettingError, match=r"setting tools\.x\.key must be"):
        read_setting({"key": value}, "key", kind, where="tools.x.")


@pytest.mark.parametrize("value", [["a", 1], ["a", None], ["a", ["b"]]])
def test_read_setting_checks_each_list_item(value: list[Any]) -> None:
    with pytest.raises(SettingError, match="must be a list of strings, but holds"):
        read_setting({"key": value}, "key", list, [], items=str)


# --- 2. Colang flows calling actions nobody defined ---------------------------------------------------

V1_CONFIG = "colang_version: '1.0'\nmodels: []\nrails:\n  output: {flows: [check answer]}\n"
V2_CONFIG = "colang_version: '2.x'\nmodels: []\nrails:\n  output: {flows: [check answer]}\n"
ACTIONS_PY = """
from nemoguardrails.actions import action


@action(name="refund_over_limit")
async def refund_over_limit(tool_calls=None) -> bool:
    return False
"""


def test_validate_reports_a_mistyped_colang1_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = "define subflow check answer\n  if $bot_message\n    $r = execute check_secrts()\n"
    directory = bundle(tmp_path, "p", V1_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 4
    assert (f"error {directory / 'rails.co'}:3: flow 'check answer': calls unknown action 'check_secrts'; "
            "did you mean the flow 'check secrets' (`do check secrets`)?") in out


def test_validate_reports_a_mistyped_colang2_action(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = "flow check answer\n  global $bot_message\n  $r = await CheckSecrtsAction(text=$bot_message)\n"
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co=flows)
    code, out = validate(directory, capsys)
    assert code == 4
    assert (f"error {directory / 'rails.co'}:3: flow 'check answer': calls unknown action 'CheckSecrtsAction'; "
            "did you mean the flow 'check secrets' (`await check secrets`)?") in out


V1_MANY = """define subflow check answer
  $r = execute detect_secrets()
  if $r["count"] > 0
    execute blok(reason="x")
  $over = execute refund_over_limit(tool_calls=$tool_calls)
  execute run_detector(detector="secrte")

define subflow never listed
  execute refund_over_limt()
"""
V2_MANY = """flow check answer
  $r = await DetectSecretsAction()
  when WarnAction(reason="a")
    await BlokAction(reason="x")
  or when TimerBoatAction(timer_name="t", duration=1.0)
    start RefundOverLimitAction()
  await RunDetectorAction(detector="secrte")

flow never listed
  if True
    await RefundOverLimtAction()
"""


@pytest.mark.parametrize(
    ("config", "flows", "expected"),
    [
        (V1_CONFIG, V1_MANY, [
            (2, "check answer", "'detect_secrets'; did you mean 'detect_secret'?"),
            (4, "check answer", "'blok'; did you mean 'block'?"),
            (6, "check answer", "run_detector names detector 'secrte', which is not installed"),
            (9, "never listed", "'refund_over_limt'; did you mean 'refund_over_limit'?"),
        ]),
        (V2_CONFIG, V2_MANY, [
            (2, "check answer", "'DetectSecretsAction'; did you mean 'DetectSecretAction'?"),
            (4, "check answer", "'BlokAction'; did you mean 'BlockAction'?"),
            (5, "check answer", "'TimerBoatAction'"),
            (7, "check answer", "RunDetectorAction names detector 'secrte', which is not installed"),
            (11, "never listed", "'RefundOverLimtAction'; did you mean 'RefundOverLimitAction'?"),
        ]),
    ],
    ids=["colang1", "colang2"],
)
def test_validate_reports_every_unknown_action_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, flows: str,
    expected: list[tuple[int, str, str]]
) -> None:
    # Known ones pass: detector actions, verdicts, `when` on a 2.x verdict, actions.py in both spellings.
    directory = bundle(tmp_path, "p", config, rails__co=flows, actions__py=ACTIONS_PY)
    code, out = validate(directory, capsys)
    errors = [line for line in out.splitlines() if line.startswith("error ")]
    assert code == 4
    assert len(errors) == len(expected), out
    for error, (line, flow, needle) in zip(errors, expected, strict=True):
        assert error.startswith(f"error {directory / 'rails.co'}:{line}: flow {flow!r}: "), error
        assert needle in error


@pytest.mark.parametrize(
    ("config", "flows"),
    [
        (V1_CONFIG, "define subflow check answer\n  $r = execute detect_secret()\n"
                    "  $o = execute refund_over_limit(tool_calls=$tool_calls)\n"
                    "  $d = execute run_detector(detector=\"pii\")\n  bot say hello\n  execute warn(reason=\"w\")\n"
                    "  stop\n"),
        (V2_CONFIG, "flow check answer\n  $r = await DetectSecretAction()\n  $o = await RefundOverLimitAction()\n"
                    "  $d = await RunDetectorAction(detector=\"pii\")\n  await check pii\n"
                    "  match BlockAction.Finished()\n  await BlockAction(reason=\"b\")\n"),
    ],
    ids=["colang1", "colang2"],
)
def test_known_actions_validate_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, flows: str
) -> None:
    directory = bundle(tmp_path, "p", config, rails__co=flows, actions__py=ACTIONS_PY)
    code, out = validate(directory, capsys)
    assert (code, "error" in out) == (0, False), out
    assert "ok    p@" in out


def test_loading_keeps_serving_and_the_problems_carry_file_and_line(tmp_path: Path) -> None:
    # Loading does not refuse the policy (at check time the call is a detector_error); the lint names the spot.
    directory = bundle(tmp_path, "p", V2_CONFIG, rails__co="flow check answer\n  await CheckSecrtsAction()\n")
    engine = Engine(load_policy(directory), REGISTRY)
    [problem], warnings = flow_problems(engine)
    assert warnings == []
    assert (problem.file, problem.line) == (str(directory / "rails.co"), 2)
    assert "'CheckSecrtsAction'" in problem.message


def test_shipped_colang_examples_call_only_known_actions() -> None:
    policies = Path(__file__).resolve().parent.parent / "policies"
    for name in ("example-colang1", "example-colang2"):
        engine = Engine(load_policy(policies / name), REGISTRY)
        assert flow_problems(engine) == ([], []), name
