"""`tool_taint`: a tool call whose arguments (or whose very choice of tool) come from untrusted content.

Indirect prompt injection plants a recipient, a URL, an account number or a whole errand in a web page or a
tool result; the agent then calls a tool with it. A value is tainted when it appears in an untrusted segment
(tool results, documents) and in no trusted one (system, user). Values copied from a structured field of a
tool result (`"id": "evt_42"`) are the normal data flow of an agent and are not reported unless asked; values
lifted out of free text are. The finding points at the argument; `evidence.source` at where it was planted.

Calls the provider runs itself (a web fetch, code execution, an MCP tool) are judged the same way: a URL a page
planted is as dangerous in a `web_fetch` as in a client's `http_get`. Only the tool-choice check skips the
provider's built-ins: their names (web_search, code_execution) name a capability the request enabled, not an
errand a text could plant; an MCP tool's name (`send_email`) can, and is checked.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from detectors._argspans import ArgPath, dotted, finding_at, leaves, locate_argument, locate_name
from detectors._injection_analysis import agent_request_hits
from detectors._taint_index import TextIndex, compact_form, text_index, value_runs
from detectors._taint_index import normalize as _normalize
from guardrails.detector import Detector, ScanContext, Scope
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind, ToolCall
from guardrails.findings import Category, Finding, Severity
from guardrails.memo import SizedMemo

# Identifiers inside longer values: e-mail addresses, URLs, and tokens that mix letters and digits. The first three
# start only where a run of their characters starts: tried from every position of a long run (a 20 KB argument
# with no digit), each attempt would scan to the run's end, and one check took seconds.
ENTITY = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+|(?<![a-z0-9+.-])[a-z][a-z0-9+.-]*://[^\s'\"<>]+"
                    r"|(?<![\w./:-])[\w./:-]*\d[\w./:-]*|(?:~|\.{1,2})?/[\w.-]+/[\w./-]+", re.IGNORECASE)
DISTINCTIVE = re.compile(r"[\d@/_.:]")
WORD = re.compile(r"(?<!\w)[a-z]{3,}(?!\w)")  # prose words; `allowed_operations` is a key, not words
LETTERS_DIGITS = re.compile(r"[^\W_]+")
WORD_CHARS = re.compile(r"\w*")
CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|[^A-Za-z0-9]+")
# What precedes a field value in JSON, Python reprs, YAML or key=value text: `{"key": `, `, 'key': [`, `\nkey: `.
FIELD_PREFIX = re.compile(r"""(?:^|[{,\[]|\n)\s*["']?[\w$@.\-]{1,60}["']?\s*[:=]\s*\[?\s*$|(?:^|\[)\s*$""")
LIST_ITEM_BEFORE = re.compile(r"""["'][^"'\n]{0,300}["']\s*,\s*["']?$""")
LINE_START = re.compile(r"(?:^|\n|\\n|\\r)[ \t]*(?:[-*•]|\d+[.)])?[ \t]*\Z")
LINE_END = re.compile(r"[ \t]*(?:\n|\r|\\n|\\r|[\"']|$)")
# Dates and times are derived from results all the time (an arrival date) and name no recipient or resource.
DATE_OR_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(?:[ t]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?(?:z|[+-]\d{2}:?\d{2})?)?$"
                          r"|^\d{1,2}:\d{2}(?::\d{2})?$")
COMMON_VALUES = frozenset({"true", "false", "null", "none", "yes", "no", "default", "auto", "all", "latest",
                           "today", "tomorrow", "yesterday", "json", "text", "html", "english", "unknown"})
# Argument names where a planted value does the damage: where money, messages, data or access go.
SINK_WORDS = frozenset({"to", "recipient", "recipients", "email", "emails", "address", "account", "accounts",
                        "payee", "destination", "url", "uri", "link", "path", "file", "iban", "wallet", "phone",
                        "number", "guest", "user", "username", "cc", "bcc", "domain", "host", "webhook"})
# Words that name a tool's vendor or shape rather than the action it performs.
GENERIC_NAME_WORDS = frozenset({"get", "set", "tool", "api", "manager", "the", "and", "for", "with", "from"})
MAX_VALUE_LENGTH = 200
# The short values an errand is spelled with: an action word ("sell"), an amount (50), a name ("Bob Lee").
ERRAND_VALUE_MAX = 40
ERRAND_VALUE_WORDS = 3
# What is kept of the texts read (normalized forms, word stems, planted requests): agents resend their history every
# step. Each memo is bounded by bytes (its texts as keys included); a longer text is read again when asked for: a
# run of distinct 4 MiB bodies must not stay.
MEMO_BYTES = 16 * 2**20
MEMO_ENTRIES = 4096
CACHED_TEXT_BYTES = 2**20
_ENTRY_BYTES = 120  # an entry's slots in the memo's tables
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")  # "$3,000" is the 3000 of an amount argument


Needle = tuple[ArgPath, str, bool]  # (argument path, normalized text, whether it is another reading of the value)


@dataclass(frozen=True, slots=True)
class Planted:
    segment: Segment
    start: int
    end: int
    in_prose: bool


class ToolTaintDetector(Detector):
    name = "tool_taint"
    category = Category.TOOL_TAINT
    default_scope = Scope(kinds=frozenset({SegmentKind.TOOL_CALL}), phases=frozenset({Phase.RESPONSE}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Any = None) -> None:
        super().__init__(settings, services)
        # 0 would make every value (the empty string, any number) a candidate for taint.
        self.min_length = self.setting("min_length", int, 5, minimum=1)
        self.min_digits = self.setting("min_number_digits", int, 5, minimum=1)
        self.report_data_fields = self.setting("report_data_fields", bool, False)
        self.check_tool_choice = self.setting("tool_choice", bool, True)
        self.choice_coverage = self.setting("tool_choice_coverage", float, 0.6, minimum=0, maximum=1)
        self.check_requests = self.setting("planted_requests", bool, True)

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        untrusted = exchange.untrusted
        if not untrusted or not ctx.segments:
            return []
        trusted = [normalize(s.text) for s in exchange.trusted]
        earlier_tools = {s.tool_call.name for s in exchange.tool_calls
                         if s.tool_call is not None and s.phase is Phase.REQUEST}
        calls = [(segment, segment.tool_call, self._needles(segment.tool_call.arguments))
                 for segment in ctx.segments if segment.tool_call is not None]
        sources = _Sources(untrusted, trusted, (needle for _, _, needles in calls for _, needle, _ in needles),
                           self.min_digits)
        findings: list[Finding] = []
        for segment, call, needles in calls:
            reported: set[ArgPath] = set()
            for path, needle, variant in needles:
                if variant and path in reported:
                    continue  # another reading of a value already reported
                planted = sources.planted(needle)
                if planted is not None and (planted.in_prose or self.report_data_fields):
                    findings.append(self._argument_finding(segment, call.name, path, needle, planted))
                    reported.add(path)
            choice = None
            if self.check_tool_choice and call.name not in earlier_tools and not _is_builtin(call):
                choice = self._choice_finding(segment, call.name, sources, trusted)
                if choice is not None:
                    findings.append(choice)
            if self.check_requests and choice is None and not reported:
                errand = self._request_finding(segment, call, untrusted, trusted)
                if errand is not None:
                    findings.append(errand)
        ctx.signals[self.name] = {"tainted_calls": len({f.pointer for f in findings})}
        return findings

    def _needles(self, arguments: Any) -> list[Needle]:
        """Normalized, non-trivial strings to look for: whole short values, and identifiers in long ones; then
        other readings of a URL value (variants: looked for only while the argument has no finding)."""
        out: list[Needle] = []
        for path, value in leaves(arguments):
            if isinstance(value, bool) or value is None:
                continue
            if isinstance(value, (int, float)):
                text = str(value)
                if sum(c.isdigit() for c in text) >= self.min_digits:
                    out.append((path, text, False))
                continue
            text = normalize(str(value))
            if len(text) <= MAX_VALUE_LENGTH and self._distinctive(text):
                out.append((path, text, False))
            if len(text) > MAX_VALUE_LENGTH or " " in text:
                # In order of appearance (a set would order findings by string hash, differing between runs).
                entities = dict.fromkeys(m.group(0).lstrip(":-").rstrip(".:/-,;") for m in ENTITY.finditer(text))
                out.extend((path, e, False) for e in entities if self._distinctive(e) and e != text)
            if len(text) <= MAX_VALUE_LENGTH and ("://" in text or "%" in text):
                out.extend((path, u, True) for u in dict.fromkeys(_url_variants(text)) if self._distinctive(u))
        return out

    def _distinctive(self, text: str) -> bool:
        if len(text) < self.min_length or text in COMMON_VALUES or DATE_OR_TIME.match(text):
            return False
        if not any(c.isalnum() for c in text):
            return False  # punctuation ('.....', '/__/__') names no recipient or resource
        if text.replace(".", "").replace("-", "").isdigit():
            return sum(c.isdigit() for c in text) >= self.min_digits
        return bool(DISTINCTIVE.search(text)) or (" " in text and len(text) >= 10)

    def _argument_finding(self, segment: Segment, tool: str, path: ArgPath, needle: str, planted: Planted
                          ) -> Finding:
        argument = dotted(path)
        words = {w.lower() for t in path if isinstance(t, str) for w in CAMEL.split(t) if w}
        sink = bool(words & SINK_WORDS) or "@" in needle or "://" in needle
        severity = (Severity.HIGH if sink else Severity.MEDIUM) if planted.in_prose else Severity.LOW
        where = "free text" if planted.in_prose else "a data field"
        return finding_at(
            self, locate_argument(segment, path),
            f"{tool} {argument}: value {needle[:60]!r} comes from untrusted {where} "
            f"({planted.segment.kind.value}), not from the user", severity,
            {"tool": tool, "argument": argument, "value": needle[:200], "in_prose": planted.in_prose,
             "source": _source(planted)}, score=0.9 if planted.in_prose else 0.3)

    def _choice_finding(self, segment: Segment, tool: str, sources: _Sources, trusted: list[str]) -> Finding | None:
        """The tool itself is what untrusted text asks for: its name's words are there and not in user text."""
        # Names read <vendor><verb><object> (AugustSmartLockUnlockDoor): the last words say what the call does.
        words = [w for w in (p.lower() for p in CAMEL.split(tool)) if len(w) >= 3 and w not in GENERIC_NAME_WORDS]
        stems = frozenset(w[:5] for w in words[-3:])
        if len(stems) < 2:
            return None
        trusted_hits = {s for s in stems if any(s in word_stems(t) for t in trusted)}
        if len(trusted_hits) / len(stems) > 1 - self.choice_coverage:
            return None
        for i in reversed(range(len(sources.untrusted))):
            source = sources.untrusted[i]
            hits = sources.stems(i, stems)
            if len(hits) >= 2 and len(hits) / len(stems) >= self.choice_coverage:
                return finding_at(
                    self, locate_name(segment), f"call to {tool!r} follows instructions in untrusted "
                    f"{source.kind.value} rather than the user's request", Severity.MEDIUM,
                    {"tool": tool, "matched_words": sorted(hits), "rule": "tool_choice",
                     "source": _source(Planted(source, 0, len(source.text), True))},
                    score=round(len(hits) / len(stems), 2))
        return None


    def _request_finding(self, segment: Segment, call: ToolCall, untrusted: Sequence[Segment], trusted: list[str]
                         ) -> Finding | None:
        """The call carries out a request planted in untrusted text: two or more of its short values (an action
        word and an amount, a name) are spelled in one such request ("Please sell 50 units of my Bitcoin") and
        nowhere in the user's or system's text. Each value alone is too short to be a taint finding."""
        values = {text: path for path, text in _errand_values(call.arguments)
                  if not any(_has_token(t, text) for t in trusted)}
        if len(values) < 2 or not any(sum(c.isalpha() for c in v) >= 3 for v in values):
            return None
        for source in reversed(untrusted):
            for start, end, request in _cached_requests(source.text):
                matched = [v for v in values if _has_token(request, v)]
                if len(matched) >= 2 and any(sum(c.isalpha() for c in v) >= 3 for v in matched):
                    return finding_at(
                        self, locate_argument(segment, values[matched[0]]),
                        f"call to {call.name!r} carries out a request planted in untrusted {source.kind.value} "
                        f"({', '.join(repr(v) for v in matched[:4])}), not the user's request", Severity.MEDIUM,
                        {"tool": call.name, "matched_values": matched[:10], "rule": "planted_request",
                         "source": _source(Planted(source, start, end, True))}, score=0.8)
        return None


def _errand_values(arguments: Any) -> Iterator[tuple[ArgPath, str]]:
    """Short argument values, normalized: numbers as written in prose (50.0 -> "50"), words and short names."""
    for path, value in leaves(arguments):
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, (int, float)):
            yield path, str(int(value)) if float(value).is_integer() else str(value)
            continue
        text = normalize(str(value))
        if (len(text) <= ERRAND_VALUE_MAX and text.count(" ") < ERRAND_VALUE_WORDS and any(c.isalnum() for c in text)
                and text not in COMMON_VALUES and not DATE_OR_TIME.match(text)):
            yield path, text


def _find_requests(text: str) -> tuple[tuple[int, int, str], ...]:
    """Requests for an agent action in a text (prompt_injection's `agent_request` reading), each with its span
    and its normalized words."""
    return tuple((hit.start or 0, hit.end or 0, THOUSANDS.sub("", normalize(text[hit.start:hit.end])))
                 for hit in agent_request_hits(text))


def _has_token(text: str, value: str) -> bool:
    """`value` occurs in `text` as whole words (not inside a longer word or number)."""
    start = text.find(value)
    while start >= 0:
        end = start + len(value)
        if (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum()):
            return True
        start = text.find(value, start + 1)
    return False


def _is_builtin(call: ToolCall) -> bool:
    """A provider's built-in tool (web search, code execution...): hosted, and not a remote MCP server's."""
    return call.hosted and call.mcp_server is None


V = TypeVar("V")


class _TextMemo(Generic[V]):
    """`compute(text)` kept per text (a SizedMemo: MEMO_ENTRIES, MEMO_BYTES), each entry's size the text's and the
    result's (`size`); a text over CACHED_TEXT_BYTES is computed each time. A hit is one dict lookup."""

    def __init__(self, compute: Callable[[str], V], size: Callable[[V], int]) -> None:
        self.compute, self.size = compute, size
        self.memo: SizedMemo[str, V] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)

    def __call__(self, text: str) -> V:
        found = self.memo.entries.get(text)
        if found is None:
            found = self.compute(text)
            text_bytes = sys.getsizeof(text)
            if text_bytes <= CACHED_TEXT_BYTES:
                self.memo.put(text, found, text_bytes + self.size(found) + _ENTRY_BYTES)
        return found

    def cache_clear(self) -> None:
        self.memo = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)


