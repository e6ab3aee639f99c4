"""Check a response's logprobs where the adapters pick them up: a source with a field of the wrong type is left
unread and recorded on the exchange (`Exchange.unread_logprobs`, with the JSON Pointer that names the field), and
`low_confidence` reports it as a `detector_error` finding there; the rest of the response is checked as usual (a
422 would have let a fail-open gateway forward the whole answer unchecked).

What is checked is what the readers (tokens.py) read, with the types the APIs fix; what vLLM really sends is
taken as the readers take it. Any number is a number: -9999.0, a positive value, and -inf or NaN from callers in
Python (JSON has neither).

* chat / responses entries: `token` a string; `logprob` a number or null, or absent (a vLLM stream leaves out a
  field left at its default, -9999.0); `top_logprobs` an array of objects whose `logprob` is a number or null, or
  null / absent (no alternatives); `bytes`, read only for a token showing U+FFFD, an array of byte values or null.
* completions: `tokens` strings; `token_logprobs` numbers or null, `top_logprobs` objects of numbers (or null),
  `text_offset` integers: each an array as long as `tokens`, or null / absent.
* gemini `logprobsResult`: `chosenCandidates` and `topCandidates[].candidates` arrays of candidate objects, whose
  `token` is a string, `logProbability` a number and `tokenId` an integer, each of them absent or null where
  Google leaves it out.

Fields no reader uses (an alternative's token and bytes, the bytes of a token that shows no U+FFFD, prompt
logprobs) are not checked. Chat-shaped lists are most of a response: a response's entries, every chunk of a stream
together, are checked in one pass, by the C reader where it reads them (the usual response), else by C-level passes
over each field; only a list these find wrong is walked entry by entry, to name the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain, repeat
from typing import Any

from guardrails.errors import BodyError
from guardrails.exchange import LogprobSource
from guardrails.logprobs.tokens import REPLACEMENT, _read_uniform
from guardrails.pointer import join

CHAT_SHAPES = ("chat", "responses")
_NUMBER_TYPES = frozenset({float, int, type(None)})  # not bool: True is no logprob
_LIST_TYPES = frozenset({list, type(None)})
_DICT_TYPES = frozenset({dict})
_ABSENT = object()


def check_chat_sources(sources: Sequence[LogprobSource]) -> None:
    """Raise BodyError at the first malformed field of the chat-shaped sources (a stream: one per chunk)."""
    parts = [s for s in sources if s.shape in CHAT_SHAPES]
    if not parts:
        return
    entries = parts[0].data if len(parts) == 1 else list(chain.from_iterable(p.data for p in parts))
    if _readable(entries):
        return
    for part in parts:
        _check_entries(part.data, part.pointer)


def _readable(entries: Sequence[Any]) -> bool:
    """True when every entry holds what the readers take; False means "walk it", not "malformed" (a float
    subclass from a caller in Python is a number the passes below do not take)."""
    if not entries:
        return True
    fields = _read_uniform(entries, entries[0])
    tokens = fields[0] if fields is not None else _plain_tokens(entries)
    if tokens is None:
        return False
    try:
        joined = "".join(tokens)  # in C: raises on a token that is not a string (or absent: None)
    except TypeError:
        return False
    if REPLACEMENT not in joined:
        return True
    # The reader takes these tokens' text from their bytes.
    return all(_is_bytes(e.get("bytes")) for e, t in zip(entries, tokens, strict=True) if REPLACEMENT in t)


def _plain_tokens(entries: Sequence[Any]) -> list[Any] | None:
    """The entries' tokens when C-level passes over each field find only types the general reader takes (nulls,
    fields vLLM leaves out, ragged alternatives); None otherwise."""
    if not set(map(type, entries)) <= _DICT_TYPES:
        return None
    logprobs = map(dict.get, entries, repeat("logprob"))
    tops = list(map(dict.get, entries, repeat("top_logprobs")))
    if not (set(map(type, logprobs)) <= _NUMBER_TYPES and set(map(type, tops)) <= _LIST_TYPES):
        return None
    alternatives = list(chain.from_iterable(filter(None, tops)))
    if not set(map(type, alternatives)) <= _DICT_TYPES:
        return None
    if not set(map(type, map(dict.get, alternatives, repeat("logprob"), repeat(_ABSENT)))) <= _NUMBER_TYPES:
        return None
    return list(map(dict.get, entries, repeat("token")))


def _check_entries(entries: Sequence[Any], pointer: str) -> None:
    for i, entry in enumerate(entries):
        ptr = f"{pointer}/{i}"
        entry = _object(entry, ptr, "a logprob entry")
        token = entry.get("token", _ABSENT)
        if not isinstance(token, str):
            raise _wrong(token, f"{ptr}/token", "token", "a string")
        _number(entry.get("logprob"), f"{ptr}/logprob", "logprob")
        top = entry.get("top_logprobs")
        if top is not None:
            tptr = f"{ptr}/top_logprobs"
            _array(top, tptr, "top_logprobs", "an array of alternatives or null")
            for j, alternative in enumerate(top):
                aptr = f"{tptr}/{j}"
                alternative = _object(alternative, aptr, "an alternative")
                _number(alternative.get("logprob", _ABSENT), f"{aptr}/logprob", "an alternative's logprob")
        if REPLACEMENT in token and not _is_bytes(entry.get("bytes")):
            raise _wrong(entry["bytes"], f"{ptr}/bytes", "bytes", "an array of byte values (0-255) or null")


# key, the item types, what the finding says they must be, the exact types one C-level pass takes
_COMPLETIONS_FIELDS = (
    ("token_logprobs", (int, float, type(None)), "a number or null", _NUMBER_TYPES),
    ("top_logprobs", (Mapping, type(None)), "an object of logprobs or null", frozenset({dict, type(None)})),
    ("text_offset", (int,), "an integer", frozenset({int})),
)


def check_completions(data: Mapping[str, Any], pointer: str) -> None:
    """A completions `logprobs` object: arrays of one item per token."""
    tokens = data.get("tokens")
    _array(tokens, join(pointer, "tokens"), "tokens", "an array")
    _items(tokens, join(pointer, "tokens"), "a token", (str,), "a string", frozenset({str}))
    for key, kinds, accepted, fast in _COMPLETIONS_FIELDS:
        values = data.get(key)
        if values is None:
            continue
        vptr = join(pointer, key)
        _array(values, vptr, key)
        if len(values) != len(tokens):
            raise BodyError(f"{key} must hold one item per token ({len(tokens)}), got {len(values)}", vptr)
        _items(values, vptr, f"a {key} item", kinds, accepted, fast)
    tops = data.get("top_logprobs") or ()
    if not set(map(type, chain.from_iterable(top.values() for top in tops if top))) <= _NUMBER_TYPES:
        for i, top in enumerate(tops):
            for token, value in (top or {}).items():
                _number(value, join(pointer, "top_logprobs", i, token), "an alternative's logprob")


def check_gemini(result: Mapping[str, Any], pointer: str) -> None:
    """A Gemini `logprobsResult` object, under Google's camelCase names or its SDKs' snake_case ones."""
    key, chosen = _either(result, "chosenCandidates", "chosen_candidates")
    if chosen is not None:
        _candidates(chosen, f"{pointer}/{key}", key)
    key, steps = _either(result, "topCandidates", "top_candidates")
    if steps is None:
        return
    sptr = f"{pointer}/{key}"
    _array(steps, sptr, key)
    for i, step in enumerate(steps):
        step = _object(step, f"{sptr}/{i}", "a topCandidates step")
        if step.get("candidates") is not None:
            _candidates(step["candidates"], f"{sptr}/{i}/candidates", "candidates")


def _candidates(candidates: Any, pointer: str, what: str) -> None:
    _array(candidates, pointer, what)
    for i, candidate in enumerate(candidates):
        cptr = f"{pointer}/{i}"
        candidate = _object(candidate, cptr, "a candidate")
        for camel, snake, kinds, accepted in (("token", "token", (str,), "a string"),
                                              ("logProbability", "log_probability", (int, float), "a number"),
                                              ("tokenId", "token_id", (int,), "an integer")):
            key, value = _either(candidate, camel, snake)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
                raise _wrong(value, f"{cptr}/{key}", key, f"{accepted} or null")


# --- one field ------------------------------------------------------------------------------------------------
def _either(container: Mapping[str, Any], camel: str, snake: str) -> tuple[str, Any]:
    """(the key present, its value): the camelCase one first, as the reader reads them."""
    return (camel, container[camel]) if camel in container else (snake, container.get(snake))


def _object(value: Any, pointer: str, what: str) -> Mapping[str, Any]:
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise _wrong(value, pointer, what, "an object")


def _array(value: Any, pointer: str, what: str, accepted: str = "an array or null") -> None:
    if not isinstance(value, list | tuple):
        raise _wrong(value, pointer, what, accepted)


def _items(values: Sequence[Any], pointer: str, what: str, kinds: tuple[type, ...], accepted: str,
           fast: frozenset[type]) -> None:
    """Every item one of `kinds` (a bool never a number): one C-level pass, a walk only to name the item."""
    if set(map(type, values)) <= fast:
        return
    for i, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise _wrong(value, f"{pointer}/{i}", what, accepted)


def _number(value: Any, pointer: str, what: str) -> None:
    if value is None or type(value) is float or type(value) is int:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong(value, pointer, what, "a number or null")


def _is_bytes(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(type(b) is int and 0 <= b <= 255 for b in value))


def _wrong(value: Any, pointer: str, what: str, accepted: str) -> BodyError:
    from guardrails.adapters.jsonread import json_type  # here, not above: the adapters import this module

    got = "nothing (it is required)" if value is _ABSENT else json_type(value)
    return BodyError(f"{what} must be {accepted}, got {got}", pointer)
