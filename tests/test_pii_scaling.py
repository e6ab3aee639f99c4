"""`pii` on digit-heavy text: phonenumbers' work is bounded per segment, overlap removal is not quadratic,
and the numbers and e-mails inside such text are still found at their exact offsets."""

from __future__ import annotations

import asyncio
import copy
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import phonenumbers
import pytest
from conftest import fixture

from detectors import pii
from detectors._pii_candidates import PHONE_SCAN_BUDGET
from detectors.pii import PIIDetector
from guardrails.adapters import read_exchange
from guardrails.detector import ScanContext
from guardrails.exchange import Phase, Segment, SegmentKind, Trust
from guardrails.findings import Finding

DETECTOR = PIIDetector({})
REGIONS = DETECTOR.phone_region_count
# The review's reproducers, as a function of their length in characters.
DIGIT_HEAVY = {
    "dotted triples": lambda n: ("1.2.3." * n)[:n],
    "dotted digits": lambda n: ("1." * n)[:n],
    "area codes": lambda n: ("(555) 555-" * n)[:n],
}
REALISTIC = "call 555-0100 or "


def segment(text: str) -> Segment:
    return Segment(index=0, kind=SegmentKind.ASSISTANT, role="assistant", trust=Trust.MODEL, turn=0,
                   phase=Phase.RESPONSE, text=text, pointer="/response")


def found(text: str) -> list[tuple[str, int, int]]:
    return [(h.evidence["entity"], h.start, h.end) for h in DETECTOR.analyze(segment(text))
            if not h.evidence.get("capped")]


def capped(text: str) -> list[dict[str, Any]]:
    return [h.evidence for h in DETECTOR.analyze(segment(text)) if h.evidence.get("capped")]


@pytest.fixture
def handed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every text phonenumbers' matcher is given, once per region pass."""
    texts: list[str] = []
    real = phonenumbers.PhoneNumberMatcher

    def counting(text: str, region: str, **kwargs: Any) -> Any:
        texts.append(text)
        return real(text, region, **kwargs)

    monkeypatch.setattr(phonenumbers, "PhoneNumberMatcher", counting)
    return texts


def digits(texts: list[str]) -> int:
    return sum(len(re.findall(r"\d", t)) for t in texts)


# --- phonenumbers' work -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DIGIT_HEAVY))
def test_phonenumbers_work_is_bounded_on_digit_heavy_text(name: str, handed: list[str]) -> None:
    work = []
    for size in (1_000, 10_000, 100_000):
        handed.clear()
        DETECTOR.analyze(segment(DIGIT_HEAVY[name](size)))
        work.append(digits(handed))
    small, medium, large = work
    assert 0 < small <= medium <= large <= PHONE_SCAN_BUDGET  # was 8 regions x every digit: 400,000 at 100 KB
    assert medium <= 10 * small + REGIONS * 64  # at most linear while under the budget


def test_digit_heavy_text_says_where_phone_checking_stopped() -> None:
    text = DIGIT_HEAVY["area codes"](100_000)
    (note,) = capped(text)
    assert note["entity"] == "PHONE_NUMBER" and note["length"] == len(text)
    assert 0 < note["checked_chars"] < len(text)
    assert capped(DIGIT_HEAVY["area codes"](1_000)) == []


def test_prose_around_a_number_is_not_handed_to_phonenumbers(handed: list[str]) -> None:
    filler = "The quarterly report covers revenue, churn and the hiring plan for next year. " * 1_000
    text = f"{filler}Ring 212 555 0199 tomorrow. {filler}"
    start = text.index("212")
    assert found(text) == [("PHONE_NUMBER", start, start + len("212 555 0199"))]
    assert len(handed) == REGIONS  # a national-format number: every region, once
    assert all(len(t) < 200 for t in handed)  # a window, not the 160 KB text


# --- correctness inside digit-heavy and realistic text ----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DIGIT_HEAVY))
def test_numbers_and_emails_inside_digit_heavy_text_keep_exact_offsets(name: str) -> None:
    soup = DIGIT_HEAVY[name](40_000)
    head = "Reach jane.doe@example.com or +44 20 7946 0958 first. "
    tail = " Then mail ops@example.org or call (212) 555-0199."
    text = head + soup + tail
    expected_head = [("EMAIL_ADDRESS", 6, 26), ("PHONE_NUMBER", 30, 46)]
    base = len(head) + len(soup)
    expected_tail = [("EMAIL_ADDRESS", base + 11, base + 26), ("PHONE_NUMBER", base + 35, base + 49)]
    assert text[30:46] == "+44 20 7946 0958" and text[base + 35 : base + 49] == "(212) 555-0199"
    hits = found(text)
    assert hits[:2] == expected_head and hits[-2:] == expected_tail
    assert capped(text)  # the soup spent the phonenumbers budget; the regex recognizers read on


