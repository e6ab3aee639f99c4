"""The public HTTP contract of `POST /v1/checks`, as pydantic models.

The service builds responses as plain dicts for speed; these models document the shape (OpenAPI), type
the Python client, and a test validates every response against them so the two cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from guardrails.exchange import CONTEXT_FIELDS
from guardrails.findings import Action, Category, Severity

FormatName = Literal["openai.chat", "openai.responses", "anthropic.messages", "gemini.interactions", "gemini"]


# Who is calling: one optional string per caller-context field of the exchange (`CallerContext`), named once there.
CheckContext = create_model(
    "CheckContext",
    __config__=ConfigDict(extra="allow"),
    __doc__="Who is calling: used for policy selection, budgets and the audit trail.",
    __module__=__name__,
    **{name: (str | None, None) for name in CONTEXT_FIELDS},
)


class CheckRequest(BaseModel):
    """A check body: the request the gateway forwarded and, for an output-phase check, what came back. A top-level
    key other than these is refused with HTTP 422 `invalid_body` (the message lists them, the pointer names the
    first): a misspelt `polcy` or `respone` would otherwise be checked without it. Unknown keys inside `context`
    are kept."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "request": {
                    "model": "Qwen/Qwen3-8B",
                    "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
                    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {
                        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}],
                },
                "response": {
                    "object": "chat.completion",
                    "model": "Qwen/Qwen3-8B",
                    "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                        "role": "assistant", "content": None, "reasoning": "The user wants the weather.",
                        "tool_calls": [{"id": "chatcmpl-tool-1", "type": "function", "function": {
                            "name": "delete_files", "arguments": "{\"path\": \"/\"}"}}]}}],
                },
                "context": {"agent_id": "travel-agent", "session_id": "s-123", "tenant": "acme"},
                "policy": "default",
            }
        }
    )
    request: dict[str, Any] = Field(description="The API request body exactly as forwarded to the model.")
    response: dict[str, Any] | list[Any] | None = Field(
        default=None,
        description="The response body, or the list of its stream chunks/events; absent or null for an "
        "input-phase check.",
    )
    format: FormatName | None = Field(default=None, description="Overrides format detection.")
    context: CheckContext | None = None
    policy: str | None = Field(default=None, description="Policy id; default chosen by tenant/agent routing.")
    raw_output: str | None = Field(
        default=None, description="Raw model text before vLLM's parsers, if the gateway has it."
    )
    partial: bool = Field(
        default=False,
        description="A mid-stream re-check of a response still arriving; its verdict is advisory. Echoed in "
        "the answer and the audit record, counted apart in the metrics (`guardrails_partial_checks_total`), and "
        "tool-call arguments that are not complete JSON yet are not reported as invalid, nor a `tool_choice` call "
        "not reached yet, and budgets are not spent. The final check of the stream leaves it out: the service "
        "trusts the flag (a final check sent as partial skips those checks). Needs `response`.",
        examples=[True],
    )


class Location(BaseModel):
    pointer: str = Field(description="RFC 6901 JSON Pointer into the submitted check body.",
                         examples=["/response/choices/0/message/tool_calls/0/function/arguments"])
    start: int | None = Field(default=None, description="Character offset in the string at `pointer`.")
    end: int | None = None


class FindingModel(BaseModel):
    category: Category
    detector: str
    severity: Severity
    action: Action
    message: str
    score: float | None = None
    location: Location
    evidence: dict[str, Any] = Field(default_factory=dict)


class PolicyRef(BaseModel):
    id: str
    version: str = Field(description="Content hash of the policy bundle.")


class CheckResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "check_id": "chk_01J9Z3V7K2M4N6P8Q0R2S4T6V8",
                "verdict": "block",
                "phase": "response",
                "format": "openai.chat",
                "findings": [{
                    "category": "tool_undeclared", "detector": "tool_undeclared", "severity": "high",
                    "action": "block", "message": "tool call to undeclared tool 'delete_files'", "score": 1.0,
                    "location": {"pointer": "/response/choices/0/message/tool_calls/0/function/name",
                                 "start": 0, "end": 12},
                    "evidence": {"tool": "delete_files", "declared": ["get_weather"]},
                }],
                "policy": {"id": "default", "version": "3f2a9c81d0e4"},
                "signals": {"exchange": {"segments": 3, "tool_calls": 1, "model": "Qwen/Qwen3-8B"}},
                "timings_ms": {"normalize": 0.05, "detectors": {"tool_undeclared": 0.01}, "total": 0.2},
            }
        }
    )
    check_id: str
    verdict: Action
    phase: Literal["request", "response"]
    format: FormatName
    findings: list[FindingModel]
    policy: PolicyRef
    signals: dict[str, Any]
    timings_ms: dict[str, Any]
    partial: bool = Field(default=False, description="Present (true) when the check body was a `partial` one: "
                          "a mid-stream re-check, whose verdict is advisory.")


class ErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_body"])
    message: str
    pointer: str | None = Field(default=None, description="Where in the body the problem is, if known.")


class ErrorResponse(BaseModel):
    """Every error the service returns has this shape."""

    error: ErrorDetail
