"""Read the flow names, and the actions and flows they call, out of a policy's Colang files, with file and line.

Uses nemoguardrails' own parser, imported on first use: a policy without `.co` files never pays for it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_V1_LINE = re.compile(r"line (\d+)")
# Colang 1.0: the parser also turns `bot ...` and `stop` into actions (`utter`); only `execute` is the author's.
_V1_EXECUTE = re.compile(r"^\s*(?:\$\w+\s*=\s*)?execute\b")
# Colang 2.x: these statements start the actions they name; `match`/`send` only refer to events.
_V2_STARTING_OPS = frozenset({"await", "start"})
_V2_BRANCHES = ("elements", "then_elements", "else_elements")


@dataclass(frozen=True, slots=True)
class ActionCall:
    """An action a flow calls (`execute name(...)` in 1.0, `await NameAction(...)` in 2.x)."""

    name: str
    flow: str
    file: Path
    line: int | None
    arguments: Mapping[str, str] = field(default_factory=dict)  # argument -> its source text (`"pii"`, `$x`)


@dataclass(frozen=True, slots=True)
class FlowCall:
    """A flow another flow runs: `do name` in 1.0; `await`/`start`/`activate`/`when`/`match name` in 2.x."""

    name: str
    flow: str  # the flow that calls it
    file: Path
    line: int | None


class ColangSyntaxError(Exception):
    def __init__(self, message: str, file: Path, line: int | None) -> None:
        super().__init__(message)
        self.message, self.file, self.line = message, file, line

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}" if self.line else f"{self.file}: {self.message}"


def quiet_nemoguardrails() -> None:
    """Telemetry off before the first import (it phones home by default); no INFO chatter."""
    import logging

    os.environ.setdefault("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
    logging.getLogger("nemoguardrails").setLevel(logging.ERROR)


def flows_in(files: list[Path], version: str) -> dict[str, Path]:
    """Flow name -> the file that defines it (the last definition wins, as in NeMo)."""
    quiet_nemoguardrails()
    from nemoguardrails.colang import parse_colang_file

    flows: dict[str, Path] = {}
    for file in files:
        content = file.read_text(encoding="utf-8")
        try:
            parsed = parse_colang_file(file.name, content=content, version=version)
        except Exception as exc:
            raise _syntax_error(exc, file) from None
        for flow in parsed.get("flows", []):
            name = flow.get("id") if isinstance(flow, dict) else getattr(flow, "name", None)
            if name:
                flows[str(name)] = file
    return flows


def _syntax_error(exc: Exception, file: Path) -> ColangSyntaxError:
    line = getattr(exc, "line", None)  # lark errors (Colang 2.x) carry line and column
    if not isinstance(line, int):
        found = _V1_LINE.search(str(exc))  # Colang 1.0: "Error parsing line 3 in f.co: ..."
        line = int(found.group(1)) if found else None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if type(exc).__name__.startswith("Unexpected"):
        column = getattr(exc, "column", None)
        token = getattr(exc, "token", None)
        first = f"unexpected {'token ' + repr(str(token)) if token is not None else 'input'}" + (
            f" at column {column}" if column else "")
    return ColangSyntaxError(f"Colang syntax error: {first}", file, line)


def action_calls(files: list[Path], version: str) -> list[ActionCall]:
    """Every action call in the files' flows, in file order. The files must parse (see `flows_in`)."""
    calls: list[ActionCall] = []
    for file, lines, flow in _parsed_flows(files, version):
        found = _v1_calls(flow, file) if version == "1.0" else _v2_calls(flow, file, lines)
        calls.extend(sorted(found, key=lambda call: call.line or 0))  # a `when` lists its specs first
    return calls


def flow_calls(files: list[Path], version: str) -> list[FlowCall]:
    """Every flow the files' flows run, in file order. The files must parse (see `flows_in`)."""
    calls: list[FlowCall] = []
    for file, lines, flow in _parsed_flows(files, version):
        found = _v1_flow_calls(flow, file) if version == "1.0" else _v2_flow_calls(flow, file, lines)
        calls.extend(sorted(found, key=lambda call: call.line or 0))
    return calls


