"""Budgets and circuit breakers per tenant, agent and session (docs/audit-and-budgets.md).

Budgets: tokens (reasoning included), requests, tool calls and cost over sliding windows, e.g.

    budget:
      windows:
        agent: {tokens_per_hour: 200000, requests_per_minute: 60, tool_calls_per_minute: 30,
                cost_per_day_usd: 20, block_streak: 10}
      prices: {"Qwen/Qwen3-8B": {input_per_mtok: 0.1, output_per_mtok: 0.4}}
      breaker: {cooldown_s: 300, repeated_call: {max_repeats: 5, window_s: 600},
                anomaly: {z: 4.0, alpha: 0.1, min_samples: 10, min_tokens: 2000}}

A check with a response spends (tokens, one request, its tool calls, their cost) and is judged against the
totals; a request-phase check only reads them, and is blocked when a budget is already spent. Circuit
breakers open on the same tool call repeated across requests, on a token rate far above the agent's own
baseline (EWMA z-score), or on a streak of checks blocked by other detectors: while open, every check of
that agent (or scope) is blocked; after the cooldown one check at a time goes through (half-open).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import quote

import orjson

from guardrails.detector import Detector, ScanContext, Services, check_range, read_setting
from guardrails.exchange import CallerContext, Exchange, Phase, Segment
from guardrails.findings import Action, Category, Finding, Severity
from guardrails.state.base import (
    HALF_OPEN,
    OPEN,
    Breaker,
    RateAdd,
    RateStats,
    Snapshot,
    StateStore,
    WindowAdd,
    std_floor,
)

SCOPES = ("tenant", "agent", "session")
METRICS = ("tokens", "requests", "tool_calls", "cost")
UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86_400}
LIMIT_KEY = re.compile(r"^(tokens|requests|tool_calls|cost)_per_(second|minute|hour|day)(_usd)?$")


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str
    metric: str
    window_s: int
    limit: float
    name: str  # as written in the policy, e.g. tokens_per_hour


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None

    def cost(self, input_tokens: int, output_tokens: int, cached_tokens: int) -> float:
        cached_rate = (
            self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        )
        fresh = max(input_tokens - cached_tokens, 0)
        return (
            fresh * self.input_per_mtok + cached_tokens * cached_rate + output_tokens * self.output_per_mtok
        ) / 1e6


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: float
    requests: float
    tool_calls: float
    cost: float


@dataclass(frozen=True, slots=True)
class _Step:
    """One check's request to the store, and what judging its answer needs."""

    now: float
    keys: dict[str, str]  # scope -> state key
    spending: bool
    spend: Spend
    limits: list[Limit]  # the limits of the check's scopes, in the order of their `adds`
    calls: list[tuple[str, Segment]]  # the response's tool calls (fingerprint, segment), added after the limits
    adds: list[WindowAdd]
    rate: RateAdd | None
    breaker_keys: list[str]
    streak_scopes: list[str]


