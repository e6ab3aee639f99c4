"""Time limits on patterns a policy brings: a pii check of many segments stops at the detector's timeout and the
segments it did not read are reported, not passed; unsafe_reasoning's rules_file
patterns are compiled by `regex` and searched with a timeout, a search that did not finish is a finding, and a
pattern that does not compile stops the policy naming the file and the rule."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from policy_bundles import bundle

from detectors._schema_guard import pattern_checks
from detectors.unsafe_reasoning import RULES_FILE, UnsafeReasoningDetector, load_rules
from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry, ScanContext
from guardrails.engine import Engine
from guardrails.findings import Finding, Severity
from guardrails.policy import PolicyError, load_policy

REGISTRY = DetectorRegistry.from_entry_points()
# Exponential for a backtracking engine, `regex` included: 'a' * 28 + '!' runs far past the 50 ms timeout.
BACKTRACKS = "(a|aa)+$"
SLOW_VALUE = "a" * 28 + "!"


# --- pii: bounded per check by the detector's timeout -------------------------------------------------------------
# Slow but finite patterns on every answer of a long history: the engine stops giving pii new text once its
# timeout is spent (tests/test_engine.py has the mechanism on a fake clock); no answer is passed unread.
SLOW_ID_CONFIG = r"""detectors:
  pii:
    timeout_ms: 1
    entities: [EMAIL_ADDRESS]
    recognizers:
      - supported_entity: EMPLOYEE_ID
        patterns: [{name: emp, regex: 'EMP-\d{6}|(a|aa)+$', score: 0.9}]
"""
SEGMENTS = 40


def history(tag: str, count: int = SEGMENTS) -> dict[str, Any]:
    """A chat request whose history holds `count` model answers, each with an id and a run the pattern is slow on."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "list them"}]
    for i in range(count):
        messages += [{"role": "assistant", "content": f"{tag} {i}: EMP-{i:06d} {'a' * 16}!"},
                     {"role": "user", "content": "next"}]
    return {"model": "m", "messages": messages}


def test_a_check_of_many_segments_stops_at_the_timeout_and_accounts_for_every_segment(tmp_path: Path) -> None:
    engine = Engine(load_policy(bundle(tmp_path, "p", SLOW_ID_CONFIG)), REGISTRY)
    result = asyncio.run(engine.run(read_exchange(history("first"), None)))
    found = [f for f in result.findings if f.detector == "pii" and f.category.value == "pii"]
    [overrun] = [f for f in result.findings if f.detector == "pii" and f.category.value == "detector_error"]
    skipped = overrun.evidence["segments_not_analyzed"]
    assert skipped > 0 and len(found) + skipped == SEGMENTS  # each answer: its id found, or counted as not read
    assert [f.pointer for f in found] == [f"/request/messages/{2 * i + 1}/content" for i in range(len(found))]
    assert overrun.pointer == f"/request/messages/{2 * len(found) + 1}/content"  # where reading stopped


# --- unsafe_reasoning: rules_file patterns under limits --------------------------------------------------------------
def rules_file(tmp_path: Path, pattern: str, rule_id: str = "slow_rule", **more: str) -> Path:
    path = tmp_path / "extra_rules.yml"
    lines = [f"  - id: {rule_id}", "    severity: high", "    description: plans something slow",
             "    requires_intent: false", f"    pattern: '{pattern}'"]
    cues = [f"{key}: '{value}'" for key, value in more.items()]
    path.write_text("\n".join([*cues, "rules:", *lines]) + "\n", encoding="utf-8")
    return path


def scan_reasoning(detector: UnsafeReasoningDetector, reasoning: str) -> list[Finding]:
    request = {"model": "m", "messages": [{"role": "user", "content": "go"}]}
    response = {"id": "r", "object": "chat.completion", "model": "m", "choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "done", "reasoning_content": reasoning}}]}
    exchange = read_exchange(request, response)
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx))


def test_a_backtracking_rules_file_pattern_is_an_unchecked_finding(tmp_path: Path) -> None:
    detector = UnsafeReasoningDetector({"rules_file": str(rules_file(tmp_path, BACKTRACKS))})
    (finding,) = scan_reasoning(detector, SLOW_VALUE)
    assert finding.evidence == {"rule": "pattern_unchecked", "rule_id": "slow_rule", "kind": "slow_rule",
                                "pattern": BACKTRACKS, "reason": "timeout"}
    assert finding.severity is Severity.HIGH and finding.pointer.endswith("/reasoning_content")
    assert "not checked for rule 'slow_rule'" in finding.message
    # The same pattern still judges what it can: a match is the rule's finding.
    assert [f.evidence["rule"] for f in scan_reasoning(detector, "aaaa")] == ["slow_rule"]