def _squash(normalized: str) -> str:
    """Letters and digits only: where a trusted text's `DE89 3704 ...` matches a compacted `de893704...`."""
    return "".join(LETTERS_DIGITS.findall(normalized))  # (str.isalnum, in C)


def _stems(normalized: str) -> frozenset[str]:
    return frozenset(w[:5] for w in set(WORD.findall(normalized)))  # (each word once: a tenth of them)


def _stems_size(stems: frozenset[str]) -> int:
    return sys.getsizeof(stems) + sum(map(sys.getsizeof, stems))


def _requests_size(requests: tuple[tuple[int, int, str], ...]) -> int:
    return sys.getsizeof(requests) + sum(sys.getsizeof(r) + sys.getsizeof(r[2]) + 64 for r in requests)


def held_stems(normalized: str, stems: frozenset[str]) -> frozenset[str]:
    """`stems & word_stems(normalized)`: each stem looked for where it opens a word (a str.find scan or two), where
    word_stems reads every word (~150,000 a MB); kept per text and stems, as the history is resent each step."""
    found = word_stems.memo.entries.get(normalized)
    if found is not None:
        return stems & found
    key = (normalized, stems)
    found = _held.entries.get(key)
    if found is None:
        found = frozenset(s for s in stems if _opens_a_word(normalized, s))
        text_bytes = sys.getsizeof(normalized)
        if text_bytes <= CACHED_TEXT_BYTES:
            _held.put(key, found, text_bytes + _stems_size(stems) + _stems_size(found) + _ENTRY_BYTES)
    return found