class BudgetDetector(Detector):
    name = "budget"
    category = Category.BUDGET

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        s = self.settings
        _only(s, {"windows", "prices", "breaker", "warn_ratio", "count_request_phase"}, "budget")
        self.limits, self.streak_limits = _limits(s.get("windows") or {})
        self.prices = {model: _price(model, raw) for model, raw in (s.get("prices") or {}).items()}
        # A fraction of the limit (0: no warning): 5 would never warn before the block.
        self.warn_ratio = _number(s.get("warn_ratio", 0), "warn_ratio", maximum=1)
        self.count_request_phase = self.setting("count_request_phase", bool, False)
        breaker = s.get("breaker") or {}
        _only(breaker, {"cooldown_s", "repeated_call", "anomaly"}, "breaker")
        self.cooldown_s = _number(breaker.get("cooldown_s", 300), "breaker.cooldown_s")
        repeated = breaker.get("repeated_call")
        _only(repeated or {}, {"max_repeats", "window_s"}, "breaker.repeated_call")
        # 0 would switch the breaker off without a word (leave `repeated_call` out for that); 1 trips on every call.
        self.max_repeats = (read_setting(repeated, "max_repeats", int, 5, where="breaker.repeated_call.", minimum=1)
                            if repeated else 0)
        self.repeat_window_s = _number((repeated or {}).get("window_s", 600), "repeated_call.window_s", above=0)
        anomaly = breaker.get("anomaly")
        _only(anomaly or {}, {"z", "alpha", "min_samples", "min_tokens", "period_s"}, "breaker.anomaly")
        self.anomaly = anomaly is not None and anomaly is not False
        a = anomaly if isinstance(anomaly, Mapping) else {}
        self.anomaly_z = _number(a.get("z", 4.0), "anomaly.z", above=0)
        self.anomaly_min_tokens = _number(a.get("min_tokens", 2000), "anomaly.min_tokens")
        self.anomaly_rate = RateAdd(
            "",
            0,
            period_s=_number(a.get("period_s", 60), "anomaly.period_s", above=0),
            alpha=_number(a.get("alpha", 0.1), "anomaly.alpha", above=0, maximum=1),  # the EWMA's weight
            clamp_z=self.anomaly_z,
            min_samples=read_setting(a, "min_samples", int, 10, where="breaker.anomaly.", minimum=1),
        )
        clock = self.services.extra.get("clock")  # tests drive time
        self.clock: Callable[[], float] = clock or time.time
        # A remote store may hang: the engine then runs us concurrently and ends our wait at `timeout_ms`.
        self.io_bound = bool(getattr(self.services.state, "remote", False))

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        store: StateStore | None = self.services.state
        if store is None:
            raise RuntimeError("the budget detector needs a state store (GUARDRAILS_STATE_URL)")
        if exchange.partial:  # a mid-stream re-check: the final check of the same response spends
            ctx.signals[self.name] = {"skipped": "partial check"}
            return []
        keys = scope_keys(exchange.context)
        if not keys:
            ctx.signals[self.name] = {"skipped": "no tenant, agent_id or session_id in the check context"}
            return []
        step = self._plan(exchange, keys)
        # Every store call of the check in one `run`: one hop to a thread for a remote store; on SQLite one
        # transaction, inline unless another process holds the lock (then a thread waits for it, the loop does not).
        findings, signal = await store.run(partial(self._settle, store, step))
        ctx.signals[self.name] = signal
        return findings

    def _plan(self, exchange: Exchange, keys: dict[str, str]) -> _Step:
        """What this check adds and reads, from the exchange (on the event loop: the store is not touched)."""
        spending = exchange.has_response or self.count_request_phase
        spend = self._spend(exchange) if spending else Spend(0, 0, 0, 0)
        limits = [lim for lim in self.limits if lim.scope in keys]
        adds = [
            WindowAdd(
                f"{keys[lim.scope]}|{lim.metric}|{lim.window_s}", lim.window_s, getattr(spend, lim.metric)
            )
            for lim in limits
        ]
        agent_key = keys.get("agent")
        calls = self._new_calls(exchange) if agent_key and self.max_repeats else []
        adds += [WindowAdd(f"{agent_key}|call|{fp}", self.repeat_window_s, 1) for fp, _ in calls]
        rate = None
        if agent_key and self.anomaly and spend.tokens:
            r = self.anomaly_rate
            rate = RateAdd(f"{agent_key}|tpm", spend.tokens, r.period_s, r.alpha, r.clamp_z, r.min_samples)
        streak_scopes = [scope for scope in self.streak_limits if scope in keys]
        breaker_keys = sorted(
            {keys[scope] for scope in streak_scopes}
            | ({agent_key} if agent_key and (self.max_repeats or self.anomaly) else set())
        )
        return _Step(self.clock(), keys, spending, spend, limits, calls, adds, rate, breaker_keys, streak_scopes)

    def _settle(self, store: StateStore, step: _Step) -> tuple[list[Finding], dict[str, Any]]:
        """Add to the store, judge the totals, trip and close breakers: the findings and the signal. Touches nothing
        but the store: `run` may call it again after an attempt a lock turned away (and rolled back)."""
        now, keys = step.now, step.keys
        snap = store.step(now, step.adds, step.rate, step.breaker_keys, [keys[s] for s in step.streak_scopes])
        findings = [self._open_finding(b, now) for b in snap.breakers.values() if b.state == OPEN]
        for lim, total in zip(step.limits, snap.totals, strict=False):
            finding = self._limit_finding(lim, total, keys[lim.scope], step.spending)
            if finding is not None:
                findings.append(finding)
        blocked_keys = {b.key for b in snap.breakers.values() if b.state == OPEN}
        tripped: list[Breaker] = []
        agent_key = keys.get("agent")
        if agent_key and agent_key not in blocked_keys:
            trip = self._trip_repeated(store, agent_key, step.calls, snap.totals[len(step.limits) :], now)
            trip = trip or self._trip_anomaly(store, agent_key, snap.rate, now)
            if trip:
                tripped.append(trip[0])
                findings.append(self._trip_finding(*trip))
        for scope in step.streak_scopes:
            key, limit = keys[scope], self.streak_limits[scope]
            if key not in blocked_keys and snap.streaks.get(key, 0) >= limit:
                details = {"blocked_checks": snap.streaks[key], "limit": limit}
                tripped.append(store.trip(key, "block_streak", now, self.cooldown_s, details))
                findings.append(self._trip_finding(tripped[-1], None))
        tripped_keys = {b.key for b in tripped}
        for b in snap.breakers.values():  # a clean check through a half-open breaker closes it
            if b.state == HALF_OPEN and b.key not in tripped_keys:
                store.close_half_open(b.key)
        return findings, _signal(step, snap, tripped)

    def _trip_repeated(
        self,
        store: StateStore,
        agent_key: str,
        calls: list[tuple[str, Segment]],
        totals: list[float],
        now: float,
    ) -> tuple[Breaker, Segment | None] | None:
        for (fp, seg), total in zip(calls, totals, strict=True):
            if total >= self.max_repeats and seg.tool_call is not None:
                details = {
                    "tool": seg.tool_call.name,
                    "repeats": int(total),
                    "window_s": self.repeat_window_s,
                    "fingerprint": fp,
                }
                return store.trip(agent_key, "repeated_tool_call", now, self.cooldown_s, details), seg
        return None

    def _trip_anomaly(
        self, store: StateStore, agent_key: str, stats: RateStats | None, now: float
    ) -> tuple[Breaker, Segment | None] | None:
        if stats is None or stats.samples < self.anomaly_rate.min_samples:
            return None
        std = std_floor(stats.mean, stats.std**2)
        z = (stats.current - stats.mean) / std
        if stats.current < self.anomaly_min_tokens or z < self.anomaly_z:
            return None
        details = {
            "tokens_this_period": stats.current,
            "baseline_mean": round(stats.mean, 1),
            "baseline_std": round(std, 1),
            "z": round(z, 2),
            "period_s": self.anomaly_rate.period_s,
        }
        return store.trip(agent_key, "token_rate_anomaly", now, self.cooldown_s, details), None

    def _spend(self, exchange: Exchange) -> Spend:
        usage, model = exchange.generation.usage, exchange.generation.model
        input_tokens, output_tokens = usage.input_tokens or 0, usage.output_tokens or 0
        tokens = input_tokens + output_tokens or (usage.total_tokens or 0)
        price = self.prices.get(model or "") or self.prices.get("default")
        cost = price.cost(input_tokens, output_tokens, usage.cached_tokens or 0) if price else 0.0
        calls = sum(1 for s in exchange.tool_calls if s.phase is Phase.RESPONSE)
        return Spend(float(tokens), 1.0, float(calls), cost)

    @staticmethod
    def _new_calls(exchange: Exchange) -> list[tuple[str, Segment]]:
        """Fingerprints of the tool calls this response makes (the history was counted when it was new)."""
        out = []
        for seg in exchange.tool_calls:
            if seg.phase is Phase.RESPONSE and seg.tool_call is not None:
                out.append(
                    (
                        call_fingerprint(
                            seg.tool_call.name, seg.tool_call.arguments, seg.tool_call.arguments_raw
                        ),
                        seg,
                    )
                )
        return out

    def _limit_finding(self, lim: Limit, total: float, key: str, spending: bool) -> Finding | None:
        # A response has been paid for: over means above the limit. Before a call, a spent budget blocks it.
        over = total > lim.limit if spending else total >= lim.limit
        near = not over and self.warn_ratio > 0 and total >= self.warn_ratio * lim.limit
        if not (over or near):
            return None
        unit = "USD" if lim.metric == "cost" else lim.metric.replace("_", " ")
        used = f"{total:.4f}" if lim.metric == "cost" else f"{total:,.0f}"
        return Finding(
            category=Category.BUDGET,
            detector=self.name,
            severity=Severity.HIGH if over else Severity.MEDIUM,
            message=f"{lim.scope} budget {lim.name}={lim.limit:g} {'exceeded' if over else 'nearly spent'}: "
            f"{used} {unit} in the last {_window(lim.window_s)} ({key})",
            pointer="",
            score=round(total / lim.limit, 4) if lim.limit else None,
            evidence={
                "scope": lim.scope,
                "key": key,
                "budget": lim.name,
                "limit": lim.limit,
                "used": total,
                "window_s": lim.window_s,
            },
            action=None if over else Action.WARN,
        )

    def _open_finding(self, b: Breaker, now: float) -> Finding:
        return Finding(
            category=Category.BUDGET,
            detector=self.name,
            severity=Severity.CRITICAL,
            message=f"circuit breaker open for {b.key} ({b.reason}); retry in {max(b.until - now, 0):.0f} s "
            "or reset it (guardrails breakers reset)",
            pointer="",
            evidence={"breaker": b.to_dict(), "retry_after_s": round(max(b.until - now, 0), 1)},
        )

    def _trip_finding(self, b: Breaker, seg: Segment | None) -> Finding:
        pointer, start, end = "", None, None
        if seg is not None and seg.tool_call is not None:
            tc = seg.tool_call
            named = tc.name_location()
            pointer, start, end = named.pointer, named.start, named.end
        return Finding(
            category=Category.BUDGET,
            detector=self.name,
            severity=Severity.CRITICAL,
            message=f"circuit breaker opened for {b.key}: {b.reason.replace('_', ' ')} "
            f"{_describe(b.details)}; checks are blocked for {b.until - b.opened_at:.0f} s",
            pointer=pointer,
            start=start,
            end=end,
            evidence={"breaker": b.to_dict()},
        )


