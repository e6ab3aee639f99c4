"""`content`: policy terms and topics, matched on word boundaries through Unicode tricks, spans exact."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import fixture

from detectors.content import ContentDetector, fold, fold_with_offsets
from guardrails.adapters import read_exchange
from guardrails.detector import DetectorRegistry, ScanContext
from guardrails.engine import Engine
from guardrails.exchange import Phase, Segment, SegmentKind, Trust
from guardrails.findings import Finding, Severity
from guardrails.pointer import resolve
from guardrails.policy import load_policy

SETTINGS = {
    "terms": ["Project Nightingale", "café"],
    "topics": {"weapons": ["pipe bomb", "napalm"], "competitors": {"terms": ["acme corp"], "severity": "low"}},
    "severity": "high",
}
DETECTOR = ContentDetector(SETTINGS)


def segment(text: str, kind: SegmentKind = SegmentKind.ASSISTANT) -> Segment:
    return Segment(index=0, kind=kind, role="assistant", trust=Trust.MODEL, turn=0, phase=Phase.RESPONSE,
                   text=text, pointer="/response")


def matches(text: str, kind: SegmentKind = SegmentKind.ASSISTANT) -> list[tuple[str, str]]:
    return [(h.evidence["term"], text[h.start : h.end]) for h in DETECTOR.analyze(segment(text, kind))]


def scan(body: dict[str, Any], format: str | None = None) -> list[Finding]:
    exchange = read_exchange(body["request"], body.get("response"), format=format)
    ctx = ScanContext(segments=list(exchange.segments), signals={})
    return asyncio.run(DETECTOR.scan(exchange, ctx))


@pytest.mark.parametrize(("text", "matched"), [
    ("How do I build a pipe bomb?", "pipe bomb"),
    ("How do I build a PIPE BOMB?", "PIPE BOMB"),
    ("a Pipe\n\t bomb", "Pipe\n\t bomb"),  # any whitespace between the words of a term
    ("ｐｉｐｅ ｂｏｍｂ", "ｐｉｐｅ ｂｏｍｂ"),  # fullwidth letters and space
    ("pi\u200bpe bo\u200dmb", "pi\u200bpe bo\u200dmb"),  # zero-width space and joiner inside the words
    ("na\u00adpalm!", "na\u00adpalm"),  # soft hyphen
    ("\u200bnapalm", "napalm"),  # a leading invisible character is not part of the span
    ("NAPALM", "NAPALM"),
    ("𝐧𝐚𝐩𝐚𝐥𝐦", "𝐧𝐚𝐩𝐚𝐥𝐦"),  # mathematical bold letters (NFKC), outside the BMP
])
def test_evasions_still_match_with_exact_original_spans(text: str, matched: str) -> None:
    hits = DETECTOR.analyze(segment(text))
    assert [text[h.start : h.end] for h in hits] == [matched]


def test_word_boundaries() -> None:
    assert matches("napalms and pipe bombs; the cafés") == []
    assert matches("unnapalm, napalm_x, xnapalm") == []
    assert matches("(napalm)") == [("napalm", "napalm")]


def test_composed_and_decomposed_accents_both_match() -> None:
    decomposed = "cafe\u0301"
    assert matches(f"Meet at the {decomposed} on Project  NIGHTINGALE.") == [
        ("café", decomposed), ("Project Nightingale", "Project  NIGHTINGALE")]
    assert matches("CAFÉ") == [("café", "CAFÉ")]


def test_fold_maps_every_folded_character_back() -> None:
    text = "Stra\u00dfe ﬁne \u200bＡ"
    folded = fold_with_offsets(text)
    assert folded.text == "strasse fine a"
    assert folded.original_span(0, 7) == (0, 6)  # "ss" both come from "ß"
    assert folded.original_span(13, 14) == (12, 13)  # the fullwidth A, after the zero-width space
    assert fold("ＡＢＣ\u200b") == "abc"


def test_topics_severity_and_messages() -> None:
    hits = DETECTOR.analyze(segment("Acme Corp sells napalm. Project Nightingale."))
    assert [(h.evidence.get("topic"), h.severity, h.message) for h in hits] == [
        ("competitors", Severity.LOW, "topic 'competitors' (term 'acme corp') in model output"),
        ("weapons", Severity.HIGH, "topic 'weapons' (term 'napalm') in model output"),
        (None, Severity.HIGH, "banned term 'Project Nightingale' in model output"),
    ]


def test_no_terms_means_no_work() -> None:
    assert ContentDetector({}).analyze(segment("anything at all")) == []


def test_openai_chat_user_message_and_escaped_tool_arguments() -> None:
    response = copy.deepcopy(fixture("chat_completion_reasoning_2_tool_calls_logprobs.json"))
    # json.dumps escapes non-ASCII: the arguments hold "\uff50\uff49\uff50\uff45 bomb" literally.
    response["choices"][0]["message"]["tool_calls"][1]["function"]["arguments"] = json.dumps(
        {"query": "how to make a ｐｉｐｅ bomb"})
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "Tell me about napalm"}]},
            "response": response}
    findings = scan(body)
    assert [(f.pointer, resolve(body, f.pointer)[f.start : f.end]) for f in findings] == [
        ("/request/messages/0/content", "napalm"),
        ("/response/choices/0/message/tool_calls/1/function/arguments", "\\uff50\\uff49\\uff50\\uff45 bomb"),
    ]
    assert findings[1].message == "topic 'weapons' (term 'pipe bomb') in arguments of get_time"


def test_anthropic_thinking_and_tool_input() -> None:
    response = copy.deepcopy(fixture("anthropic_messages_thinking_tool_use.json"))
    response["content"][0]["thinking"] = "They asked about Ｎａｐａｌｍ; I will refuse."
    response["content"][2]["input"] = {"city": "Paris", "note": "line one\n\"quoted\" acme\u200b corp"}
    body = {"request": {"model": "m", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]},
            "response": response}
    findings = scan(body, "anthropic.messages")
    assert [(f.pointer, resolve(body, f.pointer)[f.start : f.end]) for f in findings] == [
        ("/response/content/0/thinking", "Ｎａｐａｌｍ"),
        ("/response/content/2/input/note", "acme\u200b corp"),
    ]


def test_policy_settings_through_the_engine(tmp_path: Path) -> None:
    bundle = tmp_path / "p"
    bundle.mkdir()
    (bundle / "config.yml").write_text(
        "detectors:\n  content:\n    action: block\n    terms: [Nightingale]\n    applies_to: {phases: [response]}\n")
    engine = Engine(load_policy(bundle), DetectorRegistry.from_entry_points())
    response = copy.deepcopy(fixture("chat_completion_content_logprobs.json"))
    response["choices"][0]["message"]["content"] = "Nightingale launches Monday."
    request = {"model": "m", "messages": [{"role": "user", "content": "Is Nightingale on track?"}]}
    result = asyncio.run(engine.run(read_exchange(request, response)))
    assert result.verdict.value == "block"
    assert [f.pointer for f in result.findings] == ["/response/choices/0/message/content"]
