"""Read the flow names out of a policy's Colang files, with file and line on a syntax error.

Uses nemoguardrails' own parser, imported on first use: a policy without `.co` files never pays for it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_V1_LINE = re.compile(r"line (\d+)")


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
