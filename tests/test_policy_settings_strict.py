"""Policy settings a typo or a bad value would silently switch off: tool_policy's nested keys (agents, tools,
argument rules, lists) are checked like top-level settings; number settings have ranges; patterns a policy sets
(tool_policy's pattern and path rules, pii's recognizers and regex allow list, any of them sent in an inline config)
are searched with a timeout, and a search that did not finish is a finding, never a pass."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from policy_bundles import bundle, validate
from tool_bodies import body, scan

from detectors._schema_guard import CHECK_BUDGET_S, SEARCH_TIMEOUT_S, pattern_checks
from detectors.pii import PIIDetector
from detectors.tool_policy import ToolPolicyDetector
from detectors.tool_policy.paths import PathRule
from detectors.tool_policy.patterns import PatternRule
from guardrails.config import Settings
from guardrails.detector import DetectorRegistry, SettingError, read_setting
from guardrails.exchange import Phase, Segment, SegmentKind, Trust
from guardrails.policy import PolicyError, PolicyStore
from guardrails.serve import build_app
from guardrails.service import CheckService

REPO = Path(__file__).resolve().parent.parent
REGISTRY = DetectorRegistry.from_entry_points()
BACKTRACKS = "^(a|aa)+$"  # exponential on "aaa...a!" with a backtracking engine, `regex` included
SLOW_VALUE = "a" * 40 + "!"


# --- 1. tool_policy's nested keys ----------------------------------------------------------------------------------
NESTED_TYPOS = [
    ({"agents": {"*": {"deny_tool": ["delete_*"]}}},
     "tool_policy.agents.*: unknown key 'deny_tool'; did you mean 'deny_tools'?"),
    ({"agents": {"ops": {"denied_tools": ["delete_*"]}}},
     "tool_policy.agents.ops: unknown key 'denied_tools'; did you mean 'deny_tools'?"),
    ({"tools": {"transfer_*": {"argument": {"amount": {"type": "number", "max": 1000}}}}},
     "tool_policy.tools.transfer_*: unknown key 'argument'; did you mean 'arguments'?"),
    ({"tools": {"transfer_*": {"arguments": {"amount": {"type": "number", "maximum": 1000}}}}},
     "tool_policy.tools.transfer_*.arguments.amount: unknown key 'maximum'; did you mean 'max'?"),
    ({"tools": {"run": {"arguments": {"cmd": {"type": "shell", "deny_command": ["rm"]}}}}},
     "tool_policy.tools.run.arguments.cmd: unknown key 'deny_command'; did you mean 'deny_commands'?"),
    ({"tools": {"fetch": {"arguments": {"url": {"type": "url", "allow_domain": ["example.com"]}}}}},
     "tool_policy.tools.fetch.arguments.url: unknown key 'allow_domain'; did you mean 'allow_domains'?"),
    ({"tools": {"read": {"arguments": {"path": {"type": "path", "allowed_root": ["/srv"]}}}}},
     "tool_policy.tools.read.arguments.path: unknown key 'allowed_root'; did you mean 'allowed_roots'?"),
    ({"tools": {"query": {"arguments": {"sql": {"type": "sql", "deny_table": ["users"]}}}}},
     "tool_policy.tools.query.arguments.sql: unknown key 'deny_table'; did you mean 'deny_tables'?"),
    ({"tools": {"x": {"arguments": {"a": {"type": "pattern", "alow": ["[a-z]+"]}}}}},
     "tool_policy.tools.x.arguments.a: unknown key 'alow'; did you mean 'allow'?"),
    ({"tools": {"py": {"arguments": {"code": {"type": "code", "deny_commands": ["rm"]}}}}},
     "tool_policy.tools.py.arguments.code: unknown key 'deny_commands'"),
    ({"tools": {"transfer": {"arguments": {"amount": {"type": "numbr", "max": 1}}}}},
     "type must be one of ['code', 'number', 'path', 'pattern', 'shell', 'sql', 'url'], not 'numbr'; "
     "did you mean 'number'?"),
    ({"tools": {"transfer": {"arguments": {"amount": "number"}}}},
     "tool_policy.tools.transfer.arguments.amount: must be a mapping with a type"),
    # Lists: anything but a string or a list of strings is refused, not read as empty.
    ({"agents": {"*": {"deny_tools": {"delete_*": True}}}},
     "setting agents.*.deny_tools must be a string or a list of strings, not {'delete_*': True}"),
    ({"agents": {"ops": {"allow_tools": False}}}, "setting agents.ops.allow_tools must be a string or a list"),
    ({"tools": {"fetch": {"arguments": {"url": {"type": "url", "schemes": [1]}}}}},
     "tool_policy.tools.fetch.arguments.url: setting schemes must be a list of strings, but holds 1"),
    ({"tools": {"t": {"arguments": {"n": {"type": "number", "min": 10, "max": 5}}}}},
     "tool_policy.tools.t.arguments.n: min 10 is above max 5"),
    ({"tools": {"x": {"arguments": {"a": {"type": "pattern", "deny": ["(unclosed"]}}}}},
     "tool_policy.tools.x.arguments.a: setting deny: pattern '(unclosed' does not compile"),
    ({"tools": {"x": {"arguments": {"a": {"type": "pattern", "deny": ["(?:a{1000}){1000}"]}}}}},
     "compiles to more than 10000 items"),
]


@pytest.mark.parametrize(("settings", "needle"), NESTED_TYPOS)
def test_a_nested_typo_stops_tool_policy_naming_the_key_and_its_path(settings: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValueError) as caught:
        ToolPolicyDetector(settings)
    assert needle in str(caught.value)


def test_the_review_typos_fail_validate_and_the_good_policy_still_enforces(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = ('detectors:\n  tool_policy:\n    agents:\n      "*":\n        deny_tools: ["delete_*"]\n'
            "    tools:\n      transfer_*:\n        arguments:\n          amount: {type: number, max: 1000}\n")
    code, out = validate(bundle(tmp_path, "good", good), capsys)
    assert code == 0, out
    for name, typo in [("a", good.replace("deny_tools", "deny_tool")), ("b", good.replace("arguments", "argument")),
                       ("c", good.replace("max:", "maximum:")), ("d", good.replace("deny_tools", "denied_tools"))]:
        code, out = validate(bundle(tmp_path, name, typo), capsys)
        assert code == 4 and "detector 'tool_policy' rejected its settings: tool_policy." in out, out
    code, out = validate(bundle(tmp_path, "c2", good.replace("max:", "maximum:")), capsys)
    assert "tool_policy.tools.transfer_*.arguments.amount: unknown key 'maximum'; did you mean 'max'?" in out
    detector = ToolPolicyDetector({"agents": {"*": {"deny_tools": ["delete_*"]}},
                                   "tools": {"transfer_*": {"arguments": {"amount": {"type": "number", "max": 1000}}}}})
    rules = {f.evidence["rule"] for f in scan(detector, body("openai.chat", "transfer_funds", {"amount": 5000}))}
    assert rules == {"number.above_max"}
    rules = {f.evidence["rule"] for f in scan(detector, body("openai.chat", "delete_files", {"glob": "x"}))}
    assert rules == {"agent.deny_tools"}


def test_blank_entries_and_single_string_lists_still_load() -> None:
    detector = ToolPolicyDetector({"agents": {"*": None, "ops": {"deny_tools": "rm_*"}},
                                   "tools": {"x": None, "y": {"arguments": {}}}})
    rules = {f.evidence["rule"] for f in scan(detector, body("openai.chat", "rm_all", {}))}
    assert rules == set()  # the agent-less check reads "*", which lists nothing
    assert detector._agents["ops"].deny is not None and detector._agents["ops"].deny.match("rm_all")


# --- 2. patterns from policy settings: bounded, and a search that did not finish is a finding -----------------------
def test_a_backtracking_allow_pattern_is_reported_unchecked_not_passed() -> None:
    rule = PatternRule({"allow": [BACKTRACKS]})
    with pattern_checks() as checks:
        violations = rule.check(SLOW_VALUE)
    assert [v.rule for v in violations] == ["pattern.unchecked"]
    assert "not checked against allowed pattern" in violations[0].message
    assert [u.reason for u in checks.unchecked] == ["timeout"]
    assert rule.check("aaaa") == [] and [v.rule for v in rule.check("b")] == ["pattern.not_allowed"]


def test_an_allow_pattern_that_matches_still_allows_beside_one_that_could_not_say() -> None:
    rule = PatternRule({"allow": [BACKTRACKS, r"a+!"]})
    assert rule.check(SLOW_VALUE) == []


def test_a_backtracking_deny_pattern_is_reported_unchecked() -> None:
    rule = PatternRule({"deny": [BACKTRACKS, "secret"]})
    assert [v.rule for v in rule.check(SLOW_VALUE)] == ["pattern.unchecked"]
    assert [v.rule for v in rule.check("a secret")] == ["pattern.denied"]
    path = PathRule({"deny": [r"^/(a|aa)+$"]})
    assert [v.rule for v in path.check("/" + SLOW_VALUE)] == ["path.unchecked"]
    assert [v.rule for v in path.check("/aaaa")] == ["path.denied"]


def test_one_check_spends_a_bounded_time_on_policy_patterns_however_many_values() -> None:
    """30 arguments each meeting a backtracking pattern: each search stops at its timeout, and once the check's
    budget is spent the rest are reported without a search, so at most budget/timeout searches run to a timeout."""
    detector = ToolPolicyDetector({"tools": {"x": {"arguments": {"a": {"type": "pattern", "allow": [BACKTRACKS]}}}}})
    values = {"a": [SLOW_VALUE[:-1] + str(i) for i in range(30)]}  # each element of a list is judged
    findings = scan(detector, body("openai.chat", "x", values))
    assert len(findings) == 30 and {f.evidence["rule"] for f in findings} == {"pattern.unchecked"}
    timed_out = [f for f in findings if "ran past" in f.message]
    assert 1 <= len(timed_out) <= math.ceil(CHECK_BUDGET_S / SEARCH_TIMEOUT_S)
    assert all("was spent" in f.message for f in findings if f not in timed_out)


def test_the_review_inline_redos_is_a_blocking_finding(tmp_path: Path) -> None:
    repro = {"model": "m", "tools": [{"type": "function", "function": {"name": "x", "parameters": {
                 "type": "object", "properties": {"a": {"type": "string"}}}}}],
             "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None, "tool_calls": [
                 {"id": "c", "type": "function", "function": {"name": "x", "arguments": json.dumps(
                     {"a": "a" * 28 + "!"})}}]}],
             "guardrails": {"config": {"detectors": {"tool_policy": {"tools": {"x": {"arguments": {"a": {
                 "type": "pattern", "allow": [BACKTRACKS]}}}}}}}}}
    client = TestClient(build_app(Settings(policy_dir=REPO / "policies")))
    resp = client.post("/v1/guardrail/checks", json=repro)
    assert resp.status_code == 200, resp.text
    findings = resp.json()["guardrails_data"]["findings"]
    assert [(f["evidence"]["rule"], f["action"]) for f in findings] == [("pattern.unchecked", "block")]
    # The same inline config with a typo in a rule key is refused, as any bad inline setting is.
    typo = json.loads(json.dumps(repro).replace('"allow"', '"alow"'))
    resp = client.post("/v1/guardrail/checks", json=typo)
    assert resp.status_code == 422 and "unknown key 'alow'; did you mean 'allow'?" in resp.text


def segment(text: str) -> Segment:
    return Segment(index=0, kind=SegmentKind.ASSISTANT, role="assistant", trust=Trust.MODEL, turn=0,
                   phase=Phase.RESPONSE, text=text, pointer="/response/content")


def test_a_backtracking_custom_pii_pattern_is_a_finding_of_its_own() -> None:
    detector = PIIDetector({"entities": ["EMAIL_ADDRESS"], "recognizers": [{
        "supported_entity": "EMPLOYEE_ID", "patterns": [{"name": "emp", "regex": "(a|aa)+$", "score": 0.9}]}]})
    hits = detector.analyze(segment("id " + SLOW_VALUE))
    assert [(h.evidence["entity"], h.evidence["rule"], h.evidence["reason"]) for h in hits] == [
        ("EMPLOYEE_ID", "pattern_unchecked", "timeout")]
    assert [h.evidence["entity"] for h in detector.analyze(segment("id aaaa"))] == ["EMPLOYEE_ID"]


def test_a_backtracking_pii_allow_pattern_keeps_the_value_reported() -> None:
    email = "a" * 30 + "@example.com"
    allowed = PIIDetector({"allow_list": [r"@example\.com$"], "allow_list_match": "regex"})
    assert allowed.analyze(segment(f"mail {email}")) == []
    # Would allow the address once its first branch had backtracked through the a's: it stops first, allowing nothing.
    slow = PIIDetector({"allow_list": [r"(a|aa)+b|@example\.com$"], "allow_list_match": "regex"})
    assert [h.evidence["entity"] for h in slow.analyze(segment(f"mail {email}"))] == ["EMAIL_ADDRESS"]


@pytest.mark.parametrize(("settings", "needle"), [
    ({"allow_list": ["(x"], "allow_list_match": "regex"}, "setting allow_list: pattern '(x' does not compile"),
    ({"recognizers": [{"supported_entity": "E", "patterns": [{"name": "e", "regex": "(?:a{1000}){1000}",
                                                              "score": 0.5}]}]}, "compiles to more than"),
])
def test_a_pii_pattern_that_cannot_be_searched_safely_is_refused(settings: dict[str, Any], needle: str) -> None:
    with pytest.raises(SettingError, match=needle.replace("(", r"\(")):
        PIIDetector(settings)


# --- 3. value ranges --------------------------------------------------------------------------------------------------
OUT_OF_RANGE = [
    ("pii", "score_threshold: 7", "setting score_threshold must be between 0 and 1, not 7"),
    ("tool_loop", "max_repeats: 0", "setting max_repeats must be at least 1, not 0"),
    ("tool_loop", "max_repeats: -3", "setting max_repeats must be at least 1, not -3"),
    ("tool_loop", "max_cycle_length: 1", "setting max_cycle_length must be at least 2, not 1"),
    ("tool_loop", "near_similarity: 2", "setting near_similarity must be above 0 and at most 1, not 2"),
    ("tool_loop", "near_similarity: 0", "setting near_similarity must be above 0 and at most 1, not 0"),
    ("tool_loop", "window: 0", "setting window must be at least 1, not 0"),
    ("tool_loop", "min_cycle_repeats: 1", "setting min_cycle_repeats must be at least 2"),
    ("secret", "min_entropy: -1", "setting min_entropy must be between 0 and 6, not -1"),
    ("secret", "min_entropy: .nan", "setting min_entropy must be between 0 and 6, not nan"),
    ("budget", "warn_ratio: 5", "setting warn_ratio must be between 0 and 1, not 5"),
    ("budget", "breaker: {anomaly: {alpha: 0}}", "setting anomaly.alpha must be above 0 and at most 1, not 0"),
    ("budget", "breaker: {repeated_call: {max_repeats: 0}}", "max_repeats must be at least 1, not 0"),
    ("budget", "windows: {agent: {block_streak: 0}}", "setting windows.agent.block_streak must be at least 1"),
    ("content", "terms: [1, 2]", "setting terms must be a list of strings, but holds 1 (quote it"),
    ("content", "max_hits: 0", "setting max_hits must be at least 1, not 0"),
    ("jailbreak", "threshold: 0", "setting threshold must be above 0, not 0"),
    ("jailbreak", "many_shot_turns: 0", "setting many_shot_turns must be at least 2, not 0"),
    ("guard_model", "threshold: 1.5", "setting threshold must be between 0 and 1, not 1.5"),
    ("unsafe_reasoning", "hijack_min_overlap: 0", "setting hijack_min_overlap must be at least 1, not 0"),
    ("tool_poisoning", "max_hits: -1", "setting max_hits must be at least 1, not -1"),
    ("prompt_injection", "max_hits: 0", "setting max_hits must be at least 1, not 0"),
    ("prompt_injection", "max_hits: -1", "setting max_hits must be at least 1, not -1"),
    ("tool_taint", "min_length: 0", "setting min_length must be at least 1, not 0"),
    ("tool_taint", "min_number_digits: 0", "setting min_number_digits must be at least 1, not 0"),
    ("tool_taint", "tool_choice_coverage: 1.5", "setting tool_choice_coverage must be between 0 and 1, not 1.5"),
    ("tool_taint", "tool_choice_coverage: -0.1", "setting tool_choice_coverage must be between 0 and 1, not -0.1"),
    ("low_confidence", "max_low_share: 2", "setting max_low_share must be between 0 and 1, not 2"),
    ("low_confidence", "token_logprob: 1", "setting token_logprob must be at most 0, not 1"),
    ("low_confidence", "segment_logprob: 0.5", "setting segment_logprob must be at most 0, not 0.5"),
    ("low_confidence", "segment_logprob: .nan", "setting segment_logprob must be at most 0, not nan"),
    ("low_confidence", "min_tokens: 0", "setting min_tokens must be at least 1, not 0"),
    ("low_confidence", "max_spans: 0", "setting max_spans must be at least 1, not 0"),
    ("low_confidence", "max_summary_units: 0", "setting max_summary_units must be at least 1, not 0"),
    ("low_confidence", "top_k: 0", "setting top_k must be at least 1, not 0"),
    ("low_confidence", "relative: {min_tokens: 0}", "setting relative.min_tokens must be at least 1, not 0"),
    ("low_confidence", "relative: {min_segments: 0}", "setting relative.min_segments must be at least 1, not 0"),
    ("low_confidence", "relative: {token_z: -1}", "setting relative.token_z must be above 0, not -1"),
    ("low_confidence", "relative: {segment_z: 0}", "setting relative.segment_z must be above 0, not 0"),
    ("tool_schema", "max_errors_per_call: 0", "setting max_errors_per_call must be at least 1, not 0"),
    ("tool_call_leak", "dangerous_names: '(x'", "setting dangerous_names: pattern '(x' does not compile"),
    ("tool_call_leak", "dangerous_names: '(?:a{1000}){1000}'", "compiles to more than"),
]


@pytest.mark.parametrize(("detector", "settings", "needle"), OUT_OF_RANGE)
def test_a_value_out_of_range_fails_validate_naming_the_range(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], detector: str, settings: str, needle: str) -> None:
    code, out = validate(bundle(tmp_path, "p", f"detectors:\n  {detector}:\n    {settings}\n"), capsys)
    assert code == 4, out
    assert f"detector '{detector}' rejected its settings: " in out and needle in out, out


def test_the_service_refuses_to_start_on_a_setting_out_of_range(tmp_path: Path) -> None:
    bundle(tmp_path, "p", "detectors:\n  tool_loop:\n    max_repeats: 0\n")
    service = CheckService(PolicyStore(tmp_path, check_interval_s=0), REGISTRY, default_policy="p")
    with pytest.raises(PolicyError, match="setting max_repeats must be at least 1, not 0"):
        asyncio.run(service.check({"request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}))


ENDS_OF_RANGES = [
    ("detectors:\n  pii:\n    score_threshold: 1\n  tool_loop:\n    max_repeats: 1\n    near_similarity: 1\n"
     "  secret:\n    min_entropy: 0\n  budget:\n    enabled: false\n    warn_ratio: 1\n"
     "  content:\n    terms: ['1488', pipe bomb]\n"),
    ("detectors:\n  prompt_injection:\n    max_hits: 1\n"
     "  tool_taint:\n    min_length: 1\n    min_number_digits: 1\n    tool_choice_coverage: 0\n"
     "  low_confidence:\n    max_low_share: 1\n    token_logprob: 0\n    segment_logprob: -30\n"
     "    min_tokens: 1\n    max_spans: 1\n    max_summary_units: 1\n    top_k: 1\n"
     "    relative: {min_tokens: 1, min_segments: 1, token_z: 0.1, segment_z: 0.1}\n"
     "  tool_schema:\n    max_errors_per_call: 1\n"
     "  tool_call_leak:\n    dangerous_names: '^(?:drop|rm)_'\n"),
]


@pytest.mark.parametrize("config", ENDS_OF_RANGES)
def test_values_at_the_ends_of_their_ranges_load(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 config: str) -> None:
    code, out = validate(bundle(tmp_path, "p", config), capsys)
    assert code == 0, out


@pytest.mark.parametrize(("bounds", "value", "words"), [
    ({"minimum": 0, "maximum": 1}, 1.5, "between 0 and 1"), ({"minimum": 2}, 1, "at least 2"),
    ({"maximum": 3}, 4, "at most 3"), ({"above": 0}, 0, "above 0"), ({"above": 0, "maximum": 1}, 0.0, "above 0 and"),
    ({"minimum": 0}, float("nan"), "at least 0"),
    ({"above": 0}, float("inf"), "above 0"),  # `token_z: .inf` switched relative thresholds off
    ({"minimum": 1}, float("inf"), "at least 1"),
])
def test_read_setting_refuses_a_number_out_of_its_range(bounds: dict[str, float], value: float, words: str) -> None:
    with pytest.raises(SettingError, match=f"setting x.key must be {words}"):
        read_setting({"key": value}, "key", float, where="x.", **bounds)


def test_read_setting_accepts_the_ends_of_a_range_and_leaves_the_default_alone() -> None:
    assert read_setting({"key": 0}, "key", float, minimum=0, maximum=1) == 0.0
    assert read_setting({"key": 1}, "key", int, minimum=0, maximum=1) == 1
    assert read_setting({}, "key", int, -5, minimum=0) == -5


def test_the_shipped_policies_still_validate(capsys: pytest.CaptureFixture[str]) -> None:
    for directory in sorted(p for p in (REPO / "policies").iterdir() if (p / "config.yml").is_file()):
        code, out = validate(directory, capsys)
        assert code == 0, out