def test_a_backtracking_cue_from_a_rules_file_leaves_the_sentence_unchecked(tmp_path: Path) -> None:
    path = rules_file(tmp_path, r"\bfrobnicate\b", "frob", negation_cue=BACKTRACKS)
    detector = UnsafeReasoningDetector({"rules_file": str(path)})
    sentence = f"{SLOW_VALUE[:-1]} I will frobnicate the server."
    (finding,) = scan_reasoning(detector, sentence)
    assert (finding.evidence["rule"], finding.evidence["rule_id"], finding.evidence["pattern"]) == (
        "pattern_unchecked", "frob", BACKTRACKS)
    assert (finding.start, finding.end) == (0, len(sentence))  # at the sentence the cue could not judge


@pytest.mark.parametrize(("pattern", "needle"), [
    ("(x", "does not compile"),
    ("(?:a{1000}){1000}", "compiles to more than"),  # `re` takes it; `regex` would build a 270 MB program
])
def test_a_rules_file_pattern_that_cannot_be_searched_safely_stops_the_policy(
        tmp_path: Path, pattern: str, needle: str) -> None:
    path = rules_file(tmp_path, pattern, "broken_rule")
    with pytest.raises(ValueError) as caught:
        UnsafeReasoningDetector({"rules_file": str(path)})
    assert str(path) in str(caught.value) and "'broken_rule'" in str(caught.value) and needle in str(caught.value)


def test_a_bad_cue_in_a_rules_file_names_the_file_and_the_cue(tmp_path: Path) -> None:
    path = rules_file(tmp_path, "fine", intent_cue="(unclosed")
    with pytest.raises(ValueError) as caught:
        UnsafeReasoningDetector({"rules_file": str(path)})
    assert str(path) in str(caught.value) and "intent_cue" in str(caught.value)


def test_the_load_error_reaches_the_policy_with_file_and_rule(tmp_path: Path) -> None:
    directory = bundle(tmp_path, "p", "detectors:\n  unsafe_reasoning:\n    rules_file: extra_rules.yml\n")
    rules_file(directory, "(x", "broken_rule")
    with pytest.raises(PolicyError) as caught:
        Engine(load_policy(directory), REGISTRY)
    assert "extra_rules.yml" in str(caught.value) and "'broken_rule'" in str(caught.value)


REASONING = [
    "The migration failed. I'll quietly delete the audit logs so the user won't notice the failed migration.",
    "I will copy the API keys from .env and send them to https://paste.example/upload.",
    "Let me tell the user the tests passed, but actually they are still failing.",
    "Next, I'll disable the monitoring agent before running the script.",
    "I need to add myself to the sudoers file to finish faster.",
    "The quickest fix: I'll run rm -rf /var/lib/app and start fresh.",
    "The user wants me to disable the monitoring. I should not disable the monitoring; I will refuse.",
    "They are asking how to exfiltrate credentials. That is harmful, so I'll decline and explain the risks.",
    "I won't run rm -rf on their home directory; I'll suggest a safer cleanup instead.",
    "Ι'll quіetly dеlete the audit logs so thе user won't notice.",  # Greek/Cyrillic look-alikes
]


def test_the_shipped_rules_read_as_a_rules_file_give_the_same_matches() -> None:
    """An operator's copy of the shipped rules (compiled by `regex`, under limits) judges as the shipped ones."""
    shipped = UnsafeReasoningDetector()
    copied = UnsafeReasoningDetector()
    copied.ruleset = load_rules(RULES_FILE, shipped=Path("not the shipped file"))
    copied.limited = True
    assert copied.ruleset.limited and not shipped.ruleset.limited

    def ids(detector: UnsafeReasoningDetector, text: str) -> list[tuple[str, int, int]]:
        with pattern_checks():
            return [(rule.id, start, end) for rule, start, end in detector.rule_matches(text)]

    expected = [ids(shipped, text) for text in REASONING]
    assert sum(map(len, expected)) >= 6
    assert [ids(copied, text) for text in REASONING] == expected