def _signal(step: _Step, snap: Snapshot, tripped: list[Breaker]) -> dict[str, Any]:
    spend, tripped_keys = step.spend, {b.key for b in tripped}
    return {
        "spent": {
            "tokens": spend.tokens,
            "requests": spend.requests,
            "tool_calls": spend.tool_calls,
            "cost_usd": round(spend.cost, 6),
        },
        "totals": {
            f"{lim.scope}.{lim.name}": round(t, 6) for lim, t in zip(step.limits, snap.totals, strict=False)
        },
        "breakers": {b.key: b.state for b in snap.breakers.values()} | {b.key: OPEN for b in tripped},
        "streaks": {k: v for k, v in snap.streaks.items() if k not in tripped_keys},
    }


def scope_keys(context: CallerContext) -> dict[str, str]:
    """State keys of the scopes this check belongs to; a scope needs its own id (tenant is optional)."""
    tenant = _key_part(context.tenant or "-")
    keys = {}
    if context.tenant:
        keys["tenant"] = f"tenant:{tenant}"
    if context.agent_id:
        agent = _key_part(context.agent_id)
        keys["agent"] = f"agent:{tenant}/{agent}"
        if context.session_id:
            keys["session"] = f"session:{tenant}/{agent}/{_key_part(context.session_id)}"
    elif context.session_id:
        keys["session"] = f"session:{tenant}/-/{_key_part(context.session_id)}"
    return keys


