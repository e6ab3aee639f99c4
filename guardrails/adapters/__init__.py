"""Format adapters: detect the API a check body speaks and normalize it into an `Exchange`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from guardrails.adapters.anthropic_messages import AnthropicMessagesAdapter
from guardrails.adapters.base import Adapter, ExchangeBuilder, HistoryMemo
from guardrails.adapters.gemini_generate import GeminiGenerateContentAdapter
from guardrails.adapters.gemini_interactions import GeminiInteractionsAdapter
from guardrails.adapters.jsonread import describe_object, is_mapping
from guardrails.adapters.openai_chat import OpenAIChatAdapter
from guardrails.adapters.openai_responses import OpenAIResponsesAdapter
from guardrails.errors import AmbiguousFormat, BodyError, UnknownFormat
from guardrails.exchange import CallerContext, Exchange

ADAPTERS: dict[str, type[Adapter]] = {
    cls.format: cls
    for cls in (
        OpenAIChatAdapter,
        OpenAIResponsesAdapter,
        AnthropicMessagesAdapter,
        GeminiInteractionsAdapter,
        GeminiGenerateContentAdapter,
    )
}
FORMATS = tuple(ADAPTERS)
_INSTANCES: dict[str, Adapter] = {name: cls() for name, cls in ADAPTERS.items()}
_BY_TOP_SCORE = sorted(ADAPTERS.items(), key=lambda item: -item[1].top_score)
# Every request key that carries content in one of the APIs, with the formats whose adapters read it.
_CONTENT_KEYS: dict[str, tuple[str, ...]] = {
    key: tuple(name for name, cls in ADAPTERS.items() if key in cls.content_keys)
    for key in sorted(frozenset().union(*(cls.content_keys for cls in ADAPTERS.values())))
}
_CONTENT_KEY_SET = frozenset(_CONTENT_KEYS)
# Per format, the marker keys and the ("object"/"type" -> values) tags of the other APIs' whole responses.
_FOREIGN_KEYS: dict[str, frozenset[str]] = {
    name: frozenset(key for other, cls in ADAPTERS.items() if other != name for key in cls.response_markers)
    for name in ADAPTERS
}
_FOREIGN_TAGS: dict[str, dict[str, frozenset[str]]] = {
    name: {field: frozenset(value for other, cls in ADAPTERS.items() if other != name
                            for key, value in cls.response_tags if key == field)
           for field in {key for cls in ADAPTERS.values() for key, _ in cls.response_tags}}
    for name in ADAPTERS
}
# Keys one adapter reads in place of each other: with both present it reads the first only. Chat Completions'
# `messages` hides legacy Completions' `prompt` (which /v1/completions reads); Gemini's camelCase spelling wins.
_READ_INSTEAD: dict[str, tuple[str, str]] = {
    "openai.chat": ("messages", "prompt"),
    "gemini": ("systemInstruction", "system_instruction"),
}


def detect_format(request: Mapping[str, Any], response: Any) -> str:
    """Pick the adapter with the highest sniff score; refuse unknown or tied bodies with a reason."""
    if type(request) is dict:  # sniffs raise nothing on a dict of JSON values: the order they run in is free
        scores = _decisive_scores(request, response)
    else:  # every sniff, in ADAPTERS order: a request that is not an object fails as it always did
        scores = [(cls.sniff(request, response), name) for name, cls in ADAPTERS.items()]
    scores.sort(reverse=True)
    best_score, best = scores[0]
    if best_score <= 0:
        raise UnknownFormat(
            "could not tell the API format of this body: expected an OpenAI Chat Completions, OpenAI "
            "Responses, Anthropic Messages, Gemini Interactions or Gemini generateContent request; "
            f"set \"format\" to one of {list(FORMATS)}",
            "/request",
        )
    if len(scores) > 1 and scores[1][0] == best_score:
        raise AmbiguousFormat(
            f"the body reads equally well as {best} and {scores[1][1]}; set \"format\" to choose",
            "/request",
        )
    return best


def _decisive_scores(request: dict[str, Any], response: Any) -> list[tuple[int, str]]:
    """The (score, format) of the adapters that can still win or tie, run by falling top score: a body
    scored 95 (the top score of three adapters) never runs the two whose sniffs top out at 90."""
    scores: list[tuple[int, str]] = []
    best = -1
    for name, cls in _BY_TOP_SCORE:
        if cls.top_score < best:
            break  # this adapter and those after it can neither win nor tie
        score = cls.sniff(request, response)
        scores.append((score, name))
        best = max(best, score)
    return scores


def _refuse_unread_keys(request: Mapping[str, Any], format: str) -> None:
    """Refuse a body detected as `format` that holds content the `format` adapter would not read.

    A detected body may mix APIs: a Chat Completions request with an extra `generationConfig` sniffs as
    generateContent, whose adapter never reads `messages`, yet the server (vLLM ignores unknown fields) does.
    Whichever API the body is sent to, the text under another API's key the adapter skips would go unchecked.
    Runs on every detected check: set operations on the top-level keys, nothing more on the usual body.
    """
    present = request.keys() & _CONTENT_KEY_SET
    unread = present - ADAPTERS[format].content_keys
    pair = _READ_INSTEAD.get(format)
    if pair is not None and pair[0] in present and pair[1] in present:
        unread.add(pair[1])
    if "prompt" in unread and not isinstance(request["prompt"], (str, list)):
        unread.discard("prompt")  # Completions text is a string or a list; a Responses `prompt` names a template
    if unread:
        keys = sorted(unread)
        raise AmbiguousFormat(_unread_message(format, keys, sorted(present - unread)), f"/request/{keys[0]}")


def _unread_message(format: str, unread: list[str], read: list[str]) -> str:
    reads = f"reads {_quoted(read)} here but not" if read else "does not read"
    keys = ", ".join(f"\"{key}\" ({_readers(format, key)})" for key in unread)
    return (f"the body mixes APIs: it was detected as {format}, which {reads} {keys}: that text would go "
            "unchecked; set \"format\" to the API the body is sent to")


def _readers(format: str, key: str) -> str:
    """Which formats read `key`; `format` itself reads it only in place of another key (`_READ_INSTEAD`)."""
    others = " and ".join(name for name in _CONTENT_KEYS[key] if name != format)
    if format not in _CONTENT_KEYS[key]:
        return f"read by {others}"
    alone = f"by {format} only without \"{_READ_INSTEAD[format][0]}\""
    return f"read by {others}, and {alone}" if others else f"read {alone}"


def _quoted(keys: list[str]) -> str:
    return ", ".join(f"\"{key}\"" for key in keys)


def check_response(format: str, response: Mapping[str, Any], detected: bool) -> bool:
    """Refuse a whole response that is not recognisably one of `format`'s: True to read it, False for an API error
    body (nothing was generated: nothing to read).

    Each reader skips the fields it does not know, so a response of another API (a gateway translating between
    APIs, a request and a response paired by mistake) or none at all (`{}`) would be read as empty and allowed.
    A response carrying another API's marker fields is refused whether it has `format`'s own fields or not: the
    text under those fields would go unchecked. Detected, that is a body mixing APIs (`ambiguous_format`); with
    `format` given, a body that does not match its format (`invalid_body`). Pointer: /response.
    """
    adapter = ADAPTERS[format]
    foreign: list[str] = []
    if _may_be_foreign(format, response):
        foreign = [f"{', '.join(marks)} ({name})" for name, other in ADAPTERS.items()
                   if name != format and (marks := other.response_marks(response))]
    if foreign:
        found = "; ".join(foreign)
        if detected:
            raise AmbiguousFormat(
                f"the body mixes APIs: it was detected as {format}, but its response carries {found}, fields of "
                f"another API's response that {format} does not read: that text would go unchecked; check the "
                f"request and the response of one API (expected {adapter.response_kind})", "/response")
        raise BodyError(f"expected {adapter.response_kind}, got a response that carries {found}: a response must "
                        f"be of the API the body is read as, {format}", "/response")
    if adapter.carries_response_fields(response):
        return True
    if _is_error_body(response):
        return False
    fields = " or ".join(f"\"{key}\"" for key in adapter.response_fields)
    raise BodyError(f"expected {adapter.response_kind}, got {describe_object(response)}, with no {fields}: it "
                    f"would be read as empty; a response must be of the API the body is read as, {format}",
                    "/response")


def _may_be_foreign(format: str, response: Mapping[str, Any]) -> bool:
    """Whether `response` has a key or tag of another API's response (maybe null): set operations on its keys, so
    that the usual response, which has none, costs no message building."""
    keys = _FOREIGN_KEYS[format]
    if not (response.keys().isdisjoint(keys) if type(response) is dict else all(key not in response for key in keys)):
        return True
    for key, values in _FOREIGN_TAGS[format].items():
        value = response.get(key)
        if isinstance(value, str) and value in values:
            return True
    return False


def _is_error_body(response: Mapping[str, Any]) -> bool:
    """An API's error body, which is all a failed call returns: `{"error": {...}}` (OpenAI, vLLM, Google),
    `{"object": "error", ...}` (older vLLM), `{"type": "error", "error": {...}}` (Anthropic), `{"error": "..."}`
    (Hugging Face TGI, Ollama)."""
    error = response.get("error")
    return (response.get("type") == "error" or response.get("object") == "error" or is_mapping(error)
            or isinstance(error, str))


def read_exchange(
    request: Mapping[str, Any],
    response: Any,
    *,
    format: str | None = None,
    context: CallerContext | None = None,
    raw_output: str | None = None,
    memo: HistoryMemo | None = None,
    partial: bool = False,
) -> Exchange:
    """Normalize a check body. `response` is a dict, a list of stream chunks, or None; `partial` marks a mid-stream
    re-check (`Exchange.partial`)."""
    detected = format is None
    if format is None:
        format = detect_format(request, response)
    elif format not in ADAPTERS:
        raise BodyError(f"unknown format {format!r}; expected one of {list(FORMATS)}", "/format")
    adapter = _INSTANCES[format]
    if isinstance(response, list):
        # A chunk of another API would be skipped unread (a guardrail failing open): refused before anything
        # is read, so a list that mixes APIs is a 422 about its chunks whichever format was detected or given.
        adapter.check_stream(response)
    if detected:  # a given format is the API the gateway speaks: its server reads that API's keys only
        _refuse_unread_keys(request, format)
    builder = ExchangeBuilder(format, context or CallerContext(), raw_output, memo)
    adapter.read_request(request, builder)
    builder.response_from = len(builder.segments)
    if isinstance(response, list):
        builder.has_response = True
        adapter.read_stream(response, builder)
    elif is_mapping(response):
        builder.has_response = True
        if check_response(format, response, detected):
            adapter.read_response(response, builder)
    elif response is not None:
        raise BodyError("response must be an object, a list of stream chunks, or null", "/response")
    exchange = builder.build()
    return replace(exchange, partial=True) if partial else exchange


__all__ = ["ADAPTERS", "FORMATS", "Adapter", "ExchangeBuilder", "HistoryMemo", "check_response", "detect_format",
           "read_exchange"]
