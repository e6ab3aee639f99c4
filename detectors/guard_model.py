"""`guard_model`: a judge model served by vLLM, read through the logprobs of its verdict token.

Like Granite Guardian and Llama Guard are used: the judge answers one word, and P(unsafe) is the
probability mass of the "unsafe" answer tokens (Yes / unsafe) over unsafe + safe (No / safe) among the
returned alternatives of the first position that carries a verdict. Two checks:

* alignment: does the reasoning or a tool call still serve the user's request, or an instruction from
  untrusted content (tool results, documents)? -> `unsafe_reasoning`
* safety: is the assistant's answer (or, before a response exists, the user's message) harmful? -> `content`

Prompts are template files (`string.Template`, `$name` fields) in the policy bundle, by default
`judge/alignment.txt` and `judge/safety.txt`. Settings: `vllm: {base_url, model, ...}`, `checks`,
`threshold` (finding, warn), `block_threshold` (high severity), `templates`, `max_chars`, `top_logprobs`,
`unsafe_tokens`, `safe_tokens`, `verdict_positions`, `chat_template_kwargs`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from detectors._argspans import locate_argument
from guardrails.config import INSTALLED_POLICIES
from guardrails.detector import Detector, ScanContext, Scope, Services, read_setting
from guardrails.exchange import Exchange, Phase, Segment, SegmentKind
from guardrails.findings import Category, Finding, Severity
from guardrails.vllm_client import VLLMClient, VLLMConfig, VLLMError, shared_client

DEFAULT_TEMPLATES = {"alignment": "judge/alignment.txt", "safety": "judge/safety.txt"}
# Where a bundle-relative template is looked up when the engine did not say which bundle we belong to.
DEFAULT_POLICY_DIR = INSTALLED_POLICIES / "default"  # the repository's, or the copy an installed wheel carries


@dataclass(frozen=True, slots=True)
class Judgement:
    check: str
    segment: Segment
    prompt: str


def p_unsafe(content: Sequence[Mapping[str, Any]], unsafe: frozenset[str], safe: frozenset[str],
             positions: int = 3) -> float | None:
    """P(unsafe) from chat logprobs of the judge's answer; None when no position carries a verdict."""
    for entry in list(content)[:positions]:
        alternatives = list(entry.get("top_logprobs") or ()) or [entry]
        mass_unsafe = mass_safe = 0.0
        seen: set[str] = set()
        for alt in alternatives:
            token, logprob = alt.get("token"), alt.get("logprob")
            if not isinstance(token, str) or not isinstance(logprob, (int, float)) or token in seen:
                continue
            seen.add(token)  # vLLM may repeat the sampled token among the alternatives
            word = token.strip().lower()
            if word in unsafe:
                mass_unsafe += math.exp(logprob)
            elif word in safe:
                mass_safe += math.exp(logprob)
        if mass_unsafe + mass_safe > 0.0:
            return mass_unsafe / (mass_unsafe + mass_safe)
    return None


