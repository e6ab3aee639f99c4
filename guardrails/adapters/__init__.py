"""Format adapters: detect the API a check body speaks and normalize it into an `Exchange`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.adapters.anthropic_messages import AnthropicMessagesAdapter
from guardrails.adapters.base import Adapter, ExchangeBuilder, HistoryMemo, is_mapping
from guardrails.adapters.gemini_generate import GeminiGenerateContentAdapter
from guardrails.adapters.gemini_interactions import GeminiInteractionsAdapter
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


def read_exchange(
    request: Mapping[str, Any],
    response: Any,
    *,
    format: str | None = None,
    context: CallerContext | None = None,
    raw_output: str | None = None,
    memo: HistoryMemo | None = None,
) -> Exchange:
    """Normalize a check body. `response` is a dict, a list of stream chunks, or None."""
    if format is None:
        format = detect_format(request, response)
    elif format not in ADAPTERS:
        raise BodyError(f"unknown format {format!r}; expected one of {list(FORMATS)}", "/format")
    adapter = _INSTANCES[format]
    if isinstance(response, list):
        # A chunk of another API would be skipped unread (a guardrail failing open): refused before anything
        # is read, so a list that mixes APIs is a 422 about its chunks whichever format was detected or given.
        adapter.check_stream(response)
    builder = ExchangeBuilder(format, context or CallerContext(), raw_output, memo)
    adapter.read_request(request, builder)
    builder.response_from = len(builder.segments)
    if isinstance(response, list):
        builder.has_response = True
        adapter.read_stream(response, builder)
    elif is_mapping(response):
        builder.has_response = True
        adapter.read_response(response, builder)
    elif response is not None:
        raise BodyError("response must be an object, a list of stream chunks, or null", "/response")
    return builder.build()


__all__ = ["ADAPTERS", "FORMATS", "Adapter", "ExchangeBuilder", "HistoryMemo", "detect_format", "read_exchange"]
