"""The check service: check body in, verdict out. Shared by the HTTP API and the CLI.

payload -> adapter -> exchange -> detectors -> findings -> policy -> verdict -> response (+ audit record)
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from guardrails.adapters import FORMATS, HistoryMemo, read_exchange
from guardrails.detector import DetectorRegistry, Services
from guardrails.engine import Engine, EngineResult, SegmentCache
from guardrails.errors import BodyError, PolicyUnavailable, UnknownPolicy
from guardrails.exchange import CONTEXT_FIELDS, CallerContext, Exchange  # api/nemo.py imports CONTEXT_FIELDS here
from guardrails.idempotency import IdempotencyStore
from guardrails.policy import ROUTING_FILE, Policy, PolicyError, PolicyStore, Routing

BODY_FIELDS = {"request", "response", "format", "context", "policy", "raw_output", "partial"}


class Envelope(NamedTuple):
    """A check body's fields, read and type-checked."""

    request: Mapping[str, Any]
    response: Any
    format: str | None
    context: CallerContext
    policy_id: str | None
    raw_output: str | None
    partial: bool  # a mid-stream re-check: its verdict is advisory (see CheckRequest.partial)


@dataclass(slots=True)
class CheckOutcome:
    """Everything one check produced; observers (the audit log) receive it before the caller does."""

    check_id: str
    received_at: float
    policy: Policy
    exchange: Exchange
    result: EngineResult
    response: dict[str, Any]


Observer = Callable[[CheckOutcome], Awaitable[None]]


def new_check_id() -> str:
    # Time-ordered so audit records sort by id: 48-bit ms timestamp + 80 random bits, hex.
    return f"chk_{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


