"""`POST /v1/guardrail/checks`, wire-compatible with the NeMo Guardrails microservice.

Body: an OpenAI chat-completion request plus
`guardrails: {config_id | config_ids | config, context, options}`.
A trailing assistant message is the response under check (its `tool_calls`, `reasoning_content` and
`logprobs` included, which NeMo ignores or rejects); everything before it is the request. The answer is
NeMo's: `{"status": "success"|"blocked", "rails_status": {<rail>: {"status"}},
"guardrails_data": {"config_ids", "log": {"activated_rails", "stats"}}}`, plus our verdict and findings
(pointers into this body) in `guardrails_data`. Verdicts are always HTTP 200; a warn is `success`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Request, Response

from api.body import authorize, read_json
from api.errors import ERROR_RESPONSES
from guardrails.colang.catalog import default_rail_type, flow_for_detector
from guardrails.config import Settings
from guardrails.errors import BodyError, GuardrailsError, UnknownPolicy
from guardrails.exchange import CallerContext
from guardrails.policy import Policy, PolicyError, policy_from_mapping
from guardrails.policy_yaml import DuplicateKeyError, safe_load_unique
from guardrails.service import CONTEXT_FIELDS, CheckService

NOT_REQUEST_FIELDS = {"guardrails", "state", "return_choice", "stream", "stream_options"}
LLM_FREE_STATS = {"llm_calls_duration": 0, "llm_calls_count": 0, "llm_calls_total_prompt_tokens": 0,
                  "llm_calls_total_completion_tokens": 0, "llm_calls_total_tokens": 0}


def nemo_router(service: CheckService, settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/guardrail/checks", summary="NeMo Guardrails microservice-compatible check",
                 responses=ERROR_RESPONSES)
    async def guardrail_checks(request: Request) -> Response:
        authorize(request, settings)
        body = await read_json(request, settings.max_body_bytes)
        result = await nemo_check(service, body)
        return Response(orjson.dumps(result), media_type="application/json")

    return router


async def nemo_check(service: CheckService, body: Any) -> dict[str, Any]:
    started = time.perf_counter()
    if not isinstance(body, Mapping):
        raise BodyError("the body must be a JSON object", "")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BodyError("`messages` is required and must be a non-empty list", "/messages")
    options = body.get("guardrails") or {}
    if not isinstance(options, Mapping):
        raise BodyError("`guardrails` must be an object", "/guardrails")
    check_body, response_index = _check_body(body, messages, _context(options.get("context")))
    policies = _policies(service, options, check_body["context"])
    try:
        results = [(policy, await service.check(check_body, policy)) for policy in policies]
    except GuardrailsError as exc:  # its pointer names our check body: name the field of the body the caller sent
        if exc.pointer is not None:
            exc.pointer = _nemo_pointer(exc.pointer, response_index)
        raise
    return _answer(results, check_body, response_index, time.perf_counter() - started)


def _check_body(body: Mapping[str, Any], messages: list[Any],
                context: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """Our check body: a trailing assistant message is the response, the messages before it the request."""
    last = messages[-1]
    is_response = isinstance(last, Mapping) and last.get("role") == "assistant"
    request = {k: v for k, v in body.items() if k not in NOT_REQUEST_FIELDS}
    request["messages"] = messages[:-1] if is_response else messages
    check: dict[str, Any] = {"request": request, "format": "openai.chat", "context": context}
    if not is_response:
        return check, None
    message = {k: v for k, v in last.items() if k != "logprobs"}
    choice: dict[str, Any] = {"index": 0, "message": message,
                              "finish_reason": "tool_calls" if last.get("tool_calls") else "stop"}
    if last.get("logprobs") is not None:
        choice["logprobs"] = last["logprobs"]
    check["response"] = {"object": "chat.completion", "model": body.get("model"), "choices": [choice]}
    return check, len(messages) - 1


def _context(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise BodyError("`guardrails.context` must be an object", "/guardrails/context")
    # NeMo's context is free-form; ours types a few fields. Keep those only when they are strings.
    return {k: v for k, v in raw.items() if k not in CONTEXT_FIELDS or isinstance(v, str)}


def _policies(service: CheckService, options: Mapping[str, Any], context: Mapping[str, Any]) -> list[Policy]:
    if options.get("config") is not None:
        config = options["config"]
        if isinstance(config, str):
            try:  # a caller's text: no aliases (they expand to billions of nodes), no key given twice
                config = safe_load_unique(config, source="guardrails.config", aliases=False)
            except DuplicateKeyError as exc:  # YAML, but the policy it reads is not the one the caller wrote
                raise BodyError(f"inline config: line {exc.line}: {exc.problem}", "/guardrails/config") from None
            except (yaml.YAMLError, RecursionError) as exc:
                raise BodyError(f"`guardrails.config` is not YAML: {exc}", "/guardrails/config") from None
        try:
            policy = policy_from_mapping(config)
            service.engine_for(policy)  # builds its detectors: one that is not installed is the body's error
            return [policy]
        except PolicyError as exc:
            raise BodyError(f"inline config: {exc.message}", "/guardrails/config") from None
        except RecursionError:  # serializing the policy (its version) recurses once per level
            raise BodyError("inline config: nested too deeply", "/guardrails/config") from None
    ids = options.get("config_ids")
    pointer = "/guardrails/config_ids"
    if ids is None and options.get("config_id") is not None:
        ids, pointer = [options["config_id"]], "/guardrails/config_id"
    if ids is None:
        caller = CallerContext(**{k: context.get(k) for k in CONTEXT_FIELDS})
        return [service.select_policy(None, caller)]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise BodyError("config ids must be non-empty strings", pointer)
    policies = []
    for policy_id in ids:
        try:
            policies.append(service.named_policy(policy_id))
        except KeyError:
            raise UnknownPolicy(f"no guardrails config {policy_id!r}; known: {service.policies.ids()}",
                                pointer) from None
    return policies


def _answer(results: list[tuple[Policy, dict[str, Any]]], check_body: Mapping[str, Any],
            response_index: int | None, elapsed_s: float) -> dict[str, Any]:
    rails_status: dict[str, dict[str, str]] = {}
    activated: list[dict[str, Any]] = []
    durations = {"input": 0.0, "output": 0.0}
    findings: list[dict[str, Any]] = []
    for policy, result in results:
        for rail in _rails(policy, result, check_body):
            blocked = rail["stop"]
            if rails_status.get(rail["name"], {}).get("status") != "blocked":
                rails_status[rail["name"]] = {"status": "blocked" if blocked else "success"}
            activated.append(rail)
            durations["input" if rail["type"] in ("input", "tool_input") else "output"] += rail["duration"]
        findings += [_in_nemo_body(f, response_index) for f in result["findings"]]
    verdicts = [r["verdict"] for _, r in results]
    verdict = "block" if "block" in verdicts else "warn" if "warn" in verdicts else "allow"
    return {
        "status": "blocked" if verdict == "block" else "success",
        "rails_status": rails_status,
        "guardrails_data": {
            "config_ids": [p.id for p, _ in results],
            "log": {"activated_rails": activated, "stats": {
                "input_rails_duration": round(durations["input"], 6),
                "output_rails_duration": round(durations["output"], 6),
                "total_duration": round(elapsed_s, 6), **LLM_FREE_STATS}},
            "verdict": verdict,
            "findings": findings,
            "policies": [{"id": p.id, "version": p.version} for p, _ in results],
            "check_ids": [r["check_id"] for _, r in results],
        },
    }


def _rails(policy: Policy, result: dict[str, Any], check_body: Mapping[str, Any]) -> list[dict[str, Any]]:
    """NeMo's activated rails: one per (flow, rail type) of the policy, and per unlisted detector that ran."""
    timings: dict[str, float] = result["timings_ms"]["detectors"]
    entries: dict[tuple[str, str], None] = {}
    for rail_type, flows in policy.rails.flows.items():
        for flow in flows:
            entries[(flow, rail_type)] = None
    listed = {name for name, _ in entries}
    for detector in timings:
        if detector != "colang" and flow_for_detector(detector) not in listed:
            entries[(flow_for_detector(detector), default_rail_type(detector))] = None
    custom = {f for flows in policy.rails.custom.values() for f in flows}
    acted: dict[tuple[str, str | None], list[str]] = {}
    for f in result["findings"]:
        is_custom = f["category"] == "custom" or f["detector"] in custom
        rail = f["detector"] if is_custom else flow_for_detector(f["detector"])
        pointer = f["location"]["pointer"]
        rail_type = f["evidence"].get("rail") if is_custom else _rail_type_at(pointer, check_body)
        acted.setdefault((rail, rail_type), []).append(f["action"])
    took = {flow_for_detector(d): ms for d, ms in timings.items() if d != "colang"}
    rails = []
    for name, rail_type in entries:
        actions = acted.get((name, rail_type), []) + acted.get((name, None), [])
        took_ms = timings.get("colang", 0.0) if name in custom else took.get(name, 0.0)
        rails.append({"type": rail_type, "name": name,
                      "decisions": sorted({a for a in actions if a != "allow"}) or ["allow"],
                      "executed_actions": [], "stop": "block" in actions,
                      "duration": round(took_ms / 1000, 6)})
    return rails