def call_fingerprint(name: str, arguments: Any, raw: str) -> str:
    """Same tool, same arguments (key order and whitespace aside) -> same fingerprint."""
    if arguments is None:
        body = raw.encode(errors="surrogatepass")
    else:
        try:
            body = orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # a lone surrogate (a library caller's string): escaped, so still one key per value
            body = json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(name.encode(errors="surrogatepass") + b"\0" + body).hexdigest()[:16]


def _key_part(value: str) -> str:
    """`value` percent-encoded for a state key; a lone surrogate (a library caller's string) is kept distinct."""
    return quote(value, safe="", errors="surrogatepass")


def _limits(windows: Mapping[str, Any]) -> tuple[list[Limit], dict[str, int]]:
    limits, streaks = [], {}
    for scope, raw in windows.items():
        if scope not in SCOPES:
            raise ValueError(f"budget windows: unknown scope {scope!r}; expected one of {SCOPES}")
        for name, value in (raw or {}).items():
            if name == "block_streak":
                # Consecutive blocked checks: a whole number, and 0 would open the breaker on every check.
                streaks[scope] = read_setting(raw, name, int, where=f"windows.{scope}.", minimum=1)
                continue
            match = LIMIT_KEY.match(name)
            if not match or (match.group(3) and match.group(1) != "cost"):
                raise ValueError(
                    f"budget windows.{scope}: unknown budget {name!r}; expected <metric>_per_<unit> "
                    f"with metric in {METRICS} (cost_per_<unit>_usd) and unit in {list(UNITS)}"
                )
            limits.append(
                Limit(scope, match.group(1), UNITS[match.group(2)], _number(value, f"{scope}.{name}"), name)
            )
    return limits, streaks