def _opens_a_word(text: str, stem: str) -> bool:
    """Whether `stem` is the first five letters (or all) of a WORD match of `text`: a run of three or more a-z letters
    with no other word character (str.isalnum, `_`) on either side."""
    if not (3 <= len(stem) <= 5 and stem.isascii() and stem.isalpha() and stem.islower()):
        return False
    k = text.find(stem)
    while k >= 0:
        if not k or not (text[k - 1].isalnum() or text[k - 1] == "_"):
            end = k + len(stem)
            rest = text[end:WORD_CHARS.match(text, end).end()]  # type: ignore[union-attr]
            if not rest or (len(stem) == 5 and rest.isascii() and rest.isalpha() and rest.islower()):
                return True
        k = text.find(stem, k + 1)
    return False


# Case- and whitespace-insensitive form, Unicode folded as the index reads texts.
normalize: _TextMemo[str] = _TextMemo(_normalize, sys.getsizeof)
_squashed: _TextMemo[str] = _TextMemo(_squash, sys.getsizeof)
word_stems: _TextMemo[frozenset[str]] = _TextMemo(_stems, _stems_size)
_held: SizedMemo[tuple[str, frozenset[str]], frozenset[str]] = SizedMemo(MEMO_ENTRIES, MEMO_BYTES)
_cached_requests: _TextMemo[tuple[tuple[int, int, str], ...]] = _TextMemo(_find_requests, _requests_size)


