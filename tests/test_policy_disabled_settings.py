"""`guardrails policy validate` checks the settings of detectors a bundle disables (`enabled: false`), which the
service never builds: a typo there is found in CI, not the day someone enables the detector. Bundles are written
to tmp_path; the CLI and the service load them as authors' would."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from policy_bundles import bundle, validate

import guardrails.policy_cli as policy_cli
from detectors.guard_model import GuardModelDetector
from detectors.tool_policy import ToolPolicyDetector
from guardrails.detector import DetectorRegistry, Services
from guardrails.policy import PolicyStore
from guardrails.policy_cli import EXIT_CONFIG, EXIT_OK
from guardrails.service import CheckService

POLICIES = Path(__file__).resolve().parent.parent / "policies"
# A Chat Completions exchange whose answer calls a shell tool with a destructive command: the built-in
# tool_policy rules would block it, so a verdict other than block shows tool_policy did not run.
CHECK = {
    "request": {
        "model": "Qwen/Qwen3-8B",
        "messages": [{"role": "user", "content": "Clean up the build directory."}],
        "tools": [{"type": "function", "function": {
            "name": "run_shell", "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}},
                           "required": ["command"]}}}],
    },
    "response": {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "Qwen/Qwen3-8B",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "run_shell", "arguments": "{\"command\": \"rm -rf /\"}"}}]}}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32},
    },
    "format": "openai.chat",
}
DISABLED_WRONG_TYPE = ("on_detector_error: warn\ndetectors:\n  secret: {}\n  tool_policy:\n    enabled: false\n"
                       "    builtin_rules: 12\n")
DISABLED_UNKNOWN_NAME = ("detectors:\n  secret: {}\n  tool_policy:\n    enabled: false\n"
                         "    builtin_rule: false\n")


class CountingToolPolicy(ToolPolicyDetector):
    """tool_policy that counts its constructions: the service must never attempt one for a disabled entry."""

    built: ClassVar[int] = 0

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        type(self).built += 1
        super().__init__(settings, services)


class CountingGuardModel(GuardModelDetector):
    built: ClassVar[int] = 0

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        type(self).built += 1
        super().__init__(settings, services)


def counting_registry() -> DetectorRegistry:
    registry = DetectorRegistry.from_entry_points()
    registry.register(CountingToolPolicy)  # same name: replaces the installed tool_policy
    registry.register(CountingGuardModel)
    CountingToolPolicy.built = CountingGuardModel.built = 0
    return registry


# --- validate reports what a disabled detector would reject -------------------------------------------


def test_a_wrong_type_in_a_disabled_detector_is_an_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", DISABLED_WRONG_TYPE)
    code, out = validate(directory, capsys)
    assert code == EXIT_CONFIG
    assert (f"error {directory / 'config.yml'}:4: detector 'tool_policy' rejected its settings: "
            "setting builtin_rules must be true or false, not 12 (the detector is disabled)") in out
    assert "ok    p@" not in out


def test_an_unknown_setting_in_a_disabled_detector_is_an_error_with_did_you_mean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = bundle(tmp_path, "p", DISABLED_UNKNOWN_NAME)
    code, out = validate(directory, capsys)
    assert code == EXIT_CONFIG
    assert (f"error {directory / 'config.yml'}:3: detector 'tool_policy' has no setting 'builtin_rule'; "
            "did you mean 'builtin_rules'? (the detector is disabled)") in out


def test_every_disabled_detector_is_checked_and_each_problem_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ("detectors:\n  tool_loop:\n    enabled: false\n    max_repeats: 2.5\n  jailbreak:\n"
              "    enabled: false\n    treshold: 0.7\n  secret: {}\n")
    directory = bundle(tmp_path, "p", config)
    code, out = validate(directory, capsys)
    errors = [line for line in out.splitlines() if line.startswith("error ")]
    assert code == EXIT_CONFIG
    assert errors == [
        f"error {directory / 'config.yml'}:2: detector 'tool_loop' rejected its settings: setting max_repeats "
        "must be a whole number, not 2.5 (the detector is disabled)",
        f"error {directory / 'config.yml'}:5: detector 'jailbreak' has no setting 'treshold'; "
        "did you mean 'threshold'? (the detector is disabled)",
    ]


def test_the_same_settings_enabled_or_disabled_give_the_same_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    enabled = bundle(tmp_path, "on", DISABLED_WRONG_TYPE.replace("enabled: false", "enabled: true"))
    disabled = bundle(tmp_path, "off", DISABLED_WRONG_TYPE)
    on_code, on_out = validate(enabled, capsys)
    off_code, off_out = validate(disabled, capsys)
    assert on_code == off_code == EXIT_CONFIG
    on_error = on_out.splitlines()[0].replace(str(enabled), "")
    assert off_out.splitlines()[0].replace(str(disabled), "") == on_error + " (the detector is disabled)"


def test_a_clean_disabled_detector_validates_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = "detectors:\n  secret: {}\n  tool_policy:\n    enabled: false\n    builtin_rules: false\n  pii: false\n"
    code, out = validate(bundle(tmp_path, "p", config), capsys)
    assert (code, "error" in out) == (EXIT_OK, False), out
    assert "ok    p@" in out and "1 detector(s)" in out  # still only secret counts as built for checks


# --- disabled names that are not installed -----------------------------------------------------------


def test_a_disabled_name_that_is_a_typo_of_an_installed_detector_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `tool_polcy: false` does not turn tool_policy off: the rail below still runs it.
    config = "rails:\n  tool_output: {flows: [check tool policy]}\ndetectors:\n  tool_polcy: false\n"
    directory = bundle(tmp_path, "p", config)
    code, out = validate(directory, capsys)
    assert code == EXIT_CONFIG
    assert (f"error {directory / 'config.yml'}:4: policy disables detector 'tool_polcy', which is not installed; "
            "did you mean 'tool_policy'?") in out


def test_a_disabled_plug_in_absent_from_this_machine_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = "detectors:\n  secret: {}\n  acme_toxicity:\n    enabled: false\n    model: acme/tox-v2\n"
    directory = bundle(tmp_path, "p", config)
    code, out = validate(directory, capsys)
    assert (code, "error" in out) == (EXIT_OK, False), out
    assert (f"      warning: {directory / 'config.yml'}:3: policy disables detector 'acme_toxicity', which is "
            "unavailable here (not installed): its settings are not checked") in out


def test_an_unknown_enabled_name_is_still_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  acme_toxicity:\n    model: acme/tox-v2\n")
    code, out = validate(directory, capsys)
    assert code == EXIT_CONFIG
    assert "policy enables detector 'acme_toxicity', which is unavailable: not installed" in out


# --- the service never builds a disabled detector ----------------------------------------------------


def test_the_service_loads_the_bundle_without_building_the_disabled_detector(tmp_path: Path) -> None:
    bundle(tmp_path, "p", DISABLED_WRONG_TYPE)
    registry = counting_registry()
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), registry, default_policy="p")
    result = asyncio.run(service.check(CHECK))
    engine = service.engine_for(service.policies.get("p"))
    assert [slot.detector.name for slot in engine.slots] == ["secret"]
    assert CountingToolPolicy.built == 0
    assert result["policy"]["id"] == "p" and result["verdict"] == "allow"
    assert not any(f["detector"] == "tool_policy" for f in result["findings"])
    assert "policy:p" not in service.readiness()["problems"]


def test_validate_builds_the_disabled_detector_once_and_drops_it(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", DISABLED_WRONG_TYPE)
    registry = counting_registry()
    problems = policy_cli.validate(directory, registry)
    assert CountingToolPolicy.built == 1
    assert len(problems) == 1 and "builtin_rules must be true or false, not 12" in problems[0]


def test_the_shipped_bundles_validate_clean_with_their_disabled_detectors_built(
    capsys: pytest.CaptureFixture[str]
) -> None:
    registry = counting_registry()
    # The default bundle disables guard_model (and budget) with settings ready for the day they are enabled.
    assert policy_cli.validate(POLICIES / "default", registry) == []
    assert CountingGuardModel.built == 1
    code, out = validate(POLICIES, capsys)
    assert (code, "error" in out) == (EXIT_OK, False), out