class CheckService:
    def __init__(
        self,
        policies: PolicyStore,
        registry: DetectorRegistry,
        services: Services | None = None,
        *,
        default_policy: str = "default",
        segment_cache_entries: int = 50_000,
    ) -> None:
        self.policies = policies
        self.registry = registry
        self.services = services or Services()
        self.default_policy = default_policy
        self.cache = SegmentCache(segment_cache_entries)
        self.history = HistoryMemo()
        self.observers: list[Observer] = []
        self._engines: dict[tuple[str, str], Engine] = {}
        self.idempotency = IdempotencyStore()  # answers of checks sent with an Idempotency-Key (retries replay them)
        # A reloaded version is built before it replaces the live one: an edit that loads but does not
        # build (unknown detector, rejected setting, Colang NeMo refuses) keeps the last good version serving.
        policies.build = self.engine_for
        policies.removed = self._drop_engine  # a removed bundle's detectors are not kept for a return

    def engine_for(self, policy: Policy) -> Engine:
        key = (policy.id, policy.version)
        engine = self._engines.get(key)
        if engine is None:
            engine = Engine(policy, self.registry, self.services, self.cache)
            self._engines = {k: v for k, v in self._engines.items() if k[0] != policy.id}
            self._engines[key] = engine
        return engine

    def _drop_engine(self, policy_id: str) -> None:
        self._engines = {k: v for k, v in self._engines.items() if k[0] != policy_id}

    def built_engine(self, policy: Policy) -> Engine | None:
        """The engine this policy version runs on, if one was built; never builds (nor swaps in) one."""
        return self._engines.get((policy.id, policy.version))

    def select_policy(self, requested: str | None, context: CallerContext) -> Policy:
        """The body's `policy`, else routing.yml (agent, then tenant, then its `default`), else the default policy.
        Only a missing policy the body named is the body's error (422); one the server chose is a 503."""
        if requested:
            try:
                return self.named_policy(requested)
            except KeyError:
                raise UnknownPolicy(f"no policy named {requested!r}; known: {self.policies.ids()}",
                                    "/policy") from None
        routing = self.policies.routing()
        rule = routing.rule(context)
        policy_id = rule[0] if rule else self.default_policy
        try:
            return self.policies.get(policy_id)
        except KeyError:
            raise PolicyUnavailable(self.missing_policy(policy_id, routing, rule[1] if rule else None)) from None

    def named_policy(self, policy_id: str) -> Policy:
        """The bundle a caller named (a check's `policy`, a NeMo `config_id`); KeyError when there is none. A name
        longer than a directory name can be is no bundle: the lookup's ENAMETOOLONG was a 500."""
        try:
            return self.policies.get(policy_id)
        except OSError as exc:
            if exc.errno != errno.ENAMETOOLONG:
                raise
            raise KeyError(policy_id) from None

    def default_policy_id(self) -> str:
        """The policy of a check that names none and matches no agent or tenant rule: routing.yml's `default`
        when it declares one, else the service default (GUARDRAILS_DEFAULT_POLICY)."""
        return self.policies.routing().default or self.default_policy

    def missing_policy(self, policy_id: str, routing: Routing, rule: str | None) -> str:
        """Why the server-chosen `policy_id` is not there: what exists, and which setting chose it."""
        root = self.policies.root
        file = root / ROUTING_FILE
        if not root.is_dir():
            where = f"the policy directory {root} does not exist (looked for bundle {policy_id!r})"
        else:
            ids = self.policies.ids()
            found = (f"bundles found: {', '.join(ids)}" if ids
                     else "it holds none: a bundle is a sub-directory with a config.yml")
            where = f"no bundle {policy_id!r} in the policy directory {root} ({found})"
        if rule is None:
            return (f"{where}; choose the default policy with GUARDRAILS_DEFAULT_POLICY=<id> "
                    f"or `default: <id>` in {file}")
        line = routing.lines.get(rule)
        fallback = (f"; remove it to use the service default {self.default_policy!r} (GUARDRAILS_DEFAULT_POLICY)"
                    if rule == "default" else "")
        return f"{where}; the rule `{rule}` of {file}{f':{line}' if line else ''} routes to it{fallback}"

    async def check(self, body: Any, policy: Policy | None = None) -> dict[str, Any]:
        """Check one body; `policy` overrides selection (the NeMo endpoint's inline configurations)."""
        started = time.perf_counter()
        received_at = time.time()
        envelope = _read_envelope(body)
        policy = policy or self.select_policy(envelope.policy_id, envelope.context)
        engine = self.engine_for(policy)  # built on a policy's first check: not normalizing time
        reading = time.perf_counter()
        exchange = read_exchange(envelope.request, envelope.response, format=envelope.format,
                                 context=envelope.context, raw_output=envelope.raw_output, memo=self.history,
                                 partial=envelope.partial)
        normalized = time.perf_counter()
        result = await engine.run(exchange)
        check_id = new_check_id()
        signals = dict(result.signals)
        signals["exchange"] = _exchange_summary(exchange)
        payload = {
            "check_id": check_id,
            "verdict": result.verdict.value,
            "phase": exchange.phase.value,
            "format": exchange.format,
            "findings": [f.to_dict() for f in result.findings],
            "policy": {"id": policy.id, "version": policy.version},
            "signals": signals,
            "timings_ms": {
                "normalize": round((normalized - reading) * 1000, 3),
                "detectors": result.timings_ms,
                "total": 0.0,
            },
        }
        if exchange.partial:  # echoed only when set: a final check's answer keeps its shape
            payload["partial"] = True
        outcome = CheckOutcome(check_id, received_at, policy, exchange, result, payload)
        for observer in self.observers:
            await observer(outcome)
        payload["timings_ms"]["total"] = round((time.perf_counter() - started) * 1000, 3)
        return payload

    async def check_once(self, body: Any, key: str, digest: bytes) -> tuple[bytes, bool]:
        """A check sent with an Idempotency-Key: its answer as JSON bytes, and whether it is the stored answer of an
        earlier check with that key and body (`digest`: a hash of the body's bytes), replayed without running the
        detectors, the audit log or the budgets again (guardrails/idempotency.py)."""
        async def answer() -> bytes:
            return orjson.dumps(await self.check(body))

        return await self.idempotency.run(_tenant_of(body), key, digest, answer)

    def close(self) -> None:
        """Close what the observers and services hold (audit and state stores): when serving stops."""
        for observer in self.observers:
            close = getattr(observer, "close", None)
            if callable(close):
                close()
        if self.services.state is not None:
            self.services.state.close()

    def readiness(self) -> dict[str, Any]:
        """What /readyz reports: each policy loads and builds, every detector plug-in imported, and what the
        observers report (the audit store refusing writes). Not ready while the default policy does not load
        or an observer reports a problem: either way checks are refused."""
        problems: dict[str, str] = {}
        self.policies.prune()  # a bundle removed since it served: its stale `reload:` error goes with it
        for policy_id in self.policies.ids():
            try:
                self.engine_for(self.policies.get(policy_id))
            except (PolicyError, KeyError) as exc:
                problems[f"policy:{policy_id}"] = str(exc)
        for name, error in self.registry.load_errors.items():
            problems[f"detector:{name}"] = error
        try:
            for policy_id in sorted(self.policies.routing().policy_ids() - set(self.policies.ids())):
                problems[f"routing:{policy_id}"] = f"routing.yml names policy {policy_id!r}, which does not exist"
        except PolicyError as exc:
            problems["routing"] = str(exc)
        # A rejected edit: the last good version still serves, so it is reported without failing readiness.
        for policy_id, error in self.policies.errors.items():
            problems[f"reload:{policy_id}"] = error
        try:
            default = self.default_policy_id()
        except PolicyError:  # routing.yml never loaded (listed above): checks use the service default
            default = self.default_policy
        if default not in self.policies.ids() and not {f"policy:{default}", f"routing:{default}"} & set(problems):
            # Missing (removed while serving, say): said as a check that falls to it is told.
            try:
                routing = self.policies.routing()
                rule = "default" if routing.default else None
            except PolicyError:
                routing, rule = Routing(), None
            problems[f"policy:{default}"] = self.missing_policy(default, routing, rule)
        observed = self.observer_problems()
        problems.update(observed)
        return {"ready": f"policy:{default}" not in problems and default in self.policies.ids() and not observed,
                "problems": problems}

    def observer_problems(self) -> dict[str, str]:
        """Problems reported by observers that have an optional `problems() -> dict[str, str]`: only what makes
        every check fail (the audit observer while its store refuses writes)."""
        problems: dict[str, str] = {}
        for observer in self.observers:
            report = getattr(observer, "problems", None)
            if callable(report):
                problems.update(report())
        return problems


