"""OpenAI chat payloads the tests build again and again (vLLM 0.33.0 shapes)."""

from __future__ import annotations

import json
from typing import Any


def tool_call_response(name: str, arguments: Any, **fields: Any) -> dict[str, Any]:
    """A chat completion whose one choice is a single call to `name`; `fields` (id, model, usage...) go
    beside `choices`. `arguments` is JSON-encoded as vLLM sends it."""
    call = {"id": "c1", "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {**fields, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": message}]}