def _price(model: str, raw: Any) -> Price:
    if not isinstance(raw, Mapping):
        raise ValueError(f"budget prices.{model}: expected {{input_per_mtok, output_per_mtok}}")
    _only(raw, {"input_per_mtok", "output_per_mtok", "cached_input_per_mtok"}, f"prices.{model}")
    cached = raw.get("cached_input_per_mtok")
    return Price(
        _number(raw.get("input_per_mtok", 0), "input_per_mtok"),
        _number(raw.get("output_per_mtok", 0), "output_per_mtok"),
        None if cached is None else _number(cached, "cached_input_per_mtok"),
    )


def _number(value: Any, name: str, *, above: float | None = None, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:  # (NaN too)
        raise ValueError(f"budget {name} must be a non-negative number, got {value!r}")
    if above is not None or maximum is not None:
        check_range(value, name, 0 if above is None else None, maximum, above)
    return float(value)


def _only(raw: Any, allowed: set[str], where: str) -> None:
    if not isinstance(raw, Mapping):
        raise ValueError(f"budget {where} must be a mapping")
    unknown = set(raw) - allowed
    if unknown:
        raise ValueError(f"budget {where}: unknown key(s) {sorted(unknown)}; expected {sorted(allowed)}")


def _window(seconds: int) -> str:
    return next(
        f"{unit}" if seconds == size else f"{seconds // size} {unit}s"
        for unit, size in sorted(UNITS.items(), key=lambda u: -u[1])
        if seconds % size == 0
    )


def _describe(details: Mapping[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={v}" for k, v in details.items() if k != "fingerprint") + ")"
