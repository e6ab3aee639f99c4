"""Tool names compared as a reader sees them: a call to `get_weаther` (Cyrillic `а`), `Get_Weather`,
`get_wea\\u200bther`, `get_weather ` or `functions.get_weather` is not a call to `get_weather`, but it passes
itself off as one. vLLM hands such a name to the client unchanged; a client that looks names up loosely (case,
Unicode normalization, a stripped prefix) runs the declared tool with arguments no check read as its own.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from detectors._fold import fold, fold_with_offsets
from guardrails.argspans import SizedMemo

# `functions.`, `default_api.`, `tools.`, `mcp__server__`: the namespaces some chat templates and SDKs put
# before a function's name.
NAMESPACE = re.compile(r"^(?:[A-Za-z_][\w-]*(?:\.|::|:|/|__))+")
NAME_KEYS_BYTES = 16 * 2**20
# Every call's name is compared, and the history is resent each step: the keys are kept, bounded by bytes too (a
# name is the client's: a megabyte). The latest name too big to keep with the others is kept alone: a check asks
# for it once per call and per list.
_name_keys: SizedMemo[str, str] = SizedMemo(4096, NAME_KEYS_BYTES, latest=True)
_KEY_BYTES = 100  # an entry's slots in the memo's tables


@dataclass(frozen=True, slots=True)
class Imitation:
    declared: str  # the declared name the call imitates
    disguise: tuple[str, ...]  # how it differs: namespace prefix, whitespace, invisible characters, ...
    characters: tuple[str, ...]  # the characters that are not plain ASCII, named ("U+0430 CYRILLIC SMALL LETTER A")

    @property
    def deceptive(self) -> bool:
        """Characters a reader cannot see or tell apart: no model writes those by a slip of case or spacing."""
        return "invisible characters" in self.disguise or "look-alike characters" in self.disguise


def name_key(name: str) -> str:
    """The name as a reader compares it: NFKC, look-alike letters as Latin, case folded, invisible characters
    and whitespace dropped."""
    key = _name_keys.entries.get(name)  # the hot path: a plain dict lookup
    if key is None:
        key = _name_keys.get(name)
        if key is None:
            key = "".join(fold(name).split())
            _name_keys.put(name, key, sys.getsizeof(name) + sys.getsizeof(key) + _KEY_BYTES)
    return key


def without_namespace(name: str) -> str:
    return NAMESPACE.sub("", name)


def imitation(name: str, declared: Iterable[str]) -> Imitation | None:
    """The declared name `name` reads as (itself, or without a namespace prefix), when `name` is not that name."""
    keys = {name_key(d): d for d in declared}
    bare = without_namespace(name)
    for candidate in dict.fromkeys((name, bare)):
        target = keys.get(name_key(candidate))
        if target is not None and target != name:
            return Imitation(target, _disguise(candidate, target, prefixed=candidate != name),
                             tuple(_describe(c) for c in dict.fromkeys(name) if not c.isascii()))
    return None


def _disguise(candidate: str, target: str, *, prefixed: bool) -> tuple[str, ...]:
    how = ["namespace prefix"] if prefixed else []
    if any(c.isspace() for c in candidate):
        how.append("whitespace")
    if any(_invisible(c) for c in candidate):
        how.append("invisible characters")
    if any(not c.isascii() and not c.isspace() and not _invisible(c) for c in candidate):
        how.append("look-alike characters")
    plain = "".join(fold_with_offsets(candidate, casefold=False).text.split())
    if plain != target and plain.casefold() == target.casefold():
        how.append("case")
    return tuple(how)


def _invisible(char: str) -> bool:
    return unicodedata.category(char) == "Cf"


def _describe(char: str) -> str:
    return f"U+{ord(char):04X} {unicodedata.name(char, 'UNNAMED')}"