def _parsed_flows(files: list[Path], version: str) -> Iterator[tuple[Path, list[str], Any]]:
    """(file, its lines, flow) for each flow NeMo's parser finds: a dict in 1.0, a `Flow` in 2.x."""
    quiet_nemoguardrails()
    from nemoguardrails.colang import parse_colang_file

    for file in files:
        content = file.read_text(encoding="utf-8")
        parsed = parse_colang_file(file.name, content=content, version=version)
        lines = content.splitlines()
        for flow in parsed.get("flows", []):
            yield file, lines, flow


def _v1_calls(flow: Mapping[str, Any], file: Path) -> Iterator[ActionCall]:
    for element in flow.get("elements", []):
        source = element.get("_source_mapping") or {}
        if element.get("_type") == "run_action" and _V1_EXECUTE.match(source.get("line_text") or ""):
            arguments = {str(k): str(v) for k, v in (element.get("action_params") or {}).items()}
            yield ActionCall(str(element["action_name"]), str(flow["id"]), file, source.get("line_number"),
                             arguments)


def _v1_flow_calls(flow: Mapping[str, Any], file: Path) -> Iterator[FlowCall]:
    for element in flow.get("elements", []):
        name = element.get("flow_name") if element.get("_type") == "flow" else None  # `do name`
        if name and not str(name).startswith("$"):
            line = (element.get("_source_mapping") or {}).get("line_number")
            yield FlowCall(str(name), str(flow["id"]), file, line)


def _v2_calls(flow: Any, file: Path, lines: list[str]) -> Iterator[ActionCall]:
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecType

    flow_line = flow._source.line if flow._source else 1
    for spec, line, starting in _v2_specs(flow.elements, None, starting=False):
        if starting and spec.spec_type is SpecType.ACTION and spec.name:
            arguments = {str(k): str(v) for k, v in (spec.arguments or {}).items()}
            yield ActionCall(spec.name, flow.name, file, line or _line_naming(lines, spec.name, flow_line),
                             arguments)


def _v2_flow_calls(flow: Any, file: Path, lines: list[str]) -> Iterator[FlowCall]:
    from nemoguardrails.colang.v2_x.lang.colang_ast import SpecType

    flow_line = flow._source.line if flow._source else 1
    for spec, line, _ in _v2_specs(flow.elements, None, starting=False):
        if spec.spec_type is SpecType.FLOW and spec.name:  # any statement: `match (x).Finished()` needs x too
            yield FlowCall(spec.name, flow.name, file, line or _line_naming(lines, spec.name, flow_line))


def _v2_specs(node: Any, line: int | None, starting: bool) -> Iterator[tuple[Any, int | None, bool]]:
    """(spec, line where known, whether its statement starts it: `await`, `start`, `when`) for every spec a
    flow's statements name, at any depth."""
    from nemoguardrails.colang.v2_x.lang.colang_ast import Spec, SpecOp, When

    if isinstance(node, list):
        for child in node:
            yield from _v2_specs(child, line, starting)
    elif isinstance(node, dict):  # `A and B`, `A or B`
        yield from _v2_specs(node.get("elements", []), line, starting)
    elif isinstance(node, Spec):
        yield node, line, starting
    elif isinstance(node, SpecOp):
        yield from _v2_specs(node.spec, node._source.line if node._source else line, node.op in _V2_STARTING_OPS)
    else:
        if isinstance(node, When):  # `when X` starts X, like `await X`
            yield from _v2_specs(node.when_specs, line, starting=True)
        for branch in _V2_BRANCHES:
            yield from _v2_specs(getattr(node, branch, None) or [], line, starting=False)


def _line_naming(lines: list[str], name: str, start: int) -> int | None:
    """The first line from `start` (1-based) that names `name` outside a comment: the parser keeps no line for
    the specs of a `when`."""
    pattern = re.compile(rf"\b{re.escape(name)}\b")
    return next((number for number, text in enumerate(lines[start - 1:], start)
                 if pattern.search(text.split("#", 1)[0])), None)