def _read_envelope(body: Any) -> Envelope:
    if not isinstance(body, Mapping):
        raise BodyError("the check body must be a JSON object", "")
    unknown = set(body) - BODY_FIELDS
    if unknown:
        raise BodyError(f"unknown field(s) {sorted(unknown)}; expected {sorted(BODY_FIELDS)}",
                        "/" + sorted(unknown)[0])
    request = body.get("request")
    if not isinstance(request, Mapping):
        raise BodyError("`request` is required and must be the API request object", "/request")
    response = body.get("response")
    if response is not None and not isinstance(response, (Mapping, list)):
        raise BodyError("`response` must be an object, a list of stream chunks, or null", "/response")
    fmt = body.get("format")
    if fmt is not None and fmt not in FORMATS:
        raise BodyError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}", "/format")
    policy_id = body.get("policy")
    if policy_id is not None and not isinstance(policy_id, str):
        raise BodyError("`policy` must be a string", "/policy")
    raw_output = body.get("raw_output")
    if raw_output is not None and not isinstance(raw_output, str):
        raise BodyError("`raw_output` must be a string", "/raw_output")
    return Envelope(request, response, fmt, _read_context(body.get("context")), policy_id, raw_output,
                    _read_partial(body.get("partial"), response))


def _tenant_of(body: Any) -> str | None:
    """The body's `context.tenant`, the scope of its idempotency key; a malformed one fails the check itself."""
    context = body.get("context") if isinstance(body, Mapping) else None
    tenant = context.get("tenant") if isinstance(context, Mapping) else None
    return tenant if isinstance(tenant, str) else None


def _read_partial(partial: Any, response: Any) -> bool:
    if partial is not None and not isinstance(partial, bool):
        raise BodyError("`partial` must be a boolean", "/partial")
    # Nothing is still arriving in a request: an input check marked partial would be answered as advisory, spend no
    # budget, and its block would be missing from `checks_total` and `export --no-partial`.
    if partial and response is None:
        raise BodyError("`partial: true` needs a `response` (the stream chunks so far): a request-only check is "
                        "never partial", "/partial")
    return partial is True


def _read_context(raw: Any) -> CallerContext:
    if raw is None:
        return CallerContext()
    if not isinstance(raw, Mapping):
        raise BodyError("`context` must be an object", "/context")
    values: dict[str, Any] = {}
    for key in CONTEXT_FIELDS:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise BodyError(f"context.{key} must be a string", f"/context/{key}")
        values[key] = value
    extra = {k: v for k, v in raw.items() if k not in CONTEXT_FIELDS}
    return CallerContext(**values, extra=extra)


def _exchange_summary(exchange: Exchange) -> dict[str, Any]:
    g = exchange.generation
    usage = {k: v for k, v in (
        ("input_tokens", g.usage.input_tokens), ("output_tokens", g.usage.output_tokens),
        ("reasoning_tokens", g.usage.reasoning_tokens), ("total_tokens", g.usage.total_tokens),
    ) if v is not None}
    return {
        "segments": len(exchange.segments),
        "tool_calls": len(exchange.tool_calls),
        "model": g.model,
        "finish_reason": g.finish_reason,
        "usage": usage,
        "logprob_sources": len(exchange.logprobs),
    }
