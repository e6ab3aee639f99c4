"""Check bodies that make one tool call, in every API format, for the tool-call detector tests."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from guardrails.adapters import read_exchange
from guardrails.detector import Detector, ScanContext
from guardrails.exchange import CallerContext
from guardrails.findings import Finding
from guardrails.pointer import resolve

FORMATS = ("openai.chat", "openai.responses", "anthropic.messages", "gemini")
History = list[tuple[str, dict[str, Any], str]]  # (tool name, arguments, tool result text)


def body(fmt: str, name: str, args: dict[str, Any], *, user: str = "Please help.", history: History = (),
         schema: dict[str, Any] | None = None, tool_choice: Any = None) -> dict[str, Any]:
    """A request (user turn, then earlier calls and their results) and a response calling `name(args)`."""
    schema = schema or {"type": "object"}
    names = dict.fromkeys([*(h[0] for h in history), name])
    if fmt == "openai.chat":
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        for i, (n, a, result) in enumerate(history):
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}]})
            messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": result})
        request: dict[str, Any] = {"model": "m", "messages": messages, "tools": [
            {"type": "function", "function": {"name": n, "parameters": schema}} for n in names]}
        response: dict[str, Any] = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None, "tool_calls": [
                {"id": "new", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}}]}
    elif fmt == "openai.responses":
        items: list[dict[str, Any]] = [{"role": "user", "content": user}]
        for i, (n, a, result) in enumerate(history):
            items.append({"type": "function_call", "call_id": f"c{i}", "name": n, "arguments": json.dumps(a)})
            items.append({"type": "function_call_output", "call_id": f"c{i}", "output": result})
        request = {"model": "m", "input": items, "tools": [
            {"type": "function", "name": n, "parameters": schema} for n in names]}
        response = {"object": "response", "status": "completed", "output": [
            {"type": "function_call", "id": "fc_1", "call_id": "new", "name": name, "arguments": json.dumps(args),
             "status": "completed"}]}
    elif fmt == "anthropic.messages":
        turns: list[dict[str, Any]] = [{"role": "user", "content": user}]
        for i, (n, a, result) in enumerate(history):
            turns.append({"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": n, "input": a}]})
            turns.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}",
                                                       "content": result}]})
        request = {"model": "m", "max_tokens": 100, "messages": turns, "tools": [
            {"name": n, "input_schema": schema} for n in names]}
        response = {"type": "message", "role": "assistant", "stop_reason": "tool_use",
                    "content": [{"type": "tool_use", "id": "new", "name": name, "input": args}]}
    elif fmt == "gemini":
        contents: list[dict[str, Any]] = [{"role": "user", "parts": [{"text": user}]}]
        for n, a, result in history:
            contents.append({"role": "model", "parts": [{"functionCall": {"name": n, "args": a}}]})
            contents.append({"role": "user", "parts": [{"functionResponse": {"name": n,
                                                                             "response": {"result": result}}}]})
        request = {"contents": contents, "tools": [
            {"functionDeclarations": [{"name": n, "parameters": schema} for n in names]}]}
        response = {"candidates": [{"content": {"role": "model", "parts": [{"functionCall": {"name": name,
                                                                                             "args": args}}]},
                                    "finishReason": "STOP"}]}
    else:
        raise ValueError(fmt)
    if tool_choice is not None:
        request["tool_choice"] = tool_choice
    return {"request": request, "response": response, "format": fmt}


def scan(detector: Detector, check_body: dict[str, Any], agent_id: str | None = None) -> list[Finding]:
    exchange = read_exchange(check_body["request"], check_body["response"], format=check_body.get("format"),
                             context=CallerContext(agent_id=agent_id))
    ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
    return asyncio.run(detector.scan(exchange, ctx))


def located(check_body: dict[str, Any], finding: Finding) -> Any:
    """What a finding points at in the body: the [start, end) text, or the whole value without offsets."""
    value = resolve(check_body, finding.pointer)
    return value if finding.start is None else value[finding.start:finding.end]
