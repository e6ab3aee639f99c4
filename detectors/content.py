"""`content`: banned terms and topics from the policy, matched on word boundaries after Unicode folding.

Text and terms are folded the same way (detectors/_fold.py: NFKC, confusables, casefold, invisible format
characters dropped), so "ＢＡＮＮＥＤ", "Banned", "ban" U+200B "ned" and "bаnned" with a Cyrillic "а" all match
"banned". The folded text keeps, for each of its characters, the span of original characters it came from, so a
match maps back to the exact original substring (zero-width characters inside it included). Terms are also
searched in the text as rendered and spelled out (detectors/_readings.py: `**nap**alm`, `<b>pipe</b> bomb`,
`n-a-p-a-l-m`); the words of a term may be joined by a dash or an underscore (`pipe-bomb`, `pipe_bomb`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from detectors._choices import read_severity
from detectors._fold import FoldedText, fold, fold_with_offsets, folded_view, warm_up
from detectors._readings import letters_joined, without_markup
from detectors._textfilter import SEVERITY_RANK, TextFilter, capped_by_severity
from guardrails.detector import Scope, Services, SettingError, read_setting, refuse_unknown_keys
from guardrails.exchange import Segment
from guardrails.findings import Category, Hit, Severity
from guardrails.textview import where

__all__ = ["ContentDetector", "fold", "fold_with_offsets"]  # the folding helpers moved to _fold; still importable here

# What may join the words of a term in the text: whitespace, dashes, underscores (`pipe-bomb`, `pipe_bomb`).
_WORD_GLUE = re.compile(r"[\s\-_]+")
TOPIC_KEYS = ("terms", "severity")  # what a topic given as a mapping may hold


@dataclass(frozen=True, slots=True)
class Term:
    term: str  # as configured
    topic: str | None
    severity: Severity


class ContentDetector(TextFilter):
    """Settings:

    terms: [word, "two words", ...]                 banned terms
    topics: {name: [terms...]} or {name: {terms: [...], severity: high}}
    severity: medium                                default severity of a match
    max_hits: 20                                    matches reported per segment (the first ones); past them
                                                    only a term more severe than all reported
    """

    name = "content"
    category = Category.CONTENT
    default_scope = Scope()

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        default = read_severity(self.settings, "severity", Severity.MEDIUM)
        self.terms: dict[str, list[Term]] = {}
        for term in self.setting("terms", list, [], items=str):
            self._add(str(term), None, default)
        for topic, spec in self.setting("topics", dict, {}).items():
            terms, severity = spec or [], default
            if isinstance(spec, Mapping):
                # `term:` for `terms:` would ban nothing, `severty:` leave the default: refused, with the key meant.
                refuse_unknown_keys(spec, TOPIC_KEYS, f"content.topics.{topic}")
                terms = read_setting(spec, "terms", list, [], items=str, where=f"topics.{topic}.")
                severity = read_severity(spec, "severity", default, where=f"topics.{topic}.")
            elif not isinstance(terms, list):  # a bare string would be matched letter by letter
                raise SettingError(f"setting topics.{topic} must be a list of terms or a mapping, not {spec!r}")
            for term in terms:
                self._add(str(term), str(topic), severity)
        self.pattern = _compile(self.terms)
        # A match's words, joined by single spaces, name its terms (`pipe_bomb` and `pipe  bomb` are "pipe bomb").
        self.by_words: dict[str, list[Term]] = {}
        for key, terms in self.terms.items():
            self.by_words.setdefault(_words(key), []).extend(terms)
        # Per segment: a megabyte of one term repeated was half a million findings (seconds, a huge answer).
        self.max_hits = self.setting("max_hits", int, 20, minimum=1)
        # Past the cap, only terms more severe than those found are looked for: the pattern of each rank's.
        ranks = {SEVERITY_RANK[t.severity] for terms in self.terms.values() for t in terms}
        self.more_severe = {rank: _compile({key: terms for key, terms in self.terms.items()
                                            if any(SEVERITY_RANK[t.severity] > rank for t in terms)})
                            for rank in ranks}
        warm_up()  # folding's character classes built here, not on the first check

    def _add(self, term: str, topic: str | None, severity: Severity) -> None:
        key = " ".join(fold(term).split())
        if key:
            self.terms.setdefault(key, []).append(Term(term, topic, severity))

    def analyze(self, segment: Segment) -> list[Hit]:
        if self.pattern is None:
            return []
        folded = folded_view(segment, casefold=True, blank_escapes=True)
        # The same terms, as the text renders (markup left out) and with words spelled out letter by letter read
        # as words, where that differs from the text.
        rendered = without_markup(folded, casefold=True)
        reading = letters_joined(rendered or folded) or rendered
        found = {match for view in (folded, reading) if view is not None for match in self._matches(view)}
        ordered = sorted(found, key=lambda f: (f[0], f[1], f[2].term, f[2].topic or ""))
        return capped_by_severity([self._hit(segment, *match) for match in ordered], self.max_hits)

    def _matches(self, view: FoldedText) -> Iterator[tuple[int, int, Term]]:
        """The terms in `view`, at their spans in the original text: the first `max_hits`, then only terms more
        severe than all found before, searched for alone."""
        count, worst = 0, -1  # worst: rank of the most severe term found
        pattern: re.Pattern[str] | None = self.pattern
        position = 0
        while pattern is not None and (match := pattern.search(view.text, position)) is not None:
            position = match.end()
            terms = self.by_words[_words(match.group())]
            if count >= self.max_hits:
                terms = [term for term in terms if SEVERITY_RANK[term.severity] > worst]
            start, end = view.original_span(*match.span())
            for term in terms:
                yield start, end, term
                count += 1
                worst = max(worst, SEVERITY_RANK[term.severity])
            if count >= self.max_hits:
                # Past the cap only a more severe term is reported: twenty mild terms written first must not hide
                # one that blocks. Once the most severe is in, nothing further can change the verdict.
                pattern = self.more_severe.get(worst)

    def _hit(self, segment: Segment, start: int, end: int, term: Term) -> Hit:
        about = f"topic {term.topic!r} (term {term.term!r})" if term.topic else f"banned term {term.term!r}"
        evidence: dict[str, Any] = {"term": term.term, "matched": segment.text[start:end]}
        if term.topic:
            evidence["topic"] = term.topic
        return Hit(
            message=f"{about} {where(segment)}",
            start=start,
            end=end,
            severity=term.severity,
            score=1.0,
            evidence=evidence,
        )


def _words(text: str) -> str:
    return " ".join(_WORD_GLUE.split(text))


def _compile(terms: Mapping[str, list[Term]]) -> re.Pattern[str] | None:
    if not terms:
        return None
    # Longest first, so "credit card fraud" wins over "credit card"; inner spaces match any whitespace, dashes and
    # underscores (`pipe-bomb`, `project_nightingale`).
    keys = sorted(terms, key=len, reverse=True)
    alternatives = (_WORD_GLUE.pattern.join(map(re.escape, key.split(" "))) for key in keys)
    return re.compile(rf"(?<!\w)(?:{'|'.join(alternatives)})(?!\w)")
