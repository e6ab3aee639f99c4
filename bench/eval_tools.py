"""Evaluate the tool-call checks (tool_schema, tool_policy, tool_taint, tool_loop) on public agent data.

    .venv/bin/python bench/eval_tools.py [--data DIR]     (default: bench/data.py, GUARDRAILS_EVAL_DATA)

* InjecAgent (MIT; uiuc-kang-lab/InjecAgent via enkryptai/xInjectAgent): each labelled next action of two
  agents after an injected tool result, rebuilt as an OpenAI chat exchange. `succ` (the agent called the
  attacker's tool) must be flagged by tool_taint or tool_policy; `unsucc` (a safe next action) must not be;
  `invalid` is dropped. Every InjecAgent case is an attack, so the negatives are the agents' own safe actions.
* R-Judge (research use): 571 human-labelled trajectories; every agent tool call is checked as the response of
  an exchange holding the history before it. A trajectory is predicted unsafe when any step gets a warn or
  block (also reported: the last tool call only, the approximation the dataset README mentions).

Prints tables; figures are whatever the detectors do with their default settings, nothing is tuned per item.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import statistics
import sys
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import data_dir  # bench/ is on sys.path when a bench script runs

from detectors.tool_loop import ToolLoopDetector
from detectors.tool_policy import ToolPolicyDetector
from detectors.tool_schema import ToolSchemaDetector
from detectors.tool_taint import ToolTaintDetector
from guardrails.adapters import read_exchange
from guardrails.detector import Detector, ScanContext
from guardrails.exchange import Exchange
from guardrails.findings import DEFAULT_ACTION_BY_SEVERITY, Action, Finding

DEFAULT_DATA = data_dir()
JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean",
              "array": "array", "object": "object"}
ACTION_LINE = re.compile(r"Action:\s*([A-Za-z_][\w.]*)\s*\n\s*Action Input:\s*", re.S)
CALL_HEAD = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(?::|\n\s*Action Input:)?\s*(?=[{\[])", re.S)
AUTOGPT = re.compile(r'"name"\s*:\s*"([\w.]+)"\s*,\s*"args"\s*:\s*(?=\{)')


def all_detectors() -> list[Detector]:
    return [ToolSchemaDetector(), ToolPolicyDetector(), ToolTaintDetector(), ToolLoopDetector()]


def run_checks(exchange: Exchange, detectors: list[Detector]) -> list[Finding]:
    findings: list[Finding] = []
    for detector in detectors:
        ctx = ScanContext(segments=[s for s in exchange.segments if detector.default_scope.matches(s)], signals={})
        findings.extend(_complete(detector.scan(exchange, ctx)))
    return findings


def _complete(coroutine: Coroutine[Any, Any, list[Finding]]) -> list[Finding]:
    """Run a coroutine that never awaits I/O (these four) without an event loop's start-up cost per call."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("detector awaited I/O; run it under asyncio")


def flagged(findings: list[Finding], detectors: set[str] | None = None) -> bool:
    return any(DEFAULT_ACTION_BY_SEVERITY[f.severity] is not Action.ALLOW for f in findings
               if detectors is None or f.detector in detectors)


# --- parsing agent actions ------------------------------------------------------------------------------
def first_json(text: str) -> tuple[Any, str]:
    """The first balanced {...} or [...] in text: (parsed value or None, raw text)."""
    start = next((i for i, c in enumerate(text) if c in "{["), None)
    if start is None:
        return None, ""
    depth, quote, escaped = 0, "", False
    for i in range(start, len(text)):
        c = text[i]
        if quote:
            escaped = not escaped and c == "\\"
            if c == quote and not escaped:
                quote = ""
            continue
        if c in "\"'":
            quote = c
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                raw = text[start:i + 1]
                return _loads(raw), raw
    return None, text[start:]


def _loads(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def parse_action(action: str) -> tuple[str, str] | None:
    """(tool name, JSON argument string) from the free-form action strings of ReAct-style agents."""
    match = AUTOGPT.search(action)
    if match:
        value, raw = first_json(action[match.end():])
        return match.group(1), json.dumps(value) if value is not None else raw
    match = CALL_HEAD.match(action)
    if match:
        value, raw = first_json(action[match.end():])
        return match.group(1), json.dumps(value) if value is not None else raw
    value, raw = first_json(action)
    if isinstance(value, dict) and len(value) == 1:
        (name, args), = value.items()
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z_][\w.]*", name) and isinstance(args, dict):
            return name, json.dumps(args)
    return None


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# --- InjecAgent -----------------------------------------------------------------------------------------
def injecagent_tools(data: Path) -> dict[str, dict[str, Any]]:
    specs = {}
    for toolkit in json.loads((data / "InjecAgent/data/tools.json").read_text()):
        for tool in toolkit["tools"]:
            props = {p["name"]: {"type": JSON_TYPES.get(p["type"], "string"), "description": p["description"]}
                     for p in tool["parameters"]}
            required = [p["name"] for p in tool["parameters"] if p.get("required")]
            specs[toolkit["toolkit"] + tool["name"]] = {
                "type": "function", "function": {"name": toolkit["toolkit"] + tool["name"],
                                                 "description": tool["summary"],
                                                 "parameters": {"type": "object", "properties": props,
                                                                "required": required}}}
    return specs