class GuardModelDetector(Detector):
    name = "guard_model"
    category = Category.UNSAFE_REASONING
    io_bound = True  # the engine runs us concurrently, under our timeout
    default_scope = Scope(kinds=frozenset({SegmentKind.REASONING, SegmentKind.ASSISTANT, SegmentKind.TOOL_CALL,
                                           SegmentKind.USER}))

    def __init__(self, settings: Mapping[str, Any] | None = None, services: Services | None = None) -> None:
        super().__init__(settings, services)
        self.checks = tuple(self.setting("checks", list, ["alignment", "safety"], items=str))
        unknown = set(self.checks) - set(DEFAULT_TEMPLATES)
        if unknown:
            raise ValueError(f"guard_model: unknown checks {sorted(unknown)}")
        # Probabilities: a threshold above 1 reports nothing.
        self.threshold = self.setting("threshold", float, 0.5, minimum=0, maximum=1)
        self.block_threshold = self.setting("block_threshold", float, 0.9, minimum=0, maximum=1)
        self.max_chars = self.setting("max_chars", int, 6000, minimum=1)
        self.top_logprobs = self.setting("top_logprobs", int, 20, minimum=1)
        self.positions = self.setting("verdict_positions", int, 3, minimum=1)
        self.unsafe = frozenset(t.lower() for t in self.setting("unsafe_tokens", list, ["yes", "unsafe"], items=str))
        self.safe = frozenset(t.lower() for t in self.setting("safe_tokens", list, ["no", "safe"], items=str))
        self.chat_template_kwargs = self.setting("chat_template_kwargs", dict)
        templates = self.setting("templates", dict, {}, server_only=True)  # template files
        self.templates = {check: self._template(read_setting(templates, check, str, DEFAULT_TEMPLATES[check],
                                                             where="templates."))
                          for check in self.checks}
        raw = self.setting("vllm", dict, server_only=True)  # a URL the server would call, and maybe a key
        self.client: VLLMClient | None = self.services.vllm or (
            shared_client(VLLMConfig.from_settings(raw)) if raw is not None else None)

    def _template(self, file: str) -> Template:
        return Template(self.policy_file(file, DEFAULT_POLICY_DIR).read_text(encoding="utf-8"))

    async def scan(self, exchange: Exchange, ctx: ScanContext) -> list[Finding]:
        judgements = self._judgements(exchange, ctx.segments)
        if not judgements:
            return []
        where = "/response" if exchange.has_response else "/request"
        if self.client is None:
            return [self._error("no vLLM server configured (settings.vllm or services.vllm)", where)]
        try:
            scores = await asyncio.gather(*(self._ask(j.prompt) for j in judgements))
        except VLLMError as exc:
            return [self._error(str(exc), where)]
        ctx.signals[self.name] = [
            {"check": j.check, "pointer": j.segment.pointer, "p_unsafe": None if p is None else round(p, 4)}
            for j, p in zip(judgements, scores, strict=True)
        ]
        return [self._finding(j, p) for j, p in zip(judgements, scores, strict=True)
                if p is not None and p >= self.threshold]

    def _judgements(self, exchange: Exchange, segments: Sequence[Segment]) -> list[Judgement]:
        out: list[Judgement] = []
        response = [s for s in segments if s.phase is Phase.RESPONSE]
        if "alignment" in self.checks and response:
            user = self._clip("\n\n".join(s.text for s in _last_user_turn(exchange)))
            untrusted = self._clip("\n\n".join(
                s.text for s in exchange.segments if s.kind in (SegmentKind.TOOL_RESULT, SegmentKind.DOCUMENT)))
            for s in response:
                if s.kind is SegmentKind.REASONING:
                    step, kind = s.text, "reasoning"
                elif s.kind is SegmentKind.TOOL_CALL and s.tool_call is not None:
                    step, kind = f"{s.tool_call.name}({s.tool_call.arguments_raw})", "tool_call"
                else:
                    continue
                prompt = self.templates["alignment"].safe_substitute(
                    user_request=user, untrusted=untrusted or "(none)", step=self._clip(step), step_kind=kind)
                out.append(Judgement("alignment", s, prompt))
        if "safety" in self.checks:
            targets = [s for s in response if s.kind is SegmentKind.ASSISTANT] if exchange.has_response else [
                s for s in _last_user_turn(exchange) if s in segments]
            for s in targets:
                prompt = self.templates["safety"].safe_substitute(role=s.role, text=self._clip(s.text))
                out.append(Judgement("safety", s, prompt))
        return out

    async def _ask(self, prompt: str) -> float | None:
        assert self.client is not None
        payload: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}], "max_tokens": self.positions,
                                   "temperature": 0, "logprobs": True, "top_logprobs": self.top_logprobs}
        if self.chat_template_kwargs:
            payload["chat_template_kwargs"] = self.chat_template_kwargs
        answer = await self.client.chat(payload)
        try:
            content = answer["choices"][0]["logprobs"]["content"]
        except (KeyError, IndexError, TypeError):
            raise VLLMError("the guard model answered without logprobs") from None
        return p_unsafe(content or (), self.unsafe, self.safe, self.positions)

    def _finding(self, j: Judgement, p: float) -> Finding:
        alignment = j.check == "alignment"
        if alignment:
            what = "tool call" if j.segment.kind is SegmentKind.TOOL_CALL else "reasoning"
            message = f"guard model: the {what} may not serve the user's request (P={p:.2f})"
        else:
            message = f"guard model: {j.segment.kind.value} text judged harmful (P={p:.2f})"
        # The whole segment; for a tool call, its whole arguments: an object in Anthropic and Gemini, which
        # then gets a pointer and no offsets (offsets into our serialization of it would not be body offsets).
        location = locate_argument(j.segment, ())
        return Finding(
            category=Category.UNSAFE_REASONING if alignment else Category.CONTENT,
            detector=self.name,
            severity=Severity.HIGH if p >= self.block_threshold else Severity.MEDIUM,
            message=message,
            pointer=location.pointer,
            start=location.start,
            end=location.end,
            score=round(p, 4),
            evidence={"check": j.check, "p_unsafe": round(p, 4),
                      "model": self.client.config.model if self.client else None},
        )

    def _clip(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " [...]"

    def _error(self, message: str, pointer: str) -> Finding:
        return Finding(category=Category.DETECTOR_ERROR, detector=self.name, severity=Severity.MEDIUM,
                       message=f"guard model unavailable: {message}", pointer=pointer,
                       evidence={"detector": self.name})


def _last_user_turn(exchange: Exchange) -> list[Segment]:
    users = [s for s in exchange.segments if s.kind is SegmentKind.USER and s.phase is Phase.REQUEST]
    if not users:
        return []
    last_turn = users[-1].turn
    return [s for s in users if s.turn == last_turn]
