"""What `prompt_injection`'s rule tables are made of, shared by its modules: the rule record, the helpers that
write fast patterns, the sentence-start and polite-opener fragments, and how a match becomes a hit."""

from __future__ import annotations

import re
from dataclasses import dataclass

from detectors._fold import QUOTE_CHARS
from guardrails.findings import Hit, Severity

FLAGS = re.IGNORECASE | re.MULTILINE


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    severity: Severity
    message: str
    keywords: tuple[str, ...]  # lower-case literals, one of which every match contains: the regex runs only then


def rule(rule_id: str, keywords: str, pattern: str, severity: Severity, message: str, flags: int = FLAGS) -> Rule:
    return Rule(rule_id, re.compile(pattern, flags), severity, message, tuple(keywords.split("|")))


def _word_led(words: dict[str, str]) -> str:
    r"""`\b(?:word1more1|word2more2|...)` written with each alternative opening with its word, the boundary before it
    checked after it: `re` scans for a pattern opening with literals in C, and turns away an alternative opening with
    a literal at once, where one opening with `\b` is tried in full at every position (several times slower). Lower
    case: for the lower-cased text (_cased)."""
    return "(?:" + "|".join(f"{w}(?<!\\w{w}){more}" for w, more in words.items()) + ")"


Cased = tuple[re.Pattern[str], re.Pattern[str]]


def _cased(pattern: str, flags: int = 0) -> Cased:
    """`pattern` (lower-case) for the lower-cased text, where literals are compared fastest, and ignoring case for a
    text whose lowering changed its length (offsets into the lower-cased one would not hold there)."""
    return re.compile(pattern, flags), re.compile(pattern, flags | re.IGNORECASE)



# Polite or modal openers address someone who is to act; a few words may precede the operation verb
# ("Please use the vault to fill my address").
_POLITE_OPENER = (
    r"(?:please|kindly|pls|can\s+you|could\s+you|would\s+you|will\s+you|you\s+(?:must|should|need\s+to|"
    r"have\s+to|are\s+(?:required|instructed)\s+to)|i\s+need\s+you\s+to|i\s+want\s+you\s+to|"
    r"make\s+sure\s+(?:to|you)|be\s+sure\s+to|remember\s+to)\s+(?:(?:also|then|go\s+ahead\s+and)\s+)?"
)
_SEQUENCE_OPENER = r"(?:first|now|next|then|also|finally|immediately|afterwards?)\s*,?\s*(?:please\s+)?"
# A sentence, or a quoted field value, starts here.
_SENTENCE_START = r"(?:^|(?<=[.!?;:,\n'\"|>\[{(`*])|(?<=\\n))[ \t]*"


def _hit(rule_id: str, message: str, severity: Severity, start: int, end: int, matched: str) -> Hit:
    score = 0.9 if severity is Severity.HIGH else 0.6
    return Hit(message=message, start=start, end=end, severity=severity, score=score,
               evidence={"rule": rule_id, "matched": matched[:QUOTE_CHARS]})