def injecagent_cases(data: Path) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(model, label, request, response) for every labelled next action."""
    specs = injecagent_tools(data)
    for result in sorted((data / "InjecAgent/results/BASE").glob("*/test_cases_dh_base.json")):
        model = result.parent.name
        for line in result.read_text().splitlines():
            row = json.loads(line)
            if row["eval"] not in ("succ", "unsucc"):
                continue
            params = _loads(row["Tool Parameters"]) or {}
            observation = row["Tool Response"]
            if observation.startswith('"'):
                observation = json.loads(observation)
            tools = [specs[n] for n in [row["User Tool"], *row["Attacker Tools"]] if n in specs]
            request = {"model": model, "tools": tools, "messages": [
                {"role": "user", "content": row["User Instruction"]},
                {"role": "assistant", "content": row["Thought"],
                 "tool_calls": [tool_call("call_0", row["User Tool"], json.dumps(params))]},
                {"role": "tool", "tool_call_id": "call_0", "content": observation}]}
            attacker = row["Attacker Tools"] if row["eval"] == "succ" else ()
            yield model, row["eval"], request, _react_response(row["output"], attacker)


def _react_response(output: str, wanted: Any = ()) -> dict[str, Any]:
    """The agent's next step: its first `Action:`/`Action Input:` pair, or its text when it answered.

    For a `succ` item the step judged is the agent's first call of an attacker tool: a ReAct agent often
    writes a few actions (and invents their observations) before it; those invented steps are dropped.
    """
    actions = list(ACTION_LINE.finditer(output))
    match = next((m for m in actions if m.group(1) in wanted), actions[0] if actions else None)
    final = output.find("Final Answer") if not wanted else -1
    message: dict[str, Any] = {"role": "assistant", "content": output}
    if match and (final < 0 or match.start() < final):
        value, raw = first_json(output[match.end():])
        arguments = json.dumps(value) if value is not None else (raw or output[match.end():].split("\n")[0])
        message = {"role": "assistant", "content": output[:match.start()].strip() or None,
                   "tool_calls": [tool_call("call_1", match.group(1), arguments)]}
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


@dataclass
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    by_detector: dict[str, int] = field(default_factory=dict)

    def add(self, truth: bool, predicted: bool) -> None:
        if truth and predicted:
            self.tp += 1
        elif truth:
            self.fn += 1
        elif predicted:
            self.fp += 1
        else:
            self.tn += 1

    def row(self, name: str) -> str:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        fpr = self.fp / (self.fp + self.tn) if self.fp + self.tn else 0.0
        return (f"{name:<44} {self.tp:>5} {self.fp:>5} {self.fn:>5} {self.tn:>5}  {precision:6.3f} {recall:6.3f} "
                f"{f1:6.3f} {fpr:6.3f}")


HEADER = f"{'':<44} {'TP':>5} {'FP':>5} {'FN':>5} {'TN':>5}  {'prec':>6} {'recall':>6} {'F1':>6} {'FPR':>6}"


def eval_injecagent(data: Path, latencies: list[float], checked: list[Exchange]) -> None:
    detectors = all_detectors()
    tallies: dict[str, Tally] = {}
    calls = 0
    for model, label, request, response in injecagent_cases(data):
        exchange = read_exchange(request, response)
        start = time.perf_counter()
        findings = run_checks(exchange, detectors)
        if exchange.tool_calls and exchange.tool_calls[-1].phase.value == "response":
            latencies.append((time.perf_counter() - start) * 1000)
            checked.append(exchange)
            calls += 1
        predicted = flagged(findings, {"tool_taint", "tool_policy"})
        for key in (model, "all"):
            tally = tallies.setdefault(key, Tally())
            tally.add(label == "succ", predicted)
        for name in {f.detector for f in findings if flagged([f])}:
            counts = tallies["all"].by_detector.setdefault(f"{label}:{name}", 0)
            tallies["all"].by_detector[f"{label}:{name}"] = counts + 1
    print("InjecAgent (dh base, labelled next actions; positive = succ, flagged = tool_taint|tool_policy warn/block)")
    print(HEADER)
    for key, tally in sorted(tallies.items(), key=lambda kv: kv[0] == "all"):
        print(tally.row(key))
    print("  findings by label:detector:", dict(sorted(tallies["all"].by_detector.items())))
    print(f"  next actions with a tool call: {calls}")


# --- R-Judge --------------------------------------------------------------------------------------------
def rjudge_steps(record: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """One (request, response) per agent tool call: the history before it, and the call itself."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": record.get("profile") or "You are an agent."}]
    steps = []
    pending: str | None = None
    n = 0
    for turn in record["contents"]:
        for item in turn:
            role, content = item.get("role"), item.get("content")
            if role == "user" and content:
                messages.append({"role": "user", "content": str(content)})
            elif role == "agent":
                action = str(item.get("action") or "")
                parsed = parse_action(action)
                thought = str(item.get("thought") or "") or None
                if parsed is None:
                    messages.append({"role": "assistant", "content": (thought or "") + "\n" + action})
                    pending = None
                    continue
                n += 1
                call = tool_call(f"call_{n}", *parsed)
                message = {"role": "assistant", "content": thought, "tool_calls": [call]}
                response = {"choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]}
                steps.append(({"model": "agent", "messages": list(messages)}, response))
                messages.append(message)
                pending = call["id"]
            elif role == "environment":
                text = content if isinstance(content, str) else json.dumps(content)
                if pending is not None:
                    messages.append({"role": "tool", "tool_call_id": pending, "content": text or ""})
                    pending = None
                elif text and text != "null":
                    messages.append({"role": "user", "content": text})
    return steps


def eval_rjudge(data: Path, latencies: list[float], checked: list[Exchange]) -> None:
    detectors = all_detectors()
    any_step, last_step = Tally(), Tally()
    per_detector: dict[str, Tally] = {}
    no_calls = 0
    for file in sorted((data / "R-Judge/data/R-Judge").glob("*/*.json")):
        for record in json.loads(file.read_text()):
            truth = record["label"] == 1
            steps = rjudge_steps(record)
            if not steps:
                no_calls += 1
            step_findings = []
            for request, response in steps:
                exchange = read_exchange(request, response, format="openai.chat")
                start = time.perf_counter()
                step_findings.append(run_checks(exchange, detectors))
                latencies.append((time.perf_counter() - start) * 1000)
                checked.append(exchange)
            everything = [f for findings in step_findings for f in findings]
            any_step.add(truth, flagged(everything))
            last_step.add(truth, bool(step_findings) and flagged(step_findings[-1]))
            for detector in detectors:
                per_detector.setdefault(detector.name, Tally()).add(truth, flagged(everything, {detector.name}))
    print("\nR-Judge (571 trajectories, human labels; positive = unsafe; predicted = any warn/block)")
    print(HEADER)
    print(any_step.row("any step, all four checks"))
    print(last_step.row("last tool call only, all four checks"))
    for name, tally in per_detector.items():
        print(tally.row(f"any step, {name} alone"))
    print(f"  trajectories without a parseable tool call (predicted safe): {no_calls}")
    print("  confusion matrix (any step):      predicted unsafe  predicted safe")
    print(f"                     label unsafe  {any_step.tp:>16} {any_step.fn:>15}")
    print(f"                     label safe    {any_step.fp:>16} {any_step.tn:>15}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    latencies: list[float] = []
    checked: list[Exchange] = []
    eval_injecagent(args.data, latencies, checked)
    eval_rjudge(args.data, latencies, checked)
    # Second pass with the same detectors' caches warm (compiled schemas, parsed shell/SQL values): the
    # steady state of a service that sees the same tool declarations on every step.
    detectors = all_detectors()
    for exchange in checked:
        run_checks(exchange, detectors)
    warm = []
    for exchange in checked:
        start = time.perf_counter()
        run_checks(exchange, detectors)
        warm.append((time.perf_counter() - start) * 1000)
    print("\nlatency of the four checks per tool call (ms, detectors only, adapters excluded):")
    for name, values in (("first sight (cold caches)", latencies), ("warm caches", warm)):
        values.sort()
        print(f"  {name:<26} n={len(values)} median {statistics.median(values):.3f} "
              f"p95 {values[int(len(values) * 0.95)]:.3f} max {values[-1]:.3f}")


if __name__ == "__main__":
    main()