def _rail_type_at(pointer: str, check_body: Mapping[str, Any]) -> str | None:
    """The rail type of the message a finding points into (NeMo routes by role); None: the whole check."""
    parts = pointer.split("/")
    if pointer.startswith("/response/"):
        return "tool_output" if "tool_calls" in parts else "output"
    if not pointer.startswith("/request/messages/") or len(parts) < 4 or not parts[3].isdigit():
        return None
    messages = check_body["request"]["messages"]
    index = int(parts[3])
    message = messages[index] if index < len(messages) else None
    role = message.get("role") if isinstance(message, Mapping) else None
    if role in ("tool", "function"):
        return "tool_input"
    if role == "assistant":
        return "tool_output" if "tool_calls" in parts else "output"
    return "input"


def _in_nemo_body(finding: dict[str, Any], response_index: int | None) -> dict[str, Any]:
    """Re-point a finding from our check body into the NeMo body the caller sent."""
    location = dict(finding["location"])
    location["pointer"] = _nemo_pointer(location["pointer"], response_index)
    return {**finding, "location": location}


def _nemo_pointer(pointer: str, response_index: int | None) -> str:
    """A pointer into our check body as a pointer into the NeMo body (see `_check_body`)."""
    if pointer == "/request" or pointer.startswith("/request/"):
        return pointer[len("/request"):]  # "/request" alone: the whole request, which is the NeMo body
    if response_index is None or not (pointer == "/response" or pointer.startswith("/response/")):
        return pointer
    if pointer == "/response/model":
        return "/model"
    # The response is the trailing assistant message: its choice and message levels exist only in our body.
    rest = pointer.removeprefix("/response").removeprefix("/choices/0").removeprefix("/message")
    return f"/messages/{response_index}{rest}"

