"""What `prompt_injection`'s rule tables are made of, shared by its modules: the rule record, the helpers that
write fast patterns, where a rule's matches may start (leads), the sentence-start and polite-opener fragments, and
how a match becomes a hit."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

from detectors._fold import QUOTE_CHARS
from guardrails.findings import Hit, Severity

FLAGS = re.IGNORECASE | re.MULTILINE


class Lowered:
    """A text lower-cased (of the same length), where the rules' leads look up literals, each found once per text:
    the words of word_leads all in one pass (_WordIndex), other literals with str.find."""

    __slots__ = ("_found", "_words", "text")

    def __init__(self, lowered: str) -> None:
        self.text = lowered
        self._found: dict[str, list[int]] = {}
        self._words: dict[str, list[int]] | None = None

    def at(self, literal: str) -> list[int]:
        """Every position where `literal` occurs, ascending (overlapping occurrences too)."""
        found = self._found.get(literal)
        if found is None:
            found = []
            find = self.text.find
            k = find(literal)
            while k >= 0:
                found.append(k)
                k = find(literal, k + 1)
            self._found[literal] = found
        return found

    def word_starts(self, word: str) -> Iterator[int]:
        r"""The positions where `word` (opening with a letter) starts a word, that a `\b` may precede: not after a
        letter, digit or `_` (str.isalnum and `_` are `re`'s \w). Unordered. TooManyLeads where the words of
        word_leads are more than one in LEADS_PER_CHAR characters of the text."""
        if self._words is None:
            self._words = _WORD_INDEX.build(self.text, len(self.text) // LEADS_PER_CHAR + 64) or _DENSE
        index = self._words
        if index is _DENSE:
            raise TooManyLeads
        if word in _WORD_INDEX.longer:
            for longer in _WORD_INDEX.longer[word]:
                yield from index.get(longer, ())
            return
        text = self.text  # (a word no word_leads registered)
        for k in self.at(word):
            if not k or not (text[k - 1].isalnum() or text[k - 1] == "_"):
                yield k

    def run_before(self, end: int, chars: str | None = None) -> int:
        r"""Where the run of `chars` (None: whitespace, str.isspace, `re`'s \s) ending at `end` starts (`end` when
        there is none). Read back in growing slices: a long run is read in C, once per word after it."""
        size = 16
        while True:
            lo = max(0, end - size)
            kept = len(self.text[lo:end].rstrip(chars))
            if kept or lo == 0:
                return lo + kept
            size *= 4

    def words_before(self, ends: Iterable[int], words: tuple[str, ...]) -> Iterator[int]:
        r"""Where one of `words` starts that whitespace (at least one character) separates from a position of
        `ends`: the start of `word\s+<end>`."""
        text = self.text
        for end in ends:
            space = self.run_before(end)
            if space < end:
                for word in words:
                    if space >= len(word) and text.startswith(word, space - len(word)):
                        yield space - len(word)


class _WordIndex:
    """The words of every word_leads, found at word starts in one regex pass over a lower-cased text (~20 ms a MB,
    where a str.find per word took twice that for 70 words).

    The pattern reads a non-word character and then the longest registered word there: every registered word
    starting at that position is a prefix of the one found (`longer`: each word's registered words that start with
    it). It consumes nothing past that word, which is letters: no other word start is passed over."""

    def __init__(self) -> None:
        self.words: set[str] = set()
        self.longer: dict[str, tuple[str, ...]] = {}
        self.pattern: re.Pattern[str] | None = None

    def add(self, words: Iterable[str]) -> None:
        self.words.update(words)
        self.pattern = None

    def build(self, lowered: str, limit: int) -> dict[str, list[int]] | None:
        """Where each word is found, by the longest found there; None past `limit` words."""
        pattern = self.pattern
        if pattern is None:
            by_letter: dict[str, list[str]] = {}
            for word in sorted(self.words, key=lambda w: (-len(w), w)):  # longest first: the one found
                by_letter.setdefault(word[0], []).append(re.escape(word[1:]))
            pattern = self.pattern = re.compile(
                r"\W(" + "|".join(re.escape(c) + "(?:" + "|".join(rest) + ")" for c, rest in by_letter.items()) + ")")
            self.longer = {w: tuple(v for v in self.words if v.startswith(w)) for w in self.words}
        index: dict[str, list[int]] = {}
        first = pattern.match(" " + lowered[:64])  # a word at the very start (no character before it to read)
        if first is not None:
            index[first.group(1)] = [0]
        for count, m in enumerate(pattern.finditer(lowered)):
            if count >= limit:
                return None
            index.setdefault(m.group(1), []).append(m.start(1))
        return index


_WORD_INDEX = _WordIndex()
_DENSE: dict[str, list[int]] = {}  # a text made of registered words: not indexed


class TooManyLeads(Exception):
    """Raised by a rule's leads for a text made of them: it is searched whole instead (led_matches)."""


LEADS_PER_CHAR = 16
# Where a rule's matches may start, found in the lower-cased text: every position where a match starts must be among
# them (more are only tried in vain). Then the rule's own pattern is tried at those positions alone (led_matches),
# where `finditer` tried it at every position of the text (~60 ns a character each, for a dozen rules).
Leads = Callable[[Lowered], Iterable[int]]


def word_leads(*words: str) -> Leads:
    r"""A rule whose every alternative opens `\b(?:word|...)`: matches start where a word does, with one of these
    (lower-case, opening with a letter)."""
    if not all(w.isalpha() and w.isascii() and w.islower() for w in words):  # what the index pattern reads
        raise ValueError(f"word_leads takes lower-case ASCII words: {words}")
    _WORD_INDEX.add(words)
    return lambda low: (k for word in words for k in low.word_starts(word))


def literal_leads(*literals: str) -> Leads:
    """A rule whose every alternative opens with one of these literals."""
    return lambda low: (k for literal in literals for k in low.at(literal))


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    pattern: re.Pattern[str]
    severity: Severity
    message: str
    keywords: tuple[str, ...]  # lower-case literals, one of which every match contains: the regex runs only then
    leads: Leads | None = None  # where its matches may start (None: the pattern is searched for in the whole text)


def rule(rule_id: str, keywords: str, pattern: str, severity: Severity, message: str, flags: int = FLAGS,
         leads: Leads | None = None) -> Rule:
    return Rule(rule_id, re.compile(pattern, flags), severity, message, tuple(keywords.split("|")), leads)


# A pattern ignoring case matches `ı` (dotless i) for `i` and `ſ` (long s) for `s`, which lower() keeps as they are; a
# text holding one, or one whose lower case is longer ('İ'), is searched in full. (Every other character matches an
# ASCII letter ignoring case only if its lower() is that letter, and keeps \w and \s: checked over all of Unicode
# in tests/test_untrusted_throughput.py.)
CASE_ODD = "\u0131\u017f"


def lowered_for_leads(text: str, lowered: str) -> Lowered | None:
    """`lowered` (text.lower()) to find the rules' leads in, or None where its positions are not the text's."""
    if len(lowered) != len(text) or (not text.isascii() and any(c in text for c in CASE_ODD)):
        return None
    return Lowered(lowered)


def led_matches(pattern: re.Pattern[str], text: str, starts: Iterable[int]) -> list[re.Match[str]] | None:
    """What `pattern.finditer(text)` finds, when every match starts at one of `starts`: tried at each, in order,
    from where the last match ended (a pattern given a position looks behind it as finditer does). The rules'
    patterns never match an empty string. None for a text made of leads (`send send send ...`, more than one in
    LEADS_PER_CHAR characters): a Python step per lead would cost more than finditer's C, the caller's way."""
    limit = len(text) // LEADS_PER_CHAR + 64
    try:
        tried = list(islice(starts, limit + 1))
    except TooManyLeads:
        return None
    if len(tried) > limit:
        return None
    found: list[re.Match[str]] = []
    match = pattern.match
    done = 0
    for start in sorted(set(tried)):
        if start >= done:
            m = match(text, start)
            if m is not None:
                found.append(m)
                done = max(m.end(), start + 1)
    return found


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
