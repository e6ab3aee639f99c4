"""Generated agent sessions for benchmarks: an OpenAI-chat agent loop with reasoning and tool calls."""

from __future__ import annotations

import json
from typing import Any

TOOLS = [
    {"type": "function", "function": {"name": "search_flights", "description": "Search flights", "parameters": {
        "type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                                         "date": {"type": "string"}}, "required": ["origin", "destination"]}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email", "parameters": {
        "type": "object", "properties": {"to": {"type": "string"}, "subject": {"type": "string"},
                                         "body": {"type": "string"}}, "required": ["to", "body"]}}},
]
CITIES = ["Paris", "Tokyo", "Lisbon", "Oslo", "Lima", "Cairo", "Seoul", "Quito", "Dakar", "Perth"]


def _call(step: int) -> tuple[str, dict[str, Any]]:
    city = CITIES[step % len(CITIES)]
    if step % 3 == 0:
        return "search_flights", {"origin": "Berlin", "destination": city, "date": f"2026-12-{step % 28 + 1:02d}"}
    if step % 3 == 1:
        return "get_weather", {"city": city}
    return "send_email", {"to": "traveller@example.com", "subject": f"Trip to {city}",
                          "body": f"Here is the plan for {city}, day {step}."}


def _reasoning(step: int, salt: str = "") -> str:
    name, args = _call(step)
    return (f"{salt}Step {step}: the user is planning a trip. I have the previous results, so next I should call "
            f"{name} with {json.dumps(args)} and then summarise the options clearly for the user.")


def _result(step: int, salt: str = "") -> str:
    city = CITIES[step % len(CITIES)]
    return json.dumps({"status": "ok", "step": step, "session": salt, "city": city, "items": [
        {"id": f"R{step}-{i}", "price_eur": 100 + 7 * i + step, "note": f"Option {i} for {city}"} for i in range(3)]})


def session_step(step: int, salt: str = "", rotation: int = 0) -> dict[str, Any]:
    """The check body a gateway sends at agent step `step` (1-based): the whole history plus the new response.

    `salt` makes a distinct session with the same shape, so caches can be measured cold. `rotation` shifts
    which of the three tools each step calls, so that comparisons between steps can give both the same mix.
    """
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a travel agent. Use the tools; never invent prices."},
        {"role": "user", "content": f"Plan a ten-city winter trip from Berlin and email me the plan. {salt}".strip()},
    ]
    for past in range(1, step):
        name, args = _call(past + rotation)
        messages.append({"role": "assistant", "content": None, "reasoning": _reasoning(past + rotation, salt),
                         "tool_calls": [
            {"id": f"call-{past}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]})
        messages.append({"role": "tool", "tool_call_id": f"call-{past}", "content": _result(past + rotation, salt)})
    name, args = _call(step + rotation)
    response = {
        "id": f"chatcmpl-{step}", "object": "chat.completion", "created": 1767225600, "model": "Qwen/Qwen3-8B",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "stop_reason": None, "message": {
            "role": "assistant", "content": None, "reasoning": _reasoning(step + rotation, salt),
            "tool_calls": [{"id": f"call-{step}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}]}}],
        "usage": {"prompt_tokens": 300 * step, "completion_tokens": 80, "total_tokens": 300 * step + 80,
                  "completion_tokens_details": {"reasoning_tokens": 50}},
        "system_fingerprint": "vllm-0.33.0-3f9c2a1b",
    }
    return {
        "request": {"model": "Qwen/Qwen3-8B", "messages": messages, "tools": TOOLS, "tool_choice": "auto"},
        "response": response,
        "context": {"agent_id": "travel-agent", "session_id": "bench-session", "tenant": "acme", "user": "u-1"},
    }