def test_realistic_answer_full_of_numbers_is_checked_whole_at_exact_offsets() -> None:
    rng = random.Random(3)
    # Contiguous numbers only phonenumbers finds; formatted ones our regex recognizer finds as well.
    numbers = ["2125550199", "+12125550199", "+442079460958", "+1 212-555-0199", "020 7946 0958", "(11) 98765-4321",
               "555-0100", "+91 98765 43210"]
    parts, expected = [], []
    position = 0
    for i in range(150):
        number = rng.choice(numbers)
        prefix = f"Office {i} answers on "
        expected.append(("PHONE_NUMBER", position + len(prefix), position + len(prefix) + len(number)))
        parts.append(f"{prefix}{number} on weekdays.\n")
        position += len(parts[-1])
    text = "".join(parts)
    assert found(text) == expected
    assert capped(text) == []


def test_realistic_reproducer_keeps_every_number() -> None:
    text = REALISTIC * 2353
    assert found(text) == [("PHONE_NUMBER", m.start(), m.end()) for m in re.finditer(r"555-0100", text)]


def test_digit_heavy_answer_in_a_chat_completion_is_located() -> None:
    response = copy.deepcopy(fixture("chat_completion_content_logprobs.json"))
    content = "Build ids: " + "1.2.3." * 5_000 + " -- contact jane.doe@example.com"
    response["choices"][0]["message"]["content"] = content
    body = {"request": {"model": "m", "messages": [{"role": "user", "content": "ids?"}]}, "response": response}
    exchange = read_exchange(body["request"], body["response"])
    ctx = ScanContext(segments=[s for s in exchange.segments if DETECTOR.default_scope.matches(s)], signals={})
    findings: list[Finding] = asyncio.run(DETECTOR.scan(exchange, ctx))
    emails = [f for f in findings if f.evidence.get("entity") == "EMAIL_ADDRESS"]
    assert [(f.pointer, content[f.start : f.end]) for f in emails] == [
        ("/response/choices/0/message/content", "jane.doe@example.com")]


# --- overlap removal ------------------------------------------------------------------------------------------
@dataclass
class Counted:
    """A RecognizerResult stand-in that counts reads of its offsets."""

    entity_type: str
    _start: int
    _end: int
    score: float
    reads: list[int]

    @property
    def start(self) -> int:
        self.reads[0] += 1
        return self._start

    @property
    def end(self) -> int:
        self.reads[0] += 1
        return self._end


def results(n: int, reads: list[int]) -> list[Counted]:
    """Disjoint, equally scored results, as 12,500 IP addresses in "1.2.3." * 16667 are."""
    return [Counted("IP_ADDRESS", 8 * i, 8 * i + 7, 0.6, reads) for i in range(n)]


def test_drop_nested_is_not_quadratic() -> None:
    work = []
    for n in (1_000, 8_000):
        reads = [0]
        kept = pii._drop_nested(results(n, reads))
        assert len(kept) == n
        work.append(reads[0])
    assert work[1] <= 8 * 2 * work[0]  # quadratic would be 64x


def reference_drop_nested(items: list[Any]) -> list[tuple[int, int, float]]:
    ordered = sorted(items, key=lambda r: (-r.score, -(r.end - r.start), r.start))
    kept: list[Any] = []
    for r in ordered:
        if all(r.end <= k.start or r.start >= k.end for k in kept):
            kept.append(r)
    return [(r.start, r.end, r.score) for r in sorted(kept, key=lambda r: r.start)]


def random_results(rng: random.Random) -> Iterator[Counted]:
    reads = [0]
    for _ in range(rng.randint(0, 60)):
        start = rng.randint(0, 200)
        yield Counted("X", start, start + rng.randint(1, 30), rng.choice([0.4, 0.6, 0.85, 1.0]), reads)


def test_drop_nested_keeps_the_same_results_as_the_pairwise_check() -> None:
    rng = random.Random(11)
    for _ in range(500):
        items = list(random_results(rng))
        assert [(r.start, r.end, r.score) for r in pii._drop_nested(items)] == reference_drop_nested(items)