def _url_variants(url: str) -> Iterator[str]:
    """A planted URL as a model passes it on: with a query or a trailing slash added (`.../collect?d=<data>`),
    percent-encoded, or as a parameter of another URL (`?u=https%3a%2f%2fevil.test%2fx`)."""
    decoded = unquote(url)
    if decoded != url:
        yield decoded
    if "://" not in decoded:
        return
    base = decoded.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    if base != decoded:
        yield base
    try:
        params = parse_qsl(urlsplit(url).query)
    except ValueError:
        return
    for _, value in params:
        yield value.strip()


class _Sources:
    """The untrusted texts of one check, indexed once, and where each value was planted in them, found once.

    Each text is indexed by its letter-digit runs (cached per text), and a value is compared only where its
    rarest run is: the cost follows the texts' and the values' size, not their product.
    """

    def __init__(self, untrusted: Sequence[Segment], trusted: list[str], values: Iterable[str],
                 min_digits: int) -> None:
        self.untrusted = untrusted
        self.trusted = trusted
        self.min_digits = min_digits
        self.runs = {value: value_runs(value) for value in values}
        wanted = {run for runs in self.runs.values() for run, _ in runs}
        self.indexes = [text_index(s.text) for s in untrusted] if wanted else []
        self.holders: dict[str, list[int]] = {}  # run -> the untrusted segments holding it, in order
        for i, index in enumerate(self.indexes):
            for run in index.runs.held(wanted):
                self.holders.setdefault(run, []).append(i)
        self.found: dict[str, Planted | None] = {}

    def stems(self, i: int, stems: frozenset[str]) -> frozenset[str]:
        """Those of `stems` that are word stems of the i-th untrusted text, read off its index's normalized form where
        that is normalize()'s too (folding and lower-casing a megabyte again cost ~45 ms)."""
        index = self.indexes[i] if self.indexes else None
        return held_stems(index.normalized if index is not None and index.as_normalize
                          else normalize(self.untrusted[i].text), stems)

    def planted(self, value: str) -> Planted | None:
        if value not in self.found:
            compact = self._compact(value)
            found = self._find(value, compact)
            trusted = any(value in t or (compact and compact in _squashed(t)) for t in self.trusted)
            self.found[value] = None if found is None or trusted else found
        return self.found[value]

    def _compact(self, value: str) -> str | None:
        """The letters and digits of an account- or phone-like value, which may be written with other separators."""
        if sum(c.isdigit() for c in value) < self.min_digits:
            return None
        return compact_form(value)

    def _find(self, value: str, compact: str | None) -> Planted | None:
        """Where `value` was planted: its latest occurrence in free text of an untrusted segment (the trusted
        ones are the caller's). Once any tool returned it as a data field, it is data (in_prose False) everywhere.
        An identifier found nowhere as written is looked for with other separators (`compact`)."""
        holders = [self.holders.get(run) for run, _ in self.runs[value]]
        if holders and all(h is not None for h in holders):
            found = self._first(min(holders, key=lambda h: len(h or ())) or [],
                                lambda index: index.spans(value, self.runs[value]))
            if found is not None:
                return found
        if compact is None or not self.indexes:
            return None
        return self._first(range(len(self.indexes)), lambda index: index.compact_spans(compact))

    def _first(self, segments: Sequence[int], spans: Callable[[TextIndex], Iterable[tuple[int, int]]]
               ) -> Planted | None:
        """The latest occurrence among `segments`: in a data field if there is one, else in free text."""
        found: Planted | None = None
        for i in reversed(segments):
            segment, index = self.untrusted[i], self.indexes[i]
            for start, end in spans(index):
                if _inside_token(segment.text, start, end):
                    continue  # "2026-03-14" inside "2026-03-14T06:10" is part of another value
                if not _in_prose(segment.text, start, end, index):
                    return Planted(segment, start, end, False)
                found = found or Planted(segment, start, end, True)
        return found


