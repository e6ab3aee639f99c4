"""Read every logprob container vLLM returns into one flat, numpy-backed token stream.

A `TokenStream` is the generated (or scored) text rebuilt from the tokens, each token's character span in
that text, its logprob and its alternatives. Shapes (see shared/reference/vllm.md §1):

* "chat" / "responses": list of {token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}
* "completions": {tokens, token_logprobs, top_logprobs: [{token: logprob} | null], text_offset}
* "prompt": vLLM prompt_logprobs, [null, {"<id>": {logprob, rank, decoded_token}}, ...]
* "gemini": generateContent `logprobsResult`, {chosenCandidates: [{token, logProbability, tokenId?}],
  topCandidates: [{candidates: [...]}]}: one chosen candidate and one top list per decoding step

Text is rebuilt from UTF-8 bytes where a token's string cannot be trusted (a multi-byte character split
across tokens decodes to U+FFFD), so character offsets stay exact. Tokens returned as "token_id:N"
(`return_tokens_as_token_ids`) carry no text; an optional id -> text map fills them in.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

from guardrails.logprobs.weights import lengths_of, token_codes, weights_of

try:
    from guardrails.logprobs._accel import read_uniform
except ImportError:  # built without a C compiler: the general path reads every response
    read_uniform = None

MASKED = -9999.0  # vLLM clamps -inf (masked or impossible) to this value
TOKEN_ID = re.compile(r"token_id:(\d+)\Z")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True, slots=True)
class TokenStream:
    """Tokens of one generation (or one scored prompt) in order."""

    text: str  # the rebuilt text
    starts: np.ndarray  # int64 (n,): character span of each token in `text`
    ends: np.ndarray
    logprobs: np.ndarray  # float64 (n,); NaN where the API gave none (first prompt token)
    alternatives: np.ndarray  # float64 (n, k), NaN-padded, in the API's (unsorted) order
    tokens: tuple[str, ...]  # token strings as returned
    unresolved_ids: int = 0  # "token_id:N" tokens we had no text for
    weights: np.ndarray | None = None  # float64 (n,) token weights when reading had them at hand (weights.py)

    def __len__(self) -> int:
        return len(self.tokens)


def read_source(shape: str, data: Any, id_text: Mapping[int, str] | None = None) -> TokenStream:
    """One source container -> a token stream."""
    if shape in ("chat", "responses"):
        return read_chat([data], id_text)
    if shape == "completions":
        return read_completions(data)
    if shape == "prompt":
        return read_prompt(data)
    if shape == "gemini":
        return read_gemini([data])
    raise ValueError(f"unknown logprob source shape {shape!r}")


def read_chat(parts: Sequence[Sequence[Mapping[str, Any]]], id_text: Mapping[int, str] | None = None) -> TokenStream:
    """Chat-shaped logprob lists, concatenated in order (a stream gives one list per chunk)."""
    entries = parts[0] if len(parts) == 1 else list(chain.from_iterable(parts))
    first = entries[0] if entries else {}
    tokens, logprobs, alternatives = _read_uniform(entries, first) or _read_by_field(entries, first)
    text, starts, ends, unresolved, codes = _rebuild(tokens, entries, id_text)
    return TokenStream(text, starts, ends, logprobs, alternatives, tokens, unresolved, weights_of(codes))


_Fields = tuple[tuple[str, ...], np.ndarray, np.ndarray]  # tokens, logprobs, alternatives


def _read_uniform(entries: Sequence[Mapping[str, Any]], first: object) -> _Fields | None:
    """The usual response read in C: every entry a dict with as many alternatives as the first, every logprob
    a number. None otherwise, or where the extension is not built: the general path then reads it (raising what
    it raises).

    An entry, its alternatives list and their dicts are read in one pass, each touched once: in Python the
    bytecode around the 9 lookups per entry cost more than the lookups, and reading is most of the analysis."""
    if read_uniform is None or not isinstance(first, dict):
        return None
    top_key = _own_key(first, "top_logprobs")
    top = first.get(top_key)
    if not isinstance(top, list | tuple):
        return None
    k = len(top)
    alt_key = _own_key(top[0], "logprob") if k else "logprob"
    read = read_uniform(entries, _own_key(first, "token"), _own_key(first, "logprob"), top_key, alt_key, k)
    if read is None:
        return None
    tokens, packed = read
    table = np.frombuffer(packed, dtype=np.float64).reshape(len(tokens), k + 1)  # logprob, then alternatives
    return tokens, table[:, 0], table[:, 1:]  # type: ignore[return-value]  # strings: _rebuild checks


def _read_by_field(entries: Sequence[Mapping[str, Any]], first: object) -> _Fields:
    """The general path: one C-level pass per field, then every alternative (ragged ones NaN-padded)."""
    tokens = tuple(map(_getter(first, "token"), entries))
    logprobs = floats(_column(entries, _own_key(first, "logprob"), MASKED))
    alternatives = read_alternatives(_column(entries, _own_key(first, "top_logprobs"), None))
    return tokens, logprobs, alternatives


def _column(entries: Sequence[Mapping[str, Any]], key: str, default: Any) -> list[Any]:
    """Every entry's `key`, `default` where it is absent: a vLLM stream leaves out a field left at its default
    (an entry with no logprob at hand: logprob -9999.0, top_logprobs [])."""
    try:
        return list(map(itemgetter(key), entries))
    except KeyError:
        return [entry.get(key, default) for entry in entries]


def read_alternatives(tops: list[Sequence[Mapping[str, Any]] | None]) -> np.ndarray:
    """(n, k) alternative logprobs: one flat pass over every alternative (the bulk of reading a response). A null
    list is no alternatives."""
    if None in tops:
        tops = [top or () for top in tops]
    widths = list(map(len, tops))
    sample = next((alt for top in tops for alt in top), {})
    flat = floats(list(map(_getter(sample, "logprob"), chain.from_iterable(tops))))
    k = widths[0] if widths else 0
    if widths.count(k) == len(widths):  # the usual case: every token has k alternatives
        return flat.reshape(len(widths), k)
    return _shape(flat, ints(widths, len(widths)))


def _getter(sample: object, key: str) -> itemgetter[Any]:
    return itemgetter(_own_key(sample, key))


def _own_key(sample: object, key: str) -> str:
    """The parsed body's own key string when `sample` has it: JSON parsers share one string per key across a
    document, so every lookup then matches by identity instead of comparing characters (a tenth of reading
    20k alternatives)."""
    return next((k for k in sample if k == key), key) if isinstance(sample, dict) else key


def floats(values: Sequence[Any]) -> np.ndarray:
    """Python floats -> float64 array; packing them as C doubles in one call costs half of np.array's
    per-item type discovery. Read-only, like the rest of a stream."""
    try:
        return np.frombuffer(struct.pack(f"{len(values)}d", *values), dtype=np.float64)
    except struct.error:  # a null where a number belongs: NaN, as numpy reads it
        return np.array(values, dtype=np.float64)


def ints(values: Iterable[int], count: int) -> np.ndarray:
    """`count` Python ints -> int64 array, packed in one call (cheaper than np.fromiter's per-item conversion)."""
    return np.frombuffer(struct.pack(f"{count}q", *values), dtype=np.int64)


def sizes(items: Sequence[Sized]) -> np.ndarray:
    return ints(map(len, items), len(items))


def join_completions(parts: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The completions logprobs of a stream's chunks (one choice) as one. Each chunk's `text_offset` counts in
    the whole text; they are kept, rebased to the first, only when they still rise from chunk to chunk (an
    echoed prompt cut from the first chunk rebases only that one): else the tokens' own lengths place them."""
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offsets_ok = True
    for part in parts:
        tokens = list(part.get("tokens") or ())
        joined["tokens"] += tokens
        for key in ("token_logprobs", "top_logprobs"):
            values = part.get(key)
            joined[key] += values if isinstance(values, list) and len(values) == len(tokens) else [None] * len(tokens)
        offsets = part.get("text_offset")
        if isinstance(offsets, list) and len(offsets) == len(tokens):
            joined["text_offset"] += offsets
        else:
            offsets_ok = False
    rising = joined["text_offset"]
    if offsets_ok and rising and all(type(o) is int for o in rising) and rising == sorted(rising):
        joined["text_offset"] = [o - rising[0] for o in rising]
    else:
        del joined["text_offset"]
    return joined


def read_completions(data: Mapping[str, Any]) -> TokenStream:
    tokens = list(data.get("tokens") or ())
    n = len(tokens)
    raw = data.get("token_logprobs") or [None] * n
    logprobs = np.array([np.nan if v is None else v for v in raw], dtype=np.float64)
    tops = data.get("top_logprobs") or [None] * n
    alternatives = _pad([list(top.values()) if top else [] for top in tops])
    lengths = sizes(tokens)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    text = "".join(tokens)
    offsets = data.get("text_offset")
    if offsets and len(offsets) == n and REPLACEMENT in text:
        # vLLM's offsets index the real text; a split character shows as U+FFFD in each token's string.
        starts = np.array(offsets, dtype=np.int64)
        ends = np.append(starts[1:], starts[-1] + lengths[-1]) if n else starts
        chars = [""] * int(ends[-1] if n else 0)
        for token, s in zip(tokens, starts.tolist(), strict=True):
            for j, ch in enumerate(token):
                if s + j < len(chars) and (not chars[s + j] or chars[s + j] == REPLACEMENT):
                    chars[s + j] = ch
        text = "".join(chars)
    return TokenStream(text, starts, ends, logprobs, alternatives, tuple(tokens))


def read_prompt(data: Sequence[Any]) -> TokenStream:
    """vLLM prompt_logprobs: the actual token is the entry's first item; the first entry is null."""
    tokens: list[str] = []
    logprobs: list[float] = []
    alts: list[list[float]] = []
    for entry in data:
        if not entry:
            tokens.append("")
            logprobs.append(np.nan)
            alts.append([])
            continue
        items = list(entry.values())
        first = items[0]
        tokens.append(first.get("decoded_token") or "")
        logprobs.append(first.get("logprob", np.nan))
        alts.append([item.get("logprob", np.nan) for item in items])
    lengths = sizes(tokens)
    ends = np.cumsum(lengths)
    return TokenStream("".join(tokens), ends - lengths, ends, np.array(logprobs, dtype=np.float64),
                       _pad(alts), tuple(tokens))


def read_gemini(parts: Sequence[Mapping[str, Any]]) -> TokenStream:
    """Gemini `logprobsResult` objects (a stream gives one per chunk), concatenated in order. Step i's token is
    `chosenCandidates[i]`, its alternatives `topCandidates[i].candidates` (sorted, best first). The chosen token
    "may or may not be" among them (Google's docs): it is added when missing, so the alternatives hold the
    sampled token as vLLM's do. Google sends no bytes: the token strings are the text."""
    chosen: list[Any] = []
    alternatives: list[list[float]] = []
    for part in parts:
        steps = _listed(part, "chosenCandidates", "chosen_candidates")
        tops = _listed(part, "topCandidates", "top_candidates")
        for i, step in enumerate(steps):
            top = tops[i] if i < len(tops) else None
            chosen.append(step)
            alternatives.append(_gemini_alternatives(step, top))
    tokens = tuple(_gemini_field(c, "token", "token", str, "") for c in chosen)
    codes = token_codes(tokens)
    lengths = lengths_of(codes)
    ends = lengths.cumsum()
    logprobs = floats([_gemini_logprob(c) for c in chosen])
    return TokenStream("".join(tokens), ends - lengths, ends, logprobs, _pad(alternatives), tokens,
                       weights=weights_of(codes))


def _listed(container: object, camel: str, snake: str) -> list[Any]:
    """A list field under either spelling (Google's JSON is camelCase, its SDKs' dicts snake_case); [] if absent."""
    return _gemini_field(container, camel, snake, list, [])


def _gemini_field(container: object, camel: str, snake: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """`container[camel]` (or `[snake]`) when it is a `kind`, else `default`: an absent field reads as no value
    (the adapters leave a source with one of another type unread and report it, check.py)."""
    if not isinstance(container, Mapping):
        return default
    value = container.get(camel, container.get(snake))
    return value if isinstance(value, kind) else default


def _gemini_logprob(candidate: object) -> float:
    value = _gemini_field(candidate, "logProbability", "log_probability", (int, float), None)
    return float(value) if value is not None and not isinstance(value, bool) else np.nan


def _gemini_alternatives(step: object, top: object) -> list[float]:
    """The step's top candidates' logprobs, with the chosen token's first when the list lacks it."""
    candidates = [c for c in _listed(top, "candidates", "candidates") if isinstance(c, Mapping)]
    values = [_gemini_logprob(c) for c in candidates]
    if not isinstance(step, Mapping) or not any(_same_candidate(step, c) for c in candidates):
        values.insert(0, _gemini_logprob(step))
    return values


def _same_candidate(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """The same vocabulary entry: by token id when both carry one, else by token string."""
    ids = (a.get("tokenId", a.get("token_id")), b.get("tokenId", b.get("token_id")))
    if ids[0] is not None and ids[1] is not None:
        return ids[0] == ids[1]
    return a.get("token") == b.get("token")


def _pad(rows: list[list[float]]) -> np.ndarray:
    """Ragged alternatives -> (n, k) float array padded with NaN (k or k+1 entries per row is normal)."""
    return _shape(np.array(list(chain.from_iterable(rows)), dtype=np.float64), sizes(rows))


def _shape(flat: np.ndarray, widths: np.ndarray) -> np.ndarray:
    n = len(widths)
    k = int(widths.max()) if n else 0
    if k == 0:
        return np.full((n, 0), np.nan)
    if int(widths.min()) == k:
        return flat.reshape(n, k)
    out = np.full((n, k), np.nan)
    row = np.repeat(np.arange(n), widths)
    col = np.arange(flat.size) - np.repeat(np.cumsum(widths) - widths, widths)
    out[row, col] = flat
    return out


def _rebuild(
    tokens: Sequence[str], entries: Sequence[Mapping[str, Any]], id_text: Mapping[int, str] | None
) -> tuple[str, np.ndarray, np.ndarray, int, np.ndarray]:
    """The text of chat-shaped tokens, each token's character span in it, and the tokens' codes (length and
    weight class: one lookup per token gives both)."""
    joined = "".join(tokens)  # first: it raises TypeError on a token that is not a string
    codes = token_codes(tokens)
    if REPLACEMENT not in joined and "token_id:" not in joined:
        lengths = lengths_of(codes)
        ends = lengths.cumsum()
        return joined, ends - lengths, ends, 0, codes
    # Slow path: rebuild from bytes so characters split across tokens come out whole. A token's string is
    # exact unless it shows U+FFFD, so only those tokens' byte lists are read.
    chunks: list[bytes] = []
    unresolved = 0
    for token, entry in zip(tokens, entries, strict=True):
        match = TOKEN_ID.match(token) if token.startswith("token_id:") else None
        if match:
            text = (id_text or {}).get(int(match.group(1)))
            unresolved += text is None
            chunks.append((text or "").encode())
        elif REPLACEMENT in token and entry.get("bytes") is not None:
            chunks.append(bytes(entry["bytes"]))
        else:
            chunks.append(token.encode("utf-8", "replace"))
    return (*_byte_spans(chunks), unresolved, codes)


def _byte_spans(chunks: list[bytes]) -> tuple[str, np.ndarray, np.ndarray]:
    buffer = b"".join(chunks)
    text = buffer.decode("utf-8", "replace")
    raw = np.frombuffer(buffer, dtype=np.uint8)
    lead = (raw & 0xC0) != 0x80  # bytes that start a character
    char_before = np.concatenate(([0], np.cumsum(lead)))  # characters that start before each byte offset
    lengths = sizes(chunks)
    byte_ends = np.cumsum(lengths)
    byte_starts = byte_ends - lengths
    if int(char_before[-1]) != len(text):  # invalid UTF-8: offsets would drift, fall back to per-token
        pieces = [c.decode("utf-8", "replace") for c in chunks]
        lengths = sizes(pieces)
        ends = np.cumsum(lengths)
        return "".join(pieces), ends - lengths, ends
    starts = char_before[byte_starts]
    # A token that begins inside a character shares that character with the token before it.
    inside = np.zeros(len(chunks), dtype=bool)
    nonempty = lengths > 0
    inside[nonempty] = ~lead[byte_starts[nonempty]]
    starts = starts - inside
    return text, starts.astype(np.int64), char_before[byte_ends].astype(np.int64)
