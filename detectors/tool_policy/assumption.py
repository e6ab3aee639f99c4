"""`context.unconfirmed_assumption`: a call that acts on the world (pays, sends, deletes, grants, changes a record)
after the agent's own text, since the user last spoke, says it settled by guessing what the user left open: "I'll
assume they meant the neurologist", "I will assume that the first location is the correct one", "I'll just pick the
first one". An agent should ask instead; a read or a search on a guess does no harm and passes.

The user's (or operator's) words can allow the guess ("pick whichever", "use your judgment", "don't ask me").
"""

from __future__ import annotations

import re
import sys

from detectors.tool_policy.classify import name_tokens
from detectors.tool_policy.context import per_exchange
from guardrails.argspans import SizedMemo
from guardrails.exchange import Exchange, Segment, SegmentKind, Trust

# Tool-name words of calls that change something outside the agent (`BankManagerPayBill`, `GmailSendEmail`,
# `EthereumManagerCallSmartContractFunction`, `TrafficControlGivePriorityToEmergencyVehicle`). A terminal or code
# tool (`TerminalExecute`, `run_python`) is not one by its name: `uname -s` on a guess harms nothing, and the shell
# and code rules judge what its command does.
ACTING_WORDS = frozenset({
    "send", "pay", "payment", "transfer", "withdraw", "deposit", "trade", "buy", "sell", "purchase", "order", "book",
    "reserve", "refund", "charge", "mint", "delete", "remove", "erase", "cancel", "grant", "revoke", "share", "post",
    "publish", "tweet", "reply", "forward", "upload", "update", "modify", "edit", "set", "change", "give", "unlock",
    "lock", "ship", "call", "deploy", "create", "add", "manage", "control", "adjust",
    "schedule", "move", "write", "approve", "assign", "invite", "submit", "install", "uninstall", "prescribe",
    "dispense", "block", "disable", "enable", "turn", "kill", "stop", "close"})
# The agent's own statement that it guessed (a plan, not a negation: "I will not assume" does not match).
ASSUMED = re.compile(
    r"\b(?:i(?:'ll|\s+will|\s+am\s+going\s+to|'m\s+going\s+to)|let\s+me|let's|we(?:'ll|\s+will))\s+"
    r"(?:just\s+|simply\s+)?(?:assume|guess|presume)\b"
    r"|\bassuming\s+(?:that\s+)?(?:the\s+user|they|he|she)\s+(?:meant|means|mean|wants?|intended|is\s+referring|refers)\b"
    r"|\bi(?:'ll|\s+will)\s+(?:just\s+|simply\s+)?(?:pick|choose|select|go\s+with)\s+the\s+first\b",
    re.IGNORECASE)
ASSUMED_KEYWORDS = ("assum", "guess", "presum", "first")  # ASSUMED runs only on text holding one
# Words by which the user leaves the choice to the agent.
GUESS_ALLOWED = re.compile(
    r"\b(?:assume|guess|whichever|any\s+(?:of\s+them|one\s+(?:is|will)|will\s+do)|either\s+(?:one|is\s+fine)"
    r"|your\s+(?:best\s+)?(?:judge?ment|choice|discretion|call)|up\s+to\s+you"
    r"|(?:don't|do\s+not|no\s+need\s+to)\s+(?:ask|confirm|check\s+with)|without\s+(?:asking|confirm))",
    re.IGNORECASE)
# Searches kept: agents resend their history every step. Longer texts are searched uncached; the kept ones are
# bounded by bytes too (4,096 characters of emoji are 16 KB).
CACHED_CHARS = 4_096
CACHED_SEARCHES = 1024
CACHED_BYTES = 16 * 2**20
_SEARCH_BYTES = 300  # the key's tuple, the span and the entry's slots in the memo's tables
_NO_MATCH = (-1, -1)  # kept for a text without a match (None is the memo's "not kept")
_searched: SizedMemo[tuple[re.Pattern[str], str, tuple[str, ...]], tuple[int, int]] = SizedMemo(
    CACHED_SEARCHES, CACHED_BYTES)
QUOTE_CHARS = 160


def unconfirmed_assumption(tool: str, exchange: Exchange) -> tuple[Segment, int, int] | None:
    """Where the agent said it guessed (segment, start, end of the sentence), when `tool` acts and the trusted text
    leaves no choice to the agent; None otherwise."""
    return _unasked_guess(exchange) if name_tokens(tool) & ACTING_WORDS else None


@per_exchange
def _unasked_guess(exchange: Exchange) -> tuple[Segment, int, int] | None:
    """The same for every call of the exchange: read once, not once per call (each would read the history)."""
    found = _latest_assumption(exchange)
    if found is None or any(_search(GUESS_ALLOWED, s.text) for s in exchange.trusted):
        return None
    return found


def _latest_assumption(exchange: Exchange) -> tuple[Segment, int, int] | None:
    """The latest assumption in the model's text (answer or reasoning) since the user's last message."""
    for segment in reversed(exchange.segments):
        if segment.kind is SegmentKind.USER and segment.trust is Trust.TRUSTED:
            return None
        if segment.trust is Trust.MODEL and segment.kind in (SegmentKind.ASSISTANT, SegmentKind.REASONING):
            span = _search(ASSUMED, segment.text, ASSUMED_KEYWORDS)
            if span is not None:
                return (segment, *_sentence(segment.text, *span))
    return None


def _search(pattern: re.Pattern[str], text: str, keywords: tuple[str, ...] = ()) -> tuple[int, int] | None:
    """The first match's span; the pattern runs only on text holding one of `keywords` (if any are given)."""
    if len(text) > CACHED_CHARS:
        return _first(pattern, text, keywords)
    key = (pattern, text, keywords)
    found = _searched.entries.get(key)  # the hot path: a plain dict lookup
    if found is None:
        found = _searched.put(key, _first(pattern, text, keywords) or _NO_MATCH, sys.getsizeof(text) + _SEARCH_BYTES)
    return None if found is _NO_MATCH else found


def _first(pattern: re.Pattern[str], text: str, keywords: tuple[str, ...]) -> tuple[int, int] | None:
    lowered = text.lower() if keywords else ""  # once, not once per keyword
    if keywords and not any(k in lowered for k in keywords):
        return None  # most agent text: a few passes of `in` instead of the pattern's
    match = pattern.search(text)
    return match.span() if match else None


def _sentence(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence around a match, at most QUOTE_CHARS either side (the evidence quotes it)."""
    lo = max(text.rfind(stop, max(0, start - QUOTE_CHARS), start) for stop in (". ", "\n", "! ", "? "))
    hi = min((at for stop in (".", "\n", "!", "?") if (at := text.find(stop, end, end + QUOTE_CHARS)) >= 0),
             default=min(len(text), end + QUOTE_CHARS))
    lo = lo + 1 if lo >= 0 else max(0, start - QUOTE_CHARS)
    while lo < start and text[lo].isspace():
        lo += 1
    return lo, hi