def _inside_token(text: str, start: int, end: int) -> bool:
    return (start > 0 and text[start - 1].isalnum() and text[start].isalnum()) or (
        end < len(text) and text[end].isalnum() and text[end - 1].isalnum())


def _in_prose(text: str, start: int, end: int, index: TextIndex) -> bool:
    """False when the value is a whole field value (`"id": "x"`, `id: x`, a list item) of structured data.

    A field's key follows a structural character or a line start; in prose ("the whitelist: 'a.com'") it
    follows a word, so a value quoted inside a sentence still counts as planted in free text.
    """
    if start <= index.content_start and end >= index.content_end:
        return False  # the whole text (known from the index: slicing it here made each call as long as the text)
    if LINE_START.search(text, max(0, start - 8), start) and LINE_END.match(text, end):
        return False  # a whole line: one item of a listing ("a.com\nb.com", escaped or not)
    before, after = text[max(0, start - 400): start], text[end: end + 1]
    quote = before[-1:] if before[-1:] in ("'", '"') else ""
    if quote and after != quote and not LINE_END.match(text, end):
        return True
    if not quote and after not in ("", ",", ";", "}", "]", "\n", "\r"):
        return True
    before = before[: len(before) - len(quote)]
    for _ in range(50):  # walk back over earlier list items: ['a', 'b', <value>
        item = LIST_ITEM_BEFORE.search(before)
        if item is None:
            break
        before = before[: item.start()]
    return not FIELD_PREFIX.search(before)


def _source(planted: Planted) -> dict[str, Any]:
    location = planted.segment.locate(planted.start, planted.end)
    return {"pointer": location.pointer, "start": location.start, "end": location.end,
            "kind": planted.segment.kind.value}
