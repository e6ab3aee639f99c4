"""gemini adapter (placeholder until implemented)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from guardrails.adapters.base import Adapter, ExchangeBuilder
from guardrails.errors import BodyError


class GeminiGenerateContentAdapter(Adapter):
    format = "gemini"

    @classmethod
    def sniff(cls, request: Mapping[str, Any], response: Any) -> int:
        return 0

    def read_request(self, request: Mapping[str, Any], b: ExchangeBuilder) -> None:
        raise BodyError("format gemini is not implemented yet", "/format")

    def read_response(self, response: Mapping[str, Any], b: ExchangeBuilder) -> None:
        raise BodyError("format gemini is not implemented yet", "/format")

    def read_stream(self, chunks: list[Any], b: ExchangeBuilder) -> None:
        raise BodyError("format gemini is not implemented yet", "/format")
